/* What the allocator's per-CPU structures cost a small program: two threads each
 * allocate and free 2000 blocks of 16-1040 B (so every class a small program uses is
 * set up and both CPUs of a small machine work), then the program prints
 * "anon_kb=N" (RssAnon from /proc/self/status: its anonymous memory, where the
 * allocator's structures live). Run with more possible CPUs than the machine has
 * (a VM's hot-plug slots), the figure should not move. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 2000

static void *work(void *arg) {
    (void)arg;
    static __thread void *p[BLOCKS];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < BLOCKS; i++) {
            size_t n = 16 + (size_t)(i * 37 % 1025);
            p[i] = malloc(n);
            if (!p[i])
                abort();
            memset(p[i], i, n);
        }
        for (int i = 0; i < BLOCKS; i++)
            free(p[i]);
    }
    return NULL;
}

int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, work, NULL) != 0)
            return 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "RssAnon:", 8) == 0)
            printf("anon_kb=%ld\n", atol(line + 8));
    return 0;
}
