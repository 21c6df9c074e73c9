//! The C allocation interface (feature `capi`): `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size`, `cfree`, `malloc_trim`, `malloc_stats` and C23's
//! `free_sized` and `free_aligned_sized` with glibc's semantics, over kmalloc;
//! `mallinfo`, `mallinfo2`, `mallopt` and `malloc_info` with cpuslab's figures in
//! glibc's forms (`info`); C++'s `operator new` and `operator delete` on x86_64 Linux
//! (`cxx`).
//!
//! These are Rust functions with the C ABI and C semantics; the `cpuslab-preload`
//! crate (`capi/`) exports them under their C names from `libcpuslab_preload.so`, to
//! be loaded with `LD_PRELOAD`.
//!
//! - Every block is aligned to at least 16 bytes, as glibc's on x86_64 and aarch64.
//!   Sizes are rounded up to a multiple of 16, which makes the size class the one
//!   `kmalloc(size, 16)` picks while keeping kmalloc's fast path for small alignments
//!   (every kmalloc class from 16 bytes up, except 24, is a multiple of 16 whose cache
//!   aligns its objects to the largest power of two dividing the size).
//! - Failures return null with `errno` set to `ENOMEM` (or `EINVAL` for a bad
//!   alignment), and calls that succeed leave `errno` as they found it (glibc's `free`
//!   has promised that since 2.33).
//! - `malloc(0)` returns a unique block; `realloc(NULL, n)` is `malloc(n)`;
//!   `realloc(p, 0)` frees `p` and returns null, as glibc does.
//! - A block cpuslab does not own (one glibc's malloc served before cpuslab took
//!   over) is recognised by its address — it lies in no arena and is no huge block —
//!   and handed to glibc's own `free`, `realloc` and `malloc_usable_size`. `realloc`
//!   moves such a block into cpuslab.
//! - While cpuslab cannot serve at all (a call from inside its own boot, or a kernel
//!   page size other than 4 KiB), requests go to glibc's malloc instead, so the
//!   program still runs; those blocks are foreign blocks from then on.
//!
//! Nothing here allocates through the global allocator, unwinds, or depends on a
//! constructor having run: the allocator boots on the first call, from whichever
//! thread makes it, and keeps no thread-local state, so threads that are starting or
//! exiting may call in at any point.

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(cpuslab_unsupported)))]
pub mod cxx;
mod info;

pub use info::{
    mallinfo, mallinfo2, malloc_info, mallopt, Mallinfo, Mallinfo2, M_ARENA_MAX, M_MMAP_MAX,
    M_MMAP_THRESHOLD, M_MXFAST, M_TOP_PAD, M_TRIM_THRESHOLD,
};

use core::ffi::{c_int, c_void};
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::init::booted;
use crate::kmalloc::{self, kmalloc, kzalloc};
use crate::page::{arena, huge};
use crate::sys::errno::{self, EINVAL, ENOMEM};
use crate::sys::{self, PAGE_SIZE};

/// Alignment of every block, as glibc's `MALLOC_ALIGNMENT` on 64-bit targets.
pub const MIN_ALIGN: usize = 16;

/// The size class request for a C size: at least one byte, rounded up to
/// [`MIN_ALIGN`], served with kmalloc's default alignment. `None` past
/// `PTRDIFF_MAX`, which glibc refuses with `ENOMEM` too.
#[inline(always)]
fn request(size: usize) -> Option<usize> {
    if size > isize::MAX as usize - MIN_ALIGN {
        return None;
    }
    Some((size.max(1) + MIN_ALIGN - 1) & !(MIN_ALIGN - 1))
}

/// Whether `p` (not null) is a block cpuslab handed out: every address in an arena is
/// cpuslab's, and outside them only huge blocks are.
#[inline(always)]
fn is_ours(p: *mut u8) -> bool {
    arena::contains(p) || huge::is_huge(p)
}

