//! C++'s allocation operators over the C interface (x86_64 Linux): `operator new` and
//! `operator delete` in every form the Itanium C++ ABI names (array, nothrow, sized,
//! aligned), for the preload library to export as tcmalloc's, jemalloc's and
//! mimalloc's do.
//!
//! Without them a C++ program still allocates from cpuslab, through its runtime's
//! operators, which call `malloc` and `free`: two calls more on every `new` and
//! `delete` (the operator, then `malloc` through the PLT), and the size that
//! compilers pass to `operator delete` is dropped. A 64-byte `new`/`delete` pair took
//! 7.4 ns so, against 2.9 ns under tcmalloc (g++ 12, libstdc++, this 2-vCPU machine).
//!
//! - `new` is `malloc`'s fast path. What that cannot serve goes to `malloc`'s whole
//!   path, and what that cannot serve either (memory has run out) to the C++ runtime's
//!   own operator (`sys::cxx`), which calls the program's `new_handler` and throws
//!   `std::bad_alloc`, or for the nothrow forms returns null, exactly as it does
//!   without cpuslab.
//! - `delete` in every form is `free`: the size the sized forms pass is ignored, as
//!   glibc ignores it (see [`free_sized`](super::free_sized) for why), so a wrong one,
//!   undefined in C++ and harmless under glibc, is harmless here too.
//! - The aligned forms of `new` are `memalign`'s paths.
//! - Where the program replaces some of the operators itself, every form forwards to
//!   the runtime's, whose defaults call the program's replacements
//!   (`sys::cxx::decide_operators`). Until that is decided, or where it forwards,
//!   the hold bit `HOLD_CXX` turns the fast paths away; `malloc`'s and `free`'s test
//!   of their own hold bits tests it too, so serving costs nothing.
//!
//! The `new` forms are `unsafe`: on failure a C++ exception leaves them, which Rust
//! code must never call them into.

use core::ffi::c_void;

use super::{free_slow, malloc, memalign, MIN_ALIGN};
use crate::kmalloc;
use crate::sys::cxx::{self as rt, cpuslab_cxx_next};
use crate::sys::rseq::HOLD_CXX;

