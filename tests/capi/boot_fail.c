/* Runs where cpuslab cannot boot (an address-space limit too small for its first
 * arena, or a heap limit below what boot needs): 100,000 malloc/free pairs, then
 * counts what it got. It defines mmap itself, so that it can count the mappings the
 * allocator asks for (a failed boot retried on every call would ask each time).
 * Prints "nulls N mmaps M". */
#define _GNU_SOURCE
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

int main(void) {
    long nulls = 0;
    long before = mmaps;
    for (int i = 0; i < 100000; i++) {
        void *p = malloc(64);
        if (!p) nulls++;
        free(p);
    }
    printf("nulls %ld mmaps %ld\n", nulls, mmaps - before);
    return 0;
}
