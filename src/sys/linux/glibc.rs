//! glibc's own allocator, so that the C interface can hand back blocks cpuslab did not
//! allocate (memory glibc's malloc served to a library that binds to it directly, or
//! while cpuslab could not boot) to the allocator that owns them.
//!
//! The functions are glibc's `__libc_malloc`, `__libc_calloc`, `__libc_memalign`,
//! `__libc_realloc`, `__libc_free` and `malloc_usable_size`, found in the dynamic
//! symbol table of the first loaded object that defines them under a version of
//! glibc's (`GLIBC_*`), not by name: the preloaded library defines `__libc_*`
//! functions of its own (of no version, as tcmalloc's and mimalloc's do), so that a
//! program that calls them gets the allocator its `free` belongs to, and a reference
//! by name from inside the library would bind to those. Nor through `dlsym`, which
//! may allocate (glibc before 2.34 `calloc`s each thread's error buffer on its first
//! lookup) from inside an allocation that may be the one that needs glibc's.
//!
//! Where glibc's allocator is not loaded (a statically linked program), the
//! allocations return null and frees leave the block alone.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::elf;

/// The functions of glibc's cpuslab calls, by their names in glibc.
const NAMES: [&[u8]; 6] = [
    b"__libc_malloc",
    b"__libc_calloc",
    b"__libc_memalign",
    b"__libc_realloc",
    b"__libc_free",
    b"malloc_usable_size",
];
const MALLOC: usize = 0;
const CALLOC: usize = 1;
const MEMALIGN: usize = 2;
const REALLOC: usize = 3;
const FREE: usize = 4;
const USABLE_SIZE: usize = 5;

/// The functions' addresses once [`LOOKED_UP`] is set (0: not found).
static FUNCTIONS: [AtomicUsize; NAMES.len()] = [const { AtomicUsize::new(0) }; NAMES.len()];

/// Set once the functions were looked up.
static LOOKED_UP: AtomicU8 = AtomicU8::new(0);

/// The address of glibc's function `NAMES[which]`, 0 where there is none. Looked up
/// once; threads that race look up the same addresses.
#[inline]
fn function(which: usize) -> usize {
    if LOOKED_UP.load(Ordering::Acquire) == 0 {
        look_up();
    }
    FUNCTIONS[which].load(Ordering::Relaxed)
}

/// Fills [`FUNCTIONS`] from the first loaded object that defines `__libc_malloc`
/// under a version of glibc's.
#[cold]
fn look_up() {
    let glibc = |v: Option<&[u8]>| v.is_some_and(|v| v.starts_with(b"GLIBC_"));
    elf::find_loaded(|o| {
        // SAFETY: `o` holds a loaded object's tables, mapped during the walk.
        let malloc = unsafe { o.function(NAMES[MALLOC], glibc) }?;
        for (slot, name) in FUNCTIONS.iter().zip(NAMES) {
            // SAFETY: as above.
            let f = unsafe { o.function(name, glibc) }.unwrap_or(0);
            slot.store(f, Ordering::Relaxed);
        }
        Some(malloc)
    });
    LOOKED_UP.store(1, Ordering::Release);
}

/// glibc's `malloc`; null where glibc's allocator is not loaded.
pub fn malloc(size: usize) -> *mut u8 {
    match function(MALLOC) {
        0 => core::ptr::null_mut(),
        // SAFETY: `f` is glibc's `void *__libc_malloc(size_t)`; no preconditions, null
        // (with errno set) on failure.
        f => unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(usize) -> *mut c_void>(f)(size)
                .cast()
        },
    }
}

/// glibc's `calloc`; null where glibc's allocator is not loaded.
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    match function(CALLOC) {
        0 => core::ptr::null_mut(),
        // SAFETY: `f` is glibc's `void *__libc_calloc(size_t, size_t)`; no
        // preconditions, null (with errno set) on failure or overflow.
        f => unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(usize, usize) -> *mut c_void>(f)(
                n, size,
            )
            .cast()
        },
    }
}

/// glibc's `memalign`; null where glibc's allocator is not loaded.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    match function(MEMALIGN) {
        0 => core::ptr::null_mut(),
        // SAFETY: `f` is glibc's `void *__libc_memalign(size_t, size_t)`; no
        // preconditions, null (with errno set) on failure.
        f => unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(usize, usize) -> *mut c_void>(f)(
                align, size,
            )
            .cast()
        },
    }
}

/// glibc's `realloc`; null (the block left as it is) where glibc's allocator is not
/// loaded.
///
/// # Safety
/// `p` is null or a live block of glibc's malloc; on success it must not be used again.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    match function(REALLOC) {
        0 => core::ptr::null_mut(),
        // SAFETY: `f` is glibc's `void *__libc_realloc(void *, size_t)`; `p` is null
        // or glibc's live block (the caller's contract).
        f => unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>(
                f,
            )(p.cast(), size)
            .cast()
        },
    }
}

/// glibc's `free`; nothing where glibc's allocator is not loaded (no block can be
/// glibc's then).
///
/// # Safety
/// `p` is null or a live block of glibc's malloc, not used again.
pub unsafe fn free(p: *mut u8) {
    let f = function(FREE);
    if f != 0 {
        // SAFETY: `f` is glibc's `void __libc_free(void *)`; `p` is null or glibc's
        // live block, given up (the caller's contract).
        unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(f)(p.cast()) }
    }
}

/// glibc's `malloc_usable_size`, or 0 where it cannot be found.
///
/// # Safety
/// `p` is a live block of glibc's malloc.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    match function(USABLE_SIZE) {
        0 => 0,
        // SAFETY: `f` is glibc's `size_t malloc_usable_size(void *)`; `p` is glibc's
        // live block (the caller's contract).
        f => unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> usize>(f)(p.cast())
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup finds glibc's own functions (libc's `__libc_malloc`, which this test
    /// binary does not define), and they serve and free a block glibc's
    /// `malloc_usable_size` measures.
    #[test]
    fn finds_glibc_allocator_by_its_versions() {
        extern "C" {
            fn __libc_malloc(size: usize) -> *mut c_void;
        }
        let by_name: unsafe extern "C" fn(usize) -> *mut c_void = __libc_malloc;
        assert_eq!(
            function(MALLOC),
            by_name as usize,
            "not libc's __libc_malloc"
        );
        for (which, name) in NAMES.iter().enumerate() {
            assert_ne!(function(which), 0, "{}", String::from_utf8_lossy(name));
        }
        let p = malloc(100);
        assert!(!p.is_null());
        // SAFETY: glibc's live block, freed once.
        unsafe {
            assert!(usable_size(p) >= 100);
            let q = realloc(p, 5000);
            assert!(!q.is_null());
            free(q);
        }
        let z = calloc(10, 10);
        // SAFETY: glibc's live block of 100 zeroed bytes, freed once.
        unsafe {
            assert!(core::slice::from_raw_parts(z, 100).iter().all(|&b| b == 0));
            free(z);
        }
        let a = memalign(4096, 10);
        assert_eq!(a as usize % 4096, 0);
        // SAFETY: glibc's live block, freed once.
        unsafe { free(a) };
    }
}
