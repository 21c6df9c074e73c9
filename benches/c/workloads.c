/*
 * C workloads for the cpuslab suite: the classic allocator benchmark patterns,
 * written from their published descriptions, run under LD_PRELOAD of each
 * allocator (or none, for glibc).
 *
 *   cc -O2 -pthread -o workloads benches/c/workloads.c
 *   ./workloads <workload> <threads> <scale>
 *   ./workloads --list
 *
 * Every block gets a pattern derived from a per-block tag, written on
 * allocation and checked before it is freed; every thread adds a digest of
 * each block it allocates and of each block it frees, and the two totals must
 * agree at the end (a block lost or handed out twice shows up there even if
 * its contents look right). A failed check prints why and exits with status 3.
 *
 * The program times the measured part itself (threads started and joined
 * included, set-up of the process excluded) and prints one line:
 *   CPUSLAB_C_RESULT workload=... threads=... time_ns=... peak_rss_kib=...
 *                    checksum=... allocs=...
 * peak_rss_kib is the process's VmHWM read at its end: its own peak since exec,
 * which the parent's ru_maxrss is not (a child spawned by vfork or posix_spawn
 * is charged its parent's peak at exec).
 * The checksum is the digest of everything allocated: it depends only on the
 * workload, threads and scale, never on the allocator, which the suite checks.
 *
 * If CPUSLAB_C_EXPECT_LIB is set, malloc must resolve into a shared object
 * whose path contains it (so a preload that did not take effect fails rather
 * than measuring glibc under another name).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_name = "?";
/* Totals flushed by every thread at its end. */
static uint64_t g_allocated, g_freed, g_allocs;

/* Per-thread ledger, flushed with atomics once per thread so the hot loops
 * touch no shared line. */
static __thread uint64_t t_allocated, t_freed, t_allocs;

static void flush_ledger(void)
{
    __atomic_fetch_add(&g_allocated, t_allocated, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_freed, t_freed, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_allocs, t_allocs, __ATOMIC_RELAXED);
    t_allocated = t_freed = t_allocs = 0;
}

static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* splitmix64: seeded per thread (or per slot chain) so runs are repeatable. */
typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t rnext(rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    uint64_t z = r->s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline size_t rrange(rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rnext(r) % (uint64_t)(hi - lo + 1));
}

static void fail(const char *what, const void *p, size_t n, uint64_t tag, size_t off)
{
    fprintf(stderr, "cpuslab-c %s: %s (block %p, %zu bytes, tag %016llx, offset %zu)\n",
            g_name, what, p, n, (unsigned long long)tag, off);
    fflush(stderr);
    _exit(3);
}

/* Keeps the compiler from eliding a malloc/free pair whose contents it could
 * prove: the pointer escapes and memory is clobbered. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static inline uint64_t pat(uint64_t tag, size_t off)
{
    return tag ^ ((uint64_t)off * 0xff51afd7ed558ccdull);
}

static inline uint8_t last_byte(uint64_t tag, size_t n)
{
    return (uint8_t)(tag >> 56) ^ (uint8_t)n ^ 0x5a;
}

/* The pattern covers every word of the first 256 bytes, one word per 4 KiB
 * page after that (so large blocks are touched on every page), and the last
 * byte when no whole word covers it. Words are 8-aligned, which malloc's
 * alignment guarantees. */
static inline void fill(unsigned char *p, size_t n, uint64_t tag)
{
    size_t lim = n < 256 ? n : 256, off;
    for (off = 0; off + 8 <= lim; off += 8)
        *(uint64_t *)(p + off) = pat(tag, off);
    for (off = 4096; off + 8 < n; off += 4096)
        *(uint64_t *)(p + off) = pat(tag, off);
    if (n > 256 || n % 8 != 0)
        p[n - 1] = last_byte(tag, n);
    escape(p);
}

static inline void check(const unsigned char *p, size_t n, uint64_t tag)
{
    size_t lim = n < 256 ? n : 256, off;
    for (off = 0; off + 8 <= lim; off += 8)
        if (*(const uint64_t *)(p + off) != pat(tag, off))
            fail("contents changed", p, n, tag, off);
    for (off = 4096; off + 8 < n; off += 4096)
        if (*(const uint64_t *)(p + off) != pat(tag, off))
            fail("contents changed", p, n, tag, off);
    if ((n > 256 || n % 8 != 0) && p[n - 1] != last_byte(tag, n))
        fail("last byte changed", p, n, tag, n - 1);
}

