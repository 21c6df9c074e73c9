/* Per-operation costs of the C allocation interface, for capi/ops.sh: one loop per
 * operation, timed with CLOCK_MONOTONIC, printing nanoseconds per operation.
 *
 *   pair      malloc(64), one byte written, free: 20 M times
 *   pair4k    the same with malloc(4096)
 *   batch     32 malloc(64), then the 32 frees: 2 M times ("malloc/free" ns each)
 *   calloc    calloc(1, 64), one byte written, free: 20 M times
 *   memalign  posix_memalign(64, 100), one byte written, free: 20 M times
 *   realloc   malloc(20), grown by 4 bytes to 64 with realloc, freed: 5 M times
 *             (ns per realloc)
 *   burst64   1600 malloc(64), each filled, then each read and freed in the same
 *             order: 2 M blocks (ns per block: a structure built and dropped)
 *   burst512  the same with malloc(512)
 *   burst1k   the same with malloc(1024)
 *   burst2k   the same with malloc(2048)
 *   burst4k   the same with malloc(4096)
 *   burst64x10k  burst64 with 10000 blocks at a time: more than a CPU's cache holds
 *   shuffle64x4k  4096 blocks of 64 B freed in a shuffled order, then allocated and
 *             filled again: 4 M blocks (ns per block: a burst past 2048 blocks whose
 *             frees come out of order)
 *   churn-large  8 live blocks of 64-256 KiB (random sizes), one replaced at random
 *             and the new one written whole: 20 000 times (ns per replacement;
 *             buffers of varying sizes)
 *   trim      over 1000 blocks of 16-3000 B of which half were freed: malloc(100),
 *             malloc_trim(0), free: 2000 times (ns per malloc_trim; a server that
 *             trims after each batch of requests)
 *   calloc64m  calloc(1, 64 MiB), one page written, free: 200 times (ns per calloc;
 *             a table of zeros used sparsely)
 *   calloc64m-fill  the same with every page written: 40 times (a buffer of zeros
 *             used whole)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* Keeps the compiler from removing a block it could prove unused. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

int main(int argc, char **argv)
{
    const char *op = argc > 1 ? argv[1] : "pair";
    double t0 = now();
    if (!strcmp(op, "pair") || !strcmp(op, "pair4k") || !strcmp(op, "calloc") ||
        !strcmp(op, "memalign")) {
        long n = 20000000;
        size_t size = strcmp(op, "pair4k") ? 64 : 4096;
        for (long i = 0; i < n; i++) {
            char *p;
            if (op[0] == 'p')
                p = malloc(size);
            else if (op[0] == 'c')
                p = calloc(1, 64);
            else if (posix_memalign((void **)&p, 64, 100))
                p = NULL;
            if (!p)
                return 1;
            escape(p);
            p[3] = 1;
            free(p);
        }
        printf("%s %.2f\n", op, (now() - t0) / n);
    } else if (!strcmp(op, "batch")) {
        long n = 2000000;
        double tm = 0, tf = 0;
        void *v[32];
        for (long i = 0; i < n; i++) {
            double a = now();
            for (int j = 0; j < 32; j++) {
                v[j] = malloc(64);
                escape(v[j]);
            }
            double b = now();
            for (int j = 0; j < 32; j++)
                free(v[j]);
            tf += now() - b;
            tm += b - a;
        }
        printf("batch %.2f/%.2f\n", tm / n / 32, tf / n / 32);
    } else if (!strcmp(op, "realloc")) {
        long n = 5000000;
        for (long i = 0; i < n; i++) {
            char *p = malloc(20);
            for (int s = 21; s <= 64; s += 4) {
                p = realloc(p, s);
                if (!p)
                    return 1;
                escape(p);
                p[s - 1] = 1;
            }
            free(p);
        }
        printf("realloc %.2f\n", (now() - t0) / n / 11);
    } else if (!strcmp(op, "burst64") || !strcmp(op, "burst512") || !strcmp(op, "burst1k") ||
               !strcmp(op, "burst2k") || !strcmp(op, "burst4k") || !strcmp(op, "burst64x10k")) {
        size_t size = !strncmp(op, "burst64", 7) ? 64
                      : !strcmp(op, "burst512")  ? 512
                      : !strcmp(op, "burst2k")   ? 2048
                      : !strcmp(op, "burst4k")   ? 4096
                                                 : 1024;
        int count = strcmp(op, "burst64x10k") ? 1600 : 10000;
        static void *v[10000];
        long rounds = 2000000 / count;
        unsigned long sum = 0;
        for (long r = 0; r < rounds; r++) {
            for (int i = 0; i < count; i++) {
                v[i] = malloc(size);
                if (!v[i])
                    return 1;
                memset(v[i], (int)(r + i), size);
            }
            for (int i = 0; i < count; i++) {
                const unsigned long *w = v[i];
                for (size_t k = 0; k < size / sizeof *w; k++)
                    sum += w[k];
                free(v[i]);
            }
        }
        escape(&sum);
        printf("%s %.2f\n", op, (now() - t0) / (rounds * count));
    } else if (!strcmp(op, "shuffle64x4k")) {
        enum { COUNT = 4096, ROUNDS = 1000 };
        static void *v[COUNT];
        static int order[COUNT];
        unsigned long long x = 88172645463325252ull;
        unsigned long sum = 0;
        for (int i = 0; i < COUNT; i++) {
            if (!(v[i] = malloc(64)))
                return 1;
            memset(v[i], i, 64);
            order[i] = i;
        }
        t0 = now();
        for (int r = 0; r < ROUNDS; r++) {
            for (int i = COUNT - 1; i > 0; i--) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                int j = (int)(x % (unsigned long long)(i + 1));
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            for (int i = 0; i < COUNT; i++)
                free(v[order[i]]);
            for (int i = 0; i < COUNT; i++) {
                if (!(v[i] = malloc(64)))
                    return 1;
                memset(v[i], r, 64);
            }
            sum += ((unsigned char *)v[r % COUNT])[63];
        }
        escape(&sum);
        printf("%s %.2f\n", op, (now() - t0) / ((double)ROUNDS * COUNT));
        for (int i = 0; i < COUNT; i++)
            free(v[i]);
    } else if (!strcmp(op, "churn-large")) {
        enum { LIVE = 8, REPLACEMENTS = 20000 };
        void *v[LIVE] = {0};
        unsigned long long x = 88172645463325252ull;
        for (int i = 0; i < REPLACEMENTS; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int k = (int)(x % LIVE);
            size_t size = (64 << 10) + (size_t)((x >> 20) % (192 << 10));
            free(v[k]);
            v[k] = malloc(size);
            if (!v[k])
                return 1;
            memset(v[k], i, size);
            escape(v[k]);
        }
        for (int k = 0; k < LIVE; k++)
            free(v[k]);
        printf("%s %.2f\n", op, (now() - t0) / REPLACEMENTS);
    } else if (!strcmp(op, "trim")) {
        enum { BLOCKS = 1000, TRIMS = 2000 };
        static void *v[BLOCKS];
        for (int i = 0; i < BLOCKS; i++)
            v[i] = malloc(16 + (size_t)(i * 37) % 3000);
        for (int i = 0; i < BLOCKS; i += 2)
            free(v[i]);
        t0 = now();
        for (int i = 0; i < TRIMS; i++) {
            void *q = malloc(100);
            escape(q);
            malloc_trim(0);
            free(q);
        }
        printf("%s %.2f\n", op, (now() - t0) / TRIMS);
        for (int i = 1; i < BLOCKS; i += 2)
            free(v[i]);
    } else if (!strcmp(op, "calloc64m") || !strcmp(op, "calloc64m-fill")) {
        size_t size = (size_t)64 << 20;
        int fill = !strcmp(op, "calloc64m-fill"), calls = fill ? 40 : 200;
        for (int i = 0; i < calls; i++) {
            unsigned char *p = calloc(1, size);
            if (!p)
                return 1;
            for (size_t off = (size_t)i * 4096 % size; off < size; off += fill ? 4096 : size)
                p[off] += 1;
            escape(p);
            free(p);
        }
        printf("%s %.2f\n", op, (now() - t0) / calls);
    } else {
        fprintf(stderr, "ops: unknown operation %s\n", op);
        return 2;
    }
    return 0;
}
