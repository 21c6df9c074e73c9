//! `percpu_stats`: the allocator's counters and a per-chunk dump, as the kernel's
//! debugfs file `percpu_stats` shows them.
//!
//! Numbers are copied out under `pcpu_lock` (a few chunks at a time) and formatted
//! after it is dropped, so the writer may allocate (a `String`) even once the slab
//! layer keeps its per-CPU structures in percpu chunks.

use core::fmt::{self, Write};

use super::alloc::{ensure_init, PCPU_LOCK};
use super::balance::{PCPU_EMPTY_POP_PAGES_HIGH, PCPU_EMPTY_POP_PAGES_LOW};
use super::bitmap::PCPU_MIN_ALLOC_SIZE;
use super::chunk::{Chunk, ChunkKind, PCPU_MAX_ALLOC_SIZE, PCPU_RESERVED_SIZE, PCPU_UNIT_SIZE};
use crate::sys::PAGE_SIZE;
use crate::topology;

/// The counters the allocator keeps under its lock (`struct percpu_stats`).
#[derive(Clone, Copy, Debug)]
pub struct GlobalStats {
    nr_alloc: u64,
    nr_dealloc: u64,
    nr_cur_alloc: u64,
    nr_max_alloc: u64,
    nr_chunks: u32,
    nr_max_chunks: u32,
    min_alloc_size: usize,
    max_alloc_size: usize,
}

impl GlobalStats {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            nr_alloc: 0,
            nr_dealloc: 0,
            nr_cur_alloc: 0,
            nr_max_alloc: 0,
            nr_chunks: 0,
            nr_max_chunks: 0,
            min_alloc_size: 0,
            max_alloc_size: 0,
        }
    }

    /// `pcpu_stats_area_alloc`: an area of `size` bytes (granule-rounded) was allocated.
    pub fn area_alloc(&mut self, size: usize) {
        self.nr_alloc += 1;
        self.nr_cur_alloc += 1;
        self.nr_max_alloc = self.nr_max_alloc.max(self.nr_cur_alloc);
        self.min_alloc_size = if self.nr_alloc == 1 {
            size
        } else {
            self.min_alloc_size.min(size)
        };
        self.max_alloc_size = self.max_alloc_size.max(size);
    }

    /// `pcpu_stats_area_dealloc`: an area was freed.
    pub fn area_free(&mut self) {
        self.nr_dealloc += 1;
        self.nr_cur_alloc -= 1;
    }

    /// `pcpu_stats_chunk_alloc`: a chunk mapping was created.
    pub fn chunk_alloc(&mut self) {
        self.nr_chunks += 1;
        self.nr_max_chunks = self.nr_max_chunks.max(self.nr_chunks);
    }

    /// `pcpu_stats_chunk_dealloc`: a chunk mapping was destroyed.
    pub fn chunk_free(&mut self) {
        self.nr_chunks -= 1;
    }
}

impl Default for GlobalStats {
    fn default() -> Self {
        Self::new()
    }
}

/// The allocator's figures: its geometry (`pcpu_alloc_info`) and the counters of the
/// kernel's `percpu_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PercpuStats {
    /// Bytes of one CPU's unit of a chunk.
    pub unit_size: usize,
    /// Bytes of static per-CPU data in the first chunk (none: cpuslab keeps its own
    /// statics in the reserved chunk).
    pub static_size: usize,
    /// Bytes of a unit of the reserved chunk.
    pub reserved_size: usize,
    /// Bytes of a unit of the first dynamic chunk.
    pub dyn_size: usize,
    /// Allocation granularity of chunk memory (a page).
    pub atom_size: usize,
    /// Bytes of one chunk mapping (all its units).
    pub alloc_size: usize,
    /// Units in a chunk: the possible CPUs.
    pub nr_units: usize,
    /// Areas allocated since start.
    pub nr_alloc: u64,
    /// Areas freed since start.
    pub nr_dealloc: u64,
    /// Areas live now.
    pub nr_cur_alloc: u64,
    /// Most areas live at once.
    pub nr_max_alloc: u64,
    /// Chunk mappings now (the first one counted once, with its reserved part).
    pub nr_chunks: u32,
    /// Most chunk mappings at once.
    pub nr_max_chunks: u32,
    /// Smallest area allocated since start, in bytes (granule-rounded; 0 before any).
    pub min_alloc_size: usize,
    /// Largest area allocated since start, in bytes (granule-rounded).
    pub max_alloc_size: usize,
    /// Empty populated pages (per unit) over the dynamic chunks.
    pub empty_pop_pages: usize,
    /// Populated pages (per unit) over all chunks.
    pub populated_pages: usize,
    /// Pages of every chunk resident now, over all units: the populated pages and those
    /// of lazy areas (`alloc_percpu_lazy`) that their CPUs touched.
    pub resident_pages: usize,
}

