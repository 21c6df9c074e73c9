//! The huge heap: address space for huge blocks, reserved in regions and carved into
//! blocks; a freed block goes back as a free extent that merges with the free extents
//! it touches, as tcmalloc's page heap coalesces spans and jemalloc its extents, so a
//! later request of another size still finds room in pages already faulted in.
//!
//! A free extent is *dirty* (its pages may be resident, and are charged as committed)
//! or *clean* (never touched, or given back with `MADV_DONTNEED`: it reads as zero and
//! costs only address space). Only extents in one state merge, so each keeps one age
//! and one zero-ness. A request is served from the tightest dirty extent that holds it,
//! else from the first run of touching free extents (dirty and clean) in address order,
//! which keeps regions packed at their low end; only when no run holds it is a region
//! reserved. What decides when dirty extents are purged (their budget, their age) is the
//! caller's: [`Heap::take_dirty`] hands out the ones to purge, and [`Heap::give`] takes
//! them back clean. A region whose every byte is clean and free is unmapped.
//!
//! All of it lives under the huge blocks' lock; no system call is made here.

use crate::sys::PAGE_SIZE;

/// Address space reserved at a time: room for several blocks of a few MiB to a few tens
/// of MiB, so that they and their free neighbours can merge. Requests larger than half of
/// it get a region of their own size.
pub(super) const REGION_SIZE: usize = 256 << 20;
/// Alignment of regions (a transparent huge page).
pub(super) const REGION_ALIGN: usize = 2 << 20;
/// Regions held at most.
const MAX_REGIONS: usize = 512;
/// Free extents held at most; past it a carve takes a whole extent instead of splitting
/// it, and a free extent that merges with nothing is left out of the heap, its pages
/// given back, until its region goes (see [`Heap::give`]).
const MAX_EXTENTS: usize = 512;

/// Reserved address space.
#[derive(Clone, Copy)]
struct Region {
    base: usize,
    len: usize,
    /// Node of the thread that reserved it: its pages are placed by that thread's
    /// policy, so only threads of that node are served from it.
    node: usize,
    /// Bytes carved out and not given back.
    live: usize,
    /// Bytes unmapped inside it (free extents that found no slot).
    lost: usize,
    /// Whether a lost range may be a hole another mapping can take (the kernel refused
    /// to map it afresh): the region is then never unmapped whole.
    holes: bool,
}

/// A free range of a region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Extent {
    pub(super) base: usize,
    pub(super) len: usize,
    /// Base of its region: extents of two regions never merge, even when the regions
    /// touch (a block must lie in one kernel mapping for mremap).
    pub(super) region: usize,
    /// Whether its pages may be resident.
    pub(super) dirty: bool,
    /// When it was freed (ms; the latest of its parts).
    pub(super) freed_ms: u64,
}

impl Extent {
    const NONE: Self = Self {
        base: 0,
        len: 0,
        region: 0,
        dirty: false,
        freed_ms: 0,
    };

    fn end(&self) -> usize {
        self.base + self.len
    }
}

/// A range carved out for a block.
#[derive(Clone, Copy, Debug)]
pub(super) struct Carved {
    /// Start of the range (at or before the block's header page).
    pub(super) base: usize,
    /// Its length (at least the request; more when a piece could not be split off).
    pub(super) len: usize,
    /// Its region's base.
    pub(super) region: usize,
    /// Whether every byte of it was clean (reads as zero).
    pub(super) zero: bool,
}

/// Why a carve failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NoRoom {
    /// No run of free extents of the node holds the request: reserve a region.
    Space,
    /// The clean bytes it needed could not be charged (the heap limit).
    Charge,
}

/// Regions and their free extents.
pub(super) struct Heap {
    regions: [Region; MAX_REGIONS],
    nr_regions: usize,
    /// Free extents in address order.
    extents: [Extent; MAX_EXTENTS],
    n: usize,
    /// Bytes of dirty free extents.
    dirty: usize,
}

