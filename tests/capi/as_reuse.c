/* Under an address-space limit set by the caller: allocates blocks of argv[1] bytes,
 * writing the first bytes of each, until malloc returns NULL; frees them all; then
 * asks for one block of half the bytes it had, halving the request until one is
 * served. glibc unmaps the blocks it served by mmap when they are freed, so the half
 * fits. Prints "MiB <allocated> then <served> of <asked>", in MiB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    size_t size = strtoul(argv[1], NULL, 10), n = 0;
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
    printf("MiB %zu then %zu of %zu\n", (n * size) >> 20, served >> 20, asked >> 20);
    return 0;
}