/// A snapshot of the allocator's figures (starting the allocator if needed, so that
/// the first chunk shows).
pub fn percpu_stats() -> PercpuStats {
    let mut s = PercpuStats {
        unit_size: PCPU_UNIT_SIZE,
        static_size: 0,
        reserved_size: PCPU_RESERVED_SIZE,
        dyn_size: PCPU_UNIT_SIZE - PCPU_RESERVED_SIZE,
        atom_size: PAGE_SIZE,
        alloc_size: PCPU_UNIT_SIZE * topology::nr_cpu_ids(),
        nr_units: topology::nr_cpu_ids(),
        ..PercpuStats::default()
    };
    if ensure_init().is_err() {
        return s;
    }
    let st = PCPU_LOCK.lock();
    let g = st.stats;
    s.nr_units = st.nr_units;
    s.alloc_size = PCPU_UNIT_SIZE * st.nr_units;
    s.nr_alloc = g.nr_alloc;
    s.nr_dealloc = g.nr_dealloc;
    s.nr_cur_alloc = g.nr_cur_alloc;
    s.nr_max_alloc = g.nr_max_alloc;
    s.nr_chunks = g.nr_chunks;
    s.nr_max_chunks = g.nr_max_chunks;
    s.min_alloc_size = g.min_alloc_size;
    s.max_alloc_size = g.max_alloc_size;
    s.empty_pop_pages = st.nr_empty_pop_pages;
    s.populated_pages = st.nr_populated;
    let mut chunk = st.all_head;
    // SAFETY: under the lock; the list of all chunks is live.
    unsafe {
        while !chunk.is_null() {
            s.resident_pages += (*chunk).resident_pages();
            chunk = (*chunk).all_next;
        }
    }
    s
}

/// What one chunk holds, as the per-chunk part of `percpu_stats` shows it. Sizes are
/// bytes of one unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Address of CPU 0's copy of the chunk's first byte.
    pub base_addr: usize,
    /// The reserved chunk.
    pub reserved: bool,
    /// The first dynamic chunk.
    pub first: bool,
    /// Live areas.
    pub nr_alloc: usize,
    /// Largest area ever allocated in the chunk.
    pub max_alloc_size: usize,
    /// Pages the chunk manages.
    pub nr_pages: usize,
    /// Populated pages.
    pub populated_pages: usize,
    /// Populated pages with nothing allocated in them.
    pub empty_pop_pages: usize,
    /// First free granule (`first_bit`).
    pub first_bit: usize,
    /// Free bytes.
    pub free_bytes: usize,
    /// Largest free run in bytes (the contig hint).
    pub contig_bytes: usize,
    /// Free bytes outside the largest free run.
    pub sum_frag: usize,
    /// Largest free run other than the largest one, in bytes.
    pub max_frag: usize,
    /// Smallest live area.
    pub cur_min_alloc: usize,
    /// Median live area.
    pub cur_med_alloc: usize,
    /// Largest live area.
    pub cur_max_alloc: usize,
}

impl ChunkStats {
    /// Copies the figures of `c`, walking its maps.
    fn of(c: &Chunk) -> Self {
        let mut s = Self {
            base_addr: c.bit_addr(0) as usize,
            reserved: c.kind == ChunkKind::Reserved,
            first: c.kind == ChunkKind::First,
            nr_alloc: c.nr_alloc,
            max_alloc_size: c.max_alloc_size,
            nr_pages: c.nr_pages,
            populated_pages: c.nr_populated,
            empty_pop_pages: c.nr_empty_pop_pages,
            first_bit: c.md.first_free as usize,
            free_bytes: c.free_bytes,
            contig_bytes: c.md.contig_hint as usize * PCPU_MIN_ALLOC_SIZE,
            ..Self::default()
        };
        s.sum_frag = s.free_bytes - s.contig_bytes;
        // The second largest free run: the largest of the runs between live areas once
        // the contig hint's run is set aside.
        let contig_start = c.md.contig_hint_start as usize;
        let mut prev_end = 0;
        let mut max_frag = 0;
        let mut note_gap = |start: usize, end: usize| {
            if end > start && start != contig_start {
                max_frag = max_frag.max(end - start);
            }
        };
        let (mut min, mut max) = (usize::MAX, 0);
        c.for_each_area(|bit, bits| {
            note_gap(prev_end, bit);
            prev_end = bit + bits;
            min = min.min(bits);
            max = max.max(bits);
        });
        note_gap(prev_end, c.nr_bits());
        s.max_frag = max_frag * PCPU_MIN_ALLOC_SIZE;
        if c.nr_alloc > 0 {
            s.cur_min_alloc = min * PCPU_MIN_ALLOC_SIZE;
            s.cur_max_alloc = max * PCPU_MIN_ALLOC_SIZE;
            s.cur_med_alloc = median_bits(c, min, max) * PCPU_MIN_ALLOC_SIZE;
        }
        s
    }
}

