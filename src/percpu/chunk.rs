//! Chunks, `struct pcpu_chunk`: one unit per possible CPU, each [`PCPU_UNIT_SIZE`]
//! bytes, in one `MAP_NORESERVE` reservation; CPU `c`'s copy of the area at offset
//! `off` lives at `base + c * PCPU_UNIT_SIZE + off`.
//!
//! A chunk manages a run of pages of every unit (all of them, except in the first
//! mapping, whose leading pages form the reserved chunk). Its metadata — this header,
//! the allocation and boundary bitmaps, the block metadata and the populated bitmap —
//! lives in pages from the page pool, never in memory from the global allocator.
//!
//! Pages are populated on demand, as the kernel's are, but populating commits nothing:
//! a unit's copy of a page becomes resident when something writes it, so a possible CPU
//! that never runs a thread of the process (a VM's hot-plug slots, the cores of a big
//! machine a small program never reaches) costs no memory, where committing every unit
//! cost two pages a possible CPU at boot. Depopulating gives a page back in every unit
//! (`MADV_DONTNEED`), after which it reads as zero again. Only the bytes of freed areas
//! can be other than zero, so only a new area over a page where one was freed since
//! (`dirty`) is zeroed, and only in the units whose copy is not zero already: the
//! others are not written, nor read.

use core::ptr;

use super::bitmap::{self, BlockMd, BLOCK_BITS, PCPU_MIN_ALLOC_SIZE};
use crate::page::{self, Page};
use crate::sys::{self, PAGE_SIZE};
use crate::topology;

/// Bytes of one unit: a CPU's share of a chunk.
pub const PCPU_UNIT_SIZE: usize = 64 << 10;
/// Pages in one unit; also the number of blocks of a chunk that covers a whole unit.
pub const PCPU_UNIT_PAGES: usize = PCPU_UNIT_SIZE / PAGE_SIZE;
/// The largest area `alloc_percpu` hands out (`PCPU_MIN_UNIT_SIZE` in the kernel).
pub const PCPU_MAX_ALLOC_SIZE: usize = 32 << 10;
/// Bytes at the start of every unit of the first mapping kept for cpuslab's own
/// static per-CPU data (the reserved chunk), as the kernel keeps
/// `PERCPU_MODULE_RESERVE` for modules.
pub const PCPU_RESERVED_SIZE: usize = 16 << 10;

const MAP_BITS: usize = PCPU_UNIT_PAGES * BLOCK_BITS;
const MAP_WORDS: usize = MAP_BITS / 64;

const _: () = assert!(PCPU_UNIT_SIZE >= 32 << 10 && PCPU_UNIT_SIZE.is_multiple_of(PAGE_SIZE));
const _: () = assert!(PCPU_UNIT_PAGES <= 64, "the populated bitmap is one word");
const _: () = assert!(PCPU_MAX_ALLOC_SIZE <= PCPU_UNIT_SIZE - PCPU_RESERVED_SIZE);
const _: () = assert!(PCPU_RESERVED_SIZE.is_multiple_of(PAGE_SIZE) && PCPU_RESERVED_SIZE > 0);

/// What a chunk serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// The reserved chunk: the leading pages of the first mapping, for cpuslab's own
    /// static per-CPU data; never depopulated, never freed, on no slot list.
    Reserved,
    /// The first dynamic chunk: the rest of the first mapping; never freed.
    First,
    /// A chunk created on demand; freed when empty and another empty chunk exists.
    Dynamic,
}

