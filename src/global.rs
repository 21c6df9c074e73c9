//! `CpuSlab`: the global allocator, `GlobalAlloc` and `allocator_api2::Allocator` over
//! kmalloc.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::init::booted;
use crate::kmalloc::{self, kfree, krealloc, kzalloc, usable_size_layout};

/// What `alloc` does past kmalloc's fast path: kmalloc's slow path, booting the
/// allocator and asking again when it was not booted.
#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize) -> *mut u8 {
    let p = booted(kmalloc::kmalloc_slow, size, align);
    if p.is_null() {
        return kmalloc::kmalloc_fallback(size, align, false);
    }
    p
}

/// A zeroed allocation: kmalloc's, or glibc's where the kernel refused cpuslab
/// memory (`kmalloc_fallback`).
fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let p = booted(kzalloc, size, align);
    if p.is_null() {
        return kmalloc::kmalloc_fallback(size, align, true);
    }
    p
}

/// The cpuslab allocator. Install it with
///
/// ```
/// #[global_allocator]
/// static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;
/// ```
///
/// or use it for one collection through `allocator_api2` (as hashbrown does).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSlab;

// SAFETY: kmalloc returns blocks of at least `size` bytes aligned to `align` that no
// one else owns, or null; frees and reallocs use the layout the block was made with.
unsafe impl GlobalAlloc for CpuSlab {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        kmalloc::kmalloc_or(layout.size(), layout.align(), alloc_slow)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract),
        // that is from kmalloc or krealloc with the same size and alignment.
        unsafe { kfree(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`; on success the caller drops `ptr` for the result.
        unsafe { krealloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

fn slice(p: *mut u8, len: usize) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(p)
        .map(|p| NonNull::slice_from_raw_parts(p, len))
        .ok_or(AllocError)
}

/// The whole block `p` (null, or just allocated with `(size, align)`): its usable size,
/// the class's size for a slab object, whole pages for a large block. Every size from
/// `size` up to that length classifies the same, so the caller may free or grow the
/// block with a layout of any of them, as `Allocator` allows.
fn usable_slice(p: *mut u8, size: usize, align: usize) -> Result<NonNull<[u8]>, AllocError> {
    if p.is_null() {
        return Err(AllocError);
    }
    // SAFETY: a live block just made with this layout.
    slice(p, unsafe { usable_size_layout(p, size, align) })
}

// SAFETY: as for GlobalAlloc; blocks stay valid until deallocated, and a clone of
// `CpuSlab` (a unit struct) frees what another allocated.
unsafe impl Allocator for CpuSlab {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        usable_slice(
            kmalloc::kmalloc_or(layout.size(), layout.align(), alloc_slow),
            layout.size(),
            layout.align(),
        )
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // The requested length only: that much is known zero.
        slice(alloc_zeroed(layout.size(), layout.align()), layout.size())
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `ptr` is live and `layout` fits it (the caller's contract): the
        // allocation's alignment and a size up to the usable length, which classifies
        // as the allocation's (`usable_slice`).
        unsafe { kfree(ptr.as_ptr(), layout.size(), layout.align()) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is live and `old` fits it (the caller's contract).
        unsafe { self.resize(ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is live and `old` fits it (the caller's contract).
        let p = unsafe { self.resize(ptr, old, new) }?;
        // SAFETY: `p` has at least `new.size()` bytes, and growing means `new.size()`
        // is at least `old.size()`: the tail lies inside the block.
        unsafe {
            p.cast::<u8>()
                .as_ptr()
                .add(old.size())
                .write_bytes(0, new.size() - old.size())
        };
        // The new layout's length only: that much is known zero.
        Ok(NonNull::slice_from_raw_parts(p.cast(), new.size()))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `ptr` is live and `old` fits it (the caller's contract).
        unsafe { self.resize(ptr, old, new) }
    }
}

impl CpuSlab {
    /// realloc when the alignment stays, allocate-copy-free when it changes.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.align() == new.align() {
            return usable_slice(
                // SAFETY: `ptr` is live and `old` fits it (the caller's contract), so it
                // classifies as the allocation's layout; on success the caller drops
                // `ptr` for the result.
                unsafe { krealloc(ptr.as_ptr(), old.size(), old.align(), new.size()) },
                new.size(),
                new.align(),
            );
        }
        let q = self.allocate(new)?;
        // SAFETY: `ptr` has `old.size()` readable bytes, `q` at least `new.size()`
        // writable ones; a fresh block does not overlap a live one.
        unsafe {
            core::ptr::copy_nonoverlapping(
                ptr.as_ptr(),
                q.cast::<u8>().as_ptr(),
                old.size().min(new.size()),
            )
        };
        // SAFETY: `ptr` is live and `old` fits it; it is copied and not used again.
        unsafe { self.deallocate(ptr, old) };
        Ok(q)
    }
}
