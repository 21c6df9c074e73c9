/* Allocates blocks of argv[1] bytes until malloc returns NULL (under an address-space
 * limit set by the caller), writing one byte of each, then checks errno is ENOMEM,
 * frees them all and checks that a block of the same size can be had again.
 * Prints "MiB <allocated before NULL>". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    size_t size = strtoul(argv[1], NULL, 10);
    size_t cap = 1 << 22, n = 0;
    void **blocks = malloc(cap * sizeof *blocks);
    if (!blocks) return 3;
    for (;;) {
        char *p = malloc(size);
        if (!p) break;
        p[0] = 1;
        if (n == cap) return 4;
        blocks[n++] = p;
    }
    if (errno != ENOMEM) return 5;
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    void *again = malloc(size);
    if (!again) return 6;
    free(again);
    printf("MiB %zu\n", n * size >> 20);
    return 0;
}