/// A chunk's header and maps, in pages of its own from the page pool.
#[repr(C)]
pub struct Chunk {
    /// Next chunk on the same slot list.
    pub next: *mut Chunk,
    /// Previous chunk on the same slot list.
    pub prev: *mut Chunk,
    /// Next chunk in creation order (every chunk, for statistics).
    pub all_next: *mut Chunk,
    /// Previous chunk in creation order.
    pub all_prev: *mut Chunk,
    /// Unit 0 of the mapping this chunk lives in.
    pub base_addr: *mut u8,
    /// Number of units (possible CPUs) of the mapping.
    pub nr_units: usize,
    /// The page-pool block holding this header.
    pub meta: *mut Page,
    /// First page of each unit this chunk manages.
    pub start_page: usize,
    /// Pages of each unit this chunk manages (its blocks).
    pub nr_pages: usize,
    /// Slot list the chunk is on.
    pub slot: usize,
    /// What the chunk serves.
    pub kind: ChunkKind,
    /// Metadata folded from the blocks (`chunk_md`).
    pub md: BlockMd,
    /// Free bytes (per unit).
    pub free_bytes: usize,
    /// Live areas.
    pub nr_alloc: usize,
    /// Largest area ever allocated here.
    pub max_alloc_size: usize,
    /// Bit `p` set: page `p` is populated: ready for areas that are zeroed (see the
    /// module docs; nothing is committed).
    pub populated: u64,
    /// Bit `p` set: page `p` may hold non-zero bytes outside its live areas in some
    /// unit, as an area there was freed since the page was last given back (or the
    /// chunk created). A new area on a page without the bit reads as zero in every
    /// unit.
    pub dirty: u64,
    /// Populated pages.
    pub nr_populated: usize,
    /// Populated pages with nothing allocated in them.
    pub nr_empty_pop_pages: usize,
    /// Per-block (per-page) metadata.
    pub blocks: [BlockMd; PCPU_UNIT_PAGES],
    /// Bit set: granule allocated.
    pub alloc_map: [u64; MAP_WORDS],
    /// Bit set: an area starts or ends here (one bit past its last granule). Bits inside
    /// a live area are always clear; bits in free runs may be stale.
    pub bound_map: [u64; MAP_WORDS + 1],
}

/// Pages of page-pool memory a chunk header takes.
pub const CHUNK_META_PAGES: usize = core::mem::size_of::<Chunk>().div_ceil(PAGE_SIZE);
// One page: every chunk's header is resident from its creation, and boot creates
// several (the entry arrays reserve their growth); with 4-byte granules (the kernel's)
// the two maps alone took 4 KiB and a header two pages.
const _: () = assert!(CHUNK_META_PAGES == 1);

/// The bits of pages `[start, end)` in a page bitmap (`populated`, `dirty`).
#[inline]
fn pages_mask(start: usize, end: usize) -> u64 {
    let upto = |p: usize| if p >= 64 { u64::MAX } else { (1u64 << p) - 1 };
    upto(end) & !upto(start)
}

/// Counts of one chunk's empty populated pages before and after a change.
pub struct EmptyDelta {
    /// Empty populated pages before.
    pub before: usize,
    /// Empty populated pages after.
    pub after: usize,
}

impl Chunk {
    /// Creates a chunk managing pages `[start_page, start_page + nr_pages)` of every
    /// unit of the mapping at `base_addr`, its header from the page pool. Null when the
    /// page pool is out of memory.
    ///
    /// # Safety
    /// `base_addr` maps `nr_units` units that no other chunk manages in that range.
    pub unsafe fn create(
        base_addr: *mut u8,
        nr_units: usize,
        start_page: usize,
        nr_pages: usize,
        kind: ChunkKind,
    ) -> *mut Chunk {
        let meta = page::alloc_pages_exact(CHUNK_META_PAGES, 0);
        if meta.is_null() {
            return ptr::null_mut();
        }
        let chunk = page::page_address(meta).cast::<Chunk>();
        // All zeros is a valid (if meaningless) chunk: null links, empty maps.
        // SAFETY: the block just taken is ours, page aligned and `CHUNK_META_PAGES`
        // pages, room for one `Chunk`.
        unsafe { ptr::write_bytes(chunk, 0, 1) };
        // SAFETY: initialised just above; nobody else has it yet.
        let c = unsafe { &mut *chunk };
        c.base_addr = base_addr;
        c.nr_units = nr_units;
        c.meta = meta;
        c.start_page = start_page;
        c.nr_pages = nr_pages;
        c.kind = kind;
        for b in 0..nr_pages {
            c.blocks[b] = BlockMd::free(BLOCK_BITS);
        }
        c.md = BlockMd::fold(&c.blocks[..nr_pages]);
        c.free_bytes = c.capacity();
        chunk
    }

    /// Maps a reservation of `nr_units` units and binds each unit to its CPU's node.
    /// Null when the address space is exhausted.
    pub fn map_units(nr_units: usize) -> *mut u8 {
        let len = nr_units * PCPU_UNIT_SIZE;
        let base = sys::mmap::map_aligned(len, PAGE_SIZE, true);
        if base.is_null() {
            return base;
        }
        sys::mmap::no_hugepage(base, len);
        if topology::nr_node_ids() > 1 {
            for cpu in 0..nr_units {
                // SAFETY: unit `cpu` lies inside the mapping just made.
                let unit = unsafe { base.add(cpu * PCPU_UNIT_SIZE) };
                sys::numa::bind_preferred(unit, PCPU_UNIT_SIZE, topology::cpu_to_node(cpu));
            }
        }
        base
    }