/// The fast path of the unaligned forms: `malloc`'s pop, unless `HOLD_CXX` is held;
/// `slow` for the rest.
#[inline(always)]
fn new_with(
    size: usize,
    tag: usize,
    slow: extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut c_void {
    if size <= kmalloc::FAST_MAX {
        const { assert!(MIN_ALIGN == 16, "kmalloc_fast16 rounds to 16") };
        // SAFETY: the size is at most FAST_MAX.
        let p = unsafe { kmalloc::kmalloc_fast16_unless(size, HOLD_CXX) };
        if !p.is_null() {
            return p.cast();
        }
    }
    slow(size, tag)
}

/// The unaligned forms past their fast path: `malloc`, then the runtime's variant
/// `OP` (`tag` is its `nothrow_t` reference, passed on) when that fails. Out of line
/// and `extern "C"`, so that the forms tail-call it and it tail-calls the stub: no
/// frame of cpuslab's stays on the stack when the runtime throws.
#[cold]
#[inline(never)]
extern "C" fn new_slow<const OP: usize>(size: usize, tag: usize) -> *mut c_void {
    if rt::decide_operators() {
        let p = malloc(size);
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: variant OP's arguments, the size and, for a nothrow form, its tag.
    unsafe { cpuslab_cxx_next(size, tag, 0, OP) }
}

/// The fast path of the aligned forms: `memalign`'s pop; `slow` for the rest.
#[inline(always)]
fn new_aligned_with(
    size: usize,
    align: usize,
    tag: usize,
    slow: extern "C" fn(usize, usize, usize) -> *mut c_void,
) -> *mut c_void {
    if align.is_power_of_two() && rt::operators_ours() {
        let p = kmalloc::kmalloc_fast_aligned(size, align.max(MIN_ALIGN));
        if !p.is_null() {
            return p.cast();
        }
    }
    slow(size, align, tag)
}

/// The aligned forms past their fast path, as [`new_slow`]: `memalign`, then the
/// runtime's variant `OP`.
#[cold]
#[inline(never)]
extern "C" fn new_aligned_slow<const OP: usize>(
    size: usize,
    align: usize,
    tag: usize,
) -> *mut c_void {
    if rt::decide_operators() {
        let p = memalign(align, size);
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: variant OP's arguments: the size, the alignment and, for a nothrow
    // form, its tag.
    unsafe { cpuslab_cxx_next(size, align, tag, OP) }
}

/// `operator new(size_t)`: `size` bytes aligned to 16; when memory runs out, the C++
/// runtime's `new_handler` loop and `std::bad_alloc`.
///
/// # Safety
/// Called only as C++'s operator (from C++ code, through the exported symbol): on
/// failure a C++ exception unwinds out of it, which Rust code must not see. The same
/// holds for every `new` form here.
#[inline]
pub unsafe extern "C" fn new(size: usize) -> *mut c_void {
    new_with(size, 0, new_slow::<{ rt::NEW }>)
}

/// `operator new[](size_t)`: as [`new`].
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_array(size: usize) -> *mut c_void {
    new_with(size, 0, new_slow::<{ rt::NEW_ARRAY }>)
}

/// `operator new(size_t, const std::nothrow_t &)`: as [`new`], null where that throws.
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_nothrow(size: usize, tag: *const c_void) -> *mut c_void {
    new_with(size, tag as usize, new_slow::<{ rt::NEW_NOTHROW }>)
}

/// `operator new[](size_t, const std::nothrow_t &)`: as [`new_nothrow`].
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_array_nothrow(size: usize, tag: *const c_void) -> *mut c_void {
    new_with(size, tag as usize, new_slow::<{ rt::NEW_ARRAY_NOTHROW }>)
}

/// `operator new(size_t, std::align_val_t)`: `size` bytes aligned to `align` (a power
/// of two), as `memalign`; when memory runs out, as [`new`].
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_aligned(size: usize, align: usize) -> *mut c_void {
    new_aligned_with(size, align, 0, new_aligned_slow::<{ rt::NEW_ALIGNED }>)
}

/// `operator new[](size_t, std::align_val_t)`: as [`new_aligned`].
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_array_aligned(size: usize, align: usize) -> *mut c_void {
    new_aligned_with(
        size,
        align,
        0,
        new_aligned_slow::<{ rt::NEW_ARRAY_ALIGNED }>,
    )
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`: as
/// [`new_aligned`], null where that throws.
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_aligned_nothrow(
    size: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    new_aligned_with(
        size,
        align,
        tag as usize,
        new_aligned_slow::<{ rt::NEW_ALIGNED_NOTHROW }>,
    )
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`: as
/// [`new_aligned_nothrow`].
///
/// # Safety
/// As for [`new`].
#[inline]
pub unsafe extern "C" fn new_array_aligned_nothrow(
    size: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    new_aligned_with(
        size,
        align,
        tag as usize,
        new_aligned_slow::<{ rt::NEW_ARRAY_ALIGNED_NOTHROW }>,
    )
}

/// `operator delete` in every form (array, sized, nothrow, aligned; `OP`, an index of
/// `sys::cxx::NAMES`, says which, and `a` and `b` are its arguments after the
/// pointer): [`free`](super::free) of `p`, or, where the program replaces some
/// operators, the runtime's form.
///
/// # Safety
/// `p` is null or a live block of cpuslab's or glibc's, not used again; called only as
/// C++'s operator `OP`.
#[inline]
pub unsafe extern "C" fn delete<const OP: usize>(p: *mut c_void, a: usize, b: usize) {
    // SAFETY: as the caller promised. `free`'s fast path, turned away while HOLD_CXX
    // is held.
    if unsafe { kmalloc::kfree_unsized_fast_unless(p.cast(), HOLD_CXX) } {
        return;
    }
    // SAFETY: as the caller promised.
    unsafe { delete_slow::<OP>(p, a, b) }
}

/// [`delete`] past its fast path: `free`'s whole path, or the runtime's form where the
/// operators forward.
///
/// # Safety
/// As for [`delete`].
#[cold]
#[inline(never)]
unsafe extern "C" fn delete_slow<const OP: usize>(p: *mut c_void, a: usize, b: usize) {
    if rt::decide_operators() {
        // SAFETY: as the caller promised.
        unsafe { free_slow(p) }
    } else {
        // SAFETY: operator OP's arguments, as the caller promised.
        unsafe { cpuslab_cxx_next(p as usize, a, b, OP) };
    }
}
