//! `libcpuslab_preload.so`: cpuslab as the C allocator of any dynamically linked
//! program.
//!
//! ```sh
//! cargo build --release -p cpuslab-preload
//! LD_PRELOAD=target/release/libcpuslab_preload.so CPUSLAB_STATS=1 python3 script.py
//! ```
//!
//! The exported functions are thin wrappers over [`cpuslab::capi`], which holds the
//! semantics (glibc's) and their documentation. They are defined here rather than with
//! `#[no_mangle]` in the cpuslab crate so that linking cpuslab into a Rust program
//! never replaces that program's C allocator by accident.
//!
//! The library's constructor boots the allocator and reads `CPUSLAB_STATS`; its
//! destructor, which runs during `exit`, prints the report when asked to. Neither is
//! needed for the allocator to work: calls that come before the constructor (from the
//! dynamic loader, or from other libraries' constructors) boot it themselves.

//!
//! Built with `panic = "abort"` (the workspace's release profile) for x86_64 Linux,
//! where cpuslab itself is `no_std`, the library links no `std`: only cpuslab, `core`
//! and `alloc`, so a program that preloads it maps neither std's runtime (its
//! backtrace printer alone is half the text) nor `libgcc_s`. A panic then writes one
//! `cpuslab:` line and aborts, as heap corruption does. Other profiles (unwinding) and
//! platforms build it with std.

#![cfg_attr(
    all(
        panic = "abort",
        target_arch = "x86_64",
        target_os = "linux",
        not(cpuslab_unsupported)
    ),
    no_std
)]
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_int, c_void};

use cpuslab::capi;

/// C `malloc`; see [`capi::malloc`].
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    capi::malloc(size)
}

/// C `free`; see [`capi::free`].
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the C caller's contract is `capi::free`'s.
    unsafe { capi::free(p) }
}

/// C `cfree`; see [`capi::cfree`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: the C caller's contract is `capi::cfree`'s.
    unsafe { capi::cfree(p) }
}

/// C `calloc`; see [`capi::calloc`].
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    capi::calloc(n, size)
}

/// C `realloc`; see [`capi::realloc`].
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C caller's contract is `capi::realloc`'s.
    unsafe { capi::realloc(p, size) }
}

/// C `reallocarray`; see [`capi::reallocarray`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: the C caller's contract is `capi::reallocarray`'s.
    unsafe { capi::reallocarray(p, n, size) }
}

/// C `posix_memalign`; see [`capi::posix_memalign`].
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    // SAFETY: the C caller's contract is `capi::posix_memalign`'s.
    unsafe { capi::posix_memalign(memptr, align, size) }
}

/// C `aligned_alloc`; see [`capi::aligned_alloc`].
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    capi::aligned_alloc(align, size)
}

/// C `memalign`; see [`capi::memalign`].
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    capi::memalign(align, size)
}

/// C `valloc`; see [`capi::valloc`].
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    capi::valloc(size)
}

/// C `pvalloc`; see [`capi::pvalloc`].
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    capi::pvalloc(size)
}

// glibc's internal names of its allocator's functions, which glibc exports
// (`__libc_malloc@@GLIBC_2.2.5`, ...) and some programs and libraries call directly
// to reach "the real malloc": defined here (of no version, so they bind the
// versioned references too), as tcmalloc's and mimalloc's libraries define them, so
// that such a block and the program's `free` (or `__libc_free` of a block from
// `malloc`) meet the same allocator instead of glibc's free aborting on a block of
// cpuslab's. cpuslab reaches glibc's own by their versions (`sys::glibc`).

/// glibc's `__libc_malloc`: [`malloc`].
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    capi::malloc(size)
}

/// glibc's `__libc_free`: [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: the C caller's contract is `capi::free`'s.
    unsafe { capi::free(p) }
}

/// glibc's `__libc_calloc`: [`calloc`].
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    capi::calloc(n, size)
}

/// glibc's `__libc_realloc`: [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C caller's contract is `capi::realloc`'s.
    unsafe { capi::realloc(p, size) }
}

/// glibc's `__libc_memalign`: [`memalign`].
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    capi::memalign(align, size)
}

/// glibc's `__libc_valloc`: [`valloc`].
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    capi::valloc(size)
}

/// glibc's `__libc_pvalloc`: [`pvalloc`].
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    capi::pvalloc(size)
}

/// C `malloc_usable_size`; see [`capi::malloc_usable_size`].
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: the C caller's contract is `capi::malloc_usable_size`'s.
    unsafe { capi::malloc_usable_size(p) }
}

