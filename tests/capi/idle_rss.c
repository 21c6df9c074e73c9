/* Idle reclaim under LD_PRELOAD: two threads build MB megabytes (default 600) of
 * 16..366-byte blocks, each writing its blocks whole; then each frees the other's
 * blocks, and the program makes no allocator call while it sleeps IDLE seconds
 * (default 3), sampling its resident set from /proc/self/statm every half second.
 * Prints "peak_kb=N rss_kb=N" (the peak from VmHWM, the resident set at the end)
 * and the samples. The pointer arrays are mmap'd, so that only the blocks go
 * through the allocator.
 * With a third argument `no-clone`, a seccomp filter that kills the process on
 * clone(2) and clone3(2) (as OpenSSH's sandbox does) is installed first, and the
 * main thread does both threads' work in turn. With `exec-filtered`, a filter that
 * only denies acct(2) is installed and the program runs itself again under it (as
 * in a container, whose filter the process starts under). */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define AVG_BLOCK 191 /* (16 + 366) / 2 */

static size_t per_thread;
static void **blocks[2];
static pthread_barrier_t barrier;

/* Reads /proc without stdio (which would allocate). */
static long read_proc(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    long n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return n;
}

static long rss_kb(void) {
    char buf[256];
    if (read_proc("/proc/self/statm", buf, sizeof buf) < 0)
        return -1;
    long size, resident;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static long peak_kb(void) {
    char buf[4096];
    if (read_proc("/proc/self/status", buf, sizeof buf) < 0)
        return -1;
    char *p = strstr(buf, "VmHWM:");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

static void say(const char *fmt, long a, long b) {
    char line[128];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (write(1, line, n) != n)
        exit(3);
}

static void build(int me) {
    uint64_t x = 0x9E3779B97F4A7C15ull * (me + 1);
    for (size_t i = 0; i < per_thread; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t size = 16 + x % 351;
        char *p = malloc(size);
        if (!p) {
            say("malloc failed at block %ld of thread %ld\n", (long)i, me);
            exit(2);
        }
        memset(p, me + 1, size);
        blocks[me][i] = p;
    }
}

/* Each thread frees the blocks the other one allocated. */
static void free_theirs(int me) {
    void **theirs = blocks[1 - me];
    for (size_t i = 0; i < per_thread; i++)
        free(theirs[i]);
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    build(me);
    pthread_barrier_wait(&barrier);
    free_theirs(me);
    return NULL;
}

/* Installs a filter that kills the process on clone and clone3 (`kill_clone`), or one
 * that only makes acct(2) fail. */
static void install_filter(int kill_clone) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kill_clone ? __NR_clone : __NR_acct, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kill_clone ? __NR_clone3 : __NR_acct, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K,
                 kill_clone ? SECCOMP_RET_KILL_PROCESS : SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("seccomp");
        exit(2);
    }
}

int main(int argc, char **argv) {
    long mb = argc > 1 ? atol(argv[1]) : 600;
    long idle = argc > 2 ? atol(argv[2]) : 3;
    per_thread = (size_t)mb * 1024 * 1024 / AVG_BLOCK / 2;
    for (int t = 0; t < 2; t++) {
        blocks[t] = mmap(NULL, per_thread * sizeof(void *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (blocks[t] == MAP_FAILED)
            return 2;
    }
    if (argc > 3 && strcmp(argv[3], "exec-filtered") == 0) {
        install_filter(0);
        char *again[] = {argv[0], argv[1], argv[2], NULL};
        execv("/proc/self/exe", again);
        perror("execv");
        return 2;
    }
    if (argc > 3 && strcmp(argv[3], "no-clone") == 0) {
        install_filter(1);
        build(0);
        build(1);
        free_theirs(0);
        free_theirs(1);
    } else {
        pthread_barrier_init(&barrier, NULL, 2);
        pthread_t th[2];
        for (int t = 0; t < 2; t++)
            pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
        for (int t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
    }
    for (int t = 0; t < 2; t++)
        munmap(blocks[t], per_thread * sizeof(void *));
    long peak = peak_kb();
    /* From here on: no allocator call, only sleeping and reading /proc. */
    for (long half = 0; half < idle * 2; half++) {
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
        say("t=%ldms rss_kb=%ld\n", (half + 1) * 500, rss_kb());
    }
    say("peak_kb=%ld rss_kb=%ld\n", peak, rss_kb());
    return 0;
}