/// Where a block whose header page is at `base` or after starts its mapping so that the
/// block (a page in) is aligned to `align`.
pub(super) fn aligned_start(base: usize, align: usize) -> usize {
    ((base + PAGE_SIZE + align - 1) & !(align - 1)) - PAGE_SIZE
}

impl Heap {
    pub(super) const fn new() -> Self {
        Self {
            regions: [Region {
                base: 0,
                len: 0,
                node: 0,
                live: 0,
                lost: 0,
                holes: false,
            }; MAX_REGIONS],
            nr_regions: 0,
            extents: [Extent::NONE; MAX_EXTENTS],
            n: 0,
            dirty: 0,
        }
    }

    /// Bytes of dirty free extents.
    pub(super) fn dirty_bytes(&self) -> usize {
        self.dirty
    }

    /// When the oldest dirty extent was freed (`u64::MAX`: none).
    pub(super) fn oldest_dirty_ms(&self) -> u64 {
        self.extents[..self.n]
            .iter()
            .filter(|e| e.dirty)
            .map(|e| e.freed_ms)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Whether `region` is a region's base and `[base, base + len)` lies inside it.
    pub(super) fn covers(&self, region: usize, base: usize, len: usize) -> bool {
        self.regions[..self.nr_regions].iter().any(|r| {
            r.base == region && base >= r.base && base.saturating_add(len) <= r.base + r.len
        })
    }

    /// Whether `region` holds exactly `[base, base + len)`, carved out whole: one live
    /// block and nothing free or lost.
    pub(super) fn holds_alone(&self, region: usize, base: usize, len: usize) -> bool {
        self.regions[..self.nr_regions].iter().any(|r| {
            r.base == region && r.base == base && r.len == len && r.live == len && r.lost == 0
        })
    }

    /// The region at `old_base`, which [`Heap::holds_alone`] its block, now lies at
    /// `[new_base, new_base + new_len)` with its block grown to fill it (`mremap`).
    pub(super) fn resize_region(&mut self, old_base: usize, new_base: usize, new_len: usize) {
        let r = self.region_index(old_base);
        self.regions[r].base = new_base;
        self.regions[r].len = new_len;
        self.regions[r].live = new_len;
    }

    fn region_index(&self, base: usize) -> usize {
        self.regions[..self.nr_regions]
            .iter()
            .position(|r| r.base == base)
            .expect("huge heap: extent of an unknown region")
    }

    /// Adds the reserved `[base, base + len)`, clean and free, for threads of `node`.
    /// False when the region table or the extent table is full.
    pub(super) fn add_region(&mut self, base: usize, len: usize, node: usize) -> bool {
        if self.nr_regions == MAX_REGIONS || self.n == MAX_EXTENTS {
            return false;
        }
        self.regions[self.nr_regions] = Region {
            base,
            len,
            node,
            live: 0,
            lost: 0,
            holes: false,
        };
        self.nr_regions += 1;
        let e = Extent {
            base,
            len,
            region: base,
            dirty: false,
            freed_ms: 0,
        };
        let at = self.extents[..self.n].partition_point(|x| x.base < base);
        self.insert_at(at, e);
        true
    }

    fn insert_at(&mut self, at: usize, e: Extent) {
        self.extents.copy_within(at..self.n, at + 1);
        self.extents[at] = e;
        self.n += 1;
        if e.dirty {
            self.dirty += e.len;
        }
    }

    fn remove_at(&mut self, at: usize) -> Extent {
        let e = self.extents[at];
        self.extents.copy_within(at + 1..self.n, at);
        self.n -= 1;
        if e.dirty {
            self.dirty -= e.len;
        }
        e
    }

    /// Finds room for `len` bytes whose block (a page in) is aligned to `align`, for a
    /// thread of `node`: the start, and the first and last extents it covers.
    fn find(&self, len: usize, align: usize, node: usize) -> Option<(usize, usize, usize)> {
        let of_node = |e: &Extent| {
            self.regions[..self.nr_regions]
                .iter()
                .any(|r| r.base == e.region && r.node == node)
        };
        // The tightest dirty extent: no page to fault.
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, e) in self.extents[..self.n].iter().enumerate() {
            if !e.dirty || !of_node(e) {
                continue;
            }
            let start = aligned_start(e.base, align);
            if start.checked_add(len).is_some_and(|end| end <= e.end())
                && best.is_none_or(|(_, _, surplus)| e.len - len < surplus)
            {
                best = Some((start, i, e.len - len));
            }
        }
        if let Some((start, i, _)) = best {
            return Some((start, i, i));
        }
        // The first run of touching extents that holds it, in address order.
        for i in 0..self.n {
            let first = &self.extents[i];
            if !of_node(first) {
                continue;
            }
            let start = aligned_start(first.base, align);
            let end = start.checked_add(len)?;
            let mut j = i;
            while self.extents[j].end() < end
                && j + 1 < self.n
                && self.extents[j + 1].base == self.extents[j].end()
                && self.extents[j + 1].region == first.region
            {
                j += 1;
            }
            if self.extents[j].end() >= end {
                return Some((start, i, j));
            }
        }
        None
    }

