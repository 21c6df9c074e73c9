//! Helpers shared by the fuzz targets: content patterns, a map of live address ranges
//! that refuses overlaps, and booting cpuslab.
//!
//! The fuzz binaries keep the system allocator as their global allocator; the models
//! below (`Vec`, `BTreeMap`) live there, and cpuslab is only ever called directly.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

/// The word a block with this `seed` holds at 8-byte chunk `k`: every block, and every
/// chunk of it, reads differently, so a block moved, shifted or handed out twice shows.
#[inline]
fn word(seed: u64, k: usize) -> u64 {
    let mut x = seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// The byte at `offset` of a block filled with `seed`.
#[inline]
pub fn pattern_byte(seed: u64, offset: usize) -> u8 {
    word(seed, offset / 8).to_le_bytes()[offset % 8]
}

/// Fills bytes `from..len` of the block at `p` with the pattern of `seed`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub unsafe fn fill(p: *mut u8, from: usize, len: usize, seed: u64) {
    // SAFETY: as the caller promised.
    let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
    let mut off = from;
    while off < len && off & 7 != 0 {
        s[off] = pattern_byte(seed, off);
        off += 1;
    }
    for (k, chunk) in s[off..].chunks_mut(8).enumerate() {
        let w = word(seed, off / 8 + k).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// The first offset in `from..len` of the block at `p` that does not hold the pattern
/// of `seed`, with the byte expected and the byte found.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn first_mismatch(
    p: *const u8,
    from: usize,
    len: usize,
    seed: u64,
) -> Option<(usize, u8, u8)> {
    // SAFETY: as the caller promised.
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    let mut off = from;
    while off < len && off & 7 != 0 {
        if s[off] != pattern_byte(seed, off) {
            return Some((off, pattern_byte(seed, off), s[off]));
        }
        off += 1;
    }
    for (k, chunk) in s[off..].chunks(8).enumerate() {
        let w = word(seed, off / 8 + k).to_le_bytes();
        if chunk != &w[..chunk.len()] {
            let i = (0..chunk.len()).find(|&i| chunk[i] != w[i]).unwrap_or(0);
            return Some((off + k * 8 + i, w[i], chunk[i]));
        }
    }
    None
}

/// Panics, naming `what`, unless bytes `from..len` at `p` hold the pattern of `seed`.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn check(p: *const u8, from: usize, len: usize, seed: u64, what: &str) {
    // SAFETY: as the caller promised.
    if let Some((off, want, got)) = unsafe { first_mismatch(p, from, len, seed) } {
        panic!(
            "{what}: block {p:p} ({len} bytes, seed {seed:#x}) corrupted at offset {off}: \
             expected {want:#04x}, found {got:#04x}"
        );
    }
}

/// Panics, naming `what`, unless the `len` bytes at `p` are zero.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn check_zero(p: *const u8, len: usize, what: &str) {
    // SAFETY: as the caller promised.
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    if let Some(off) = s.iter().position(|&b| b != 0) {
        panic!(
            "{what}: block {p:p} ({len} bytes) should read as zero, byte {off} is {:#04x}",
            s[off]
        );
    }
}

/// Live address ranges `[start, end)`, each with the id of its owner; inserting one
/// that overlaps a live range panics.
#[derive(Default, Debug)]
pub struct Ranges {
    map: BTreeMap<usize, (usize, u64)>,
}

impl Ranges {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, start + len)` owned by `id` (an empty range counts as one byte:
    /// two live blocks never share an address). Panics, naming `what`, on an overlap.
    pub fn insert(&mut self, start: usize, len: usize, id: u64, what: &str) {
        let end = start
            .checked_add(len.max(1))
            .unwrap_or_else(|| panic!("{what}: range {start:#x}+{len} wraps"));
        if let Some((&s, &(e, other))) = self.map.range(..end).next_back() {
            assert!(
                e <= start,
                "{what}: [{start:#x}, {end:#x}) (id {id}) overlaps live [{s:#x}, {e:#x}) (id {other})"
            );
        }
        self.map.insert(start, (end, id));
    }

    /// Removes the range starting at `start`; panics if there is none.
    pub fn remove(&mut self, start: usize) {
        assert!(
            self.map.remove(&start).is_some(),
            "model: no live range at {start:#x}"
        );
    }

    /// Number of live ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no range is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Boots cpuslab (its page pool, percpu first chunk and kmalloc caches) with one
/// allocation, so that what a target measures afterwards does not include boot.
pub fn boot() {
    let layout = Layout::new::<u64>();
    // SAFETY: a valid layout; the block is freed at once with the same layout.
    unsafe {
        let p = cpuslab::CpuSlab.alloc(layout);
        assert!(!p.is_null(), "cpuslab did not boot");
        cpuslab::CpuSlab.dealloc(p, layout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trip_and_mismatch() {
        let mut buf = vec![0u8; 37];
        // SAFETY: `buf` holds 37 bytes.
        unsafe {
            fill(buf.as_mut_ptr(), 0, 37, 5);
            assert!(first_mismatch(buf.as_ptr(), 0, 37, 5).is_none());
            assert!(first_mismatch(buf.as_ptr(), 0, 37, 6).is_some());
            buf[20] ^= 1;
            assert_eq!(
                first_mismatch(buf.as_ptr(), 0, 37, 5).map(|m| m.0),
                Some(20)
            );
            fill(buf.as_mut_ptr(), 3, 37, 9);
            assert!(first_mismatch(buf.as_ptr(), 3, 37, 9).is_none());
        }
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn ranges_refuse_overlap() {
        let mut r = Ranges::new();
        r.insert(100, 10, 1, "t");
        r.insert(110, 0, 2, "t");
        r.insert(105, 1, 3, "t");
    }
}