/// Whether glibc may serve a request kmalloc returned null for: cpuslab not booted (a
/// call from inside boot, or a boot that failed), or the kernel refusing it memory
/// (an address-space limit), but not a heap limit's refusal, which glibc would not
/// respect (`init::may_forward`).
#[inline]
fn unavailable() -> bool {
    crate::init::may_forward()
}

/// `malloc(size)` without touching `errno`.
#[inline(always)]
fn alloc(size: usize) -> *mut u8 {
    let Some(request) = request(size) else {
        return ptr::null_mut();
    };
    let p = booted(kmalloc, request, 8);
    if p.is_null() && unavailable() {
        return sys::glibc::malloc(size);
    }
    p
}

/// The fast path of the `memalign` family, for a power-of-two `align`: `malloc`'s
/// restartable pop for a size and an alignment of at most 1 KiB; null otherwise, or
/// when it cannot serve. No system call, so errno is left alone without saving it.
#[inline(always)]
fn aligned_fast(align: usize, size: usize) -> *mut u8 {
    kmalloc::kmalloc_fast_aligned(size, align.max(MIN_ALIGN))
}

/// `memalign(align, size)` for a power-of-two `align`, without touching `errno`.
fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    if align <= MIN_ALIGN {
        return alloc(size);
    }
    if align > isize::MAX as usize || size > isize::MAX as usize - align {
        return ptr::null_mut();
    }
    let p = booted(kmalloc, size, align);
    if p.is_null() && unavailable() {
        return sys::glibc::memalign(align, size);
    }
    p
}

/// Frees `p` (not null) without touching `errno`.
///
/// # Safety
/// `p` is a live block of cpuslab or of glibc's malloc, not used again.
#[inline(always)]
unsafe fn release(p: *mut u8) {
    if is_ours(p) {
        // SAFETY: a live block of cpuslab, as the caller promised.
        unsafe { kmalloc::kfree_unsized(p) }
    } else {
        foreign(p, "free()");
        // SAFETY: not cpuslab's, so glibc's malloc served it.
        unsafe { sys::glibc::free(p) }
    }
}

/// Before `op` hands `p`, not cpuslab's, to glibc: aborts with one `cpuslab:` line
/// when it is a huge block freed lately (a double free), a stray pointer into a huge
/// block, or an address on the calling thread's stack (whose frames glibc would read
/// a size from: it aborted or crashed by what they held). Off the paths of cpuslab's
/// own blocks.
#[cold]
fn foreign(p: *mut u8, op: &str) {
    huge::check_foreign(p, op);
    if sys::thread::on_own_stack(p) {
        sys::io::fatal(format_args!(
            "{op}: invalid pointer {p:p}: on the thread's stack"
        ));
    }
}

/// The fast path of `malloc` and `calloc`: a slab class's restartable pop, through
/// the by-size table of the classes up to 1 KiB or the one of the classes above, up to
/// the largest (32 KiB). Null when it cannot serve.
#[inline(always)]
fn fast_alloc(size: usize) -> *mut u8 {
    if size <= kmalloc::FAST_MAX {
        const { assert!(MIN_ALIGN == 16, "kmalloc_fast16 rounds to 16") };
        // SAFETY: the size is at most FAST_MAX.
        unsafe { kmalloc::kmalloc_fast16(size) }
    } else if size <= kmalloc::KMALLOC_MAX_CACHE_SIZE {
        // SAFETY: above FAST_MAX, at most the largest class.
        unsafe { kmalloc::kmalloc_fast_big(size) }
    } else {
        ptr::null_mut()
    }
}

/// C `malloc`: at least `size` bytes aligned to 16, a unique block for 0; null with
/// `errno = ENOMEM` on failure.
#[inline]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    // The fast path makes no system call, so it leaves errno alone without saving it.
    if size <= kmalloc::FAST_MAX {
        const { assert!(MIN_ALIGN == 16, "kmalloc_fast16 rounds to 16") };
        // SAFETY: the size is at most FAST_MAX.
        let p = unsafe { kmalloc::kmalloc_fast16(size) };
        if !p.is_null() {
            return p.cast();
        }
        return malloc_slow(size);
    }
    malloc_large(size)
}