    /// Carves room for `len` bytes whose block (a page in) is aligned to `align`, for a
    /// thread of `node`; `charge` is asked for its clean bytes first (they will be
    /// committed as the block is touched) and nothing changes when it refuses.
    pub(super) fn carve(
        &mut self,
        len: usize,
        align: usize,
        node: usize,
        charge: impl FnOnce(usize) -> bool,
    ) -> Result<Carved, NoRoom> {
        let (start, i, j) = self.find(len, align, node).ok_or(NoRoom::Space)?;
        self.take(start, start + len, i, j, charge)
            .ok_or(NoRoom::Charge)
    }

    /// Carves `[start, end)` out of the touching extents `i..=j` (the first may end
    /// before `start` when an alignment skipped it). A piece left before or after that
    /// finds no slot in the table goes with the range. None, with nothing changed, when
    /// `charge` refuses the clean bytes.
    fn take(
        &mut self,
        mut start: usize,
        mut end: usize,
        mut i: usize,
        j: usize,
        charge: impl FnOnce(usize) -> bool,
    ) -> Option<Carved> {
        while self.extents[i].end() <= start {
            i += 1;
        }
        let (first, last) = (self.extents[i], self.extents[j]);
        let covered = j - i + 1;
        let mut pieces = usize::from(first.base < start) + usize::from(last.end() > end);
        if self.n - covered + pieces > MAX_EXTENTS {
            start = first.base;
            pieces = usize::from(last.end() > end);
        }
        if self.n - covered + pieces > MAX_EXTENTS {
            end = last.end();
        }
        let overlap = |e: &Extent| e.end().min(end) - e.base.max(start);
        let clean: usize = self.extents[i..=j]
            .iter()
            .filter(|e| !e.dirty)
            .map(overlap)
            .sum();
        if clean > 0 && !charge(clean) {
            return None;
        }
        let zero = clean == end - start;
        for _ in i..=j {
            self.remove_at(i);
        }
        let mut at = i;
        if first.base < start {
            self.insert_at(
                at,
                Extent {
                    len: start - first.base,
                    ..first
                },
            );
            at += 1;
        }
        if last.end() > end {
            self.insert_at(
                at,
                Extent {
                    base: end,
                    len: last.end() - end,
                    ..last
                },
            );
        }
        let r = self.region_index(first.region);
        self.regions[r].live += end - start;
        Some(Carved {
            base: start,
            len: end - start,
            region: first.region,
            zero,
        })
    }

