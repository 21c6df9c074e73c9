//! Verified heap blocks: allocate, fill with a tag-derived pattern, check the
//! pattern before freeing.
//!
//! Pattern of a block of `size` bytes with tag `t`:
//! * bytes `[0, 8)` hold `t` (when `size >= 8`);
//! * bytes `[size - 8, size)` hold `tail_word(t, size)` (when `size >= 16`);
//! * every other byte is `body_byte(t)`.
//!
//! Blocks up to [`FULL_LIMIT`] bytes are filled and checked completely, so any
//! overlap between two live blocks is caught. Larger blocks get their first
//! and last [`EDGE`] bytes plus one word per 4 KiB page: that touches every
//! page (so RSS is real) without making the benchmark a memset benchmark.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use std::hint::black_box;

/// Blocks up to this size are patterned byte for byte.
pub const FULL_LIMIT: usize = 4096;
/// Bytes patterned at each end of a larger block.
pub const EDGE: usize = 256;
/// Stride of the one-word-per-page pattern inside a larger block.
pub const STRIDE: usize = 4096;

#[inline]
fn body_byte(tag: u64) -> u8 {
    (tag >> 56) as u8 ^ 0xA5
}

#[inline]
fn tail_word(tag: u64, size: usize) -> u64 {
    tag.rotate_left(23) ^ (size as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline]
fn page_word(tag: u64, off: usize) -> u64 {
    tag ^ (off as u64).rotate_left(40)
}

/// Offsets of the per-page words of a large block.
fn page_offsets(size: usize) -> impl Iterator<Item = usize> {
    (STRIDE..)
        .step_by(STRIDE)
        .take_while(move |&off| off + 8 <= size.saturating_sub(EDGE))
}

/// Writes the pattern of (`size`, `tag`) at `p`.
///
/// # Safety
/// `p` must be valid for writes of `size` bytes.
#[inline(always)]
pub unsafe fn fill(p: *mut u8, size: usize, tag: u64) {
    let b = body_byte(tag);
    if size <= FULL_LIMIT {
        ptr::write_bytes(p, b, size);
    } else {
        ptr::write_bytes(p, b, EDGE);
        ptr::write_bytes(p.add(size - EDGE), b, EDGE);
        for off in page_offsets(size) {
            ptr::write_unaligned(p.add(off).cast::<u64>(), page_word(tag, off));
        }
    }
    if size >= 8 {
        ptr::write_unaligned(p.cast::<u64>(), tag);
    }
    if size >= 16 {
        ptr::write_unaligned(p.add(size - 8).cast::<u64>(), tail_word(tag, size));
    }
}

/// True when all `len` bytes at `p` equal `b`. Word-at-a-time without early
/// exit, so the compiler can vectorise it.
#[inline(always)]
unsafe fn bytes_eq(p: *const u8, len: usize, b: u8) -> bool {
    let splat = u64::from_ne_bytes([b; 8]);
    let mut diff = 0u64;
    let words = len / 8;
    for i in 0..words {
        diff |= ptr::read_unaligned(p.add(i * 8).cast::<u64>()) ^ splat;
    }
    for i in words * 8..len {
        diff |= (*p.add(i) ^ b) as u64;
    }
    diff == 0
}

/// Checks the pattern of (`size`, `tag`) at `p`; false on any difference.
///
/// # Safety
/// `p` must be valid for reads of `size` bytes.
#[inline(always)]
pub unsafe fn check(p: *const u8, size: usize, tag: u64) -> bool {
    let b = body_byte(tag);
    let mut ok = true;
    let (lo, hi) = match size {
        0..=7 => (0, size),
        8..=15 => (8, size),
        _ => (8, size - 8),
    };
    if size >= 8 {
        ok &= ptr::read_unaligned(p.cast::<u64>()) == tag;
    }
    if size >= 16 {
        ok &= ptr::read_unaligned(p.add(size - 8).cast::<u64>()) == tail_word(tag, size);
    }
    if size <= FULL_LIMIT {
        ok &= bytes_eq(p.add(lo), hi - lo, b);
    } else {
        ok &= bytes_eq(p.add(8), EDGE - 8, b);
        ok &= bytes_eq(p.add(size - EDGE), EDGE - 8, b);
        for off in page_offsets(size) {
            ok &= ptr::read_unaligned(p.add(off).cast::<u64>()) == page_word(tag, off);
        }
    }
    ok
}

/// The byte the pattern puts at offset `i`, or `None` where a large block's
/// pattern leaves the byte unspecified. Slow; used to check realloc prefixes.
pub fn expected_byte(tag: u64, size: usize, i: usize) -> Option<u8> {
    debug_assert!(i < size);
    if size >= 8 && i < 8 {
        return Some(tag.to_ne_bytes()[i]);
    }
    if size >= 16 && i >= size - 8 {
        return Some(tail_word(tag, size).to_ne_bytes()[i - (size - 8)]);
    }
    if size <= FULL_LIMIT || i < EDGE || i >= size - EDGE {
        return Some(body_byte(tag));
    }
    let off = i - i % STRIDE;
    if off >= STRIDE && off + 8 <= size - EDGE && i < off + 8 {
        return Some(page_word(tag, off).to_ne_bytes()[i - off]);
    }
    None
}

/// Order-independent contribution of one block to a workload's checksum.
#[inline]
pub fn digest(size: usize, tag: u64) -> u64 {
    tag ^ (size as u64).rotate_left(32)
}

#[cold]
#[inline(never)]
fn alloc_failed(layout: Layout, p: *mut u8) -> ! {
    if p.is_null() {
        panic!("allocator returned null for {layout:?}");
    }
    panic!("allocator returned {p:p}, misaligned for {layout:?}");
}

#[cold]
#[inline(never)]
fn corrupted(what: &str, p: *const u8, size: usize, tag: u64) -> ! {
    panic!("heap corruption detected {what}: block {p:p} size {size} tag {tag:#018x}");
}

/// An owned, patterned heap block. Freeing it checks the pattern first.
///
/// Dropping a `Block` without [`Block::free`] leaks it (deliberately: the
/// block does not know its allocator).
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
    tag: u64,
}