/// `malloc` above 1 KiB: the classes up to 32 KiB by their own table, everything else
/// (and what that cannot serve) by [`malloc_slow`]. Out of line, as the small sizes'
/// path is measurably slower with this one beside it; `extern "C"` for the tail call.
#[inline(never)]
extern "C" fn malloc_large(size: usize) -> *mut c_void {
    let p = fast_alloc(size);
    if !p.is_null() {
        return p.cast();
    }
    malloc_slow(size)
}

/// `malloc` past its fast path: whatever may make a system call, with errno saved.
///
/// `extern "C"`, so that it cannot unwind: `malloc` then tail-calls it, with no
/// abort-on-unwind frame around the call and no stack set up on the fast path.
#[cold]
#[inline(never)]
extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    crate::background::c_interface();
    let saved = errno::Saved::new();
    let p = alloc(size);
    // The background reclaim thread starts from here, a slow path of an allocation
    // that holds no lock, and not from the free paths' `maybe_reap` as in a Rust
    // program: glibc frees thread-stack memory through `free` holding its stack-cache
    // lock, which `pthread_create` takes.
    crate::background::kick();
    if p.is_null() {
        saved.fail(ENOMEM);
    } else {
        saved.restore();
    }
    p.cast()
}

/// C `free`: nothing for null; a block of cpuslab goes back to its cache or pages, any
/// other block to glibc's `free`. Leaves `errno` unchanged.
///
/// # Safety
/// `p` is null or a live block from this interface (or from glibc's malloc), not used
/// again.
#[inline]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: as the caller promised. The fast path makes no system call, so it leaves
    // errno alone without saving it.
    if unsafe { kmalloc::kfree_unsized_fast(p.cast()) } {
        return;
    }
    // SAFETY: as the caller promised.
    unsafe { free_slow(p) }
}

/// `free` past its fast path, with errno saved; `extern "C"` for the tail call, as
/// [`malloc_slow`].
///
/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_slow(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // Before the free's slow path: from now on a free never starts the reclaim thread.
    crate::background::c_interface();
    let saved = errno::Saved::new();
    // SAFETY: as the caller promised.
    unsafe { release(p.cast()) };
    saved.restore();
}

/// C23 `free_sized`: [`free`] of a block of `size` bytes, as `malloc(size)` or
/// `calloc` made it (C++'s sized `operator delete` too). The size is ignored, as
/// glibc ignores it: a wrong one is then harmless, and a path that took the class
/// from the size rather than the page's tag measured slower than `free`'s (64 B
/// `operator new`/sized `operator delete` pair: 5.1-5.3 ns against 4.0-4.1), its
/// extra instructions costing more than the dependent load they save. Leaves `errno`
/// unchanged.
///
/// # Safety
/// As [`free`].
#[inline]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    let _ = size;
    // SAFETY: as the caller promised.
    unsafe { free(p) }
}

/// C23 `free_aligned_sized`: [`free`] of a block of `size` bytes aligned to `align`,
/// as `aligned_alloc(align, size)` made it; the size and alignment are ignored, as in
/// [`free_sized`]. Leaves `errno` unchanged.
///
/// # Safety
/// As [`free`].
#[inline]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    let _ = (align, size);
    // SAFETY: as the caller promised.
    unsafe { free(p) }
}

/// C `cfree`: the old name of [`free`].
///
/// # Safety
/// As [`free`].
#[inline]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: as the caller promised.
    unsafe { free(p) }
}

/// C `calloc`: `n * size` zeroed bytes; null with `errno = ENOMEM` when the product
/// overflows or memory runs out.
#[inline]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // The fast path is `malloc`'s pop and a clear of the bytes asked for: no system
    // call, so errno is left alone without saving it.
    if let Some(bytes) = n.checked_mul(size) {
        let p = fast_alloc(bytes);
        if !p.is_null() {
            // SAFETY: the block's class holds at least `bytes`.
            unsafe { ptr::write_bytes(p, 0, bytes) };
            return p.cast();
        }
    }
    calloc_slow(n, size)
}