    /// Carves `[at, at + len)` of `region` when free extents cover it (a block growing
    /// in place); `charge` as for [`Heap::carve`]. False, with nothing changed, when they
    /// do not or `charge` refuses.
    pub(super) fn carve_at(
        &mut self,
        region: usize,
        at: usize,
        len: usize,
        charge: impl FnOnce(usize) -> bool,
    ) -> bool {
        let i = self.extents[..self.n].partition_point(|e| e.base < at);
        if i == self.n || self.extents[i].base != at || self.extents[i].region != region {
            return false;
        }
        let end = at + len;
        let mut j = i;
        while self.extents[j].end() < end
            && j + 1 < self.n
            && self.extents[j + 1].base == self.extents[j].end()
            && self.extents[j + 1].region == region
        {
            j += 1;
        }
        if self.extents[j].end() < end {
            return false;
        }
        // A trailing piece that finds no slot would widen the range past what the
        // block's header records: refuse instead.
        let pieces = usize::from(self.extents[j].end() > end);
        if self.n - (j - i + 1) + pieces > MAX_EXTENTS {
            return false;
        }
        self.take(at, end, i, j, charge).is_some()
    }

    /// Gives `[base, base + len)` of `region` back, merged with the free extents of the
    /// same state that touch it. `live` says whether it was carved out (a block freed,
    /// rather than a purged extent coming back). False, with nothing recorded but the
    /// region's count, when it merges with nothing and the table is full: the caller
    /// purges it and calls [`Heap::lose`].
    pub(super) fn give(&mut self, mut e: Extent, live: bool) -> bool {
        if live {
            let r = self.region_index(e.region);
            self.regions[r].live -= e.len;
        }
        let at = self.extents[..self.n].partition_point(|x| x.base < e.base);
        let joins = |x: &Extent| x.region == e.region && x.dirty == e.dirty;
        let left = at > 0 && joins(&self.extents[at - 1]) && self.extents[at - 1].end() == e.base;
        let right = at < self.n && joins(&self.extents[at]) && e.end() == self.extents[at].base;
        if !left && !right && self.n == MAX_EXTENTS {
            return false;
        }
        let mut at = at;
        if right {
            let r = self.remove_at(at);
            e.len += r.len;
            e.freed_ms = e.freed_ms.max(r.freed_ms);
        }
        if left {
            at -= 1;
            let l = self.remove_at(at);
            e.base = l.base;
            e.len += l.len;
            e.freed_ms = e.freed_ms.max(l.freed_ms);
        }
        self.insert_at(at, e);
        true
    }

    /// Whether `addr` lies in memory of the heap's: a free extent, or a region none of
    /// whose room was given back (every byte of which is then a live block's or a free
    /// extent's; a region with room given back may hold another mapping there).
    pub(super) fn owns(&self, addr: usize) -> bool {
        self.regions[..self.nr_regions]
            .iter()
            .any(|r| r.lost == 0 && addr.wrapping_sub(r.base) < r.len)
            || self.extents[..self.n]
                .iter()
                .any(|e| addr.wrapping_sub(e.base) < e.len)
    }

    /// Records that `len` bytes of `region`, which [`Heap::give`] could not take (or,
    /// with `live`, a carved range that never came back), are out of the heap until the
    /// region goes.
    pub(super) fn lose(&mut self, region: usize, len: usize, live: bool) {
        let r = self.region_index(region);
        if live {
            self.regions[r].live -= len;
        }
        self.regions[r].lost += len;
    }

    /// [`Heap::lose`] of a carved range the kernel may have unmapped (it refused to map
    /// it afresh): another mapping may take that hole, so the region is kept mapped
    /// for good rather than unmapped whole when it empties.
    pub(super) fn lose_hole(&mut self, region: usize, len: usize) {
        self.lose(region, len, true);
        let r = self.region_index(region);
        self.regions[r].holes = true;
    }

