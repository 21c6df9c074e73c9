//! The area map of a chunk: bitmaps of 8-byte granules (`PCPU_MIN_ALLOC_SIZE`) and the
//! per-block metadata (`pcpu_block_md`) that lets a fit be found without scanning the
//! whole bitmap.
//!
//! A block is one page of a unit: [`BLOCK_BITS`] granules. Its metadata is recomputed
//! from its 8 bitmap words whenever an allocation or a free touches it, and the chunk's
//! own metadata is folded from its blocks, so a search reads at most one hint per block
//! and scans the words of a block only when the hints say a fit may be there but its
//! alignment does not work out at the hinted start.

use crate::sys::PAGE_SIZE;

/// log2 of the allocation granule.
pub const PCPU_MIN_ALLOC_SHIFT: usize = 3;
/// The allocation granule: every area is a whole number of these, at an offset that is
/// a multiple of it.
pub const PCPU_MIN_ALLOC_SIZE: usize = 1 << PCPU_MIN_ALLOC_SHIFT;
/// Granules in one block (one page of a unit).
pub const BLOCK_BITS: usize = PAGE_SIZE / PCPU_MIN_ALLOC_SIZE;

const WORD_BITS: usize = u64::BITS as usize;

/// Whether bit `bit` is set.
#[inline]
pub fn test_bit(map: &[u64], bit: usize) -> bool {
    map[bit / WORD_BITS] & (1 << (bit % WORD_BITS)) != 0
}

/// Sets bit `bit`.
#[inline]
pub fn set_bit(map: &mut [u64], bit: usize) {
    map[bit / WORD_BITS] |= 1 << (bit % WORD_BITS);
}

/// Calls `f(word_index, mask)` for the words covering `[start, start + len)`.
#[inline]
fn for_each_word(start: usize, len: usize, mut f: impl FnMut(usize, u64)) {
    let end = start + len;
    let mut bit = start;
    while bit < end {
        let shift = bit % WORD_BITS;
        let n = (WORD_BITS - shift).min(end - bit);
        let mask = if n == WORD_BITS {
            !0
        } else {
            ((1u64 << n) - 1) << shift
        };
        f(bit / WORD_BITS, mask);
        bit += n;
    }
}

/// Sets the bits `[start, start + len)`.
pub fn set_range(map: &mut [u64], start: usize, len: usize) {
    for_each_word(start, len, |i, mask| map[i] |= mask);
}

/// Clears the bits `[start, start + len)`.
pub fn clear_range(map: &mut [u64], start: usize, len: usize) {
    for_each_word(start, len, |i, mask| map[i] &= !mask);
}

/// Whether every bit of `[start, start + len)` is set.
pub fn range_is_set(map: &[u64], start: usize, len: usize) -> bool {
    let mut all = true;
    for_each_word(start, len, |i, mask| all &= map[i] & mask == mask);
    all
}

/// The first bit in `[start, end)` whose value xor `invert` is 1, or `end`.
#[inline]
fn find_next(map: &[u64], start: usize, end: usize, invert: u64) -> usize {
    if start >= end {
        return end;
    }
    let mut i = start / WORD_BITS;
    let mut word = (map[i] ^ invert) & (!0u64 << (start % WORD_BITS));
    loop {
        if word != 0 {
            return (i * WORD_BITS + word.trailing_zeros() as usize).min(end);
        }
        i += 1;
        if i * WORD_BITS >= end {
            return end;
        }
        word = map[i] ^ invert;
    }
}

/// The first set bit in `[start, end)`, or `end`.
#[inline]
pub fn find_next_bit(map: &[u64], start: usize, end: usize) -> usize {
    find_next(map, start, end, 0)
}

/// The first clear bit in `[start, end)`, or `end`.
#[inline]
pub fn find_next_zero_bit(map: &[u64], start: usize, end: usize) -> usize {
    find_next(map, start, end, !0)
}

/// Rounds `x` up to a multiple of `align` (a power of two).
#[inline]
pub const fn align_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

/// Where an area of `bits` granules aligned to `align` granules fits in the free run
/// `[start, end)`, if it does.
#[inline]
pub fn fit_in_run(start: usize, end: usize, bits: usize, align: usize) -> Option<usize> {
    let at = align_up(start, align);
    (at + bits <= end).then_some(at)
}

