/* Under an address-space limit set by the caller: allocates blocks of argv[1] bytes
 * (at most argv[2] of them), writing one byte of each, until malloc returns NULL; then
 * asks glibc's own malloc (looked up in libc itself) for one more block of that size,
 * which it must not have either; then makes 10,000 more calls of malloc, which fail too,
 * counting the mappings the allocator asks for meanwhile (the program defines mmap
 * itself, as boot_fail.c). Prints "MiB <allocated> glibc-had <0 or 1> mmaps <M>". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>


static volatile long mmaps;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    mmaps++;
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    size_t size = strtoul(argv[1], NULL, 10);
    size_t cap = strtoul(argv[2], NULL, 10), n = 0;
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
    /* libc's own scope, past the preloaded library (which defines __libc_malloc). */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (!libc) return 7;
    void *(*glibc_malloc)(size_t) = (void *(*)(size_t))dlsym(libc, "malloc");
    void (*glibc_free)(void *) = (void (*)(void *))dlsym(libc, "free");
    if (!glibc_malloc || !glibc_free) return 8;
    void *g = glibc_malloc(size);
    int glibc_had = g != NULL;
    glibc_free(g);
    long before = mmaps, more = 0;
    for (int i = 0; i < 10000; i++) {
        void *p = malloc(size);
        if (p) more++;
        free(p);
    }
    if (more > 1) return 6;
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    printf("MiB %zu glibc-had %d mmaps %ld\n", n * size >> 20, glibc_had, mmaps - before);
    return 0;
}
