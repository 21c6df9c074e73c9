/* Exercises every function libcpuslab_preload.so exports, error cases included, and
 * the situations a C allocator must survive: calls before any constructor, threads
 * that are exiting after their thread-local destructors ran, fork handlers and forked
 * children, blocks glibc's malloc served (freed, resized and measured through
 * cpuslab's functions), glibc's internal names (__libc_malloc, __libc_free, ...)
 * called directly, and heap corruption: double and interior frees abort, as glibc's
 * do.
 *
 * Usage: capi_test cpuslab   (run with LD_PRELOAD=libcpuslab_preload.so)
 *        capi_test glibc     (no preload: checks that the expectations are glibc's)
 *
 * The checks that only hold for cpuslab (blocks outside glibc's heap, glibc 2.38's
 * aligned_alloc, malloc_trim's result, the malloc_stats report and, with
 * CPUSLAB_STATS=1, the report at exit) run in the first mode only. Prints "capi_test: ok (N checks)" and exits 0, or names the failed check and
 * exits 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* glibc's internal names of its allocator's functions, which programs call to reach
 * "the real malloc": under LD_PRELOAD they are cpuslab's (as tcmalloc's and
 * mimalloc's libraries define them too), so that their blocks and free() meet. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
/* glibc's own malloc and free, looked up in libc itself (its own scope, past any
 * preloaded library): what a library bound to glibc directly (RTLD_DEEPBIND) gets. */
static void *(*glibc_malloc)(size_t);
static void (*glibc_free)(void *);
/* Registers a C++-style thread_local destructor (glibc). */
extern int __cxa_thread_atexit_impl(void (*)(void *), void *, void *);
extern void *__dso_handle;
/* Start of glibc's brk heap: just past the program's data. */
extern char end;

static int cpuslab_mode;
static int checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            fprintf(stderr, "capi_test: %s:%d: check failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                                \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Sizes the compiler cannot see, so that it neither warns about nor reasons over
 * impossible requests. */
static size_t opaque(size_t x) {
    volatile size_t v = x;
    return v;
}

#define ALIGNED(p, a) (((uintptr_t)(p) & ((uintptr_t)(a)-1)) == 0)

/* Whether `p` lies in glibc's main (brk) heap, where glibc's malloc serves the main
 * thread's small blocks. cpuslab's blocks never do. */
static int in_brk_heap(const void *p) {
    return (const char *)p >= &end && (const char *)p < (const char *)sbrk(0);
}

static void fill(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(seed + i * 131);
}

static int intact(const void *p, size_t n, unsigned seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed + i * 131))
            return 0;
    return 1;
}

/* ---- before any constructor: the executable's .preinit_array runs before every
 * shared library's initialiser, cpuslab's included. */

static void *early_block;
static size_t early_errno_kept;

static void early(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    errno = 4321;
    void *a = malloc(10);
    void *b = calloc(4, 100);
    a = realloc(a, 3000);
    free(b);
    early_errno_kept = errno == 4321;
    fill(a, 3000, 7);
    early_block = a;
}

__attribute__((section(".preinit_array"), used)) static void (*preinit)(int, char **, char **) =
    early;

static void test_early(void) {
    CHECK(early_block != NULL);
    CHECK(early_errno_kept);
    CHECK(intact(early_block, 3000, 7));
    if (cpuslab_mode)
        CHECK(!in_brk_heap(early_block));
    free(early_block);
}

/* ---- malloc, free, cfree, malloc_usable_size */

