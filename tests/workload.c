/* Test workload with exactly known syscalls (issued through syscall(2), so libc does not
 * substitute other calls).
 *
 *   workload GETPPID NANOSLEEP SLEEP_US [fork | invalid=N]
 *
 * Prints "ready" and blocks until one byte arrives on stdin (so the test can register the
 * PID first), then makes GETPPID getppid calls and NANOSLEEP nanosleep calls of SLEEP_US
 * microseconds -- in a forked child when "fork" is given -- prints "done" and exits. With
 * "invalid=N" it also calls N distinct syscall numbers no kernel has (1000, 1001, ...),
 * each failing with ENOSYS. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void calls(long n_getppid, long n_sleep, long sleep_us) {
    for (long i = 0; i < n_getppid; i++) syscall(SYS_getppid);
    struct timespec ts = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
    for (long i = 0; i < n_sleep; i++) syscall(SYS_nanosleep, &ts, NULL);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: workload GETPPID NANOSLEEP SLEEP_US [fork]\n");
        return 2;
    }
    long n_getppid = atol(argv[1]), n_sleep = atol(argv[2]), sleep_us = atol(argv[3]);
    int do_fork = argc > 4 && strcmp(argv[4], "fork") == 0;
    long invalid = argc > 4 && strncmp(argv[4], "invalid=", 8) == 0 ? atol(argv[4] + 8) : 0;
    printf("ready\n");
    fflush(stdout);
    char gate;
    if (read(0, &gate, 1) != 1) return 3;
    if (do_fork) {
        pid_t child = fork();
        if (child < 0) return 4;
        if (child == 0) {
            calls(n_getppid, n_sleep, sleep_us);
            _exit(0);
        }
        int status;
        waitpid(child, &status, 0);
    } else {
        calls(n_getppid, n_sleep, sleep_us);
    }
    for (long i = 0; i < invalid; i++) syscall(1000 + i);
    printf("done\n");
    fflush(stdout);
    return 0;
}
