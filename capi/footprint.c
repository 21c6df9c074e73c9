/* What a small C program's memory costs under an allocator, for capi/footprint.sh:
 * BLOCKS blocks of 16-215 B are allocated, written and freed (default 1000, about
 * 115 KiB live at the peak), then the program prints its peak resident set (VmHWM)
 * and, at the end, its resident file pages (the program, libc, the allocator's
 * library: code and data the kernel mapped) and anonymous pages (heaps, metadata,
 * stacks), all in KiB, from /proc/self/status.
 *
 *   footprint [BLOCKS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    int blocks = argc > 1 ? atoi(argv[1]) : 1000;
    void **p = malloc(sizeof *p * (size_t)(blocks > 0 ? blocks : 1));
    if (!p)
        return 1;
    for (int i = 0; i < blocks; i++) {
        size_t n = 16 + (size_t)(i * 37 % 200);
        if (!(p[i] = malloc(n)))
            return 1;
        memset(p[i], i, n);
    }
    for (int i = 0; i < blocks; i++)
        free(p[i]);
    free(p);
    printf("hwm %ld file %ld anon %ld\n", status_kib("VmHWM"), status_kib("RssFile"),
           status_kib("RssAnon"));
    return 0;
}
