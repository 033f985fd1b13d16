/* A stand-in for libnvidia-ml.so.1: the NVML entry points infersight calls through
 * nvml-wrapper 0.13 (nvml-wrapper-sys 0.10), with the versioned symbol names and the
 * struct layouts of NVML's header (tests/gpu_health.rs checks the layouts against
 * nvml-wrapper-sys's bindgen types, which come from that header). Built by the tests with
 * cc -shared and loaded by the agent as it loads the real library: dlopen of
 * libnvidia-ml.so.1, found on LD_LIBRARY_PATH.
 *
 * The devices come from the script named by $FAKE_NVML_SCRIPT, read again on every
 * nvmlDeviceGetCount_v2 (once per agent reading), so a test changes a device mid-run by
 * replacing the file. One line per value, `DEVICE KEY VALUE...`; DEVICE is the NVML index
 * `N`, or `N/S` for the MIG device in slot S of GPU N. A value the script does not give is
 * NVML_ERROR_NOT_SUPPORTED. Keys:
 *   uuid U | pci 00000000:18:00.0 | name TEXT | minor N | util GPU MEM | memory TOTAL USED
 *   temperature C | power MW | energy MJ | clock_sm MHZ | clock_mem MHZ | pcie_tx KBS
 *   pcie_rx KBS | throttle BITS | field ID VALUE | violation POLICY NS | process PID BYTES
 *   procutil PID SM MEM | gpm METRIC PERCENT | mig MODE | gi ID | event SEQ XID
 *   noevents (XID events not supported) | lost (every call: GPU_IS_LOST)
 *   lost_values (GPU_IS_LOST but for uuid, name, pci and minor)
 *   hang KEY (the call reading KEY never returns: util, temperature, memory, ...)
 * With $FAKE_NVML_LOG set, each nvmlDeviceGetCount_v2 appends "count" to that file and each
 * event handed out "event SEQ XID", so a test knows what the agent has read. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
};
enum { NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3 };
#define NVML_EVENT_TYPE_XID_CRITICAL_ERROR 8ull
#define NO_INSTANCE 0xFFFFFFFFu
#define MAX_GPUS 8
#define MAX_SLOTS 8
#define MAX_ENTRIES 64

/* NVML's structs, field for field. */
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;
typedef union {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;
typedef struct {
    unsigned long long referenceTime, violationTime;
} nvmlViolationTime_t;
typedef struct {
    unsigned int version, isSupportedDevice;
} nvmlGpmSupport_t;
typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct {
        char *shortName, *longName, *unit;
    } metricInfo;
} nvmlGpmMetric_t;
typedef struct {
    unsigned int version, numMetrics;
    nvmlGpmSample_t sample1, sample2;
    nvmlGpmMetric_t metrics[210];
} nvmlGpmMetricsGet_t;

/* nvml.h: NVML_STRUCT_VERSION(Memory, 2). */
#define MEMORY_V2_VERSION ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

#ifdef FAKE_NVML_ABI
/* The layouts, printed for the test that compares them with nvml-wrapper-sys. */
#define SHOW(t) printf(#t " size %zu\n", sizeof(t))
#define AT(t, f) printf(#t "." #f " %zu\n", offsetof(t, f))
int main(void) {
    SHOW(nvmlPciInfo_t);
    AT(nvmlPciInfo_t, domain);
    AT(nvmlPciInfo_t, busId);
    SHOW(nvmlUtilization_t);
    SHOW(nvmlMemory_v2_t);
    AT(nvmlMemory_v2_t, used);
    SHOW(nvmlProcessInfo_t);
    AT(nvmlProcessInfo_t, usedGpuMemory);
    AT(nvmlProcessInfo_t, computeInstanceId);
    SHOW(nvmlProcessUtilizationSample_t);
    AT(nvmlProcessUtilizationSample_t, smUtil);
    SHOW(nvmlEventData_t);
    AT(nvmlEventData_t, eventData);
    AT(nvmlEventData_t, gpuInstanceId);
    SHOW(nvmlValue_t);
    SHOW(nvmlFieldValue_t);
    AT(nvmlFieldValue_t, valueType);
    AT(nvmlFieldValue_t, nvmlReturn);
    AT(nvmlFieldValue_t, value);
    SHOW(nvmlViolationTime_t);
    SHOW(nvmlGpmSupport_t);
    SHOW(nvmlGpmMetric_t);
    AT(nvmlGpmMetric_t, value);
    AT(nvmlGpmMetric_t, metricInfo);
    SHOW(nvmlGpmMetricsGet_t);
    AT(nvmlGpmMetricsGet_t, sample2);
    AT(nvmlGpmMetricsGet_t, metrics);
    return 0;
}
#else

