// C++'s operator new and operator delete under LD_PRELOAD (tests/preload.rs):
// `cxx_test glibc` checks the expectations against libstdc++'s own operators,
// `cxx_test cpuslab` that the preloaded library's operators are the ones called and
// meet them. Prints "cxx_test: ok" and exits 0, or names the first failure and exits 1.
#include <dlfcn.h>
#include <execinfo.h>
#include <malloc.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "cxx_test: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

// Keeps the compiler from eliding or folding an allocation.
static void *escape(void *p) {
    asm volatile("" : "+r"(p) : : "memory");
    return p;
}

static volatile size_t huge = SIZE_MAX / 2;

// The object that defines the function at `f`.
static const char *object_of(const void *f) {
    Dl_info info{};
    if (!dladdr(f, &info) || !info.dli_fname)
        return "?";
    return info.dli_fname;
}

struct Counted {
    static std::atomic<long> live;
    uint64_t v[3];
    Counted() : v{1, 2, 3} { live++; }
    ~Counted() { live--; }
};
std::atomic<long> Counted::live{0};

struct alignas(64) Line {
    char b[64];
};
struct alignas(4096) Page {
    char b[100];
};

// Whether the handler saw a frame of the preloaded library on the stack: the
// library's operator must have left by a tail jump into the runtime's.
static int handler_calls, library_frames;
static void handler() {
    void *frames[64];
    int n = backtrace(frames, 64);
    for (int i = 0; i < n; i++)
        if (std::strstr(object_of(frames[i]), "cpuslab_preload"))
            library_frames++;
    if (++handler_calls == 3)
        std::set_new_handler(nullptr);
}

