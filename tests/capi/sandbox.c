/* Runs on cpuslab (LD_PRELOAD) and then forbids membarrier(2) with a seccomp filter,
 * as in-process sandboxes and systemd's SystemCallFilter do, and keeps allocating:
 * on two threads, through malloc_trim (which stops every CPU's caches) and in a
 * forked child. `deny-affinity` forbids sched_setaffinity too.
 * Prints "sandbox: ok" when everything it allocated read back intact. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void deny(int deny_affinity) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                 deny_affinity ? __NR_sched_setaffinity : __NR_membarrier, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) {
        perror("seccomp");
        exit(2);
    }
    if (syscall(SYS_membarrier, 0, 0, 0) != -1 || errno != EPERM) {
        fprintf(stderr, "membarrier is not denied\n");
        exit(2);
    }
}

/* Allocates and frees blocks of many sizes, checking each one's contents. */
static void churn(unsigned seed, int rounds) {
    enum { N = 512 };
    static __thread unsigned char *blocks[N];
    static __thread size_t sizes[N];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < N; i++) {
            seed = seed * 1103515245 + 12345;
            int k = (seed >> 16) % N;
            if (blocks[k]) {
                for (size_t j = 0; j < sizes[k]; j += 61)
                    if (blocks[k][j] != (unsigned char)(k + j)) {
                        fprintf(stderr, "block %d corrupted\n", k);
                        abort();
                    }
                free(blocks[k]);
                blocks[k] = NULL;
            } else {
                sizes[k] = 8 + (seed >> 8) % ((seed & 7) ? 600 : 70000);
                blocks[k] = malloc(sizes[k]);
                if (!blocks[k]) abort();
                for (size_t j = 0; j < sizes[k]; j += 61) blocks[k][j] = (unsigned char)(k + j);
            }
        }
        if (r % 50 == 0) malloc_trim(0);
    }
    for (int i = 0; i < N; i++) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

static void *worker(void *arg) {
    churn((unsigned)(uintptr_t)arg, 400);
    return NULL;
}

int main(int argc, char **argv) {
    int deny_affinity = argc > 1 && strcmp(argv[1], "deny-affinity") == 0;
    churn(1, 20);
    deny(deny_affinity);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 7));
    churn(3, 100);
    malloc_trim(0);
    pid_t pid = fork();
    if (pid == 0) {
        churn(5, 100);
        malloc_trim(0);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed: status %d\n", status);
        return 1;
    }
    printf("sandbox: ok\n");
    return 0;
}
