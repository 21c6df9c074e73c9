/* A preloaded library that makes the process see a 16 KiB page size: sysconf
 * (_SC_PAGESIZE) answers 16384, every other name goes to glibc's __sysconf (no dlsym:
 * the first call may come before the allocator can serve one). Used to run cpuslab as
 * on an arm64 kernel with 16K pages, which it does not support. */
#include <unistd.h>

extern long __sysconf(int name);

long sysconf(int name) {
    if (name == _SC_PAGESIZE)
        return 16384;
    return __sysconf(name);
}