static inline uint64_t digest(uint64_t tag, size_t n)
{
    return mix(tag ^ ((uint64_t)n << 40));
}

/* malloc, checked (non-null, aligned as malloc must be), filled, counted. */
static inline void *get(size_t n, uint64_t tag)
{
    unsigned char *p = malloc(n);
    if (!p)
        fail("malloc returned NULL", p, n, tag, 0);
    if ((uintptr_t)p % (n >= 16 ? 16 : 8) != 0)
        fail("misaligned block", p, n, tag, 0);
    fill(p, n, tag);
    t_allocated += digest(tag, n);
    t_allocs++;
    return p;
}

/* Checked, counted, freed. */
static inline void put(void *p, size_t n, uint64_t tag)
{
    check(p, n, tag);
    t_freed += digest(tag, n);
    free(p);
}

/* A live block and what it must contain. */
typedef struct {
    void *p;
    uint64_t tag;
    size_t n;
} slot_t;

static inline uint64_t count(double base, double scale)
{
    double v = base * scale + 0.5;
    return v < 1 ? 1 : (uint64_t)v;
}

static inline uint64_t per_thread(double base, double scale, int threads)
{
    uint64_t v = count(base, scale) / (uint64_t)threads;
    return v < 1 ? 1 : v;
}

static void spawn(pthread_t *t, void *(*f)(void *), void *arg)
{
    if (pthread_create(t, NULL, f, arg) != 0) {
        fprintf(stderr, "cpuslab-c %s: pthread_create failed\n", g_name);
        _exit(4);
    }
}

/* Runs f(&args[i * size]) on `threads` threads and joins them. */
static void run_threads(int threads, void *(*f)(void *), void *args, size_t size)
{
    pthread_t *t = malloc(sizeof *t * (size_t)threads);
    if (!t)
        fail("malloc returned NULL", t, 0, 0, 0);
    for (int i = 0; i < threads; i++)
        spawn(&t[i], f, (char *)args + (size_t)i * size);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    free(t);
}

typedef struct {
    int index, threads;
    double scale;
    void *shared;
} targ_t;

static targ_t *thread_args(int threads, double scale, void *shared)
{
    targ_t *a = calloc((size_t)threads, sizeof *a);
    if (!a)
        fail("calloc returned NULL", a, 0, 0, 0);
    for (int i = 0; i < threads; i++)
        a[i] = (targ_t){i, threads, scale, shared};
    return a;
}

/* ------------------------------------------------------------------ pair64 */

/* The cheapest pattern there is: one 64 B block allocated, written, checked
 * and freed, over and over, on one thread. */
static void pair64(int threads, double scale)
{
    (void)threads;
    uint64_t n = count(20e6, scale);
    for (uint64_t i = 0; i < n; i++) {
        void *p = get(64, mix(i));
        put(p, 64, mix(i));
    }
    flush_ledger();
}

/* ------------------------------------------------------------- mixed-batch */

/* Batches of 1000 blocks of 64-120 B, freed in a shuffled order: the free
 * lists end up scrambled, as in a program whose objects die out of order. */