struct entry {
    char key[24];
    char val[160];
};

struct nvmlDevice_st {
    int used;
    struct nvmlDevice_st *parent;
    int n;
    struct entry e[MAX_ENTRIES];
    /* The highest event SEQ handed out; kept across script reloads. */
    unsigned long long delivered;
};

/* GPU i is devs[i]; the MIG device in slot s of GPU i is devs[MAX_GPUS + i*MAX_SLOTS + s]. */
static struct nvmlDevice_st devs[MAX_GPUS + MAX_GPUS * MAX_SLOTS];
static unsigned int gpu_count;

static struct nvmlDevice_st *mig_slot(unsigned int gpu, unsigned int slot) {
    return &devs[MAX_GPUS + gpu * MAX_SLOTS + slot];
}

static void load_script(void) {
    const char *path = getenv("FAKE_NVML_SCRIPT");
    FILE *f = path ? fopen(path, "r") : NULL;
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        devs[i].used = 0;
        devs[i].n = 0;
    }
    gpu_count = 0;
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char id[16], key[24];
        int off = 0;
        if (line[0] == '#' || sscanf(line, "%15s %23s %n", id, key, &off) < 2)
            continue;
        unsigned int gpu, slot;
        struct nvmlDevice_st *d;
        if (sscanf(id, "%u/%u", &gpu, &slot) == 2 && gpu < MAX_GPUS && slot < MAX_SLOTS) {
            d = mig_slot(gpu, slot);
            d->parent = &devs[gpu];
        } else if (sscanf(id, "%u", &gpu) == 1 && gpu < MAX_GPUS) {
            d = &devs[gpu];
            d->parent = NULL;
            if (gpu + 1 > gpu_count)
                gpu_count = gpu + 1;
        } else {
            continue;
        }
        d->used = 1;
        if (d->n < MAX_ENTRIES) {
            snprintf(d->e[d->n].key, sizeof d->e[d->n].key, "%s", key);
            snprintf(d->e[d->n].val, sizeof d->e[d->n].val, "%s", off ? line + off : "");
            d->n++;
        }
    }
    fclose(f);
}

/* The first value of `key`, or NULL. */
static const char *get(const struct nvmlDevice_st *d, const char *key) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->e[i].key, key))
            return d->e[i].val;
    return NULL;
}

/* The value of the `key` line whose first number is `first` (field 142 3 → "3"). */
static const char *get_keyed(const struct nvmlDevice_st *d, const char *key, unsigned long long first) {
    for (int i = 0; i < d->n; i++) {
        char *rest;
        if (!strcmp(d->e[i].key, key) && strtoull(d->e[i].val, &rest, 10) == first)
            return rest;
    }
    return NULL;
}

static void log_line(const char *fmt, unsigned long long a, unsigned long long b) {
    const char *path = getenv("FAKE_NVML_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f)
        return;
    fprintf(f, fmt, a, b);
    fclose(f);
}

static unsigned long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + ts.tv_nsec / 1000;
}

/* Every device call starts here: a valid handle, the scripted hang, the lost GPU. */
static nvmlReturn_t check(const struct nvmlDevice_st *d, const char *call) {
    if (!d || !d->used)
        return NVML_ERROR_INVALID_ARGUMENT;
    const char *hang = get(d, "hang");
    if (hang && !strcmp(hang, call))
        for (;;)
            sleep(1000);
    if (get(d, "lost") || (d->parent && get(d->parent, "lost")))
        return NVML_ERROR_GPU_IS_LOST;
    /* The driver may still name a lost GPU from what it knew. */
    int naming = !strcmp(call, "uuid") || !strcmp(call, "name") || !strcmp(call, "pci") ||
                 !strcmp(call, "minor");
    if (get(d, "lost_values") && !naming)
        return NVML_ERROR_GPU_IS_LOST;
    return NVML_SUCCESS;
}

#define CHECK(d, call)                                                                             \
    do {                                                                                           \
        nvmlReturn_t r_ = check(d, call);                                                          \
        if (r_)                                                                                    \
            return r_;                                                                             \
    } while (0)

