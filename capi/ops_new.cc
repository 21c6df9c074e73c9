// Per-operation costs of C++'s allocation operators, for capi/ops.sh (C++ programs
// reach the allocator through `operator new` and `operator delete`, which the
// preload libraries export, or through the C++ runtime's, which call malloc and free):
//
//   new           `new` of a 64-byte object, one byte written, `delete` (the sized
//                 operator delete, as compilers emit it): 20 M times
//   new-unsized   the same with the unsized `operator delete(void *)`
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

static double now() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

// Keeps the compiler from removing a block it could prove unused.
static inline void escape(void *p) { asm volatile("" : : "r"(p) : "memory"); }

struct Obj {
    char b[64];
};

int main(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "new";
    bool sized = !std::strcmp(op, "new");
    if (!sized && std::strcmp(op, "new-unsized")) {
        std::fprintf(stderr, "ops_new: unknown operation %s\n", op);
        return 2;
    }
    long n = 20000000;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        Obj *p = new Obj;
        escape(p);
        p->b[3] = 1;
        if (sized)
            delete p;
        else
            ::operator delete(static_cast<void *>(p));
    }
    std::printf("%s %.2f\n", op, (now() - t0) / n);
    return 0;
}