static void *mixed_batch_worker(void *arg)
{
    targ_t *a = arg;
    rng_t r = {mix(0x6d62ull + (uint64_t)a->index)};
    enum { B = 1000 };
    slot_t *s = malloc(sizeof *s * B);
    uint32_t *order = malloc(sizeof *order * B);
    if (!s || !order)
        fail("malloc returned NULL", NULL, 0, 0, 0);
    uint64_t batches = per_thread(6000, a->scale, a->threads);
    for (uint64_t b = 0; b < batches; b++) {
        for (int i = 0; i < B; i++) {
            s[i].n = rrange(&r, 64, 120);
            s[i].tag = rnext(&r);
            s[i].p = get(s[i].n, s[i].tag);
            order[i] = (uint32_t)i;
        }
        for (int i = B - 1; i > 0; i--) {
            int j = (int)(rnext(&r) % (uint64_t)(i + 1));
            uint32_t x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        for (int i = 0; i < B; i++)
            put(s[order[i]].p, s[order[i]].n, s[order[i]].tag);
    }
    free(s);
    free(order);
    flush_ledger();
    return NULL;
}

static void mixed_batch(int threads, double scale)
{
    targ_t *a = thread_args(threads, scale, NULL);
    run_threads(threads, mixed_batch_worker, a, sizeof *a);
    free(a);
}

/* ------------------------------------------------------------------ larson */

/* Larson & Krishnan's server simulation: each chain owns an array of slots
 * holding 16-1000 B blocks; a thread replaces random slots (free the old
 * block, allocate a new one), then hands the array on to a new thread and
 * exits, so most blocks are freed by a thread other than the one that
 * allocated them. The main thread fills the arrays first. */
enum { LARSON_SLOTS = 1000, LARSON_ROUND = 10000 };

/* Lines of its own (128 bytes, as adjacent-line prefetchers pair lines): a
 * worker writes `r` on every step, and two chains in one line measured the
 * harness's false sharing, not the allocator. With 32-byte chains in one
 * calloc'd 64-byte block, cpuslab, jemalloc, mimalloc and tcmalloc ran at
 * 340-400 ms and glibc, whose chunk header put the two chains in different
 * lines, at 154 ms; apart, all five run at 190-260 ms. */
typedef struct {
    _Alignas(128) slot_t *slots;
    rng_t r;
    uint64_t left; /* replacements still to do on this chain */
    int *live;     /* chains not finished; the threads are detached */
    int nslots;    /* LARSON_SLOTS, or LARSON_SPARSE_SLOTS for larson-sparse */
    size_t min;    /* smallest block */
    int sparse;    /* only the blocks' first and last words written and checked */
} chain_t;

/* larson-sparse: Larson as mimalloc-bench runs it (5000 slots a thread, 8-1000 B,
 * 2.5 MB live a thread), the program writing little of each block: most of its
 * time is the allocator's, and which of its own lines (metadata, free lists) a
 * free of a block allocated long ago has to fetch. */
enum { LARSON_SPARSE_SLOTS = 5000 };

/* get() and put() writing and checking only a block's first and last words (the
 * first alone below 16 bytes, where they would overlap). */
static inline void *get_sparse(size_t n, uint64_t tag)
{
    unsigned char *p = malloc(n);
    if (!p)
        fail("malloc returned NULL", p, n, tag, 0);
    if ((uintptr_t)p % 8 != 0)
        fail("misaligned block", p, n, tag, 0);
    *(uint64_t *)p = pat(tag, 0);
    if (n >= 16)
        memcpy(p + n - 8, &(uint64_t){pat(tag, n)}, 8);
    escape(p);
    t_allocated += digest(tag, n);
    t_allocs++;
    return p;
}

static inline void put_sparse(void *p, size_t n, uint64_t tag)
{
    uint64_t last;
    memcpy(&last, (unsigned char *)p + n - 8, 8);
    if (*(uint64_t *)p != pat(tag, 0))
        fail("contents changed", p, n, tag, 0);
    if (n >= 16 && last != pat(tag, n))
        fail("contents changed", p, n, tag, n - 8);
    t_freed += digest(tag, n);
    free(p);
}

static inline void chain_put(const chain_t *c, const slot_t *s)
{
    if (c->sparse)
        put_sparse(s->p, s->n, s->tag);
    else
        put(s->p, s->n, s->tag);
}

static inline void chain_get(chain_t *c, slot_t *s)
{
    s->n = rrange(&c->r, c->min, 1000);
    s->tag = rnext(&c->r);
    s->p = c->sparse ? get_sparse(s->n, s->tag) : get(s->n, s->tag);
}

static void *larson_worker(void *arg)
{
    chain_t *c = arg;
    /* larson-sparse: as larson's own threads, 100 replacements a slot before the
     * successor takes over. */
    uint64_t round = c->sparse ? 100 * (uint64_t)c->nslots : LARSON_ROUND;
    uint64_t n = c->left < round ? c->left : round;
    for (uint64_t i = 0; i < n; i++) {
        slot_t *s = &c->slots[rnext(&c->r) % (uint64_t)c->nslots];
        chain_put(c, s);
        chain_get(c, s);
    }
    c->left -= n;
    flush_ledger();
    if (c->left > 0) {
        /* The successor inherits the slots; this thread exits at once. */
        pthread_t t;
        spawn(&t, larson_worker, c);
        pthread_detach(t);
    } else {
        __atomic_fetch_sub(c->live, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void larson_run(int threads, double scale, int sparse)
{
    /* The last thread of each chain counts it done: a successor is started
     * by its predecessor, so the main thread cannot join it. */
    int live = threads;
    chain_t *c = aligned_alloc(_Alignof(chain_t), (size_t)threads * sizeof *c);
    if (!c)
        fail("aligned_alloc returned NULL", c, 0, 0, 0);
    memset(c, 0, (size_t)threads * sizeof *c);
    for (int i = 0; i < threads; i++) {
        c[i].sparse = sparse;
        c[i].nslots = sparse ? LARSON_SPARSE_SLOTS : LARSON_SLOTS;
        c[i].min = sparse ? 8 : 16;
        c[i].slots = malloc(sizeof(slot_t) * (size_t)c[i].nslots);
        if (!c[i].slots)
            fail("malloc returned NULL", NULL, 0, 0, 0);
        c[i].r.s = mix((sparse ? 0x6c73ull : 0x6c61ull) + (uint64_t)i);
        c[i].left = per_thread(sparse ? 16e6 : 4e6, scale, threads);
        for (int k = 0; k < c[i].nslots; k++)
            chain_get(&c[i], &c[i].slots[k]);
        c[i].live = &live;
    }
    flush_ledger();
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        spawn(&t, larson_worker, &c[i]);
        pthread_detach(t);
    }
    while (__atomic_load_n(&live, __ATOMIC_ACQUIRE) > 0)
        usleep(200);
    for (int i = 0; i < threads; i++) {
        for (int k = 0; k < c[i].nslots; k++)
            chain_put(&c[i], &c[i].slots[k]);
        free(c[i].slots);
    }
    free(c);
    flush_ledger();
}

static void larson(int threads, double scale)
{
    larson_run(threads, scale, 0);
}

static void larson_sparse(int threads, double scale)
{
    larson_run(threads, scale, 1);
}

/* ----------------------------------------------- cache-thrash, cache-scratch */

enum { CACHE_OBJ = 8, CACHE_WRITES = 500 };

/* Writes every byte of an 8 B object CACHE_WRITES times, then checks it. */
static void hammer(unsigned char *p, uint64_t tag)
{
    volatile unsigned char *v = p;
    for (int w = 0; w < CACHE_WRITES; w++)
        for (int k = 0; k < CACHE_OBJ; k++)
            v[k]++;
    for (int k = 0; k < CACHE_OBJ; k++)
        if (v[k] != (unsigned char)((pat(tag, 0) >> (8 * k)) + CACHE_WRITES))
            fail("contents changed under writes", p, CACHE_OBJ, tag, (size_t)k);
    /* Restore the pattern so put() checks the block as usual. */
    *(uint64_t *)p = pat(tag, 0);
}

/* Active false sharing (Hoard's cache-thrash): every thread allocates its own
 * small object, writes it many times and frees it, over and over. An
 * allocator that hands neighbouring bytes of one cache line to different
 * threads makes those writes fight over the line. */
static void *thrash_worker(void *arg)
{
    targ_t *a = arg;
    uint64_t n = per_thread(400000, a->scale, a->threads);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t tag = mix(((uint64_t)a->index << 40) + i);
        unsigned char *p = get(CACHE_OBJ, tag);
        hammer(p, tag);
        put(p, CACHE_OBJ, tag);
    }
    flush_ledger();
    return NULL;
}

static void cache_thrash(int threads, double scale)
{
    targ_t *a = thread_args(threads, scale, NULL);
    run_threads(threads, thrash_worker, a, sizeof *a);
    free(a);
}

/* Passive false sharing (Hoard's cache-scratch): the main thread allocates
 * one small object per thread, back to back (likely on one cache line), and
 * hands one to each thread, which frees it and then allocates, writes and
 * frees its own objects. An allocator that gives the freed neighbour back to
 * the thread that freed it keeps the threads on one line. */
static void *scratch_worker(void *arg)
{
    targ_t *a = arg;
    slot_t *given = &((slot_t *)a->shared)[a->index];
    put(given->p, given->n, given->tag);
    uint64_t n = per_thread(400000, a->scale, a->threads);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t tag = mix(((uint64_t)a->index << 40) + i + 1);
        unsigned char *p = get(CACHE_OBJ, tag);
        hammer(p, tag);
        put(p, CACHE_OBJ, tag);
    }
    flush_ledger();
    return NULL;
}

static void cache_scratch(int threads, double scale)
{
    slot_t *given = malloc(sizeof *given * (size_t)threads);
    if (!given)
        fail("malloc returned NULL", NULL, 0, 0, 0);
    for (int i = 0; i < threads; i++) {
        given[i].n = CACHE_OBJ;
        given[i].tag = mix(((uint64_t)i << 40));
        given[i].p = get(CACHE_OBJ, given[i].tag);
    }
    flush_ledger();
    targ_t *a = thread_args(threads, scale, given);
    run_threads(threads, scratch_worker, a, sizeof *a);
    free(a);
    free(given);
}

/* ----------------------------------------------------------------- mstress */

/* Mixed lifetimes with remote frees (after mstress and xmalloc-test): each
 * thread keeps short-lived blocks (a ring of 8), medium-lived ones (random
 * replacement among 1000 slots) and long-lived ones (200 slots, replaced
 * rarely), mostly 16-512 B with some 1-16 KiB and a few 64-256 KiB; some
 * medium blocks are grown with realloc. Every fourth medium block that dies
 * goes, in batches of 64, to the next thread's mailbox, and that thread
 * frees it. */
enum { MS_SHORT = 8, MS_MEDIUM = 1000, MS_LONG = 200, MS_BATCH = 64, MS_MAILBOX = 1 << 16 };

typedef struct {
    pthread_mutex_t lock;
    slot_t *box; /* MS_MAILBOX entries */
    size_t len;
    char pad[64];
} mailbox_t;

typedef struct {
    mailbox_t *boxes;
    pthread_barrier_t done;
} mstress_t;

static size_t ms_size(rng_t *r)
{
    uint64_t x = rnext(r) % 256;
    if (x == 0)
        return rrange(r, 64 << 10, 256 << 10);
    if (x < 16)
        return rrange(r, 1 << 10, 16 << 10);
    return rrange(r, 16, 512);
}

static void ms_drain(mailbox_t *m)
{
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->len; i++)
        put(m->box[i].p, m->box[i].n, m->box[i].tag);
    m->len = 0;
    pthread_mutex_unlock(&m->lock);
}

