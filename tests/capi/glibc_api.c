/* glibc's introspection calls: prints what must read the same under glibc's malloc
 * and under cpuslab (mallopt's answers, malloc_info's element layout, EINVAL for bad
 * options) and checks that mallinfo2 and mallinfo follow the blocks the program holds.
 * Prints "glibc_api: ok" last. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                   \
    do {                                                           \
        if (!(c)) {                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #c);                                 \
            exit(1);                                               \
        }                                                          \
    } while (0)

static void layout(void) {
    FILE *f = tmpfile();
    CHECK(f);
    CHECK(malloc_info(0, f) == 0);
    rewind(f);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        /* Element names in order, bin lines aside (their number is the allocator's). */
        if (strncmp(line, "  <size", 7) == 0 || strncmp(line, "  <unsorted", 11) == 0) continue;
        char *end = strpbrk(line, " >");
        if (end) *end = 0;
        char *type = strstr(line + strlen(line) + 1, "type=\"");
        printf("info %s", line);
        if (end && type) printf(" %.*s", (int)strcspn(type + 6, "\""), type + 6);
        printf("\n");
    }
    fclose(f);
    printf("malloc_info(1) = %d\n", malloc_info(1, stdout));
}

static void options(void) {
    static const struct { int param, value; } cases[] = {
        {M_MXFAST, 0},           {M_MXFAST, 64},           {M_MXFAST, 160},
        {M_MXFAST, 161},         {M_MXFAST, -1},           {M_TRIM_THRESHOLD, 1 << 20},
        {M_TRIM_THRESHOLD, 0},   {M_TOP_PAD, 4096},        {M_MMAP_THRESHOLD, 1 << 20},
        {M_MMAP_THRESHOLD, 32 << 20}, {M_MMAP_THRESHOLD, (32 << 20) + 1},
        {M_MMAP_THRESHOLD, -1},  {M_MMAP_MAX, 0},          {M_MMAP_MAX, 65536},
        {M_ARENA_MAX, 0},        {M_ARENA_MAX, 2},         {M_ARENA_TEST, 1},
        {M_PERTURB, 0},          {12345, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        printf("mallopt(%d, %d) = %d\n", cases[i].param, cases[i].value,
               mallopt(cases[i].param, cases[i].value));
    /* Back to the defaults the rest of the run expects. */
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

static void accounting(void) {
    enum { N = 4000, HUGE = 3 };
    struct mallinfo2 before = mallinfo2();
    void *small[N], *big[HUGE];
    for (int i = 0; i < N; i++) {
        small[i] = malloc(100);
        memset(small[i], 1, 100);
    }
    for (int i = 0; i < HUGE; i++) {
        big[i] = malloc(8 << 20);
        memset(big[i], 1, 8 << 20);
    }
    struct mallinfo2 held = mallinfo2();
    struct mallinfo old = mallinfo();
    CHECK(held.hblks >= before.hblks + HUGE);
    CHECK(held.hblkhd >= before.hblkhd + HUGE * (8u << 20));
    CHECK(held.uordblks >= before.uordblks + N * 100);
    CHECK(held.arena >= held.uordblks);
    CHECK(held.usmblks == 0);
    CHECK((size_t)old.hblks == held.hblks);
    CHECK((unsigned)old.hblkhd == (unsigned)held.hblkhd);
    for (int i = 0; i < HUGE; i++) free(big[i]);
    for (int i = 0; i < N; i++) free(small[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.hblks == before.hblks);
    CHECK(after.hblkhd == before.hblkhd);
    CHECK(after.uordblks < held.uordblks - N * 50);
    CHECK(after.fordblks > 0);
}

int main(void) {
    errno = 0;
    options();
    accounting();
    layout();
    CHECK(errno == 0);
    printf("glibc_api: ok\n");
    return 0;
}