    /// Takes out, to be purged, the oldest dirty extent when it was freed `decay_ms` or
    /// more before `now_ms`; else, when dirty bytes are over `budget`, as much of its
    /// high end as they are over (an extent merged from many blocks is not purged whole
    /// for the last one freed, and its low end, which carves reach first, stays).
    pub(super) fn take_dirty(
        &mut self,
        budget: usize,
        now_ms: u64,
        decay_ms: u64,
    ) -> Option<Extent> {
        let (i, e) = self.extents[..self.n]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.dirty)
            .min_by_key(|(_, e)| e.freed_ms)?;
        let e = *e;
        if e.freed_ms.saturating_add(decay_ms) <= now_ms {
            return Some(self.remove_at(i));
        }
        let over = self.dirty.saturating_sub(budget);
        if over == 0 {
            return None;
        }
        let over = (over + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        if over >= e.len {
            return Some(self.remove_at(i));
        }
        self.extents[i].len -= over;
        self.dirty -= over;
        Some(Extent {
            base: e.end() - over,
            len: over,
            ..e
        })
    }

    /// Takes out a region with no live block and every byte clean, free or lost: its
    /// base and length, to unmap.
    pub(super) fn take_empty_region(&mut self) -> Option<(usize, usize)> {
        let r = (0..self.nr_regions).find(|&r| {
            let reg = &self.regions[r];
            let clean: usize = self.extents[..self.n]
                .iter()
                .filter(|e| e.region == reg.base && !e.dirty)
                .map(|e| e.len)
                .sum();
            reg.live == 0 && clean + reg.lost == reg.len && !reg.holes
        })?;
        let reg = self.regions[r];
        self.regions.copy_within(r + 1..self.nr_regions, r);
        self.nr_regions -= 1;
        let mut i = 0;
        while i < self.n {
            if self.extents[i].region == reg.base {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        Some((reg.base, reg.len))
    }

    /// Whether the region table has room for another region.
    pub(super) fn has_region_slot(&self) -> bool {
        self.nr_regions < MAX_REGIONS && self.n < MAX_EXTENTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 1 << 20;
    const R: usize = 1 << 40;

    fn heap_with_region(len: usize) -> Heap {
        let mut h = Heap::new();
        assert!(h.add_region(R, len, 0));
        h
    }

    /// A region that lost a range the kernel may have unmapped is never handed out to
    /// be unmapped whole (another mapping may sit in the hole); one that lost a range
    /// still mapped is, once empty.
    #[test]
    fn a_region_with_a_hole_is_never_unmapped_whole() {
        for hole in [true, false] {
            let mut h = heap_with_region(8 * M);
            let a = h.carve(4 * M, PAGE_SIZE, 0, |_| true).unwrap();
            let b = h.carve(4 * M, PAGE_SIZE, 0, |_| true).unwrap();
            if hole {
                h.lose_hole(R, a.len);
            } else {
                h.lose(R, a.len, true);
            }
            let e = Extent {
                base: b.base,
                len: b.len,
                region: R,
                dirty: false,
                freed_ms: 0,
            };
            assert!(h.give(e, true));
            let want = if hole { None } else { Some((R, 8 * M)) };
            assert_eq!(h.take_empty_region(), want, "hole: {hole}");
        }
    }

    /// A region is held alone by a block carved from all of it, not by one that leaves
    /// room free; moved and grown (`mremap`), it is found at its new place, full.
    #[test]
    fn a_region_held_alone_moves_with_its_block() {
        let mut h = heap_with_region(8 * M);
        let c = h.carve(4 * M, PAGE_SIZE, 0, |_| true).unwrap();
        assert!(!h.holds_alone(R, c.base, 4 * M), "room left free");
        assert!(h.carve_at(R, c.base + 4 * M, 4 * M, |_| true));
        assert!(h.holds_alone(R, R, 8 * M));
        assert!(!h.holds_alone(R, R, 4 * M), "not the whole region");
        let to = R + 64 * M;
        h.resize_region(R, to, 12 * M);
        assert!(h.holds_alone(to, to, 12 * M));
        assert!(h.covers(to, to, 12 * M));
        assert!(!h.covers(R, R, PAGE_SIZE), "the old base names no region");
    }

    fn free(h: &mut Heap, c: &Carved, t: u64) {
        let e = Extent {
            base: c.base,
            len: c.len,
            region: c.region,
            dirty: true,
            freed_ms: t,
        };
        assert!(h.give(e, true));
    }

    /// Every byte of the region is in exactly one place: a live block, a free extent;
    /// extents are sorted, disjoint and never touch one of the same state.
    fn check(h: &Heap, live: &[Carved]) {
        let mut ranges: Vec<(usize, usize)> = live.iter().map(|c| (c.base, c.len)).collect();
        ranges.extend(h.extents[..h.n].iter().map(|e| (e.base, e.len)));
        ranges.sort();
        let mut at = R;
        for (b, l) in ranges {
            assert_eq!(b, at, "gap or overlap at {b:#x}");
            at = b + l;
        }
        assert_eq!(at, R + h.regions[0].len);
        for w in h.extents[..h.n].windows(2) {
            assert!(w[0].end() <= w[1].base);
            assert!(w[0].end() < w[1].base || w[0].dirty != w[1].dirty);
        }
        let dirty: usize = h.extents[..h.n]
            .iter()
            .filter(|e| e.dirty)
            .map(|e| e.len)
            .sum();
        assert_eq!(dirty, h.dirty);
        assert_eq!(h.regions[0].live, live.iter().map(|c| c.len).sum::<usize>());
    }

    #[test]
    fn freed_blocks_merge_and_serve_a_larger_request() {
        let mut h = heap_with_region(REGION_SIZE);
        let a = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let b = h.carve(20 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let c = h.carve(5 * M, PAGE_SIZE, 0, |_| true).unwrap();
        assert!(a.zero && b.zero && c.zero);
        assert_eq!((a.base, b.base, c.base), (R, R + 10 * M, R + 30 * M));
        free(&mut h, &a, 1);
        free(&mut h, &b, 2);
        check(&h, &[c]);
        assert_eq!(h.dirty_bytes(), 30 * M);
        // 25 MiB fits in the merged 30 MiB, tightest dirty extent: no clean byte.
        let mut charged = 0;
        let d = h
            .carve(25 * M, PAGE_SIZE, 0, |n| {
                charged = n;
                true
            })
            .unwrap();
        assert_eq!((d.base, d.zero, charged), (R, false, 0));
        check(&h, &[c, d]);
        assert_eq!(h.dirty_bytes(), 5 * M);
        // Another node is not served from this region.
        assert_eq!(
            h.carve(M, PAGE_SIZE, 1, |_| true).unwrap_err(),
            NoRoom::Space
        );
    }

    #[test]
    fn a_run_of_dirty_and_clean_extents_serves_and_charges_the_clean_part() {
        let mut h = heap_with_region(64 * M);
        let a = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let b = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        free(&mut h, &b, 1);
        // 30 MiB: the dirty 10 MiB of b, then 20 MiB of the clean rest.
        let mut charged = 0;
        let c = h
            .carve(30 * M, PAGE_SIZE, 0, |n| {
                charged = n;
                true
            })
            .unwrap();
        assert_eq!((c.base, c.zero, charged), (b.base, false, 20 * M));
        check(&h, &[a, c]);
        // Refused charge: nothing changes.
        let before = h.extents;
        assert_eq!(
            h.carve(14 * M, PAGE_SIZE, 0, |_| false).unwrap_err(),
            NoRoom::Charge
        );
        assert_eq!(before[..h.n], h.extents[..h.n]);
        assert_eq!(
            h.carve(25 * M, PAGE_SIZE, 0, |_| true).unwrap_err(),
            NoRoom::Space
        );
    }

    #[test]
    fn alignment_leaves_a_clean_lead() {
        let mut h = heap_with_region(64 * M);
        let a = h.carve(3 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let b = h.carve(8 * M, 4 * M, 0, |_| true).unwrap();
        assert_eq!((b.base + PAGE_SIZE) % (4 * M), 0);
        assert_eq!(b.base, R + 4 * M - PAGE_SIZE);
        check(&h, &[a, b]);
        assert_eq!(h.extents[0].base, R + 3 * M);
    }

    #[test]
    fn purged_extents_come_back_clean_and_an_empty_region_is_released() {
        let mut h = heap_with_region(64 * M);
        let a = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let b = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        free(&mut h, &a, 100);
        free(&mut h, &b, 200);
        // Merged: one extent, freed at 200. Over a 5 MiB budget, it goes.
        assert!(h.take_dirty(usize::MAX, 250, 100).is_none());
        assert_eq!(h.oldest_dirty_ms(), 200);
        let e = h.take_dirty(15 * M, 250, 100).unwrap();
        assert_eq!(
            (e.base, e.len),
            (R + 15 * M, 5 * M),
            "only the excess, from the top"
        );
        assert!(h.give(Extent { dirty: false, ..e }, false));
        let e = h.take_dirty(0, 250, 100).unwrap();
        assert_eq!((e.base, e.len), (R, 15 * M));
        assert!(
            h.take_empty_region().is_none(),
            "an extent is out for purging"
        );
        assert!(h.give(Extent { dirty: false, ..e }, false));
        assert_eq!(h.n, 1, "the clean extent merged with the clean rest");
        assert_eq!(h.take_empty_region(), Some((R, 64 * M)));
        assert_eq!((h.n, h.nr_regions), (0, 0));
    }

    #[test]
    fn decay_takes_by_age() {
        let mut h = heap_with_region(64 * M);
        let a = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let _b = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        let c = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        free(&mut h, &c, 300);
        free(&mut h, &a, 100);
        assert!(h.take_dirty(usize::MAX, 150, 100).is_none());
        assert_eq!(h.take_dirty(usize::MAX, 200, 100).unwrap().base, a.base);
        assert!(h.take_dirty(usize::MAX, 399, 100).is_none());
        assert_eq!(h.take_dirty(usize::MAX, 400, 100).unwrap().base, c.base);
    }

    #[test]
    fn growing_in_place_needs_free_extents_right_after() {
        let mut h = heap_with_region(64 * M);
        let a = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        assert!(h.carve_at(R, a.base + a.len, 5 * M, |_| true));
        let a = Carved { len: 15 * M, ..a };
        let b = h.carve(10 * M, PAGE_SIZE, 0, |_| true).unwrap();
        assert!(!h.carve_at(R, a.base + a.len, M, |_| true));
        assert!(!h.carve_at(R, b.base + b.len, 40 * M, |_| true));
        check(&h, &[a, b]);
    }

    /// Random carves and frees against the invariants; a full table widens carves
    /// and loses frees but never loses track of a byte.
    #[test]
    fn random_carves_and_frees_keep_every_byte_accounted() {
        let mut h = heap_with_region(REGION_SIZE);
        let mut live: Vec<Carved> = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut lost = 0;
        for t in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || live.is_empty() {
                let len = ((x >> 8) as usize % (8 * M)) & !(PAGE_SIZE - 1);
                let align = PAGE_SIZE << ((x >> 40) % 4);
                if let Ok(c) = h.carve(len + 2 * PAGE_SIZE, align, 0, |_| true) {
                    assert_eq!((c.base + PAGE_SIZE) % align, 0);
                    live.push(c);
                }
            } else {
                let c = live.swap_remove((x >> 20) as usize % live.len());
                let e = Extent {
                    base: c.base,
                    len: c.len,
                    region: c.region,
                    dirty: x & 1 == 0,
                    freed_ms: t,
                };
                if !h.give(e, true) {
                    h.lose(c.region, c.len, false);
                    lost += c.len;
                }
            }
            if t.is_multiple_of(97) {
                if let Some(e) = h.take_dirty(16 * M, t, 1000) {
                    assert!(h.give(Extent { dirty: false, ..e }, false));
                }
            }
        }
        assert_eq!(lost, 0);
        check(&h, &live);
    }
}