/* Hands a batch to `m`, or frees it here if the mailbox is full. */
static void ms_send(mailbox_t *m, slot_t *batch, size_t n)
{
    pthread_mutex_lock(&m->lock);
    size_t room = MS_MAILBOX - m->len, k = n < room ? n : room;
    memcpy(m->box + m->len, batch, k * sizeof *batch);
    m->len += k;
    pthread_mutex_unlock(&m->lock);
    for (size_t i = k; i < n; i++)
        put(batch[i].p, batch[i].n, batch[i].tag);
}

static void *mstress_worker(void *arg)
{
    targ_t *a = arg;
    mstress_t *ms = a->shared;
    mailbox_t *mine = &ms->boxes[a->index], *next = &ms->boxes[(a->index + 1) % a->threads];
    rng_t r = {mix(0x6d73ull + (uint64_t)a->index)};
    slot_t shortl[MS_SHORT] = {{0}}, batch[MS_BATCH];
    size_t nbatch = 0;
    slot_t *med = calloc(MS_MEDIUM, sizeof *med), *lng = calloc(MS_LONG, sizeof *lng);
    if (!med || !lng)
        fail("calloc returned NULL", NULL, 0, 0, 0);
    uint64_t steps = per_thread(3e6, a->scale, a->threads);
    for (uint64_t i = 0; i < steps; i++) {
        slot_t *s = &shortl[i % MS_SHORT];
        if (s->p)
            put(s->p, s->n, s->tag);
        s->n = ms_size(&r);
        s->tag = rnext(&r);
        s->p = get(s->n, s->tag);
        if (i % 2 == 0) {
            slot_t *m = &med[rnext(&r) % MS_MEDIUM];
            uint64_t what = rnext(&r) % 16;
            if (m->p && what == 0 && m->n < (64 << 10)) {
                /* Grow in place or move: the old contents must come along. */
                size_t n2 = m->n + rrange(&r, 1, m->n);
                check(m->p, m->n, m->tag);
                unsigned char *q = realloc(m->p, n2);
                if (!q)
                    fail("realloc returned NULL", m->p, n2, m->tag, 0);
                size_t keep = (m->n < 256 ? m->n : 256) & ~(size_t)7;
                for (size_t off = 0; off < keep; off += 8)
                    if (*(uint64_t *)(q + off) != pat(m->tag, off))
                        fail("realloc lost contents", q, n2, m->tag, off);
                t_freed += digest(m->tag, m->n);
                m->tag = rnext(&r);
                m->n = n2;
                m->p = q;
                fill(q, n2, m->tag);
                t_allocated += digest(m->tag, n2);
                t_allocs++;
                continue;
            }
            if (m->p) {
                if (what < 4) {
                    batch[nbatch++] = *m;
                    if (nbatch == MS_BATCH) {
                        ms_send(next, batch, nbatch);
                        nbatch = 0;
                    }
                } else {
                    put(m->p, m->n, m->tag);
                }
            }
            m->n = ms_size(&r);
            m->tag = rnext(&r);
            m->p = get(m->n, m->tag);
        }
        if (i % 64 == 0) {
            slot_t *l = &lng[rnext(&r) % MS_LONG];
            if (l->p)
                put(l->p, l->n, l->tag);
            l->n = ms_size(&r);
            l->tag = rnext(&r);
            l->p = get(l->n, l->tag);
        }
        if (i % 1024 == 0)
            ms_drain(mine);
    }
    ms_send(next, batch, nbatch);
    /* Nobody sends after the barrier: the last drain empties the mailbox. */
    pthread_barrier_wait(&ms->done);
    ms_drain(mine);
    for (int k = 0; k < MS_SHORT; k++)
        if (shortl[k].p)
            put(shortl[k].p, shortl[k].n, shortl[k].tag);
    for (int k = 0; k < MS_MEDIUM; k++)
        if (med[k].p)
            put(med[k].p, med[k].n, med[k].tag);
    for (int k = 0; k < MS_LONG; k++)
        if (lng[k].p)
            put(lng[k].p, lng[k].n, lng[k].tag);
    free(med);
    free(lng);
    flush_ledger();
    return NULL;
}