int main(int argc, char **argv) {
    bool cpuslab = argc > 1 && !std::strcmp(argv[1], "cpuslab");

    // The operators called are the preloaded library's (under glibc: libstdc++'s).
    void *(*plain_new)(size_t) = &::operator new;
    void (*sized_delete)(void *, size_t) = &::operator delete;
    void *(*aligned_new)(size_t, std::align_val_t) = &::operator new[];
    for (const void *f : {(const void *)plain_new, (const void *)sized_delete,
                          (const void *)aligned_new}) {
        const char *obj = object_of(f);
        CHECK((std::strstr(obj, "cpuslab_preload") != nullptr) == cpuslab);
    }

    // Every size up to past the largest class, written whole and measured.
    for (size_t n = 0; n < 70000; n += n < 2048 ? 1 : 997) {
        char *p = static_cast<char *>(escape(::operator new(n)));
        CHECK(p != nullptr && (uintptr_t)p % 16 == 0);
        std::memset(p, 0x5a, n);
        CHECK(malloc_usable_size(p) >= n);
        if (n % 3 == 0)
            ::operator delete(p, n);
        else if (n % 3 == 1)
            ::operator delete(p);
        else
            ::operator delete[](escape(p));
    }

    // Arrays with destructors: the size the compiler passes includes its cookie.
    for (int n = 1; n < 2000; n += 37) {
        Counted *a = new Counted[n];
        CHECK(Counted::live == n && a[n - 1].v[2] == 3);
        delete[] a;
        CHECK(Counted::live == 0);
    }

    // Over-aligned types and explicit alignments take the aligned forms.
    for (int i = 0; i < 100; i++) {
        Line *l = static_cast<Line *>(escape(new Line));
        Page *pg = static_cast<Page *>(escape(new Page));
        CHECK((uintptr_t)l % 64 == 0 && (uintptr_t)pg % 4096 == 0);
        std::memset(l, 1, sizeof *l);
        std::memset(pg, 2, sizeof *pg);
        delete l;
        delete pg;
        Line *ls = static_cast<Line *>(escape(new Line[i + 1]));
        CHECK((uintptr_t)ls % 64 == 0);
        delete[] ls;
    }
    for (size_t align = 16; align <= (1 << 21); align <<= 1) {
        void *p = escape(::operator new(align / 2 + 1, std::align_val_t(align)));
        CHECK((uintptr_t)p % align == 0);
        std::memset(p, 3, align / 2 + 1);
        ::operator delete(p, align / 2 + 1, std::align_val_t(align));
        p = escape(::operator new[](100, std::align_val_t(align), std::nothrow));
        CHECK(p != nullptr && (uintptr_t)p % align == 0);
        ::operator delete[](p, std::align_val_t(align), std::nothrow);
    }

    // The delete forms no expression above emits, called by name.
    for (int i = 0; i < 100; i++) {
        ::operator delete(escape(::operator new(48, std::nothrow)), std::nothrow);
        ::operator delete[](escape(::operator new[](48, std::nothrow)), std::nothrow);
        ::operator delete(escape(::operator new(48, std::align_val_t(256))),
                          std::align_val_t(256));
        ::operator delete[](escape(::operator new[](48, std::align_val_t(256))),
                            std::align_val_t(256));
        ::operator delete[](escape(::operator new[](48, std::align_val_t(256))), 48,
                            std::align_val_t(256));
        ::operator delete(escape(::operator new(48, std::align_val_t(256), std::nothrow)),
                          std::align_val_t(256), std::nothrow);
        ::operator delete[](escape(::operator new[](48)), 48);
    }

    // A sized delete with the wrong size (undefined in C++, harmless under glibc)
    // frees the block as what it is: no larger block is ever handed out there.
    for (int round = 0; round < 4; round++) {
        void *small = escape(::operator new(64));
        ::operator delete(small, 512);
        std::vector<void *> big;
        for (int i = 0; i < 300; i++) {
            void *b = escape(::operator new(512));
            CHECK(b != small);
            std::memset(b, 4, 512);
            big.push_back(b);
        }
        for (void *b : big)
            ::operator delete(b, 512);
    }

    // Out of memory: the throwing forms throw std::bad_alloc, the nothrow ones
    // return null.
    int thrown = 0;
    try {
        escape(::operator new(huge));
    } catch (const std::bad_alloc &) {
        thrown++;
    }
    try {
        escape(::operator new[](huge));
    } catch (const std::bad_alloc &) {
        thrown++;
    }
    try {
        escape(::operator new(huge, std::align_val_t(64)));
    } catch (const std::bad_alloc &) {
        thrown++;
    }
    try {
        escape(::operator new[](huge, std::align_val_t(4096)));
    } catch (const std::bad_alloc &) {
        thrown++;
    }
    CHECK(thrown == 4);
    CHECK(::operator new(huge, std::nothrow) == nullptr);
    CHECK(::operator new[](huge, std::nothrow) == nullptr);
    CHECK(::operator new(huge, std::align_val_t(64), std::nothrow) == nullptr);
    CHECK(::operator new[](huge, std::align_val_t(64), std::nothrow) == nullptr);

    // The program's new_handler runs until it gives up, then the throw.
    std::set_new_handler(handler);
    bool caught = false;
    try {
        escape(::operator new(huge));
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught && handler_calls == 3);
    CHECK(library_frames == 0);
    handler_calls = 0;
    std::set_new_handler(handler);
    caught = false;
    try {
        escape(::operator new[](huge, std::align_val_t(128)));
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught && handler_calls == 3 && library_frames == 0);

    // Blocks cross threads: made by one, deleted by another, sized and not.
    std::vector<Counted *> made(20000);
    std::thread maker([&] {
        for (auto &c : made)
            c = new Counted;
    });
    maker.join();
    std::thread deleter([&] {
        for (size_t i = 0; i < made.size(); i++) {
            if (i % 2)
                delete made[i];
            else
                ::operator delete(made[i]);
        }
    });
    deleter.join();

    // C23's free_sized and free_aligned_sized, where the C library or the preloaded
    // one has them (glibc from 2.42 on).
    typedef void (*free_sized_fn)(void *, size_t);
    typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);
    auto fs = (free_sized_fn)dlsym(RTLD_DEFAULT, "free_sized");
    auto fas = (free_aligned_sized_fn)dlsym(RTLD_DEFAULT, "free_aligned_sized");
    CHECK(!cpuslab || (fs && fas));
    if (fs && fas) {
        for (size_t n = 1; n < 5000; n += 13) {
            fs(escape(std::malloc(n)), n);
            fas(escape(std::aligned_alloc(256, n)), 256, n);
        }
        fs(nullptr, 0);
    }

    if (failures) {
        std::fprintf(stderr, "cxx_test: %d failures\n", failures);
        return 1;
    }
    std::printf("cxx_test: ok\n");
    return 0;
}
