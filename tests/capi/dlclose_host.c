/* Loads a Rust library whose global allocator is cpuslab with dlopen, long after the
 * program started and while other threads run, calls it from every thread (so each
 * thread's rseq area names the library's sequences), unloads it with dlclose and keeps
 * running: sleeping, waking and being preempted, which is when the kernel reads each
 * thread's rseq descriptor. Then loads it again and calls it once more.
 * Prints "dlclose_host: ok". */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef uint64_t (*work_fn)(uint32_t);
static _Atomic(work_fn) work;
static atomic_int phase; /* 0: wait, 1: call the library, 2: it is gone, 3: stop */
static atomic_int called;

static void nap(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void *worker(void *arg) {
    (void)arg;
    while (atomic_load(&phase) == 0) nap(100);
    atomic_load(&work)(200);
    atomic_fetch_add(&called, 1);
    while (atomic_load(&phase) == 1) nap(100);
    /* The library is gone: spin (preempted by the other threads) and sleep. */
    for (int i = 0; atomic_load(&phase) != 3; i++) {
        volatile uint64_t x = 0;
        for (int j = 0; j < 100000; j++) x += j;
        if (i % 4 == 0) nap(200);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    enum { T = 4 };
    pthread_t t[T];
    for (int i = 0; i < T; i++) pthread_create(&t[i], NULL, worker, NULL);
    nap(20000);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    atomic_store(&work, (work_fn)dlsym(lib, "plugin_work"));
    if (!atomic_load(&work)) return 1;
    uint64_t sum = atomic_load(&work)(100);
    atomic_store(&phase, 1);
    while (atomic_load(&called) < T) nap(100);
    atomic_store(&work, NULL);
    if (dlclose(lib) != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        return 1;
    }
    atomic_store(&phase, 2);
    for (int i = 0; i < 40; i++) nap(5000);
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen again: %s\n", dlerror());
        return 1;
    }
    work_fn again = (work_fn)dlsym(lib, "plugin_work");
    if (!again || again(100) != sum) return 1;
    dlclose(lib);
    atomic_store(&phase, 3);
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    printf("dlclose_host: ok\n");
    return 0;
}