static void mstress(int threads, double scale)
{
    mstress_t ms;
    ms.boxes = calloc((size_t)threads, sizeof *ms.boxes);
    if (!ms.boxes)
        fail("calloc returned NULL", NULL, 0, 0, 0);
    for (int i = 0; i < threads; i++) {
        pthread_mutex_init(&ms.boxes[i].lock, NULL);
        ms.boxes[i].box = malloc(sizeof(slot_t) * MS_MAILBOX);
        if (!ms.boxes[i].box)
            fail("malloc returned NULL", NULL, 0, 0, 0);
    }
    pthread_barrier_init(&ms.done, NULL, (unsigned)threads);
    targ_t *a = thread_args(threads, scale, &ms);
    run_threads(threads, mstress_worker, a, sizeof *a);
    free(a);
    pthread_barrier_destroy(&ms.done);
    for (int i = 0; i < threads; i++) {
        free(ms.boxes[i].box);
        pthread_mutex_destroy(&ms.boxes[i].lock);
    }
    free(ms.boxes);
}

/* ------------------------------------------------------------ xmalloc-test */

/* Lever and Boreham's producer/consumer test: `threads` producers fill
 * batches of XM_BATCH blocks of 64 B (the batch itself a 32 KiB block) and
 * queue them; `threads` consumers take whole batches and free every block, so
 * every object is freed by a thread other than the one that made it. The queue
 * holds at most XM_QUEUE batches, as the original's. A fixed number of batches
 * instead of a fixed time, so that the suite can time it. */
