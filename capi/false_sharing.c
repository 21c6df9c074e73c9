/* Passive false sharing, made visible (Hoard's cache-scratch): the main thread
 * allocates one 8-byte object per worker; each worker frees it, then allocates,
 * writes 500 times and frees an 8-byte object, over and over. Printed: the run's
 * time, how many cache lines hold the main thread's objects, how many hold the
 * objects the workers ended on and the most workers on one line, and how many
 * workers ended on the very object the main thread gave them.
 *
 *   cc -O2 -pthread -o false_sharing capi/false_sharing.c
 *   LD_PRELOAD=... ./false_sharing THREADS [ITERATIONS]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { OBJ = 8, WRITES = 500, MAX_THREADS = 256, LINE = 64 };

static void *given[MAX_THREADS];
static uintptr_t last[MAX_THREADS];
static long iterations;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *worker(void *arg)
{
    long i = (long)arg;
    free(given[i]);
    for (long k = 0; k < iterations; k++) {
        volatile unsigned char *p = malloc(OBJ);
        if (!p) {
            fprintf(stderr, "false_sharing: malloc returned NULL\n");
            exit(1);
        }
        for (int w = 0; w < WRITES; w++)
            for (int b = 0; b < OBJ; b++)
                p[b]++;
        last[i] = (uintptr_t)p;
        free((void *)p);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Distinct cache lines among n addresses (sorted in place), and the most on one. */
static int lines(uintptr_t *v, int n, int *most)
{
    for (int i = 0; i < n; i++)
        v[i] /= LINE;
    qsort(v, (size_t)n, sizeof *v, cmp);
    int distinct = n > 0, run = 1;
    *most = n > 0;
    for (int i = 1; i < n; i++) {
        if (v[i] == v[i - 1]) {
            if (++run > *most)
                *most = run;
        } else {
            distinct++;
            run = 1;
        }
    }
    return distinct;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: %s THREADS(1..%d) [ITERATIONS]\n", argv[0], MAX_THREADS);
        return 2;
    }
    iterations = argc > 2 ? atol(argv[2]) : 400000 / threads;
    uintptr_t g[MAX_THREADS], l[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        given[i] = malloc(OBJ);
        g[i] = (uintptr_t)given[i];
    }
    pthread_t th[MAX_THREADS];
    double t0 = now();
    for (long i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)i) != 0) {
            fprintf(stderr, "false_sharing: pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double ms = (now() - t0) * 1e3;
    int reused = 0;
    for (int i = 0; i < threads; i++) {
        reused += last[i] == g[i];
        l[i] = last[i];
    }
    int gmost, lmost;
    int glines = lines(g, threads, &gmost), llines = lines(l, threads, &lmost);
    printf("threads %d  %.1f ms  given objects on %d lines  final objects on %d lines "
           "(at most %d on one)  workers on the object given %d\n",
           threads, ms, glines, llines, lmost, reused);
    return 0;
}
