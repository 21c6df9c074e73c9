/* A small program's use of the allocator's code: 1000 blocks of 16-215 B are
 * allocated, written and freed ten times; the program then stays 1.3 s (any program
 * that runs that long lets cpuslab's reclaim thread do its periodic work and, once
 * the program is idle, its drain) and prints, in KiB, the size of the preloaded
 * library's executable mapping and how much of it is resident (/proc/self/smaps):
 * "text SIZE RSS", then the same of its read-only data (the first mapping of the
 * file: symbols, relocations, constants, unwind tables): "rodata SIZE RSS". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(void)
{
    static void *p[1000];
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 1000; i++) {
            size_t n = 16 + (size_t)(i * 37) % 200;
            p[i] = malloc(n);
            if (!p[i])
                return 1;
            memset(p[i], i, n);
        }
        for (int i = 0; i < 1000; i++)
            free(p[i]);
    }
    struct timespec stay = {1, 300000000};
    while (nanosleep(&stay, &stay) != 0)
        ;
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    /* 1: in the text mapping, 2: in the read-only data's. */
    int in = 0;
    long size[3] = {-1, -1, -1}, rss[3] = {-1, -1, -1};
    while (f && fgets(line, sizeof line, f)) {
        char perms[8];
        unsigned long off;
        if (sscanf(line, "%*x-%*x %7s %lx", perms, &off) == 2 && strchr(line, '/')) {
            in = 0;
            if (strstr(line, "libcpuslab_preload")) {
                if (strcmp(perms, "r-xp") == 0)
                    in = 1;
                else if (strcmp(perms, "r--p") == 0 && off == 0)
                    in = 2;
            }
        } else if (in && strncmp(line, "Size:", 5) == 0) {
            size[in] = atol(line + 5);
        } else if (in && strncmp(line, "Rss:", 4) == 0) {
            rss[in] = atol(line + 4);
            in = 0;
        }
    }
    printf("text %ld %ld\n", size[1], rss[1]);
    printf("rodata %ld %ld\n", size[2], rss[2]);
    return size[1] > 0 && rss[1] >= 0 && size[2] > 0 && rss[2] >= 0 ? 0 : 2;
}