enum { XM_BATCH = 4096, XM_QUEUE = 100, XM_SIZE = 64 };

typedef struct xm_batch {
    struct xm_batch *next;
    uint64_t first; /* tag of objects[0]; the rest follow */
    void *objects[XM_BATCH];
} xm_batch_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t nonempty, nonfull;
    xm_batch_t *head;
    int len, producers_left;
} xm_queue_t;

static void *xm_producer(void *arg)
{
    targ_t *a = arg;
    xm_queue_t *q = a->shared;
    uint64_t batches = per_thread(600, a->scale, a->threads);
    for (uint64_t b = 0; b < batches; b++) {
        xm_batch_t *batch = malloc(sizeof *batch);
        if (!batch)
            fail("malloc returned NULL", batch, sizeof *batch, 0, 0);
        batch->first = ((uint64_t)a->index << 40) | (b * XM_BATCH);
        for (int i = 0; i < XM_BATCH; i++)
            batch->objects[i] = get(XM_SIZE, mix(batch->first + (uint64_t)i));
        pthread_mutex_lock(&q->lock);
        while (q->len >= XM_QUEUE)
            pthread_cond_wait(&q->nonfull, &q->lock);
        batch->next = q->head;
        q->head = batch;
        q->len++;
        pthread_cond_signal(&q->nonempty);
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_lock(&q->lock);
    q->producers_left--;
    pthread_cond_broadcast(&q->nonempty);
    pthread_mutex_unlock(&q->lock);
    flush_ledger();
    return NULL;
}

static void *xm_consumer(void *arg)
{
    targ_t *a = arg;
    xm_queue_t *q = a->shared;
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (!q->head && q->producers_left > 0)
            pthread_cond_wait(&q->nonempty, &q->lock);
        xm_batch_t *batch = q->head;
        if (batch) {
            q->head = batch->next;
            q->len--;
            pthread_cond_signal(&q->nonfull);
        }
        pthread_mutex_unlock(&q->lock);
        if (!batch)
            break;
        for (int i = 0; i < XM_BATCH; i++)
            put(batch->objects[i], XM_SIZE, mix(batch->first + (uint64_t)i));
        free(batch);
    }
    flush_ledger();
    return NULL;
}