static void test_malloc(void) {
    void *p[64];
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)1 << (i % 24);
        n += i;
        p[i] = malloc(n);
        CHECK(p[i] != NULL);
        CHECK(ALIGNED(p[i], 16));
        CHECK(malloc_usable_size(p[i]) >= n);
        fill(p[i], n, i);
        if (cpuslab_mode)
            CHECK(!in_brk_heap(p[i]));
    }
    for (int i = 0; i < 64; i++) {
        size_t n = ((size_t)1 << (i % 24)) + i;
        CHECK(intact(p[i], n, i));
        free(p[i]);
    }

    /* malloc(0): a unique, freeable block. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 != NULL && z2 != NULL && z1 != z2);
    CHECK(ALIGNED(z1, 16) && ALIGNED(z2, 16));
    free(z1);
    free(z2);

    /* free(NULL), malloc_usable_size(NULL). */
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);

    /* Failures: NULL and ENOMEM. */
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque((size_t)PTRDIFF_MAX + 1)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX - 4095)) == NULL && errno == ENOMEM);

    /* Success and free leave errno alone. */
    errno = 9876;
    void *q = malloc(100);
    CHECK(q != NULL && errno == 9876);
    free(q);
    CHECK(errno == 9876);
    q = malloc(10 << 20);
    CHECK(q != NULL && errno == 9876);
    free(q);
    CHECK(errno == 9876);

    /* cfree is no longer declared by glibc's headers; old binaries still call it
     * (as cfree@GLIBC_2.2.5, which an unversioned definition interposes). glibc's is
     * found only by asking for that version. */
    void (*cfree_fn)(void *) =
        cpuslab_mode ? (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree")
                     : (void (*)(void *))dlvsym(RTLD_DEFAULT, "cfree", "GLIBC_2.2.5");
    CHECK(cfree_fn != NULL);
    q = malloc(33);
    CHECK(q != NULL);
    cfree_fn(q);
    cfree_fn(NULL);
}

/* ---- calloc */

