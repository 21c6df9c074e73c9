//! glibc's own allocator, reached under its internal names so that the C interface
//! can hand back blocks cpuslab did not allocate (memory glibc's malloc served before
//! cpuslab took over, or while cpuslab could not boot) to the allocator that owns them.
//!
//! `__libc_malloc`, `__libc_calloc`, `__libc_memalign`, `__libc_realloc` and
//! `__libc_free` are exported by glibc (GLIBC_2.2.5) and are never interposed;
//! `malloc_usable_size` has no such alias and is found with `dlsym(RTLD_NEXT)`, the
//! definition that follows cpuslab's in the lookup order.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
}

/// glibc's `malloc`.
pub fn malloc(size: usize) -> *mut u8 {
    // SAFETY: no preconditions; null (with errno set) on failure.
    unsafe { __libc_malloc(size).cast() }
}

/// glibc's `calloc`.
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    // SAFETY: no preconditions; null (with errno set) on failure or overflow.
    unsafe { __libc_calloc(n, size).cast() }
}

/// glibc's `memalign`.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    // SAFETY: no preconditions; null (with errno set) on failure.
    unsafe { __libc_memalign(align, size).cast() }
}

/// glibc's `realloc`.
///
/// # Safety
/// `p` is null or a live block of glibc's malloc; on success it must not be used again.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: `p` is null or glibc's live block (the caller's contract).
    unsafe { __libc_realloc(p.cast(), size).cast() }
}

/// glibc's `free`.
///
/// # Safety
/// `p` is null or a live block of glibc's malloc, not used again.
pub unsafe fn free(p: *mut u8) {
    // SAFETY: `p` is null or glibc's live block, given up (the caller's contract).
    unsafe { __libc_free(p.cast()) }
}

/// The address of glibc's `malloc_usable_size`: 0 before the first lookup, 1 when
/// there is none.
static USABLE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// glibc's `malloc_usable_size`, or 0 when it cannot be found.
///
/// # Safety
/// `p` is a live block of glibc's malloc.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    let mut f = USABLE_SIZE.load(Ordering::Acquire);
    if f == 0 {
        // Looked up at first use: lookups allocate nothing when they succeed, and a
        // failed one allocates only its error message (through cpuslab, holding no lock).
        // SAFETY: a NUL-terminated name; `RTLD_NEXT` is a pseudo-handle dlsym accepts.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
        f = if sym.is_null() { 1 } else { sym as usize };
        USABLE_SIZE.store(f, Ordering::Release);
    }
    if f == 1 {
        return 0;
    }
    // SAFETY: `f` is the address of glibc's `size_t malloc_usable_size(void *)`.
    let f: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { core::mem::transmute(f) };
    // SAFETY: `p` is glibc's live block (the caller's contract).
    unsafe { f(p.cast()) }
}