static void xmalloc_test(int threads, double scale)
{
    xm_queue_t q = {.head = NULL, .len = 0, .producers_left = threads};
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.nonempty, NULL);
    pthread_cond_init(&q.nonfull, NULL);
    targ_t *a = thread_args(threads, scale, &q);
    pthread_t *t = malloc(sizeof *t * 2 * (size_t)threads);
    if (!t)
        fail("malloc returned NULL", t, 0, 0, 0);
    for (int i = 0; i < threads; i++) {
        spawn(&t[2 * i], xm_consumer, &a[i]);
        spawn(&t[2 * i + 1], xm_producer, &a[i]);
    }
    for (int i = 0; i < 2 * threads; i++)
        pthread_join(t[i], NULL);
    free(t);
    free(a);
    flush_ledger();
}

/* ------------------------------------------------------------ malloc-large */

/* Blocks of 5-25 MiB, four live at a time, every page written: how an
 * allocator serves and recycles sizes past any size class (mmap per block,
 * or reuse of freed large extents). */
static void malloc_large(int threads, double scale)
{
    (void)threads;
    enum { LIVE = 4 };
    slot_t live[LIVE] = {{0}};
    rng_t r = {mix(0x6c67ull)};
    uint64_t n = count(300, scale);
    for (uint64_t i = 0; i < n; i++) {
        slot_t *s = &live[i % LIVE];
        if (s->p)
            put(s->p, s->n, s->tag);
        s->n = rrange(&r, 5 << 20, 25 << 20);
        s->tag = rnext(&r);
        s->p = get(s->n, s->tag);
    }
    for (int k = 0; k < LIVE; k++)
        if (live[k].p)
            put(live[k].p, live[k].n, live[k].tag);
    flush_ledger();
}

/* -------------------------------------------------------------- threads256 */

/* 256 threads at once, far more than the CPUs, each allocating 2000 blocks of
 * 16-1040 B, checking and freeing them, then exiting; repeated in rounds. It
 * measures per-thread set-up and tear-down (thread caches, arenas) and
 * contention while the threads are oversubscribed. */