static void test_calloc(void) {
    static const size_t sizes[] = {1, 16, 100, 1000, 4096, 40000, 300000, 5 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        /* Dirty blocks of this size first, so calloc must clear reused memory. */
        for (int k = 0; k < 4; k++) {
            void *d = malloc(n);
            CHECK(d != NULL);
            memset(d, 0xEE, n);
            free(d);
        }
        unsigned char *c = calloc(n, 1);
        CHECK(c != NULL && ALIGNED(c, 16));
        for (size_t j = 0; j < n; j++)
            if (c[j] != 0)
                CHECK(!"calloc memory is zero");
        free(c);
        c = calloc(1, n);
        CHECK(c != NULL && c[0] == 0 && c[n - 1] == 0);
        free(c);
    }
    void *c0 = calloc(0, 0), *c1 = calloc(0, 100), *c2 = calloc(100, 0);
    CHECK(c0 && c1 && c2 && c0 != c1 && c1 != c2);
    free(c0), free(c1), free(c2);
    /* Overflow of n * size. */
    errno = 0;
    CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(opaque((size_t)1 << 33), (size_t)1 << 33) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(1, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
}

/* ---- realloc, reallocarray */

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n). */
    unsigned char *p = realloc(NULL, 24);
    CHECK(p != NULL && ALIGNED(p, 16));
    fill(p, 24, 3);
    /* Grow and shrink across every kind of block; contents survive. */
    static const size_t steps[] = {25, 100, 1000, 5000, 40000, 200000, 5 << 20, 9 << 20,
                                   100000, 300, 17, 1};
    size_t have = 24;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t n = steps[i];
        size_t keep = have < n ? have : n;
        p = realloc(p, n);
        CHECK(p != NULL && ALIGNED(p, 16));
        CHECK(malloc_usable_size(p) >= n);
        CHECK(intact(p, keep, 3));
        fill(p, n, 3);
        have = n;
    }
    /* A string grown a byte at a time through every small class and shrunk back:
     * each class boundary moves it (the contents and errno kept), within one it stays. */
    unsigned char *g = realloc(NULL, 1);
    g[0] = 0;
    for (size_t n = 2; n <= 2048; n++) {
        errno = 1234;
        unsigned char *h = realloc(g, n);
        CHECK(h != NULL && ALIGNED(h, 16) && errno == 1234);
        CHECK(malloc_usable_size(h) >= n);
        for (size_t i = 0; i < n - 1; i += 97)
            CHECK(h[i] == (unsigned char)i);
        CHECK(h[n - 2] == (unsigned char)(n - 2));
        h[n - 1] = (unsigned char)(n - 1);
        g = h;
    }
    for (size_t n = 2047; n >= 1; n--) {
        g = realloc(g, n);
        CHECK(g != NULL && g[n - 1] == (unsigned char)(n - 1) && g[0] == 0);
    }
    free(g);
    /* Failure: NULL with ENOMEM, the block untouched. */
    errno = 0;
    CHECK(realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(realloc(p, opaque((size_t)PTRDIFF_MAX + 1)) == NULL && errno == ENOMEM);
    CHECK(intact(p, have, 3));
    /* realloc(p, 0) frees p and returns NULL (glibc). */
    errno = 0;
    CHECK(realloc(p, 0) == NULL);
    CHECK(errno == 0);

    /* reallocarray */
    p = reallocarray(NULL, 10, 10);
    CHECK(p != NULL);
    fill(p, 100, 5);
    unsigned char *q = reallocarray(p, 100, 100);
    CHECK(q != NULL && intact(q, 100, 5));
    errno = 0;
    CHECK(reallocarray(q, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    CHECK(intact(q, 100, 5));
    errno = 0;
    CHECK(reallocarray(q, opaque((size_t)1 << 40), (size_t)1 << 40) == NULL && errno == ENOMEM);
    CHECK(intact(q, 100, 5));
    CHECK(reallocarray(q, 0, 10) == NULL); /* realloc(q, 0): freed */
}

/* ---- posix_memalign, aligned_alloc, memalign, valloc, pvalloc */

static void test_aligned(void) {
    long page = sysconf(_SC_PAGESIZE);
    static const size_t sizes[] = {0, 1, 24, 100, 4096, 5000, 70000, 5 << 20};
    for (size_t align = sizeof(void *); align <= ((size_t)1 << 24); align <<= 1) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i];
            void *p = (void *)1;
            errno = 777;
            CHECK(posix_memalign(&p, align, n) == 0);
            CHECK(errno == 777);
            CHECK(p != NULL && ALIGNED(p, align) && ALIGNED(p, 16));
            CHECK(malloc_usable_size(p) >= n);
            fill(p, n, (unsigned)align);
            void *a = aligned_alloc(align, n);
            CHECK(a != NULL && ALIGNED(a, align));
            void *m = memalign(align, n);
            CHECK(m != NULL && ALIGNED(m, align));
            CHECK(intact(p, n, (unsigned)align));
            free(p), free(a), free(m);
        }
    }
    /* posix_memalign: EINVAL for a bad alignment, *memptr and errno untouched. */
    static const size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 100, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)&checks;
        errno = 555;
        CHECK(posix_memalign(&p, bad[i], 16) == EINVAL);
        CHECK(p == (void *)&checks && errno == 555);
    }
    /* posix_memalign: ENOMEM for an impossible size. */
    void *p = (void *)&checks;
    CHECK(posix_memalign(&p, 64, opaque(SIZE_MAX)) == ENOMEM && p == (void *)&checks);
    CHECK(posix_memalign(&p, (size_t)1 << 62, 1) == ENOMEM && p == (void *)&checks);
    CHECK(posix_memalign(&p, (SIZE_MAX >> 1) + 1, 1) == ENOMEM && p == (void *)&checks);

    /* memalign: small alignments are malloc's, others round up to a power of two. */
    void *m = memalign(0, 10);
    CHECK(m != NULL && ALIGNED(m, 16));
    free(m);
    m = memalign(3, 10);
    CHECK(m != NULL && ALIGNED(m, 16));
    free(m);
    m = memalign(48, 10);
    CHECK(m != NULL && ALIGNED(m, 64));
    free(m);
    m = memalign(3000, 10);
    CHECK(m != NULL && ALIGNED(m, 4096));
    free(m);
    errno = 0;
    CHECK(memalign((SIZE_MAX >> 1) + 2, 1) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(memalign(SIZE_MAX, 1) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(memalign(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);

    /* aligned_alloc: glibc 2.38 and ISO C17 reject alignments that are not powers of
     * two with EINVAL (glibc 2.36 treated them as memalign does). */
    if (cpuslab_mode) {
        errno = 0;
        CHECK(aligned_alloc(0, 16) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(aligned_alloc(3, 16) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(aligned_alloc(48, 16) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(aligned_alloc(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);

    /* valloc, pvalloc: page-aligned; pvalloc rounds the size to whole pages. */
    void *v = valloc(100);
    CHECK(v != NULL && ALIGNED(v, page) && malloc_usable_size(v) >= 100);
    free(v);
    v = valloc(0);
    CHECK(v != NULL && ALIGNED(v, page));
    free(v);
    v = pvalloc(100);
    CHECK(v != NULL && ALIGNED(v, page) && malloc_usable_size(v) >= (size_t)page);
    memset(v, 1, page);
    free(v);
    v = pvalloc(page + 1);
    CHECK(v != NULL && ALIGNED(v, page) && malloc_usable_size(v) >= 2 * (size_t)page);
    free(v);
    errno = 0;
    CHECK(valloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(pvalloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(pvalloc(opaque(SIZE_MAX - 2 * page)) == NULL && errno == ENOMEM);
}

/* ---- blocks glibc's malloc served */

static void find_glibc(void) {
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    CHECK(libc != NULL);
    glibc_malloc = (void *(*)(size_t))dlsym(libc, "malloc");
    glibc_free = (void (*)(void *))dlsym(libc, "free");
    CHECK(glibc_malloc != NULL && glibc_free != NULL);
}

static void test_foreign(void) {
    find_glibc();
    void *g = glibc_malloc(100);
    CHECK(g != NULL);
    if (cpuslab_mode)
        CHECK(in_brk_heap(g));
    CHECK(malloc_usable_size(g) >= 100);
    free(g);

    /* realloc moves a glibc block into cpuslab, contents intact. */
    unsigned char *r = glibc_malloc(50);
    CHECK(r != NULL);
    fill(r, 50, 11);
    r = realloc(r, 3000);
    CHECK(r != NULL && intact(r, 50, 11));
    if (cpuslab_mode)
        CHECK(!in_brk_heap(r));
    free(r);
    r = glibc_malloc(5000);
    fill(r, 5000, 12);
    r = realloc(r, 20);
    CHECK(r != NULL && intact(r, 20, 12));
    free(r);

    /* Failure leaves the glibc block intact; realloc(p, 0) frees it. */
    r = glibc_malloc(64);
    fill(r, 64, 13);
    errno = 0;
    CHECK(realloc(r, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    CHECK(intact(r, 64, 13));
    CHECK(realloc(r, 0) == NULL);

    /* Many at once, so glibc's own heap is exercised (and checked by glibc). */
    void *many[200];
    for (int i = 0; i < 200; i++) {
        many[i] = glibc_malloc(16 + i * 8);
        fill(many[i], 16 + i * 8, i);
    }
    for (int i = 0; i < 200; i += 2)
        free(many[i]);
    for (int i = 1; i < 200; i += 2) {
        CHECK(intact(many[i], 16 + i * 8, i));
        free(many[i]);
    }
    /* glibc can still allocate from its heap after all that. */
    g = glibc_malloc(1000);
    CHECK(g != NULL);
    glibc_free(g);
}

/* ---- glibc's internal names: one allocator with malloc and free, whichever name
 * allocates and whichever frees (glibc's own free aborted on a block of cpuslab's:
 * "free(): invalid pointer"). */

static void test_libc_names(void) {
    for (int round = 0; round < 100; round++) {
        unsigned char *p = malloc(64);
        fill(p, 64, 21);
        __libc_free(p);
        p = __libc_malloc(100);
        CHECK(p != NULL);
        if (cpuslab_mode)
            CHECK(!in_brk_heap(p));
        fill(p, 100, 22);
        CHECK(malloc_usable_size(p) >= 100);
        p = realloc(p, 3000);
        CHECK(p != NULL && intact(p, 100, 22));
        free(p);
        unsigned char *z = __libc_calloc(10, 10);
        CHECK(z != NULL);
        for (int i = 0; i < 100; i++)
            CHECK(z[i] == 0);
        z = __libc_realloc(z, 10000);
        CHECK(z != NULL);
        free(z);
        void *a = __libc_memalign(256, 10);
        CHECK(a != NULL && ALIGNED(a, 256));
        __libc_free(a);
        long page = sysconf(_SC_PAGESIZE);
        void *v = __libc_valloc(10);
        CHECK(v != NULL && ALIGNED(v, page));
        free(v);
        v = __libc_pvalloc(page + 1);
        CHECK(v != NULL && ALIGNED(v, page) && malloc_usable_size(v) >= (size_t)(2 * page));
        __libc_free(v);
        errno = 0;
        CHECK(__libc_malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    }
}

/* ---- threads: many allocating at once, blocks freed by other threads, and
 * allocation from destructors that run while a thread exits. */

#define NTHREADS 4
#define HANDOFF 1024

static void *handoff[NTHREADS][HANDOFF];
static pthread_key_t key;
static int key_rounds[NTHREADS];
static int dtor_ok = 1;

static void key_destructor(void *v) {
    /* Runs after the thread's C++-style thread_local destructors; allocates and frees,
     * and re-arms itself a few times as glibc allows. */
    int idx = *(int *)v;
    free(v);
    void *p = malloc(200 + idx);
    void *q = calloc(10, 10);
    if (!p || !q)
        dtor_ok = 0;
    free(p);
    free(q);
    if (++key_rounds[idx] < 3) {
        int *again = malloc(sizeof *again);
        *again = idx;
        pthread_setspecific(key, again);
    }
}

static void thread_local_dtor(void *v) {
    /* A C++ thread_local destructor: frees its object, allocates once more. */
    free(v);
    char *s = strdup("thread_local destructor");
    if (!s)
        dtor_ok = 0;
    free(s);
}

static void *worker(void *arg) {
    int idx = (int)(intptr_t)arg;
    unsigned x = 12345u + idx;
    void *live[256] = {0};
    for (int i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        int slot = (x >> 8) & 255;
        size_t n = (x >> 16) % ((x & 7) == 0 ? 70000 : 600);
        if (live[slot]) {
            free(live[slot]);
            live[slot] = NULL;
        } else if ((x & 3) == 0 && i % 7 == 0) {
            live[slot] = realloc(NULL, n);
        } else {
            live[slot] = malloc(n);
            if (live[slot] && n)
                ((char *)live[slot])[n - 1] = 1;
        }
    }
    for (int i = 0; i < 256; i++)
        free(live[i]);
    /* Blocks for the next thread to free. */
    for (int i = 0; i < HANDOFF; i++)
        handoff[idx][i] = malloc(8 + (i % 300));
    int *k = malloc(sizeof *k);
    *k = idx;
    pthread_setspecific(key, k);
    __cxa_thread_atexit_impl(thread_local_dtor, malloc(77), __dso_handle);
    return NULL;
}

static void *freer(void *arg) {
    int idx = (int)(intptr_t)arg;
    for (int i = 0; i < HANDOFF; i++)
        free(handoff[idx][i]);
    return NULL;
}

static void *short_lived(void *arg) {
    (void)arg;
    void *p = malloc(500);
    __cxa_thread_atexit_impl(thread_local_dtor, malloc(33), __dso_handle);
    free(p);
    return NULL;
}

static void test_threads(void) {
    CHECK(pthread_key_create(&key, key_destructor) == 0);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    CHECK(dtor_ok);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(key_rounds[i] == 3);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, freer, (void *)(intptr_t)((i + 1) % NTHREADS)) == 0);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    /* Detached threads that exit while the main thread goes on allocating. */
    pthread_attr_t attr;
    CHECK(pthread_attr_init(&attr) == 0);
    CHECK(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0);
    for (int i = 0; i < 32; i++) {
        CHECK(pthread_create(&t[0], &attr, short_lived, NULL) == 0);
        free(malloc(64 * i));
    }
    pthread_attr_destroy(&attr);
}

/* ---- fork: handlers that allocate, children that allocate, while other threads
 * allocate in the parent. */

static volatile int stop_spinners;
static int atfork_calls[3];

static void prepare(void) {
    void *p = malloc(1000);
    atfork_calls[0] += p != NULL;
    free(p);
}

static void parent(void) {
    void *p = calloc(1, 5000);
    atfork_calls[1] += p != NULL;
    free(p);
}

static void child(void) {
    void *p = malloc(100000);
    atfork_calls[2] += p != NULL;
    free(p);
}

static void *spinner(void *arg) {
    (void)arg;
    unsigned x = 99;
    while (!stop_spinners) {
        x = x * 1103515245u + 12345u;
        void *p = malloc((x >> 16) % 5000);
        void *q = malloc((x >> 8) % 200000);
        free(p);
        free(q);
    }
    return NULL;
}

static void test_fork(void) {
    CHECK(pthread_atfork(prepare, parent, child) == 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, spinner, NULL) == 0);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            /* The child's only thread: the allocator must be usable at once. The
             * parent never runs the child handler, so this is its first call. */
            int ok = atfork_calls[2] == 1;
            for (int i = 0; i < 2000 && ok; i++) {
                void *p = malloc(i * 37 % 70000);
                void *q = realloc(p, i * 11 % 3000 + 1);
                ok = q != NULL;
                free(q);
            }
            _exit(ok ? 0 : 3);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "capi_test: fork round %d: child status %#x\n", round, status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop_spinners = 1;
    for (int i = 0; i < 2; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    CHECK(atfork_calls[0] == 20 && atfork_calls[1] == 20);
}

/* ---- bad frees: a double free and interior frees abort (SIGABRT), as glibc's do
 * ("free(): double free detected in tcache 2", "free(): invalid size"); cpuslab's
 * stderr is then one line "cpuslab: ...". Each runs in a forked child. */

/* What a child of run_bad did: its wait status and stderr. */
struct bad_result {
    int status;
    char err[4096];
};

/* Runs `bad(arg)` in a child whose stderr goes to a pipe; a child that survives exits
 * 0 after printing "survived". */
static void run_bad(void (*bad)(size_t), size_t arg, struct bad_result *r) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 2) != 2)
            _exit(4);
        bad(arg);
        fprintf(stderr, "survived\n");
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t got;
    while ((got = read(fds[0], r->err + n, sizeof r->err - 1 - n)) > 0)
        n += (size_t)got;
    r->err[n] = 0;
    close(fds[0]);
    CHECK(waitpid(pid, &r->status, 0) == pid);
}

/* Whether `err` holds exactly one line starting "cpuslab:", and it contains `want`. */
static int one_cpuslab_line(const char *err, const char *want) {
    int lines = 0, found = 0;
    for (const char *l = err; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        if (strncmp(l, "cpuslab:", 8) == 0) {
            lines++;
            const char *e = strchr(l, '\n');
            size_t len = e ? (size_t)(e - l) : strlen(l);
            char line[512];
            snprintf(line, sizeof line, "%.*s", (int)len, l);
            found |= strstr(line, want) != NULL;
        }
    }
    return lines == 1 && found;
}

/* Pointers hidden from the compiler, which would refuse the bad frees below. */
static volatile uintptr_t hidden;

/* free(p) twice with another block of its slab live, then malloc_trim: the second
 * copy reaches the slab, whose free map has the first (glibc: at the second free). */
static void double_free_then_trim(size_t size) {
    char *p = malloc(size), *keep = malloc(size);
    fill(p, size, 1);
    hidden = (uintptr_t)p;
    free(p);
    free((void *)hidden);
    malloc_trim(0);
    char *a = malloc(size), *b = malloc(size);
    fprintf(stderr, "got %p %p %p\n", (void *)a, (void *)b, (void *)keep);
}

/* free(a); free(b); free(a) (how2heap's fastbin_dup): glibc's tcache key catches it
 * at the third free ("free(): double free detected in tcache 2"), cpuslab's push
 * check of the two entries on top too. Uncaught, the next three mallocs hand `a`
 * out twice. */
static void double_free_one_apart(size_t size) {
    char *a = malloc(size), *b = malloc(size), *keep = malloc(size);
    fill(a, size, 1);
    fill(b, size, 2);
    hidden = (uintptr_t)a;
    free(a);
    free(b);
    free((void *)hidden);
    char *x = malloc(size), *y = malloc(size), *z = malloc(size);
    fprintf(stderr, "got %p %p %p %p\n", (void *)x, (void *)y, (void *)z, (void *)keep);
}

/* free(p + 16) of a zeroed block: glibc reads a size of 0 there ("free(): invalid
 * size"); cpuslab finds it is no object start. */
static void interior_free(size_t size) {
    char *p = calloc(1, size), *keep = malloc(size);
    hidden = (uintptr_t)p + 16;
    free((void *)hidden);
    char *a = malloc(size);
    fprintf(stderr, "got %p %p %p\n", (void *)a, (void *)p, (void *)keep);
}

static void test_bad_frees(void) {
    static const size_t sizes[] = {24, 48, 64, 100, 200, 256, 1000, 3000, 5000};
    struct bad_result r;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        run_bad(double_free_then_trim, sizes[i], &r);
        if (!(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT))
            fprintf(stderr, "double free of %zu: status %#x\n%s", sizes[i], r.status, r.err);
        CHECK(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT);
        if (cpuslab_mode)
            CHECK(one_cpuslab_line(r.err, "double free of"));

        run_bad(double_free_one_apart, sizes[i], &r);
        if (!(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT))
            fprintf(stderr, "free(a); free(b); free(a) of %zu: status %#x\n%s", sizes[i],
                    r.status, r.err);
        CHECK(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT);
        if (cpuslab_mode)
            CHECK(one_cpuslab_line(r.err, "double free of"));

        run_bad(interior_free, sizes[i], &r);
        if (!(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT))
            fprintf(stderr, "free(p + 16) of %zu: status %#x\n%s", sizes[i], r.status, r.err);
        CHECK(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT);
        if (cpuslab_mode)
            CHECK(one_cpuslab_line(r.err, "invalid free of"));
    }
}

/* ---- malloc_trim, malloc_stats */

static void test_trim_and_stats(void) {
    void *big[64];
    for (int i = 0; i < 64; i++) {
        big[i] = malloc(100000);
        CHECK(big[i] != NULL);
        memset(big[i], 1, 100000);
    }
    for (int i = 0; i < 64; i++)
        free(big[i]);
    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1);
    if (cpuslab_mode)
        CHECK(r == 1);

    /* malloc_stats writes to stderr: catch it in a file. */
    char path[] = "/tmp/capi_test_stats_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    CHECK(saved >= 0 && dup2(fd, 2) == 2);
    malloc_stats();
    CHECK(dup2(saved, 2) == 2);
    close(saved);
    char buf[65536];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    CHECK(n > 0);
    buf[n] = 0;
    if (cpuslab_mode) {
        CHECK(strstr(buf, "cpuslab: served pid") != NULL);
        CHECK(strstr(buf, "slabinfo - version: 2.1") != NULL);
        CHECK(strstr(buf, "kmalloc-64 ") != NULL);
        CHECK(strstr(buf, "Node 0, zone   Normal") != NULL);
    } else {
        CHECK(strstr(buf, "Arena 0:") != NULL);
    }
}

/* ---- bad pointers to large and huge blocks abort with one cpuslab line (cpuslab
 * mode): an interior pointer once freed a whole large block, and a double free of a
 * huge block went to glibc's free, as did a pointer deep inside a huge block or on
 * the stack (glibc's free then read a "size" from the block's data or the caller's
 * frames, and aborted or crashed by what it found). */

/* A pointer the compiler cannot follow, so that it neither warns about nor removes
 * the deliberate misuse below. */
static void *launder(void *p) {
    void *volatile v = p;
    return v;
}

enum bad_op {
    INTERIOR_FREE,
    DOUBLE_FREE,
    INTERIOR_REALLOC,
    INTERIOR_REALLOC_SAME,
    INTERIOR_USABLE,
    FREED_USABLE,
    /* A pointer a megabyte into the block. */
    DEEP_FREE,
    /* The address of a local of the caller's frame (the block is not used). */
    STACK_FREE,
    /* The same on a thread of the program's (the address is the thread's). */
    THREAD_STACK_FREE
};

/* THREAD_STACK_FREE's thread: frees a local of its own. */
static void *free_own_local(void *arg) {
    char local[64];
    memset(local, (int)(intptr_t)arg, sizeof local);
    free(launder(local + 16));
    return NULL;
}

/* In a forked child whose stderr goes to a file, does `op` on a block of `size`
 * bytes; checks that the child died of SIGABRT after writing exactly one line, a
 * `cpuslab:` line that contains `want` and the address it was given. */
static void expect_abort(size_t size, enum bad_op op, const char *want) {
    char path[] = "/tmp/capi_test_abort_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    char *p = malloc(size);
    CHECK(p != NULL);
    memset(p, 1, size);
    char local[64];
    memset(local, 7, sizeof local);
    char *bad = op == DOUBLE_FREE || op == FREED_USABLE ? p
                : op == DEEP_FREE                       ? p + opaque(1 << 20)
                : op == STACK_FREE                      ? local + opaque(16)
                                                        : p + opaque(16);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (dup2(fd, 2) != 2)
            _exit(4);
        switch (op) {
        case INTERIOR_FREE:
            free(launder(bad));
            break;
        case DOUBLE_FREE:
            free(launder(p));
            free(launder(p));
            break;
        case INTERIOR_REALLOC:
            free(realloc(launder(bad), size * 2));
            break;
        case INTERIOR_REALLOC_SAME:
            /* A size the block's class holds: realloc's in-place case. */
            free(realloc(launder(bad), size));
            break;
        case INTERIOR_USABLE:
            printf("%zu\n", malloc_usable_size(launder(bad)));
            break;
        case FREED_USABLE:
            free(launder(p));
            printf("%zu\n", malloc_usable_size(launder(p)));
            break;
        case DEEP_FREE:
        case STACK_FREE:
            free(launder(bad));
            break;
        case THREAD_STACK_FREE: {
            pthread_t t;
            if (pthread_create(&t, NULL, free_own_local, (void *)(intptr_t)7) == 0)
                pthread_join(t, NULL);
            break;
        }
        }
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    CHECK(n >= 0);
    buf[n] = 0;
    char addr[32];
    /* The thread's local has an address only the child knew. */
    snprintf(addr, sizeof addr, "%p", op == THREAD_STACK_FREE ? (void *)"" : (void *)bad);
    if (op == THREAD_STACK_FREE)
        addr[0] = 0;
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) ||
        strncmp(buf, "cpuslab: ", 9) != 0 || strchr(buf, '\n') != buf + n - 1 ||
        !strstr(buf, want) || !strstr(buf, addr))
        fprintf(stderr, "capi_test: size %zu op %d: status %#x, want \"%s\" at %s:\n%s",
                size, (int)op, status, want, addr, buf);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(strncmp(buf, "cpuslab: ", 9) == 0 && strchr(buf, '\n') == buf + n - 1);
    CHECK(strstr(buf, want) != NULL && strstr(buf, addr) != NULL);
    free(p);
}

static void test_bad_pointers(void) {
    size_t small = 100, large = 100000, huge = (size_t)8 << 20;
    expect_abort(small, INTERIOR_REALLOC, "realloc(): invalid pointer");
    expect_abort(small, INTERIOR_REALLOC_SAME, "realloc(): invalid pointer");
    expect_abort(large, INTERIOR_FREE, "free(): invalid pointer");
    expect_abort(large, DOUBLE_FREE, "free(): double free");
    expect_abort(large, INTERIOR_REALLOC, "realloc(): invalid pointer");
    expect_abort(large, INTERIOR_USABLE, "malloc_usable_size(): invalid pointer");
    expect_abort(huge, INTERIOR_FREE, "free(): invalid pointer");
    expect_abort(huge, DOUBLE_FREE, "free(): double free");
    expect_abort(huge, INTERIOR_REALLOC, "realloc(): invalid pointer");
    expect_abort(huge, INTERIOR_USABLE, "malloc_usable_size(): invalid pointer");
    expect_abort(huge, FREED_USABLE, "malloc_usable_size(): invalid pointer");
    expect_abort(huge, DEEP_FREE, "free(): invalid pointer");
    expect_abort(small, STACK_FREE, "on the thread's stack");
    expect_abort(small, THREAD_STACK_FREE, "on the thread's stack");
}

/* ---- the CPUSLAB_STATS report at exit (cpuslab mode with CPUSLAB_STATS=1) */

/* The library's private copy of stderr: a close-on-exec descriptor above 2 open on
 * the same file as stderr. */
static int stats_fd(void) {
    struct stat err, st;
    CHECK(fstat(2, &err) == 0);
    for (int fd = 3; fd < 1024; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && (flags & FD_CLOEXEC) && fstat(fd, &st) == 0 &&
            st.st_dev == err.st_dev && st.st_ino == err.st_ino)
            return fd;
    }
    return -1;
}

static void test_stats_at_exit(void) {
    int copy = stats_fd();
    CHECK(copy >= 3);

    /* A child closes the copy and opens a file of its own under the same number:
     * the report must go to stderr, never into that file. */
    char path[] = "/tmp/capi_test_reuse_XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    unlink(path);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(copy);
        if (dup2(file, copy) != copy)
            _exit(4);
        exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(lseek(file, 0, SEEK_END) == 0);
    close(file);

    /* A child whose stderr is a pipe nobody reads: writing the report must not kill it
     * with SIGPIPE. */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        if (dup2(pipefd[1], 2) != 2 || dup2(pipefd[1], copy) != copy)
            _exit(4);
        exit(0);
    }
    close(pipefd[0]);
    close(pipefd[1]);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "cpuslab") && strcmp(argv[1], "glibc"))) {
        fprintf(stderr, "usage: capi_test cpuslab|glibc\n");
        return 2;
    }
    cpuslab_mode = strcmp(argv[1], "cpuslab") == 0;
    test_early();
    test_malloc();
    test_calloc();
    test_realloc();
    test_aligned();
    test_foreign();
    test_libc_names();
    test_threads();
    test_fork();
    test_trim_and_stats();
    if (cpuslab_mode)
        test_bad_pointers();
    test_bad_frees();
    if (cpuslab_mode && getenv("CPUSLAB_STATS"))
        test_stats_at_exit();
    printf("capi_test: ok (%d checks)\n", checks);
    return 0;
}
