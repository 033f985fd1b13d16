/* A stand-in for libcuda.so.1 exporting the driver entry points infersight probes, with
 * the real signatures' argument positions. Synchronize calls sleep 3 ms so their wait
 * time is known. Allocations fail as the driver's do: more than 1 TiB returns
 * CUDA_ERROR_OUT_OF_MEMORY, 0 bytes CUDA_ERROR_INVALID_VALUE. Built by tests/cuda.rs with
 * cc -shared. */
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef int CUresult;
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
typedef uint64_t CUdeviceptr;
typedef void *CUstream;

static volatile uint64_t calls;
static uint64_t next_ptr = 0x7f0000000000ull;

static void wait_3ms(void) {
    struct timespec ts = {0, 3000000};
    nanosleep(&ts, NULL);
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, CUstream s, void **params, void **extra) {
    calls++;
    return 0;
}
CUresult cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) {
    calls++;
    return 0;
}
CUresult cuGraphLaunch(void *exec, CUstream s) {
    calls++;
    return 0;
}
/* Not through the exported symbol: that call would hit the probe a second time. */
static CUresult take(CUdeviceptr *dptr, size_t bytes) {
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (bytes > ((size_t)1 << 40)) return CUDA_ERROR_OUT_OF_MEMORY;
    *dptr = next_ptr;
    next_ptr += bytes;
    return 0;
}
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    return take(dptr, bytes);
}
CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    return take(dptr, bytes);
}
CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned flags) {
    return take(dptr, bytes);
}
/* cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp
 * *prop, unsigned long long flags) */
CUresult cuMemCreate(uint64_t *handle, size_t bytes, const void *prop, unsigned long long flags) {
    return take(handle, bytes);
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    calls++;
    return 0;
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    calls++;
    return 0;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    calls += n;
    return 0;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
    calls += n;
    return 0;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    calls += n;
    return 0;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    calls += n;
    return 0;
}
CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    calls += n;
    return 0;
}
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    calls += n;
    return 0;
}
CUresult cuCtxSynchronize(void) {
    wait_3ms();
    return 0;
}
CUresult cuStreamSynchronize(CUstream s) {
    wait_3ms();
    return 0;
}
