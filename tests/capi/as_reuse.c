/* Under an address-space limit set by the caller: allocates blocks of argv[1] bytes,
 * writing the first bytes of each, until malloc returns NULL; frees them all; then
 * asks for one block of half the bytes it had, halving the request until one is
 * served, and frees it; then fills and frees again. glibc gives the room of what was
 * freed back (unmaps blocks it served by mmap, trims its heap's top), so the half fits
 * and the second fill matches the first. Prints "MiB <allocated> then <served> of
 * <asked> again <allocated>", in MiB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blocks of `size` allocated until malloc fails, then freed; how many. */
static size_t fill(size_t size) {
    size_t n = 0;
    void *head = NULL;
    for (;;) {
        void **p = malloc(size);
        if (!p)
            break;
        memset(p, 1, 64);
        p[0] = head;
        head = p;
        n++;
    }
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    size_t size = strtoul(argv[1], NULL, 10), n = fill(size);
    size_t asked = n * size / 2, served = 0;
    for (size_t big = asked; big >= (1u << 20); big /= 2) {
        char *q = malloc(big);
        if (q) {
            q[big - 1] = 1;
            served = big;
            free(q);
            break;
        }
    }
    size_t again = fill(size);
    printf("MiB %zu then %zu of %zu again %zu\n", (n * size) >> 20, served >> 20, asked >> 20,
           (again * size) >> 20);
    return 0;
}