/* A scripted unsigned number, or NOT_SUPPORTED. */
static nvmlReturn_t number(const struct nvmlDevice_st *d, const char *key, unsigned long long *out) {
    const char *v = get(d, key);
    if (!v)
        return NVML_ERROR_NOT_SUPPORTED;
    *out = strtoull(v, NULL, 10);
    return NVML_SUCCESS;
}

static nvmlReturn_t uint_value(struct nvmlDevice_st *d, const char *key, unsigned int *out) {
    CHECK(d, key);
    unsigned long long v;
    nvmlReturn_t r = number(d, key, &v);
    if (!r)
        *out = (unsigned int)v;
    return r;
}

static nvmlReturn_t copy_string(const char *v, char *buf, unsigned int len) {
    if (!v)
        return NVML_ERROR_NOT_SUPPORTED;
    if (strlen(v) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, v);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    load_script();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    return copy_string("550.54.15", version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    load_script();
    log_line("count\n", 0, 0);
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (index >= gpu_count || !devs[index].used)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    CHECK(d, "uuid");
    return copy_string(get(d, "uuid"), uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    CHECK(d, "name");
    return copy_string(get(d, "name"), name, length);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    CHECK(d, "pci");
    const char *v = get(d, "pci");
    if (!v)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", v);
    sscanf(v, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.0", pci->domain & 0xffff,
             pci->bus, pci->device);
    pci->pciDeviceId = 0x233010de;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    return uint_value(d, "minor", minor);
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK(d, "util");
    const char *v = get(d, "util");
    if (!v || sscanf(v, "%u %u", &u->gpu, &u->memory) != 2)
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    CHECK(d, "memory");
    if (m->version != MEMORY_V2_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    const char *v = get(d, "memory");
    if (!v || sscanf(v, "%llu %llu", &m->total, &m->used) != 2)
        return NVML_ERROR_NOT_SUPPORTED;
    m->reserved = 0;
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temp) {
    if (sensor != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    return uint_value(d, "temperature", temp);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    return uint_value(d, "power", mw);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    CHECK(d, "energy");
    return number(d, "energy", mj);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    /* NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 */
    return type == 1 ? uint_value(d, "clock_sm", mhz)
         : type == 2 ? uint_value(d, "clock_mem", mhz)
                     : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *kbs) {
    /* NVML_PCIE_UTIL_TX_BYTES = 0, NVML_PCIE_UTIL_RX_BYTES = 1 */
    return uint_value(d, counter == 0 ? "pcie_tx" : "pcie_rx", kbs);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *bits) {
    CHECK(d, "throttle");
    return number(d, "throttle", bits);
}

nvmlReturn_t nvmlDeviceGetViolationStatus(nvmlDevice_t d, int policy, nvmlViolationTime_t *t) {
    CHECK(d, "violation");
    const char *v = get_keyed(d, "violation", (unsigned long long)policy);
    if (!v)
        return NVML_ERROR_NOT_SUPPORTED;
    t->referenceTime = now_us();
    t->violationTime = strtoull(v, NULL, 10);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    CHECK(d, "field");
    for (int i = 0; i < count; i++) {
        const char *v = get_keyed(d, "field", values[i].fieldId);
        values[i].timestamp = (long long)now_us();
        values[i].latencyUsec = 1;
        if (!v) {
            values[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        values[i].nvmlReturn = NVML_SUCCESS;
        values[i].valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        values[i].value.ullVal = strtoull(v, NULL, 10);
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    CHECK(d, "processes");
    unsigned int n = 0;
    for (int i = 0; i < d->n; i++)
        n += !strcmp(d->e[i].key, "process");
    if (!infos || *count < n) {
        *count = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    unsigned int k = 0;
    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->e[i].key, "process"))
            continue;
        infos[k].gpuInstanceId = infos[k].computeInstanceId = NO_INSTANCE;
        sscanf(d->e[i].val, "%u %llu", &infos[k].pid, &infos[k].usedGpuMemory);
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *s,
                                             unsigned int *count, unsigned long long last_seen) {
    CHECK(d, "procutil");
    (void)last_seen;
    unsigned int n = 0;
    for (int i = 0; i < d->n; i++)
        n += !strcmp(d->e[i].key, "procutil");
    if (!n)
        return NVML_ERROR_NOT_FOUND;
    if (!s || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->e[i].key, "procutil"))
            continue;
        memset(&s[k], 0, sizeof s[k]);
        sscanf(d->e[i].val, "%u %u %u", &s[k].pid, &s[k].smUtil, &s[k].memUtil);
        s[k].timeStamp = now_us();
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

/* Event sets: the GPUs registered on each. */
struct nvmlEventSet_st {
    struct nvmlDevice_st *devs[MAX_GPUS];
    int n;
};

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    *set = calloc(1, sizeof **set);
    return *set ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    free(set);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    CHECK(d, "events");
    if (get(d, "noevents") || !(types & NVML_EVENT_TYPE_XID_CRITICAL_ERROR))
        return NVML_ERROR_NOT_SUPPORTED;
    if (set->n == MAX_GPUS)
        return NVML_ERROR_INVALID_ARGUMENT;
    set->devs[set->n++] = d;
    return NVML_SUCCESS;
}

/* The next scripted event not handed out yet (lowest SEQ first); never waits. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms) {
    (void)timeout_ms;
    for (int k = 0; k < set->n; k++) {
        struct nvmlDevice_st *d = set->devs[k];
        const struct entry *next = NULL;
        unsigned long long next_seq = 0;
        for (int i = 0; i < d->n; i++) {
            unsigned long long seq = strtoull(d->e[i].val, NULL, 10);
            if (!strcmp(d->e[i].key, "event") && seq > d->delivered && (!next || seq < next_seq)) {
                next = &d->e[i];
                next_seq = seq;
            }
        }
        if (next) {
            unsigned long long code = 0;
            sscanf(next->val, "%*u %llu", &code);
            d->delivered = next_seq;
            log_line("event %llu %llu\n", next_seq, code);
            data->device = d;
            data->eventType = NVML_EVENT_TYPE_XID_CRITICAL_ERROR;
            data->eventData = code;
            data->gpuInstanceId = data->computeInstanceId = NO_INSTANCE;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_TIMEOUT;
}

/* MIG. */
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    nvmlReturn_t r = uint_value(d, "mig", current);
    if (!r)
        *pending = *current;
    return r;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    CHECK(d, "mig");
    if (!get(d, "mig"))
        return NVML_ERROR_NOT_SUPPORTED;
    *count = 7;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    CHECK(d, "mig");
    unsigned int gpu = (unsigned int)(d - devs);
    if (gpu >= MAX_GPUS || index >= MAX_SLOTS || !mig_slot(gpu, index)->used)
        return NVML_ERROR_NOT_FOUND;
    *mig = mig_slot(gpu, index);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    return uint_value(d, "gi", id);
}

/* GPM: a sample remembers what it sampled; the metrics come from the script. */
struct nvmlGpmSample_st {
    struct nvmlDevice_st *dev;
};

static int has_gpm(const struct nvmlDevice_st *d) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->e[i].key, "gpm"))
            return 1;
    return 0;
}

nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *support) {
    CHECK(d, "gpm");
    if (support->version != 1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    support->isSupportedDevice = has_gpm(d);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample) {
    *sample = calloc(1, sizeof **sample);
    return *sample ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample) {
    free(sample);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t d, nvmlGpmSample_t sample) {
    CHECK(d, "gpm");
    if (!has_gpm(d))
        return NVML_ERROR_NOT_SUPPORTED;
    sample->dev = d;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t d, unsigned int gpu_instance, nvmlGpmSample_t sample) {
    CHECK(d, "gpm");
    unsigned int gpu = (unsigned int)(d - devs);
    for (unsigned int s = 0; gpu < MAX_GPUS && s < MAX_SLOTS; s++) {
        struct nvmlDevice_st *m = mig_slot(gpu, s);
        const char *gi = m->used ? get(m, "gi") : NULL;
        if (gi && strtoul(gi, NULL, 10) == gpu_instance) {
            if (!has_gpm(m))
                return NVML_ERROR_NOT_SUPPORTED;
            sample->dev = m;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *m) {
    if (m->version != 1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (!m->sample1 || !m->sample2 || !m->sample2->dev || m->sample1->dev != m->sample2->dev ||
        m->numMetrics > 210)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < m->numMetrics; i++) {
        const char *v = get_keyed(m->sample2->dev, "gpm", m->metrics[i].metricId);
        m->metrics[i].metricInfo.shortName = m->metrics[i].metricInfo.longName = NULL;
        m->metrics[i].metricInfo.unit = NULL;
        m->metrics[i].nvmlReturn = v ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
        m->metrics[i].value = v ? strtod(v, NULL) : 0.0;
    }
    return NVML_SUCCESS;
}
#endif