// SAFETY: a Block is the unique owner of its memory; allocators under test
// must support freeing from any thread (that is part of what is measured).
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` bytes (`size > 0`) aligned to `align` from `a`, and
    /// fills them with the pattern of `tag`. Panics if the allocator returns
    /// null or a misaligned pointer.
    // Always inlined so that a constant size (pair64) folds the pattern
    // code down to a few stores and loads.
    #[inline(always)]
    pub fn alloc<A: GlobalAlloc + ?Sized>(a: &A, size: usize, align: usize, tag: u64) -> Block {
        let layout = Layout::from_size_align(size, align).expect("bad layout");
        assert!(size > 0, "zero-size block");
        // SAFETY: layout has non-zero size.
        let p = black_box(unsafe { a.alloc(layout) });
        if p.is_null() || (p as usize) & (align - 1) != 0 {
            alloc_failed(layout, p);
        }
        // SAFETY: p is a fresh allocation of `size` bytes.
        unsafe { fill(p, size, tag) };
        Block {
            ptr: unsafe { NonNull::new_unchecked(p) },
            size,
            align,
            tag,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The tag whose pattern the block holds.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Start address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// This block's contribution to a checksum (see [`digest`]).
    pub fn digest(&self) -> u64 {
        digest(self.size, self.tag)
    }

    fn layout(&self) -> Layout {
        // SAFETY: validated when the block was allocated.
        unsafe { Layout::from_size_align_unchecked(self.size, self.align) }
    }

    /// Panics unless the block still holds its pattern.
    #[inline(always)]
    pub fn verify(&self, what: &str) {
        // SAFETY: the block owns `size` readable bytes.
        if !unsafe { check(self.ptr.as_ptr(), self.size, self.tag) } {
            corrupted(what, self.ptr.as_ptr(), self.size, self.tag);
        }
    }

    /// Rewrites the pattern (after a workload scribbled on the block).
    pub fn refill(&mut self) {
        // SAFETY: the block owns `size` writable bytes.
        unsafe { fill(self.ptr.as_ptr(), self.size, self.tag) }
    }

    /// Verifies and frees the block; returns its digest.
    ///
    /// # Safety
    /// `a` must be the allocator (or an allocator sharing the heap, such as
    /// the same static) that allocated the block.
    #[inline(always)]
    pub unsafe fn free<A: GlobalAlloc + ?Sized>(self, a: &A) -> u64 {
        self.verify("before free");
        let d = self.digest();
        a.dealloc(self.ptr.as_ptr(), self.layout());
        d
    }

    /// Verifies the block, reallocates it to `new_size` bytes, checks that the
    /// common prefix survived the move, and refills it with `new_tag`'s
    /// pattern. Returns the old digest and the new block.
    ///
    /// # Safety
    /// As for [`Block::free`].
    pub unsafe fn realloc<A: GlobalAlloc + ?Sized>(
        self,
        a: &A,
        new_size: usize,
        new_tag: u64,
    ) -> (u64, Block) {
        assert!(new_size > 0, "zero-size block");
        self.verify("before realloc");
        let old = self.digest();
        let layout = Layout::from_size_align(new_size, self.align).expect("bad layout");
        let p = black_box(a.realloc(self.ptr.as_ptr(), self.layout(), new_size));
        if p.is_null() || (p as usize) & (self.align - 1) != 0 {
            alloc_failed(layout, p);
        }
        for i in 0..self.size.min(new_size) {
            if let Some(want) = expected_byte(self.tag, self.size, i) {
                if *p.add(i) != want {
                    corrupted("in the prefix kept by realloc", p, self.size, self.tag);
                }
            }
        }
        fill(p, new_size, new_tag);
        let b = Block {
            ptr: NonNull::new_unchecked(p),
            size: new_size,
            align: self.align,
            tag: new_tag,
        };
        (old, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn pattern_round_trips_and_detects_flips() {
        for size in [1, 7, 8, 9, 15, 16, 17, 64, 1000, 4096, 4097, 70_000] {
            let b = Block::alloc(&System, size, 8, 0xDEAD_BEEF_1234_5678 ^ size as u64);
            b.verify("test");
            for i in 0..size {
                if let Some(e) = expected_byte(b.tag, size, i) {
                    assert_eq!(unsafe { *b.as_ptr().add(i) }, e, "size {size} byte {i}");
                }
            }
            // Flip one specified byte: the check must notice.
            let victim = size / 2;
            let victim = if expected_byte(b.tag, size, victim).is_some() {
                victim
            } else {
                size - 1
            };
            unsafe { *b.as_ptr().add(victim) ^= 0x40 };
            assert!(!unsafe { check(b.as_ptr(), size, b.tag) }, "size {size}");
            unsafe { *b.as_ptr().add(victim) ^= 0x40 };
            unsafe { b.free(&System) };
        }
    }

    #[test]
    fn realloc_keeps_prefix() {
        let b = Block::alloc(&System, 24, 8, 1);
        let (_, b) = unsafe { b.realloc(&System, 9000, 2) };
        let (_, b) = unsafe { b.realloc(&System, 12, 3) };
        unsafe { b.free(&System) };
    }
}
