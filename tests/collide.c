/* Two threads of one process whose thread ids are equal modulo 65536, both inside a
 * syscall at once (the kernel programs' in-flight slots are indexed by tid & 0xffff).
 *
 *   collide
 *
 * Prints "ready" and waits for one byte on stdin. Then thread A sleeps 800 ms in
 * nanosleep; meanwhile the next thread id is set (ns_last_pid, root) so that thread B gets
 * A's id + 65536, and B sleeps 200 ms. Prints "ok A B" when B got that id (else "miss",
 * and B made no call), then exits. Needs kernel.pid_max above A's id + 65536. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pid_t a_tid;
static volatile int a_started;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    syscall(SYS_nanosleep, &ts, NULL);
}

static void *a_main(void *arg) {
    (void)arg;
    a_tid = (pid_t)syscall(SYS_gettid);
    a_started = 1;
    sleep_ms(800);
    return NULL;
}

static void *b_main(void *arg) {
    pid_t want = *(pid_t *)arg;
    pid_t me = (pid_t)syscall(SYS_gettid);
    if (me == want) sleep_ms(200);
    return (void *)(long)(me == want);
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char gate;
    if (read(0, &gate, 1) != 1) return 3;
    pthread_t a, b;
    pthread_create(&a, NULL, a_main, NULL);
    while (!a_started) usleep(1000);
    usleep(50000); /* A is in nanosleep now */
    pid_t want = a_tid + 65536;
    void *hit = NULL;
    for (int tries = 0; tries < 20 && !hit; tries++) {
        FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
        if (!f) return 4;
        fprintf(f, "%d", want - 1);
        fclose(f);
        pthread_create(&b, NULL, b_main, &want);
        pthread_join(b, &hit);
    }
    pthread_join(a, NULL);
    if (hit) printf("ok %d %d\n", a_tid, want);
    else printf("miss\n");
    fflush(stdout);
    return 0;
}
