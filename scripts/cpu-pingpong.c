/* The cross-CPU cache-line round trip between two CPUs (default 0 and 1), in ns: one thread on
 * each bounces a counter 200 000 times; the median of 5 runs is printed. On a VM the host decides
 * where the two vCPUs run (two threads of one core, two cores of one L3, two L3 domains), and this
 * latency (tens of ns against hundreds) moves every figure of a test that passes packets between
 * the two CPUs (a vhost-user PVP loop above all): the vswitch benchmarks print it beside each run.
 * Build: gcc -O2 -pthread -o cpu-pingpong scripts/cpu-pingpong.c; run: cpu-pingpong [A B] */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 200000
static _Atomic long flag __attribute__((aligned(64)));
static int cpu_a = 0, cpu_b = 1;

static void pin(int c) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(c, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *other(void *arg) {
    (void)arg;
    pin(cpu_a);
    for (long i = 0; i < N; i++) {
        while (atomic_load(&flag) != 2 * i + 1) {}
        atomic_store(&flag, 2 * i + 2);
    }
    return NULL;
}

static double once(void) {
    pthread_t t;
    struct timespec a, b;
    atomic_store(&flag, 0);
    pthread_create(&t, NULL, other, NULL);
    pin(cpu_b);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < N; i++) {
        atomic_store(&flag, 2 * i + 1);
        while (atomic_load(&flag) != 2 * i + 2) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N;
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc == 3) {
        cpu_a = atoi(argv[1]);
        cpu_b = atoi(argv[2]);
    }
    double v[5];
    for (int i = 0; i < 5; i++) v[i] = once();
    qsort(v, 5, sizeof v[0], cmp);
    printf("%.0f\n", v[2]);
    return 0;
}