/// C `malloc_trim`; see [`capi::malloc_trim`].
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    capi::malloc_trim(pad)
}

/// C `mallinfo`; see [`capi::mallinfo`].
#[no_mangle]
pub extern "C" fn mallinfo() -> capi::Mallinfo {
    capi::mallinfo()
}

/// C `mallinfo2`; see [`capi::mallinfo2`].
#[no_mangle]
pub extern "C" fn mallinfo2() -> capi::Mallinfo2 {
    capi::mallinfo2()
}

/// C `mallopt`; see [`capi::mallopt`].
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    capi::mallopt(param, value)
}

/// C `malloc_info`; see [`capi::malloc_info`].
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut c_void) -> c_int {
    // SAFETY: the C caller's contract is `capi::malloc_info`'s.
    unsafe { capi::malloc_info(options, fp) }
}

/// C `malloc_stats`; see [`capi::malloc_stats`].
#[no_mangle]
pub extern "C" fn malloc_stats() {
    capi::malloc_stats()
}

/// C23 `free_sized`; see [`capi::free_sized`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the C caller's contract is `capi::free_sized`'s.
    unsafe { capi::free_sized(p, size) }
}

/// C23 `free_aligned_sized`; see [`capi::free_aligned_sized`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: the C caller's contract is `capi::free_aligned_sized`'s.
    unsafe { capi::free_aligned_sized(p, align, size) }
}

/// C++'s `operator new` and `operator delete` in every form, under their Itanium ABI
/// names (see [`capi::cxx`]); on x86_64 Linux, where the failure path's jump to the C++
/// runtime is written. Elsewhere the runtime's own operators call `malloc` and `free`.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(cpuslab_unsupported)))]
mod cxx {
    use core::ffi::c_void;

    use cpuslab::capi::cxx;
    use cpuslab::sys::cxx as rt;

