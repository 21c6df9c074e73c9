/* A program that puts itself in a strict seccomp sandbox after start, as OpenSSH's
 * pre-authentication child does, and then allocates: system calls glibc's malloc
 * makes are allowed (brk, mmap, munmap, mremap, mprotect, futex, madvise with
 * MADV_NORMAL, MADV_DONTNEED or MADV_FREE, the clocks and sleeps), open(2) fails with
 * EACCES as OpenSSH's filter fails it, and any other call traps: the handler writes
 * "SIGSYS: syscall N" and exits with 99 (OpenSSH's kills).
 *
 *   sandbox_strict direct MS   sandbox, then allocate for MS ms, malloc_trim, exit 0
 *   sandbox_strict fork MS     allocate first (the allocator's helper threads start),
 *                              then fork: the child sandboxes itself as above
 *
 * Prints "survived N" on success. */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void say(const char *s) {
    ssize_t r = write(1, s, strlen(s));
    (void)r;
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    char b[64];
    int n = snprintf(b, sizeof b, "SIGSYS: syscall %d\n", si->si_syscall);
    ssize_t r = write(2, b, (size_t)n);
    (void)r;
    _exit(99);
}

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define FAIL(nr, err) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))

static void sandbox(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, NULL);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* madvise: the advice glibc's malloc and OpenSSH's filter know, else trap. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 6),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_NORMAL, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_DONTNEED, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_FREE, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        FAIL(__NR_openat, 13),
#ifdef __NR_open
        FAIL(__NR_open, 13),
#endif
        ALLOW(__NR_brk), ALLOW(__NR_mmap), ALLOW(__NR_munmap), ALLOW(__NR_mremap),
        ALLOW(__NR_mprotect), ALLOW(__NR_futex), ALLOW(__NR_read), ALLOW(__NR_write),
        ALLOW(__NR_close), ALLOW(__NR_exit), ALLOW(__NR_exit_group),
        ALLOW(__NR_clock_gettime), ALLOW(__NR_gettimeofday), ALLOW(__NR_nanosleep),
        ALLOW(__NR_clock_nanosleep), ALLOW(__NR_getpid), ALLOW(__NR_gettid),
        ALLOW(__NR_rt_sigprocmask), ALLOW(__NR_rt_sigreturn), ALLOW(__NR_getrandom),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        exit(2);
    }
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Random sizes up to 2000 B and, one in a hundred, up to 4 MiB, into 4096 slots, all
 * freed now and then; for `ms` milliseconds. Returns the allocations made. */
static unsigned long churn(long ms) {
    static void *slots[4096];
    unsigned long x = 1, n = 0;
    long end = now_ms() + ms;
    do {
        for (int i = 0; i < 20000; i++) {
            x = x * 6364136223846793005ul + 1442695040888963407ul;
            int s = (int)((x >> 33) % 4096);
            free(slots[s]);
            size_t len = (x >> 20) % 100 == 0 ? (x >> 40) % (4u << 20) : (x >> 45) % 2000;
            slots[s] = malloc(len);
            if (len && !slots[s])
                exit(3);
            if (len)
                memset(slots[s], 1, len < 4096 ? len : 4096);
            n++;
        }
        if ((x & 7) == 0)
            for (int s = 0; s < 4096; s++) {
                free(slots[s]);
                slots[s] = NULL;
            }
    } while (now_ms() < end);
    for (int s = 0; s < 4096; s++) {
        free(slots[s]);
        slots[s] = NULL;
    }
    return n;
}

/* A block grown by `realloc` to 256 MiB in steps of 1 MiB: huge blocks move, and a
 * move must not make a call the filter traps (cpuslab asks `/proc/self/maps` with an
 * `ioctl` which mapping a block spans; in the sandbox it copies instead). */
static void grow(void) {
    char *p = NULL;
    size_t n;
    for (n = 0; n < (256u << 20); n += 1u << 20) {
        char *q = realloc(p, n + (1u << 20));
        if (!q)
            exit(5);
        q[n] = (char)(n >> 20);
        p = q;
    }
    for (size_t k = 0; k < n; k += 1u << 20)
        if (p[k] != (char)(k >> 20))
            exit(6);
    free(p);
    /* Zeroed huge blocks, the second reusing the first's pages. */
    for (int i = 0; i < 2; i++) {
        char *z = calloc(1, 64u << 20);
        if (!z || z[12345] != 0 || z[(64u << 20) - 1] != 0)
            exit(7);
        z[12345] = 1;
        free(z);
    }
}

static int sandboxed_run(long ms) {
    sandbox();
    grow();
    unsigned long n = churn(ms);
    malloc_trim(0);
    n += churn(ms / 10);
    char b[64];
    snprintf(b, sizeof b, "survived %lu\n", n);
    say(b);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    long ms = atol(argv[2]);
    if (!strcmp(argv[1], "direct")) {
        free(malloc(100));
        return sandboxed_run(ms);
    }
    /* The parent allocates long enough for the allocator to start whatever it starts,
     * then forks the child that sandboxes itself. */
    churn(300);
    pid_t pid = fork();
    if (pid == 0)
        _exit(sandboxed_run(ms));
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 4;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