enum { T256_THREADS = 256, T256_BLOCKS = 2000 };

static void *t256_worker(void *arg)
{
    targ_t *a = arg;
    rng_t r = {mix(((uint64_t)a->threads << 32) + (uint64_t)a->index)};
    slot_t *s = malloc(sizeof *s * T256_BLOCKS);
    if (!s)
        fail("malloc returned NULL", NULL, 0, 0, 0);
    for (int i = 0; i < T256_BLOCKS; i++) {
        s[i].n = rrange(&r, 16, 1040);
        s[i].tag = rnext(&r);
        s[i].p = get(s[i].n, s[i].tag);
    }
    for (int i = 0; i < T256_BLOCKS; i++)
        put(s[i].p, s[i].n, s[i].tag);
    free(s);
    flush_ledger();
    return NULL;
}

static void threads256(int threads, double scale)
{
    (void)threads;
    uint64_t rounds = count(10, scale);
    targ_t *a = thread_args(T256_THREADS, scale, NULL);
    for (uint64_t round = 0; round < rounds; round++) {
        /* `threads` doubles as the round number in each thread's seed. */
        for (int i = 0; i < T256_THREADS; i++)
            a[i].threads = (int)round;
        run_threads(T256_THREADS, t256_worker, a, sizeof *a);
    }
    free(a);
}

/* -------------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*run)(int threads, double scale);
} WORKLOADS[] = {
    {"pair64", pair64},
    {"mixed-batch", mixed_batch},
    {"larson", larson},
    {"larson-sparse", larson_sparse},
    {"cache-thrash", cache_thrash},
    {"cache-scratch", cache_scratch},
    {"mstress", mstress},
    {"xmalloc-test", xmalloc_test},
    {"malloc-large", malloc_large},
    {"threads256", threads256},
};

static void expect_lib(void)
{
    const char *want = getenv("CPUSLAB_C_EXPECT_LIB");
    if (!want || !*want)
        return;
    /* The address of malloc as this program resolves it: the preloaded
     * library's if the preload took effect. */
    void *(*volatile m)(size_t) = malloc;
    Dl_info info;
    if (!dladdr((void *)m, &info) || !info.dli_fname || !strstr(info.dli_fname, want)) {
        fprintf(stderr, "cpuslab-c: malloc comes from %s, not from a library matching %s "
                        "(LD_PRELOAD=%s)\n",
                info.dli_fname ? info.dli_fname : "?", want,
                getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");
        _exit(5);
    }
}

/* The process's peak resident set (VmHWM) in KiB, -1 if unreadable. Read with
 * read(2) on a stack buffer, so that measuring allocates nothing. */
static long peak_rss_kib(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *hwm = strstr(buf, "VmHWM:");
    return hwm ? strtol(hwm + 6, NULL, 10) : -1;
}

int main(int argc, char **argv)
{
    size_t nw = sizeof WORKLOADS / sizeof WORKLOADS[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < nw; i++)
            puts(WORKLOADS[i].name);
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s <workload> <threads> <scale> | --list\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    double scale = atof(argv[3]);
    if (threads < 1 || !(scale > 0)) {
        fprintf(stderr, "bad threads or scale\n");
        return 2;
    }
    for (size_t i = 0; i < nw; i++) {
        if (strcmp(argv[1], WORKLOADS[i].name) != 0)
            continue;
        g_name = WORKLOADS[i].name;
        expect_lib();
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        WORKLOADS[i].run(threads, scale);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (g_allocated != g_freed) {
            fprintf(stderr,
                    "cpuslab-c %s: blocks allocated and blocks freed do not match "
                    "(a block lost or handed out twice)\n",
                    g_name);
            return 3;
        }
        long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
        printf("CPUSLAB_C_RESULT workload=%s threads=%d time_ns=%lld peak_rss_kib=%ld "
               "checksum=%016llx allocs=%llu\n",
               g_name, threads, ns, peak_rss_kib(), (unsigned long long)g_allocated,
               (unsigned long long)g_allocs);
        return 0;
    }
    fprintf(stderr, "unknown workload %s\n", argv[1]);
    return 2;
}