    /// Frees the header of a chunk (its mapping is the caller's business).
    ///
    /// # Safety
    /// `chunk` came from [`create`](Self::create), is on no list and is not used again.
    pub unsafe fn free_meta(chunk: *mut Chunk) {
        // SAFETY: `chunk` came from `create`, so `meta` heads the block holding it;
        // nothing uses the header again.
        unsafe { page::free_pages_exact((*chunk).meta) };
    }

    /// Granules this chunk manages.
    #[inline]
    pub fn nr_bits(&self) -> usize {
        self.nr_pages * BLOCK_BITS
    }

    /// Bytes per unit this chunk manages.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.nr_pages * PAGE_SIZE
    }

    /// Whether nothing is allocated in the chunk.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.free_bytes == self.capacity()
    }

    /// CPU 0's copy of granule `bit`.
    #[inline]
    pub fn bit_addr(&self, bit: usize) -> *mut u8 {
        let off = self.start_page * PAGE_SIZE + bit * PCPU_MIN_ALLOC_SIZE;
        self.base_addr.wrapping_add(off)
    }

    /// The granule of CPU 0's copy at `addr`, if `addr` is a granule of this chunk.
    pub fn addr_bit(&self, addr: *const u8) -> Option<usize> {
        let start = self.bit_addr(0) as usize;
        let off = (addr as usize).checked_sub(start)?;
        (off % PCPU_MIN_ALLOC_SIZE == 0 && off < self.capacity())
            .then_some(off / PCPU_MIN_ALLOC_SIZE)
    }

    /// CPU `cpu`'s copy of page `page` of this chunk.
    #[inline]
    fn page_addr(&self, cpu: usize, page: usize) -> *mut u8 {
        let off = cpu * PCPU_UNIT_SIZE + (self.start_page + page) * PAGE_SIZE;
        self.base_addr.wrapping_add(off)
    }

    /// Whether page `page` is populated.
    #[inline]
    pub fn is_populated(&self, page: usize) -> bool {
        self.populated & (1 << page) != 0
    }

    /// Whether page `page` is populated with nothing allocated in it.
    #[inline]
    pub fn is_empty_pop_page(&self, page: usize) -> bool {
        self.is_populated(page) && self.blocks[page].is_empty()
    }

    /// `pcpu_find_block_fit`: the first granule of a free run of `bits` granules
    /// aligned to `align` granules (at most a block), found from the block hints.
    pub fn find_fit(&self, bits: usize, align: usize) -> Option<usize> {
        if (self.md.contig_hint as usize) < bits {
            return None;
        }
        // Blocks before the first free granule are full: start at its block.
        let first = self.md.first_free as usize / BLOCK_BITS;
        // The free run that reaches the end of the blocks seen so far.
        let (mut run_start, mut run_len) = (0usize, 0usize);
        for (i, b) in self.blocks[..self.nr_pages].iter().enumerate().skip(first) {
            let base = i * BLOCK_BITS;
            // A run coming from earlier blocks, ending inside or past this one.
            let joined = run_len + b.left_free as usize;
            if joined >= bits {
                let start = if run_len > 0 { run_start } else { base };
                if let Some(at) = bitmap::fit_in_run(start, start + joined, bits, align) {
                    return Some(at);
                }
            }
            if b.is_empty() {
                if run_len == 0 {
                    run_start = base;
                }
                run_len += BLOCK_BITS;
                continue;
            }
            if let Some(at) = b.fit_inside(&self.alloc_map, base, bits, align) {
                return Some(base + at);
            }
            run_start = base + BLOCK_BITS - b.right_free as usize;
            run_len = b.right_free as usize;
        }
        None
    }

    /// Recomputes the metadata of the blocks under `[bit, bit + bits)` and of the chunk.
    fn refresh(&mut self, bit: usize, bits: usize) {
        let first = bit / BLOCK_BITS;
        let last = (bit + bits - 1) / BLOCK_BITS;
        for b in first..=last {
            self.blocks[b] = BlockMd::scan(&self.alloc_map, b * BLOCK_BITS, BLOCK_BITS);
        }
        self.md = BlockMd::fold(&self.blocks[..self.nr_pages]);
    }

    /// Empty populated pages among the pages under `[bit, bit + bits)`.
    fn empty_pop_pages_under(&self, bit: usize, bits: usize) -> usize {
        let first = bit / BLOCK_BITS;
        let last = (bit + bits - 1) / BLOCK_BITS;
        (first..=last)
            .filter(|&p| self.is_empty_pop_page(p))
            .count()
    }

    /// `pcpu_alloc_area`: marks `[bit, bit + bits)` allocated. The run must be free
    /// (as [`find_fit`](Self::find_fit) found it).
    pub fn alloc_area(&mut self, bit: usize, bits: usize) -> EmptyDelta {
        let before = self.nr_empty_pop_pages;
        let empty_before = self.empty_pop_pages_under(bit, bits);
        bitmap::set_range(&mut self.alloc_map, bit, bits);
        bitmap::set_bit(&mut self.bound_map, bit);
        if bits > 1 {
            bitmap::clear_range(&mut self.bound_map, bit + 1, bits - 1);
        }
        bitmap::set_bit(&mut self.bound_map, bit + bits);
        self.refresh(bit, bits);
        let empty_after = self.empty_pop_pages_under(bit, bits);
        self.nr_empty_pop_pages = before - empty_before + empty_after;
        let size = bits * PCPU_MIN_ALLOC_SIZE;
        self.free_bytes -= size;
        self.nr_alloc += 1;
        self.max_alloc_size = self.max_alloc_size.max(size);
        EmptyDelta {
            before,
            after: self.nr_empty_pop_pages,
        }
    }

    /// The length in granules of the live area starting at granule `bit`, or `None`
    /// when no live area starts there.
    pub fn area_bits(&self, bit: usize) -> Option<usize> {
        if bit >= self.nr_bits()
            || !bitmap::test_bit(&self.bound_map, bit)
            || !bitmap::test_bit(&self.alloc_map, bit)
        {
            return None;
        }
        let end = bitmap::find_next_bit(&self.bound_map, bit + 1, self.nr_bits() + 1);
        let bits = end - bit;
        bitmap::range_is_set(&self.alloc_map, bit, bits).then_some(bits)
    }

    /// `pcpu_free_area`: frees the live area starting at granule `bit`, which has
    /// `bits` granules (from [`area_bits`](Self::area_bits)).
    pub fn free_area(&mut self, bit: usize, bits: usize) -> EmptyDelta {
        let before = self.nr_empty_pop_pages;
        let empty_before = self.empty_pop_pages_under(bit, bits);
        // The boundary bits stay: the one at `bit` may end the area before, and the
        // next allocation over this run clears the ones inside it.
        bitmap::clear_range(&mut self.alloc_map, bit, bits);
        // Its bytes stay as its users left them.
        let (first, last) = Self::pages_of(bit, bits);
        self.dirty |= pages_mask(first, last + 1);
        self.refresh(bit, bits);
        let empty_after = self.empty_pop_pages_under(bit, bits);
        self.nr_empty_pop_pages = before - empty_before + empty_after;
        self.free_bytes += bits * PCPU_MIN_ALLOC_SIZE;
        self.nr_alloc -= 1;
        EmptyDelta {
            before,
            after: self.nr_empty_pop_pages,
        }
    }

    /// Pages `[first, last]` under the granules `[bit, bit + bits)`.
    #[inline]
    pub fn pages_of(bit: usize, bits: usize) -> (usize, usize) {
        (bit / BLOCK_BITS, (bit + bits - 1) / BLOCK_BITS)
    }

    /// `pcpu_populate_chunk`: marks the pages `[start, end)` (all unpopulated) ready for
    /// areas. Nothing is committed (see the module docs): each unit's copy of a page
    /// becomes resident when it is first written.
    pub fn populate(&mut self, start: usize, end: usize) {
        for p in start..end {
            self.populated |= 1 << p;
            if self.blocks[p].is_empty() {
                self.nr_empty_pop_pages += 1;
            }
        }
        self.nr_populated += end - start;
    }

    /// Whether a new area over `[bit, bit + bits)` may read other than zero in some
    /// unit: whether one of its pages held an area freed since it was last given back.
    pub fn is_dirty(&self, bit: usize, bits: usize) -> bool {
        let (first, last) = Self::pages_of(bit, bits);
        self.dirty & pages_mask(first, last + 1) != 0
    }

    /// Pages of the chunk resident now, over every unit (populated ones, and those lazy
    /// areas made resident by touching them). For statistics: one `mincore` a unit.
    pub fn resident_pages(&self) -> usize {
        (0..self.nr_units)
            .map(|cpu| sys::mmap::resident_pages(self.page_addr(cpu, 0), self.nr_pages * PAGE_SIZE))
            .sum()
    }

    /// Gives back, in every unit, the pages under `[bit, bit + bits)` that are not
    /// populated and have nothing allocated in them: pages a lazy area (not populated
    /// ahead) used alone and may have made resident.
    pub fn purge_empty_unpopulated(&mut self, bit: usize, bits: usize) {
        let (first, last) = Self::pages_of(bit, bits);
        for p in first..=last {
            if !self.is_populated(p) && self.blocks[p].is_empty() {
                for cpu in 0..self.nr_units {
                    sys::mmap::purge(self.page_addr(cpu, p), PAGE_SIZE);
                }
                self.dirty &= !pages_mask(p, p + 1);
            }
        }
    }

    /// `pcpu_depopulate_chunk`: gives the pages `[start, end)` (populated, with
    /// nothing allocated in them) back in every unit.
    pub fn depopulate(&mut self, start: usize, end: usize) {
        let len = (end - start) * PAGE_SIZE;
        for cpu in 0..self.nr_units {
            sys::mmap::purge(self.page_addr(cpu, start), len);
        }
        self.dirty &= !pages_mask(start, end);
        for p in start..end {
            self.populated &= !(1 << p);
            if self.blocks[p].is_empty() {
                self.nr_empty_pop_pages -= 1;
            }
        }
        self.nr_populated -= end - start;
    }

    /// Calls `f(start, bits)` for every live area, in address order.
    pub fn for_each_area(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.nr_bits();
        let mut bit = bitmap::find_next_bit(&self.alloc_map, 0, n);
        while bit < n {
            let end = bitmap::find_next_bit(&self.bound_map, bit + 1, n + 1);
            f(bit, end - bit);
            bit = bitmap::find_next_bit(&self.alloc_map, end, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A chunk over a private one-unit mapping, exercised against a list of live areas:
    /// every fit is free and aligned, every live area keeps its length, the maps and
    /// hints agree with the model after every operation.
    #[test]
    fn areas_against_model() {
        assert!(crate::init::ensure());
        let base = Chunk::map_units(1);
        assert!(!base.is_null());
        // SAFETY: the mapping is ours alone.
        let chunk = unsafe { Chunk::create(base, 1, 0, PCPU_UNIT_PAGES, ChunkKind::Dynamic) };
        assert!(!chunk.is_null());
        // SAFETY: created above, used by this thread only.
        let c = unsafe { &mut *chunk };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<(usize, usize)> = Vec::new();
        for _ in 0..20_000 {
            if live.is_empty() || rng.below(100) < 55 {
                let max = if rng.below(10) == 0 { 2048 } else { 64 };
                let bits = 1 + rng.below(max) as usize;
                // Up to a page, as `pcpu_alloc` allows: one block.
                let align = 1usize << rng.below(u64::from(BLOCK_BITS.trailing_zeros()) + 1);
                match c.find_fit(bits, align) {
                    Some(bit) => {
                        assert_eq!(bit % align, 0);
                        assert!(bit + bits <= c.nr_bits());
                        assert!(live.iter().all(|&(s, n)| bit + bits <= s || s + n <= bit));
                        c.alloc_area(bit, bits);
                        live.push((bit, bits));
                    }
                    None => {
                        // No aligned free run of that length exists.
                        let mut at = 0;
                        while at + bits <= c.nr_bits() {
                            assert!(live.iter().any(|&(s, n)| at < s + n && s < at + bits));
                            at += align;
                        }
                    }
                }
            } else {
                let i = rng.below(live.len() as u64) as usize;
                let (bit, bits) = live.swap_remove(i);
                assert_eq!(c.area_bits(bit), Some(bits));
                c.free_area(bit, bits);
                assert_eq!(c.area_bits(bit), None);
            }
            let used: usize = live.iter().map(|&(_, n)| n).sum();
            assert_eq!(c.free_bytes, c.capacity() - used * PCPU_MIN_ALLOC_SIZE);
            assert_eq!(c.nr_alloc, live.len());
            let mut seen = 0;
            c.for_each_area(|bit, bits| {
                assert!(live.contains(&(bit, bits)), "{bit}+{bits} is no live area");
                seen += 1;
            });
            assert_eq!(seen, live.len());
        }
        // SAFETY: the chunk is on no list; the mapping is ours.
        unsafe { Chunk::free_meta(chunk) };
        sys::mmap::unmap(base, PCPU_UNIT_SIZE);
    }
}