/// `calloc` past its fast path, with errno saved; `extern "C"` for the tail call, as
/// [`malloc_slow`].
#[cold]
#[inline(never)]
extern "C" fn calloc_slow(n: usize, size: usize) -> *mut c_void {
    let saved = errno::Saved::new();
    let Some(request) = n.checked_mul(size).and_then(request) else {
        saved.fail(ENOMEM);
        return ptr::null_mut();
    };
    let mut p = booted(kzalloc, request, 8);
    if p.is_null() && unavailable() {
        p = sys::glibc::calloc(n, size);
    }
    if p.is_null() {
        saved.fail(ENOMEM);
    } else {
        saved.restore();
    }
    p.cast()
}

/// C `realloc`: `malloc(size)` for null; frees `p` and returns null for `size == 0`
/// (glibc's `REALLOC_ZERO_BYTES_FREES`); otherwise resizes in place where the class
/// allows, else moves. On failure returns null with `errno = ENOMEM` and leaves `p`
/// untouched. A block of glibc's malloc is resized by glibc and then moved into
/// cpuslab.
///
/// # Safety
/// `p` is null or a live block from this interface (or from glibc's malloc); after a
/// non-null return it must not be used again.
#[inline]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    // The fast paths: a small block that stays in its class stays where it is, and one
    // that leaves it moves by `malloc`'s and `free`'s (no system call, so errno is left
    // alone without saving it).
    if size != 0 && size <= kmalloc::FAST_MAX {
        // SAFETY: as the caller promised; `size` is at most FAST_MAX.
        match unsafe { kmalloc::krealloc_fast(p.cast(), size) } {
            kmalloc::FastRealloc::InPlace => return p,
            // SAFETY: as the caller promised; a slab block of `old` bytes.
            kmalloc::FastRealloc::Move(old) => return unsafe { realloc_move(p, size, old) },
            kmalloc::FastRealloc::Slow => {}
        }
    }
    // SAFETY: as the caller promised.
    unsafe { realloc_slow(p, size) }
}

/// `realloc` of a slab block of `old` bytes to another small class: a block from
/// `malloc`'s fast path, the copy, `p` freed as `free` frees it. A growing string or
/// array moves so at each class it passes (`capi/ops.c realloc`: 3 of its 11 calls),
/// and the whole path (errno saved, the class looked up again, the generic copy) had
/// made those calls cost twice the others. Out of line, as `realloc`'s in-place case
/// is the common one. `extern "C"` for the tail call, as [`malloc_slow`].
///
/// # Safety
/// `p` is a live slab block of cpuslab of `old` bytes; `0 < size <= FAST_MAX`.
#[inline(never)]
unsafe extern "C" fn realloc_move(p: *mut c_void, size: usize, old: usize) -> *mut c_void {
    // SAFETY: `size` is at most FAST_MAX (the contract).
    let q = unsafe { kmalloc::kmalloc_fast16(size) };
    if q.is_null() {
        // SAFETY: as the caller promised.
        return unsafe { realloc_slow(p, size) };
    }
    // SAFETY: `p` holds `old` bytes, `q` at least `size`; two live blocks.
    unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), q, old.min(size)) };
    // SAFETY: `p` is a live block of cpuslab, given up (`realloc`'s contract).
    unsafe { free(p) };
    q.cast()
}

