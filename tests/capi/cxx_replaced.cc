// A program that replaces only `operator new(size_t)` and `operator delete(void *)`
// with its own (a header before each block), as pools and leak checkers do. The C++
// runtime's other forms call these, so every `new` and `delete` of the program, the
// sized, array and nothrow ones included, must reach them: under LD_PRELOAD, the
// library's forms must forward to the runtime's rather than free the program's
// pointers themselves. Prints "cxx_replaced: ok" and exits 0, or aborts.
// Real programs do this (GCC warns, -Wsized-deallocation); this one must.
#pragma GCC diagnostic ignored "-Wsized-deallocation"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

static const uint64_t MAGIC = 0x5eedf00dcafe1234ull;
static long news, deletes;

void *operator new(size_t n) {
    uint64_t *h = static_cast<uint64_t *>(std::malloc(n + 16));
    if (!h)
        throw std::bad_alloc();
    h[0] = MAGIC;
    h[1] = n;
    news++;
    return h + 2;
}

void operator delete(void *p) noexcept {
    if (!p)
        return;
    uint64_t *h = static_cast<uint64_t *>(p) - 2;
    if (h[0] != MAGIC) {
        std::fprintf(stderr, "cxx_replaced: a block without the header\n");
        std::abort();
    }
    h[0] = 0;
    deletes++;
    std::free(h);
}

struct Obj {
    char b[40];
};

static void *escape(void *p) {
    asm volatile("" : "+r"(p) : : "memory");
    return p;
}

int main() {
    for (int i = 0; i < 1000; i++) {
        Obj *o = static_cast<Obj *>(escape(new Obj));
        delete o; // the sized form
        int *a = static_cast<int *>(escape(new int[i + 1]));
        delete[] a;
        void *n = escape(::operator new(100, std::nothrow));
        ::operator delete(n, std::nothrow);
        void *s = escape(::operator new(64));
        ::operator delete(s, 64);
    }
    if (news != 4000 || deletes != 4000) {
        std::fprintf(stderr, "cxx_replaced: %ld news, %ld deletes reached the program's\n",
                     news, deletes);
        return 1;
    }
    std::printf("cxx_replaced: ok\n");
    return 0;
}