    /// Defines the `operator new` forms over their [`cxx`] functions.
    macro_rules! news {
        ($($(#[$doc:meta])* $name:literal $f:ident($($arg:ident: $ty:ty),*);)*) => {$(
            $(#[$doc])*
            #[export_name = $name]
            pub unsafe extern "C" fn $f($($arg: $ty),*) -> *mut c_void {
                // SAFETY: called as the C++ operator, the contract of `cxx`'s.
                unsafe { cxx::$f($($arg),*) }
            }
        )*};
    }

    news! {
        /// `operator new(size_t)`.
        "_Znwm" new(size: usize);
        /// `operator new[](size_t)`.
        "_Znam" new_array(size: usize);
        /// `operator new(size_t, const std::nothrow_t &)`.
        "_ZnwmRKSt9nothrow_t" new_nothrow(size: usize, tag: *const c_void);
        /// `operator new[](size_t, const std::nothrow_t &)`.
        "_ZnamRKSt9nothrow_t" new_array_nothrow(size: usize, tag: *const c_void);
        /// `operator new(size_t, std::align_val_t)`.
        "_ZnwmSt11align_val_t" new_aligned(size: usize, align: usize);
        /// `operator new[](size_t, std::align_val_t)`.
        "_ZnamSt11align_val_t" new_array_aligned(size: usize, align: usize);
        /// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`.
        "_ZnwmSt11align_val_tRKSt9nothrow_t"
            new_aligned_nothrow(size: usize, align: usize, tag: *const c_void);
        /// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`.
        "_ZnamSt11align_val_tRKSt9nothrow_t"
            new_array_aligned_nothrow(size: usize, align: usize, tag: *const c_void);
    }

    /// Whether `a` and `b` are the same bytes (at compile time: each `delete` form's index
    /// must name it in `rt::NAMES`).
    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Defines the `operator delete` forms: [`cxx::delete`] of the form's index in
    /// `rt::NAMES`, with up to two arguments after the pointer (a size, an alignment
    /// or a `nothrow_t`, which `free` does not need but forwarding passes on).
    macro_rules! deletes {
        ($($(#[$doc:meta])* $name:literal $index:literal
            $f:ident($($arg:ident),*) => ($a:expr, $b:expr);)*) => {$(
            $(#[$doc])*
            #[export_name = $name]
            pub unsafe extern "C" fn $f(p: *mut c_void $(, $arg: usize)*) {
                const _: () = assert!(same(rt::NAMES[rt::DELETE + $index].to_bytes(), $name.as_bytes()));
                // SAFETY: called as the C++ operator, the contract of `cxx::delete`;
                // arguments the form does not have are passed as 0.
                unsafe { cxx::delete::<{ rt::DELETE + $index }>(p, $a, $b) }
            }
        )*};
    }

    deletes! {
        /// `operator delete(void *)`.
        "_ZdlPv" 0 delete() => (0, 0);
        /// `operator delete[](void *)`.
        "_ZdaPv" 1 delete_array() => (0, 0);
        /// `operator delete(void *, size_t)`.
        "_ZdlPvm" 2 delete_sized(size) => (size, 0);
        /// `operator delete[](void *, size_t)`.
        "_ZdaPvm" 3 delete_array_sized(size) => (size, 0);
        /// `operator delete(void *, const std::nothrow_t &)`.
        "_ZdlPvRKSt9nothrow_t" 4 delete_nothrow(tag) => (tag, 0);
        /// `operator delete[](void *, const std::nothrow_t &)`.
        "_ZdaPvRKSt9nothrow_t" 5 delete_array_nothrow(tag) => (tag, 0);
        /// `operator delete(void *, std::align_val_t)`.
        "_ZdlPvSt11align_val_t" 6 delete_aligned(align) => (align, 0);
        /// `operator delete[](void *, std::align_val_t)`.
        "_ZdaPvSt11align_val_t" 7 delete_array_aligned(align) => (align, 0);
        /// `operator delete(void *, size_t, std::align_val_t)`.
        "_ZdlPvmSt11align_val_t" 8 delete_sized_aligned(size, align) => (size, align);
        /// `operator delete[](void *, size_t, std::align_val_t)`.
        "_ZdaPvmSt11align_val_t" 9 delete_array_sized_aligned(size, align) => (size, align);
        /// `operator delete(void *, std::align_val_t, const std::nothrow_t &)`.
        "_ZdlPvSt11align_val_tRKSt9nothrow_t" 10 delete_aligned_nothrow(align, tag) => (align, tag);
        /// `operator delete[](void *, std::align_val_t, const std::nothrow_t &)`.
        "_ZdaPvSt11align_val_tRKSt9nothrow_t" 11 delete_array_aligned_nothrow(align, tag) => (align, tag);
    }
}

extern "C" fn constructor() {
    capi::on_load();
}

extern "C" fn destructor() {
    capi::on_unload();
}

/// Run by the dynamic loader when the library is loaded.
#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

/// Run by the dynamic loader's `_dl_fini` during `exit`, after the program's `atexit`
/// handlers.
#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = destructor;

/// What `std` would give the library, where it links none (see the crate docs): the
/// C libraries it needs, a panic handler, a global allocator and the unwinder's
/// personality routine.
#[cfg(all(
    panic = "abort",
    target_arch = "x86_64",
    target_os = "linux",
    not(cpuslab_unsupported)
))]
mod no_std_runtime {
    // The C libraries themselves, named here so the library always records what it
    // needs (with their symbol versions): without std, the `libc` crate leaves linking
    // them to its user when its own `std` feature is on, as other crates of a build may
    // turn it. Before glibc 2.34 `dlsym` is libdl's and the thread calls libpthread's;
    // from 2.34 on libc has them and the linker, linking as needed, records libc alone.
    #[link(name = "c")]
    #[link(name = "dl")]
    #[link(name = "pthread")]
    extern "C" {}

    /// One `cpuslab:` line with the panic's message and place, then abort (nothing in
    /// the allocator unwinds).
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        cpuslab::sys::io::fatal(format_args!("panic: {info}"))
    }

    /// cpuslab's own Rust allocations (its reports' strings) come from cpuslab itself.
    #[global_allocator]
    static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

    // The unwinder's personality routine, which `core` and `alloc` (shipped built for
    // unwinding) name in their unwind tables, and `std` would define. Nothing in this
    // library unwinds (a panic aborts, and C++ exceptions never cross allocator
    // frames), so it is never called: it only resolves those references. Hidden, so it
    // never stands in for the real one of a Rust library the program loads (a `std`
    // built as a shared library exports its own).
    core::arch::global_asm!(
        ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
        ".globl rust_eh_personality",
        ".hidden rust_eh_personality",
        ".type rust_eh_personality, @function",
        "rust_eh_personality:",
        "jmp {unwinding}",
        ".size rust_eh_personality, . - rust_eh_personality",
        ".popsection",
        unwinding = sym unwinding,
    );

    /// What `rust_eh_personality` above jumps to.
    extern "C" fn unwinding() -> ! {
        cpuslab::sys::io::fatal(format_args!("unwinding through the allocator"))
    }
}