/// `realloc` past its fast path, with errno saved; `extern "C"` for the tail call, as
/// [`malloc_slow`].
///
/// # Safety
/// As [`realloc`], with `p` not null.
#[cold]
#[inline(never)]
unsafe extern "C" fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    let p = p.cast::<u8>();
    let saved = errno::Saved::new();
    if size == 0 {
        // SAFETY: as the caller promised.
        unsafe { release(p) };
        saved.restore();
        return ptr::null_mut();
    }
    let Some(request) = request(size) else {
        saved.fail(ENOMEM);
        return ptr::null_mut();
    };
    let q = if is_ours(p) {
        // SAFETY: a live block of cpuslab with (at most) the default alignment class
        // of its size; realloc's result needs only 16 bytes of alignment, which every
        // class of a rounded request has.
        let q = unsafe { kmalloc::krealloc_unsized(p, request, 8) };
        if q.is_null() && unavailable() {
            // SAFETY: `p` is a live block of cpuslab (the branch), left live by the
            // failed krealloc.
            unsafe { realloc_into_glibc(p, size) }
        } else {
            q
        }
    } else {
        foreign(p, "realloc()");
        // SAFETY: not cpuslab's, so glibc's malloc served it.
        unsafe { realloc_foreign(p, size, request) }
    };
    if q.is_null() {
        saved.fail(ENOMEM);
    } else {
        saved.restore();
    }
    q.cast()
}

/// Moves a block of cpuslab that cpuslab could not resize into a block of glibc's
/// malloc of `size` bytes (see [`unavailable`]): its first `size` bytes, or all it
/// holds when less. Null, with `p` untouched, when glibc has no block either.
///
/// # Safety
/// `p` is a live block of cpuslab; on a non-null return it is freed.
#[cold]
unsafe fn realloc_into_glibc(p: *mut u8, size: usize) -> *mut u8 {
    let q = sys::glibc::malloc(size);
    if q.is_null() {
        return q;
    }
    // SAFETY: `p` is a live block of cpuslab (the contract).
    let keep = unsafe { kmalloc::ksize(p) }.min(size);
    // SAFETY: `p` has `ksize(p)` readable bytes and `q` at least `size`; they are
    // distinct blocks. `p` is cpuslab's and, moved, is not used again.
    unsafe {
        ptr::copy_nonoverlapping(p, q, keep);
        kmalloc::kfree_unsized(p);
    }
    q
}

/// Resizes a block of glibc's malloc: glibc resizes it (so exactly its live bytes
/// survive, whatever glibc's block layout), then the first `size` bytes move into a
/// block of cpuslab. When cpuslab cannot take them the glibc block is the result.
///
/// # Safety
/// `p` is a live block of glibc's malloc.
#[cold]
unsafe fn realloc_foreign(p: *mut u8, size: usize, request: usize) -> *mut u8 {
    // SAFETY: as the caller promised.
    let r = unsafe { sys::glibc::realloc(p, size) };
    if r.is_null() {
        return r;
    }
    let q = booted(kmalloc, request, 8);
    if q.is_null() {
        return r;
    }
    // SAFETY: `r` has at least `size` readable bytes and `q` at least `request`; they
    // are distinct blocks. `r` is glibc's and is not used again.
    unsafe {
        ptr::copy_nonoverlapping(r, q, size);
        sys::glibc::free(r);
    }
    q
}

/// C `reallocarray`: `realloc(p, n * size)`, or null with `errno = ENOMEM` (and `p`
/// untouched) when the product overflows.
///
/// # Safety
/// As [`realloc`].
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: as the caller promised.
        Some(bytes) => unsafe { realloc(p, bytes) },
        None => {
            errno::set(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C `posix_memalign`: stores a block of `size` bytes aligned to `align` in `*memptr`
/// and returns 0; returns `EINVAL` when `align` is not a power of two multiple of
/// `sizeof(void *)`, `ENOMEM` when memory runs out. `*memptr` and `errno` are left
/// alone on failure.
///
/// # Safety
/// `memptr` is valid for a pointer-sized write.
#[inline]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return EINVAL;
    }
    let p = aligned_fast(align, size);
    if !p.is_null() {
        // SAFETY: as the caller promised.
        unsafe { *memptr = p.cast() };
        return 0;
    }
    let saved = errno::Saved::new();
    let p = alloc_aligned(align, size);
    saved.restore();
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: as the caller promised.
    unsafe { *memptr = p.cast() };
    0
}

