/* Prints the process's address space (VmSize, KiB) after a few small blocks: what a
 * small program pays in address space for its allocator, which `ulimit -v` counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the blocks' addresses go, so that the compiler keeps the calls. */
void *volatile sink;

int main(void)
{
    void *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = malloc(16 + 8 * i);
        if (!p[i])
            return 1;
        memset(p[i], i, 16);
        sink = p[i];
    }
    for (int i = 0; i < 100; i++)
        free(p[i]);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 2;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmSize:", 7) == 0)
            printf("%ld\n", strtol(line + 7, NULL, 10));
    fclose(f);
    return 0;
}
