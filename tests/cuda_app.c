/* Loads a libcuda.so.1 lazily (as inference servers do) and calls the driver API a known
 * number of times with known sizes.
 *
 *   cuda_app LIBRARY [LOOPS] [errors|allocs|again|child]
 *
 * Prints "ready" and waits for one byte on stdin; dlopens LIBRARY, prints "loaded" and
 * waits for another byte (so the test can see the agent attach); then makes the calls
 * LOOPS times (default 1; the benchmark uses more), prints "done" and exits. Per loop:
 * 100 cuLaunchKernel + 20 cuLaunchKernelEx, 7 cuGraphLaunch, 10 x cuMemAlloc_v2(1 MiB) +
 * 5 x cuMemAllocAsync(4096), 10 cuMemFree_v2 + 5 cuMemFreeAsync, HtoD 3 x 1000 + async
 * 2 x 500 bytes, DtoH 4 x 256, DtoD 1 x 8, cuMemcpy 2 x 100 + cuMemcpyAsync 1 x 50,
 * 5 cuCtxSynchronize + 5 cuStreamSynchronize. With "errors", after the loops: allocations
 * the stand-in refuses, cuMemAlloc_v2(2 TiB) and cuMemAllocAsync(2 TiB) (out of memory)
 * and cuMemCreate(0 bytes) (invalid value), and ones it grants, 2 x cuMemAllocManaged(4096)
 * and cuMemCreate(4096). With "allocs" (the benchmark's measure of the allocation calls'
 * return probes), each loop is 170 cuMemAlloc_v2(4096) and nothing else. With "again",
 * after "done" it waits for another byte and makes the same calls again, until stdin
 * closes. With "child", the process never loads the library itself: at the first gate it
 * forks; the child prints "child PID", waits for another byte and goes on as above, while
 * the parent waits for it and exits with its status. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*fn)();

static fn sym(void *lib, const char *name) {
    fn f = (fn)dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "missing %s\n", name);
        exit(5);
    }
    return f;
}

static void gate(void) {
    char c;
    if (read(0, &c, 1) != 1) exit(3);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long loops = argc > 2 ? atol(argv[2]) : 1;
    int errors = argc > 3 && strcmp(argv[3], "errors") == 0;
    int allocs = argc > 3 && strcmp(argv[3], "allocs") == 0;
    int again = argc > 3 && strcmp(argv[3], "again") == 0;
    int child = argc > 3 && strcmp(argv[3], "child") == 0;
    printf("ready\n");
    fflush(stdout);
    gate();
    if (child) {
        pid_t pid = fork();
        if (pid < 0) return 7;
        if (pid > 0) {
            int status;
            if (waitpid(pid, &status, 0) != pid) return 7;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 8;
        }
        printf("child %d\n", (int)getpid());
        fflush(stdout);
        gate();
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 4;
    }
    printf("loaded\n");
    fflush(stdout);
    gate();
    fn launch = sym(lib, "cuLaunchKernel"), launch_ex = sym(lib, "cuLaunchKernelEx"),
       graph = sym(lib, "cuGraphLaunch"), alloc = sym(lib, "cuMemAlloc_v2"),
       alloc_async = sym(lib, "cuMemAllocAsync"), mfree = sym(lib, "cuMemFree_v2"),
       free_async = sym(lib, "cuMemFreeAsync"), htod = sym(lib, "cuMemcpyHtoD_v2"),
       htod_async = sym(lib, "cuMemcpyHtoDAsync_v2"), dtoh = sym(lib, "cuMemcpyDtoH_v2"),
       dtod = sym(lib, "cuMemcpyDtoD_v2"), copy = sym(lib, "cuMemcpy"),
       copy_async = sym(lib, "cuMemcpyAsync"), ctx_sync = sym(lib, "cuCtxSynchronize"),
       stream_sync = sym(lib, "cuStreamSynchronize");
    char host[1000];
    uint64_t d;
round:
    for (long l = 0; allocs && l < loops; l++)
        for (int i = 0; i < 170; i++) alloc(&d, (size_t)4096);
    for (long l = 0; !allocs && l < loops; l++) {
        for (int i = 0; i < 100; i++) launch(0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0);
        for (int i = 0; i < 20; i++) launch_ex(0, 0, 0, 0);
        for (int i = 0; i < 7; i++) graph(0, 0);
        for (int i = 0; i < 10; i++) alloc(&d, (size_t)1 << 20);
        for (int i = 0; i < 5; i++) alloc_async(&d, (size_t)4096, 0);
        for (int i = 0; i < 10; i++) mfree(d);
        for (int i = 0; i < 5; i++) free_async(d, 0);
        for (int i = 0; i < 3; i++) htod(d, host, (size_t)1000);
        for (int i = 0; i < 2; i++) htod_async(d, host, (size_t)500, 0);
        for (int i = 0; i < 4; i++) dtoh(host, d, (size_t)256);
        dtod(d, d, (size_t)8);
        for (int i = 0; i < 2; i++) copy(d, d, (size_t)100);
        copy_async(d, d, (size_t)50, 0);
        if (loops == 1) {
            for (int i = 0; i < 5; i++) ctx_sync();
            for (int i = 0; i < 5; i++) stream_sync(0);
        }
    }
    if (errors) {
        fn managed = sym(lib, "cuMemAllocManaged"), create = sym(lib, "cuMemCreate");
        uint64_t h;
        if (alloc(&d, (size_t)1 << 41) != 2 || alloc_async(&d, (size_t)1 << 41, 0) != 2 ||
            create(&h, (size_t)0, 0, 0ull) != 1)
            return 6;
        for (int i = 0; i < 2; i++)
            if (managed(&d, (size_t)4096, 1u) != 0) return 6;
        if (create(&h, (size_t)4096, 0, 0ull) != 0) return 6;
    }
    printf("done\n");
    fflush(stdout);
    if (again) {
        char c;
        if (read(0, &c, 1) == 1) goto round;
    }
    return 0;
}