/// C `memalign`, as glibc's: an alignment of at most 16 is `malloc`, one that is not
/// a power of two is rounded up to the next, and one above `SIZE_MAX / 2 + 1` fails
/// with `EINVAL`. Null with `errno = ENOMEM` when memory runs out.
#[inline]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        errno::set(EINVAL);
        return ptr::null_mut();
    }
    let align = align.next_power_of_two();
    let p = aligned_fast(align, size);
    if !p.is_null() {
        return p.cast();
    }
    let saved = errno::Saved::new();
    let p = alloc_aligned(align, size);
    if p.is_null() {
        saved.fail(ENOMEM);
    } else {
        saved.restore();
    }
    p.cast()
}

/// C11 `aligned_alloc`, as glibc 2.38 and later (and ISO C17): `memalign` for an
/// alignment that is a power of two; null with `errno = EINVAL` for any other,
/// including 0.
#[inline]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        errno::set(EINVAL);
        return ptr::null_mut();
    }
    memalign(align, size)
}

/// C `valloc`: `memalign(4096, size)`.
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign(PAGE_SIZE, size)
}

/// C `pvalloc`: `memalign(4096, size)` with `size` rounded up to whole pages (one page
/// for 0); null with `errno = ENOMEM` when the rounding overflows.
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE_SIZE) {
        Some(bytes) => memalign(PAGE_SIZE, bytes),
        None => {
            errno::set(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C `malloc_usable_size`: the bytes usable in the block at `p` (at least what was
/// asked for), 0 for null. A block of glibc's malloc is measured by glibc.
///
/// # Safety
/// `p` is null or a live block from this interface (or from glibc's malloc).
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    let p = p.cast::<u8>();
    if p.is_null() {
        return 0;
    }
    if is_ours(p) {
        // SAFETY: a live block of cpuslab, as the caller promised.
        unsafe { kmalloc::ksize(p) }
    } else {
        foreign(p, "malloc_usable_size()");
        // SAFETY: not cpuslab's, so glibc's malloc served it.
        unsafe { sys::glibc::usable_size(p) }
    }
}

/// C `malloc_trim`: empties every cache and purges all free pages
/// ([`crate::trim`]); `pad` is ignored. Returns 1 when memory went back to the
/// system, 0 otherwise.
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let saved = errno::Saved::new();
    let purged = crate::trim();
    saved.restore();
    c_int::from(purged > 0)
}

/// C `malloc_stats`: writes [`write_report`] to standard error.
pub extern "C" fn malloc_stats() {
    print_report(2);
}

/// Writes [`write_report`] to the descriptor `fd`, leaving `errno` alone.
fn print_report(fd: c_int) {
    let saved = errno::Saved::new();
    let mut w = FdWriter::new(fd);
    let _ = write_report(&mut w);
    w.flush();
    saved.restore();
}

/// Writes the report `malloc_stats` and `CPUSLAB_STATS=1` print: a line naming the
/// process, `/proc/slabinfo` and `/proc/buddyinfo` in the kernel's formats, and the
/// memory cpuslab holds.
pub fn write_report(w: &mut dyn Write) -> fmt::Result {
    crate::init::ensure();
    let mut comm = [0u8; 16];
    let name = sys::process::comm(&mut comm);
    writeln!(
        w,
        "cpuslab: served pid {} ({})",
        sys::process::pid(),
        core::str::from_utf8(name).unwrap_or("?")
    )?;
    writeln!(
        w,
        "cpuslab: per-CPU fast path: {}",
        crate::slab::fastpath::fast_path()
    )?;
    crate::stats::write_slabinfo(w)?;
    crate::stats::write_buddyinfo(w)?;
    let m = crate::stats::memory();
    // Where the resident bytes sit, before the summary line that ends the report.
    w.write_str("cpuslab: where: ")?;
    m.breakdown.write(w)?;
    w.write_char('\n')?;
    writeln!(
        w,
        "cpuslab: reserved {} KiB, committed {} KiB, free {} KiB (dirty {} KiB), \
         per-cpu lists {} KiB, purged {} KiB, huge blocks {} (cached for reuse {} KiB)",
        m.reserved_bytes >> 10,
        m.committed_bytes >> 10,
        m.free_bytes >> 10,
        m.dirty_free_bytes >> 10,
        m.pcp_bytes >> 10,
        m.purged_bytes >> 10,
        huge::live_blocks(),
        m.huge_cached_bytes >> 10,
    )
}

/// Formats into a stack buffer and writes it to a descriptor whenever it fills, so
/// reports of any length go out without allocating. The buffer holds a whole report
/// (about 8 KiB), which then goes out in one `write`: processes that exit together
/// (the two ends of a shell pipeline) do not interleave their reports in a pipe.
struct FdWriter {
    fd: c_int,
    buf: [u8; 16384],
    len: usize,
}

impl FdWriter {
    fn new(fd: c_int) -> Self {
        Self {
            fd,
            buf: [0; 16384],
            len: 0,
        }
    }

    fn flush(&mut self) {
        sys::process::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// Where the report at exit goes: -1 for none (`CPUSLAB_STATS` unset), else a copy
/// of standard error made by [`on_load`] (or standard error itself).
static STATS_FD: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of the file [`STATS_FD`] referred to when it was made.
static STATS_FILE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The shared library's constructor: boots the allocator (so its fork handlers are
/// among the first registered: their `prepare` then runs after the program's, which
/// may still allocate) and reads `CPUSLAB_STATS`. With it set to anything but `0`,
/// keeps a close-on-exec copy of standard error for the report at exit, since some
/// programs close standard error before they exit. The interface works without the
/// constructor; it only makes the report possible.
pub fn on_load() {
    crate::background::c_interface();
    let saved = errno::Saved::new();
    crate::init::ensure();
    if let Some(v) = sys::env::get(c"CPUSLAB_STATS") {
        if !v.is_empty() && v != b"0" {
            let fd = sys::process::dup_stderr().unwrap_or(2);
            let (dev, ino) = sys::process::file_identity(fd).unwrap_or((0, 0));
            STATS_FILE[0].store(dev, Ordering::Relaxed);
            STATS_FILE[1].store(ino, Ordering::Relaxed);
            STATS_FD.store(fd, Ordering::Relaxed);
        }
    }
    saved.restore();
}

/// The shared library's destructor (it runs during `exit`): prints the
/// [`write_report`] report when [`on_load`] found `CPUSLAB_STATS` set, to its copy of
/// standard error if that still refers to the same file (the program may have closed
/// it and opened another file under its number), else to standard error.
///
/// Only the test of `STATS_FD` is inline: the report's buffers make a frame of
/// 16 KiB, whose stack probes touched four pages in every process's `exit` (8 KiB of
/// peak RSS that a parent's `wait4` sees), the report asked for or not.
pub fn on_unload() {
    let fd = STATS_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        report_at_exit(fd);
    }
}

/// [`on_unload`]'s report on `fd`, out of line.
#[cold]
#[inline(never)]
fn report_at_exit(mut fd: i32) {
    let file = (
        STATS_FILE[0].load(Ordering::Relaxed),
        STATS_FILE[1].load(Ordering::Relaxed),
    );
    if fd != 2 && sys::process::file_identity(fd) != Some(file) {
        fd = 2;
    }
    sys::process::ignore_sigpipe();
    print_report(fd);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmalloc::{classify, Kind, KMALLOC_SIZES};

    #[test]
    fn rounded_requests_get_the_class_of_align_16() {
        for size in 0..=kmalloc::KMALLOC_MAX_LARGE + 64 {
            let r = request(size).unwrap();
            let (a, b) = (classify(r, 8), classify(size, MIN_ALIGN));
            assert_eq!(a, b, "size {size}");
            if let Kind::Slab(i) = a {
                assert_eq!(KMALLOC_SIZES[i] % MIN_ALIGN, 0, "size {size}");
            }
        }
        assert_eq!(request(isize::MAX as usize), None);
        assert_eq!(request(usize::MAX), None);
    }

    #[test]
    fn malloc_free_and_errno() {
        errno::set(1234);
        let p = malloc(0);
        let q = malloc(0);
        assert!(!p.is_null() && p != q);
        // The fast path's entry for size 0 is the 16-byte class's, not the 8-byte one
        // that kmalloc's table has for sizes up to 8.
        for b in [p, q] {
            assert_eq!(b as usize % 16, 0);
            // SAFETY: a live block of this interface.
            assert_eq!(unsafe { malloc_usable_size(b) }, 16);
        }
        assert_eq!(errno::get(), 1234);
        assert!(malloc(usize::MAX).is_null());
        assert_eq!(errno::get(), ENOMEM);
        errno::set(7);
        // SAFETY: blocks from `malloc`, freed once.
        unsafe {
            free(p);
            free(q);
            free(ptr::null_mut());
        }
        assert_eq!(errno::get(), 7);
    }

    #[test]
    fn realloc_keeps_contents_across_classes() {
        // SAFETY: each block is used within its size and freed once.
        unsafe {
            let mut p = malloc(1).cast::<u8>();
            *p = 0xA5;
            for size in [2, 17, 100, 5000, 40_000, 5 << 20, 64, 1] {
                p = realloc(p.cast(), size).cast();
                assert!(!p.is_null());
                assert_eq!(p as usize % MIN_ALIGN, 0);
                assert_eq!(*p, 0xA5, "size {size}");
                assert!(malloc_usable_size(p.cast()) >= size);
            }
            assert!(realloc(p.cast(), 0).is_null());
        }
    }

    #[test]
    fn zero_byte_blocks_with_huge_alignments_lie_in_their_own_mapping() {
        // A zero-byte huge block once started at the end of its mapping: right where
        // the next arena began when the mapping sat below one, so `free` took it for
        // an arena page and aborted.
        for align in [8usize << 20, 16 << 20, 64 << 20] {
            let blocks: [*mut c_void; 24] = core::array::from_fn(|_| memalign(align, 0));
            for p in blocks {
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(huge::is_huge(p.cast()) && !arena::contains(p.cast()));
                // SAFETY: a live block from `memalign`.
                assert!(unsafe { malloc_usable_size(p) } > 0);
            }
            for p in blocks {
                // SAFETY: freed once.
                unsafe { free(p) };
            }
        }
    }

    #[test]
    fn foreign_blocks_go_back_to_glibc() {
        // SAFETY: blocks from glibc's malloc, used within their sizes and freed once.
        unsafe {
            let g = sys::glibc::malloc(100);
            assert!(!g.is_null() && !is_ours(g));
            assert!(malloc_usable_size(g.cast()) >= 100);
            free(g.cast());
            let g = sys::glibc::malloc(40);
            g.write_bytes(0x5A, 40);
            let q = realloc(g.cast(), 4000).cast::<u8>();
            assert!(is_ours(q));
            assert!((0..40).all(|i| *q.add(i) == 0x5A));
            free(q.cast());
        }
    }

    #[test]
    fn a_block_cpuslab_cannot_resize_moves_to_glibc() {
        // What `realloc` does with a block of cpuslab when kmalloc refuses the new
        // size while glibc may serve (the kernel refused an arena).
        // SAFETY: blocks from `malloc` and `realloc_into_glibc`, used within their
        // sizes and freed once.
        unsafe {
            for (from, to) in [(100usize, 5000usize), (5000, 100), (64, 64 << 10)] {
                let p = malloc(from).cast::<u8>();
                assert!(is_ours(p));
                for i in 0..from {
                    p.add(i).write(i as u8);
                }
                let q = realloc_into_glibc(p, to);
                assert!(!q.is_null() && !is_ours(q), "{from} -> {to}");
                assert!(malloc_usable_size(q.cast()) >= to);
                assert!(
                    (0..from.min(to)).all(|i| *q.add(i) == i as u8),
                    "{from} -> {to}"
                );
                free(q.cast());
            }
        }
    }
}