/// Metadata of a stretch of the bitmap, `pcpu_block_md`: a block (one page of a unit)
/// or, folded from its blocks, a whole chunk. Offsets are in granules from the start
/// of the stretch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMd {
    /// Length of the largest free run that starts before `contig_hint_start`: a second
    /// place to try, lower in memory than the contig hint, before scanning.
    pub scan_hint: u32,
    /// Start of the scan hint's run.
    pub scan_hint_start: u32,
    /// Length of the largest free run (the first one of that length).
    pub contig_hint: u32,
    /// Start of the contig hint's run.
    pub contig_hint_start: u32,
    /// Free granules at the start of the stretch.
    pub left_free: u32,
    /// Free granules at the end of the stretch.
    pub right_free: u32,
    /// The first free granule (`nr_bits` when none is free).
    pub first_free: u32,
    /// Granules in the stretch.
    pub nr_bits: u32,
}

impl BlockMd {
    /// The metadata of a wholly free stretch of `nr_bits` granules.
    pub const fn free(nr_bits: usize) -> Self {
        let n = nr_bits as u32;
        Self {
            scan_hint: 0,
            scan_hint_start: 0,
            contig_hint: n,
            contig_hint_start: 0,
            left_free: n,
            right_free: n,
            first_free: 0,
            nr_bits: n,
        }
    }