/// The median length of the live areas of `c` (the lower one for an even count),
/// found by bisecting `[lo, hi]` on the count of areas no longer than the guess: no
/// buffer to sort, a walk of the maps per step.
fn median_bits(c: &Chunk, mut lo: usize, mut hi: usize) -> usize {
    let want = c.nr_alloc.div_ceil(2);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut n = 0;
        c.for_each_area(|_, bits| n += (bits <= mid) as usize);
        if n >= want {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Calls `f` with the figures of every chunk, the reserved chunk first, then in
/// creation order. The lock is taken for a few chunks at a time and never held while
/// `f` runs; chunks created or freed meanwhile may be missed or seen twice.
pub fn for_each_chunk(mut f: impl FnMut(&ChunkStats)) {
    if ensure_init().is_err() {
        return;
    }
    const BATCH: usize = 8;
    let mut skip = 0;
    loop {
        let mut batch = [ChunkStats::default(); BATCH];
        let mut n = 0;
        {
            let st = PCPU_LOCK.lock();
            let mut chunk = st.all_head;
            let mut i = 0;
            // SAFETY: under the lock; the list of all chunks is live.
            unsafe {
                while !chunk.is_null() && n < BATCH {
                    if i >= skip {
                        batch[n] = ChunkStats::of(&*chunk);
                        n += 1;
                    }
                    i += 1;
                    chunk = (*chunk).all_next;
                }
            }
        }
        for s in &batch[..n] {
            f(s);
        }
        if n < BATCH {
            return;
        }
        skip += BATCH;
    }
}

/// Writes one `  name : value` line as the kernel's file does.
fn line(w: &mut dyn Write, name: &str, value: u64) -> fmt::Result {
    writeln!(w, "  {name:<20}: {value:>12}")
}

/// Writes the report in the layout of the kernel's debugfs `percpu_stats`: the
/// allocation info, the global counters, then one block per chunk.
pub fn write_percpu_stats(w: &mut dyn Write) -> fmt::Result {
    const RULE: &str = "----------------------------------------";
    let s = percpu_stats();
    w.write_str("Percpu Memory Statistics\nAllocation Info:\n")?;
    writeln!(w, "{RULE}")?;
    line(w, "unit_size", s.unit_size as u64)?;
    line(w, "static_size", s.static_size as u64)?;
    line(w, "reserved_size", s.reserved_size as u64)?;
    line(w, "dyn_size", s.dyn_size as u64)?;
    line(w, "atom_size", s.atom_size as u64)?;
    line(w, "alloc_size", s.alloc_size as u64)?;
    line(w, "nr_units", s.nr_units as u64)?;
    w.write_str("\nGlobal Stats:\n")?;
    writeln!(w, "{RULE}")?;
    line(w, "nr_alloc", s.nr_alloc)?;
    line(w, "nr_dealloc", s.nr_dealloc)?;
    line(w, "nr_cur_alloc", s.nr_cur_alloc)?;
    line(w, "nr_max_alloc", s.nr_max_alloc)?;
    line(w, "nr_chunks", s.nr_chunks as u64)?;
    line(w, "nr_max_chunks", s.nr_max_chunks as u64)?;
    line(w, "min_alloc_size", s.min_alloc_size as u64)?;
    line(w, "max_alloc_size", s.max_alloc_size as u64)?;
    line(w, "empty_pop_pages", s.empty_pop_pages as u64)?;
    line(w, "populated_pages", s.populated_pages as u64)?;
    line(w, "resident_pages", s.resident_pages as u64)?;
    line(w, "empty_pop_low", PCPU_EMPTY_POP_PAGES_LOW as u64)?;
    line(w, "empty_pop_high", PCPU_EMPTY_POP_PAGES_HIGH as u64)?;
    line(w, "max_area_size", PCPU_MAX_ALLOC_SIZE as u64)?;
    w.write_str("\nPer Chunk Stats:\n")?;
    writeln!(w, "{RULE}")?;
    let mut result = Ok(());
    for_each_chunk(|c| {
        if result.is_err() {
            return;
        }
        result = write_chunk(w, c);
    });
    result
}

/// One chunk's block of the report.
fn write_chunk(w: &mut dyn Write, c: &ChunkStats) -> fmt::Result {
    let tag = if c.reserved {
        " <- Reserved Chunk"
    } else if c.first {
        " <- First Chunk"
    } else {
        ""
    };
    writeln!(w, "Chunk: {:#x}{tag}", c.base_addr)?;
    line(w, "nr_alloc", c.nr_alloc as u64)?;
    line(w, "max_alloc_size", c.max_alloc_size as u64)?;
    line(w, "nr_pages", c.nr_pages as u64)?;
    line(w, "populated_pages", c.populated_pages as u64)?;
    line(w, "empty_pop_pages", c.empty_pop_pages as u64)?;
    line(w, "first_bit", c.first_bit as u64)?;
    line(w, "free_bytes", c.free_bytes as u64)?;
    line(w, "contig_bytes", c.contig_bytes as u64)?;
    line(w, "sum_frag", c.sum_frag as u64)?;
    line(w, "max_frag", c.max_frag as u64)?;
    line(w, "cur_min_alloc", c.cur_min_alloc as u64)?;
    line(w, "cur_med_alloc", c.cur_med_alloc as u64)?;
    line(w, "cur_max_alloc", c.cur_max_alloc as u64)?;
    w.write_char('\n')
}