    /// Whether the stretch is wholly free.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.contig_hint == self.nr_bits
    }

    /// Offers the free run `[start, start + len)`, seen in address order, to the hints.
    fn note_run(&mut self, start: usize, len: usize) {
        let (start, len) = (start as u32, len as u32);
        if len > self.contig_hint {
            // Every run seen so far lies before the new contig hint; the best of them
            // is the old contig hint.
            self.scan_hint = self.contig_hint;
            self.scan_hint_start = self.contig_hint_start;
            self.contig_hint = len;
            self.contig_hint_start = start;
        }
    }

    /// Computes the metadata of the `nr_bits` granules of `alloc_map` from `start`.
    pub fn scan(alloc_map: &[u64], start: usize, nr_bits: usize) -> Self {
        let end = start + nr_bits;
        let mut md = Self {
            first_free: nr_bits as u32,
            nr_bits: nr_bits as u32,
            ..Self::default()
        };
        let mut pos = find_next_zero_bit(alloc_map, start, end);
        if pos < end {
            md.first_free = (pos - start) as u32;
        }
        while pos < end {
            let run_end = find_next_bit(alloc_map, pos + 1, end);
            if pos == start {
                md.left_free = (run_end - start) as u32;
            }
            if run_end == end {
                md.right_free = (end - pos) as u32;
            }
            md.note_run(pos - start, run_end - pos);
            pos = find_next_zero_bit(alloc_map, run_end, end);
        }
        md
    }

    /// Folds the metadata of consecutive blocks into the metadata of the stretch they
    /// make up (a chunk), joining free runs across block boundaries.
    pub fn fold(blocks: &[BlockMd]) -> Self {
        let mut md = Self::default();
        let mut total = 0usize;
        let mut first_free = None;
        let mut leading = true;
        // The free run that reaches the end of the blocks seen so far.
        let (mut run_start, mut run_len) = (0usize, 0usize);
        for b in blocks {
            let base = total;
            let n = b.nr_bits as usize;
            total += n;
            if first_free.is_none() && (b.first_free as usize) < n {
                first_free = Some(base + b.first_free as usize);
            }
            if b.is_empty() {
                if run_len == 0 {
                    run_start = base;
                }
                run_len += n;
                continue;
            }
            let joined = run_len + b.left_free as usize;
            if joined > 0 {
                let start = if run_len > 0 { run_start } else { base };
                md.note_run(start, joined);
            }
            if leading {
                md.left_free = joined as u32;
                leading = false;
            }
            md.note_run(base + b.contig_hint_start as usize, b.contig_hint as usize);
            run_start = base + n - b.right_free as usize;
            run_len = b.right_free as usize;
        }
        if run_len > 0 {
            md.note_run(run_start, run_len);
        }
        if leading {
            md.left_free = total as u32;
        }
        md.right_free = run_len as u32;
        md.first_free = first_free.unwrap_or(total) as u32;
        md.nr_bits = total as u32;
        // A chunk has no use for a scan hint: its blocks carry their own.
        md.scan_hint = 0;
        md.scan_hint_start = 0;
        md
    }

    /// Where, relative to the block start `start`, an area of `bits` granules aligned
    /// to `align` granules fits wholly inside this block: the scan hint, then the
    /// contig hint, then (only when the contig hint is long enough but its alignment
    /// did not work out) a scan of the block's words.
    pub fn fit_inside(
        &self,
        alloc_map: &[u64],
        start: usize,
        bits: usize,
        align: usize,
    ) -> Option<usize> {
        if (self.contig_hint as usize) < bits {
            return None;
        }
        if self.scan_hint as usize >= bits {
            let s = self.scan_hint_start as usize;
            if let Some(at) = fit_in_run(s, s + self.scan_hint as usize, bits, align) {
                return Some(at);
            }
        }
        let s = self.contig_hint_start as usize;
        if let Some(at) = fit_in_run(s, s + self.contig_hint as usize, bits, align) {
            return Some(at);
        }
        // Bounded by the block: at most its 8 words.
        let end = start + self.nr_bits as usize;
        let mut pos = start + self.first_free as usize;
        while pos < end {
            let run_end = find_next_bit(alloc_map, pos + 1, end);
            if let Some(at) = fit_in_run(pos - start, run_end - start, bits, align) {
                return Some(at);
            }
            pos = find_next_zero_bit(alloc_map, run_end, end);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest free run of `map[..n]` by brute force: (start, len).
    fn brute_contig(map: &[u64], n: usize) -> (usize, usize) {
        let (mut best, mut best_start, mut cur) = (0, 0, 0);
        for bit in 0..n {
            if test_bit(map, bit) {
                cur = 0;
            } else {
                cur += 1;
                if cur > best {
                    best = cur;
                    best_start = bit + 1 - cur;
                }
            }
        }
        (best_start, best)
    }

    #[test]
    fn ranges_and_search() {
        let mut map = [0u64; 4];
        set_range(&mut map, 3, 130);
        assert!(range_is_set(&map, 3, 130));
        assert!(!test_bit(&map, 2) && !test_bit(&map, 133));
        assert_eq!(find_next_bit(&map, 0, 256), 3);
        assert_eq!(find_next_zero_bit(&map, 3, 256), 133);
        assert_eq!(find_next_bit(&map, 133, 256), 256);
        assert_eq!(find_next_bit(&map, 133, 200), 200);
        clear_range(&mut map, 64, 10);
        assert_eq!(find_next_zero_bit(&map, 3, 256), 64);
        assert_eq!(find_next_bit(&map, 64, 256), 74);
        set_bit(&mut map, 255);
        assert_eq!(find_next_bit(&map, 133, 256), 255);
        clear_range(&mut map, 255, 1);
        assert_eq!(find_next_bit(&map, 133, 256), 256);
    }

    #[test]
    fn block_scan_and_fold_match_brute_force() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut map = [0u64; 4 * BLOCK_BITS / 64];
            let nbits = 4 * BLOCK_BITS;
            // Random runs of allocated bits.
            for _ in 0..(next() % 20) {
                let s = (next() % nbits as u64) as usize;
                let l = 1 + (next() % 700) as usize;
                set_range(&mut map, s, l.min(nbits - s));
            }
            let blocks: [BlockMd; 4] =
                core::array::from_fn(|b| BlockMd::scan(&map, b * BLOCK_BITS, BLOCK_BITS));
            for (b, md) in blocks.iter().enumerate() {
                let w = BLOCK_BITS / 64;
                let words = &map[b * w..b * w + w];
                let (s, l) = brute_contig(words, BLOCK_BITS);
                assert_eq!(md.contig_hint as usize, l);
                if l > 0 {
                    assert_eq!(md.contig_hint_start as usize, s);
                }
                assert!(md.scan_hint <= md.contig_hint);
                assert!(md.scan_hint_start + md.scan_hint <= md.contig_hint_start.max(1));
            }
            let chunk = BlockMd::fold(&blocks);
            let (s, l) = brute_contig(&map, nbits);
            assert_eq!(chunk.contig_hint as usize, l);
            if l > 0 {
                assert_eq!(chunk.contig_hint_start as usize, s);
            }
            assert_eq!(
                chunk.first_free as usize,
                find_next_zero_bit(&map, 0, nbits)
            );
            assert_eq!(chunk, {
                let mut whole = BlockMd::scan(&map, 0, nbits);
                whole.scan_hint = 0;
                whole.scan_hint_start = 0;
                whole
            });
            // Every fit found inside a block is really free and aligned.
            for (b, md) in blocks.iter().enumerate() {
                let bits = 1 + (next() % 300) as usize;
                let align = 1 << (next() % 11);
                if let Some(at) = md.fit_inside(&map, b * BLOCK_BITS, bits, align) {
                    assert_eq!(at % align, 0);
                    assert!(at + bits <= BLOCK_BITS);
                    let abs = b * BLOCK_BITS + at;
                    assert_eq!(find_next_bit(&map, abs, abs + bits), abs + bits);
                } else {
                    // No aligned fit exists inside the block.
                    let mut at = 0;
                    while at + bits <= BLOCK_BITS {
                        let abs = b * BLOCK_BITS + at;
                        assert_ne!(find_next_bit(&map, abs, abs + bits), abs + bits);
                        at += align;
                    }
                }
            }
        }
    }
}
