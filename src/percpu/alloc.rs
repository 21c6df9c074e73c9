//! The allocator, `pcpu_alloc` and `free_percpu`: chunks kept in slots by their
//! largest free run, one lock (`pcpu_lock`) over all of it, and the handle that names
//! an area, [`PcpuPtr`].
//!
//! An allocation looks through the slots whose chunks may hold the size, takes the
//! first fit the block hints find, creates a chunk when none fits, populates the pages
//! under the area that are not yet populated, and moves the chunk to the slot of its
//! new largest free run (`pcpu_chunk_relocate`). The area is zeroed in every CPU's unit
//! after the lock is dropped, as `pcpu_alloc` does.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

use super::balance;
use super::bitmap::{align_up, PCPU_MIN_ALLOC_SIZE};
use super::chunk::{
    Chunk, ChunkKind, EmptyDelta, PCPU_MAX_ALLOC_SIZE, PCPU_RESERVED_SIZE, PCPU_UNIT_PAGES,
    PCPU_UNIT_SIZE,
};
use super::stats::GlobalStats;
use super::{this_cpu, PercpuError};
use crate::sync::Mutex;
use crate::sys::{self, PAGE_SIZE};
use crate::topology;

/// Number of slots: slot 0 holds full chunks, slot `s` in `1..PCPU_NR_SLOTS - 1`
/// chunks whose largest free run is `[2^(s+1), 2^(s+2))` bytes, and the last slot
/// wholly empty chunks (`pcpu_free_slot`).
pub const PCPU_NR_SLOTS: usize = PCPU_UNIT_SIZE.trailing_zeros() as usize;
/// The slot of wholly empty chunks.
pub const PCPU_FREE_SLOT: usize = PCPU_NR_SLOTS - 1;

/// The slot for a free run (or a request) of `bytes` bytes (at least one granule).
#[inline]
pub fn size_to_slot(bytes: usize) -> usize {
    let log = (usize::BITS - 1 - bytes.leading_zeros()) as usize;
    (log - 1).clamp(1, PCPU_FREE_SLOT - 1)
}

/// The allocator's state, under [`PCPU_LOCK`].
pub struct PcpuState {
    /// First chunk of each slot list.
    pub slot_head: [*mut Chunk; PCPU_NR_SLOTS],
    /// Last chunk of each slot list.
    pub slot_tail: [*mut Chunk; PCPU_NR_SLOTS],
    /// Oldest chunk (every chunk, the reserved one included, in creation order).
    pub all_head: *mut Chunk,
    /// Newest chunk.
    pub all_tail: *mut Chunk,
    /// The reserved chunk (`pcpu_reserved_chunk`).
    pub reserved: *mut Chunk,
    /// The first dynamic chunk (`pcpu_first_chunk`).
    pub first: *mut Chunk,
    /// Units (possible CPUs) of every chunk.
    pub nr_units: usize,
    /// Empty populated pages over all dynamic chunks (`pcpu_nr_empty_pop_pages`).
    pub nr_empty_pop_pages: usize,
    /// Populated pages over all chunks.
    pub nr_populated: usize,
    /// The counters `percpu_stats` reports.
    pub stats: GlobalStats,
}

// SAFETY: the chunks the pointers name are only touched under the lock.
unsafe impl Send for PcpuState {}

/// `pcpu_lock`: serialises every change to chunks, slots and counters.
pub static PCPU_LOCK: Mutex<PcpuState> = Mutex::new(PcpuState {
    slot_head: [ptr::null_mut(); PCPU_NR_SLOTS],
    slot_tail: [ptr::null_mut(); PCPU_NR_SLOTS],
    all_head: ptr::null_mut(),
    all_tail: ptr::null_mut(),
    reserved: ptr::null_mut(),
    first: ptr::null_mut(),
    nr_units: 0,
    nr_empty_pop_pages: 0,
    nr_populated: 0,
    stats: GlobalStats::new(),
});

static READY: AtomicBool = AtomicBool::new(false);

impl PcpuState {
    /// The slot `chunk` belongs in now (`pcpu_chunk_slot`).
    fn chunk_slot(c: &Chunk) -> usize {
        if c.is_empty() {
            PCPU_FREE_SLOT
        } else if c.md.contig_hint == 0 {
            0
        } else {
            size_to_slot(c.md.contig_hint as usize * PCPU_MIN_ALLOC_SIZE)
        }
    }

    /// Links `chunk` (on no slot list) into slot `slot`, at the head or the tail.
    unsafe fn slot_add(&mut self, chunk: *mut Chunk, slot: usize, at_head: bool) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        let c = unsafe { &mut *chunk };
        c.slot = slot;
        if at_head {
            c.prev = ptr::null_mut();
            c.next = self.slot_head[slot];
            // SAFETY: under the lock; chunks on the lists are live, and `chunk` is on
            // none, so the head is another chunk.
            match unsafe { c.next.as_mut() } {
                Some(n) => n.prev = chunk,
                None => self.slot_tail[slot] = chunk,
            }
            self.slot_head[slot] = chunk;
        } else {
            c.next = ptr::null_mut();
            c.prev = self.slot_tail[slot];
            // SAFETY: as above, for the tail.
            match unsafe { c.prev.as_mut() } {
                Some(p) => p.next = chunk,
                None => self.slot_head[slot] = chunk,
            }
            self.slot_tail[slot] = chunk;
        }
    }

    /// Unlinks `chunk` from its slot list.
    unsafe fn slot_del(&mut self, chunk: *mut Chunk) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        let c = unsafe { &mut *chunk };
        // SAFETY: under the lock; chunks on the lists are live, and a list holds each
        // once, so the neighbours are other chunks.
        match unsafe { c.prev.as_mut() } {
            Some(p) => p.next = c.next,
            None => self.slot_head[c.slot] = c.next,
        }
        // SAFETY: as above.
        match unsafe { c.next.as_mut() } {
            Some(n) => n.prev = c.prev,
            None => self.slot_tail[c.slot] = c.prev,
        }
        c.next = ptr::null_mut();
        c.prev = ptr::null_mut();
    }

    /// Appends `chunk` to the list of all chunks.
    unsafe fn all_add(&mut self, chunk: *mut Chunk) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        unsafe {
            (*chunk).all_next = ptr::null_mut();
            (*chunk).all_prev = self.all_tail;
        }
        // SAFETY: under the lock; the list of all chunks is live, and `chunk` is not
        // on it yet, so the tail is another chunk.
        match unsafe { self.all_tail.as_mut() } {
            Some(t) => t.all_next = chunk,
            None => self.all_head = chunk,
        }
        self.all_tail = chunk;
    }

    /// Unlinks `chunk` from the list of all chunks.
    unsafe fn all_del(&mut self, chunk: *mut Chunk) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        let c = unsafe { &mut *chunk };
        // SAFETY: under the lock; the list of all chunks is live and holds each once,
        // so the neighbours are other chunks.
        match unsafe { c.all_prev.as_mut() } {
            Some(p) => p.all_next = c.all_next,
            None => self.all_head = c.all_next,
        }
        // SAFETY: as above.
        match unsafe { c.all_next.as_mut() } {
            Some(n) => n.all_prev = c.all_prev,
            None => self.all_tail = c.all_prev,
        }
    }

    /// `pcpu_chunk_relocate`: moves a dynamic chunk to the slot of its largest free
    /// run. A chunk that filled up goes to the head of its new list (fill it first); one
    /// that emptied goes to the tail.
    pub unsafe fn relocate(&mut self, chunk: *mut Chunk) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        if unsafe { (*chunk).kind } == ChunkKind::Reserved {
            return;
        }
        // SAFETY: as above.
        let oslot = unsafe { (*chunk).slot };
        // SAFETY: as above.
        let nslot = Self::chunk_slot(unsafe { &*chunk });
        if nslot != oslot {
            // SAFETY: as above; a dynamic chunk is always on the list of its slot, and
            // between the two calls on none.
            unsafe {
                self.slot_del(chunk);
                self.slot_add(chunk, nslot, nslot < oslot);
            }
        }
    }

    /// Applies a chunk's change of empty populated pages to the global count.
    fn account(&mut self, chunk: &Chunk, d: EmptyDelta) {
        if chunk.kind != ChunkKind::Reserved {
            self.nr_empty_pop_pages = self.nr_empty_pop_pages + d.after - d.before;
        }
    }

    /// Runs `f` on `chunk`, keeping the global page counts in step with it.
    pub unsafe fn with_pages<R>(
        &mut self,
        chunk: *mut Chunk,
        f: impl FnOnce(&mut Chunk) -> R,
    ) -> R {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        let c = unsafe { &mut *chunk };
        let (empty, populated) = (c.nr_empty_pop_pages, c.nr_populated);
        let r = f(c);
        self.account(
            c,
            EmptyDelta {
                before: empty,
                after: c.nr_empty_pop_pages,
            },
        );
        self.nr_populated = self.nr_populated + c.nr_populated - populated;
        r
    }

    /// Finds a fit for `bits` granules aligned to `align` in the dynamic chunks, from
    /// the slot of the size upward.
    unsafe fn find_chunk(&self, bits: usize, align: usize) -> Option<(*mut Chunk, usize)> {
        for slot in size_to_slot(bits * PCPU_MIN_ALLOC_SIZE)..PCPU_NR_SLOTS {
            let mut chunk = self.slot_head[slot];
            // SAFETY: under the lock (`&self` is the guard's); chunks on the lists
            // are live.
            while let Some(c) = unsafe { chunk.as_ref() } {
                if let Some(bit) = c.find_fit(bits, align) {
                    return Some((chunk, bit));
                }
                chunk = c.next;
            }
        }
        None
    }

    /// `pcpu_create_chunk`: a new dynamic chunk, in the free slot.
    unsafe fn create_chunk(&mut self) -> Result<*mut Chunk, PercpuError> {
        let base = Chunk::map_units(self.nr_units);
        if base.is_null() {
            return Err(PercpuError::NoMemory);
        }
        // SAFETY: the mapping was just made, and no other chunk manages it.
        let chunk =
            unsafe { Chunk::create(base, self.nr_units, 0, PCPU_UNIT_PAGES, ChunkKind::Dynamic) };
        if chunk.is_null() {
            sys::mmap::unmap(base, self.nr_units * PCPU_UNIT_SIZE);
            return Err(PercpuError::NoMemory);
        }
        // SAFETY: under the lock; the new chunk is live and on no list yet.
        unsafe {
            self.all_add(chunk);
            self.slot_add(chunk, PCPU_FREE_SLOT, false);
        }
        self.stats.chunk_alloc();
        Ok(chunk)
    }

    /// `pcpu_destroy_chunk`: unmaps an empty dynamic chunk and frees its header.
    pub unsafe fn destroy_chunk(&mut self, chunk: *mut Chunk) {
        // SAFETY: under the lock (`&mut self`); the caller's chunk is a live dynamic
        // one, so on its slot list and on the list of all chunks.
        unsafe {
            self.slot_del(chunk);
            self.all_del(chunk);
        }
        // SAFETY: under the lock; the header is live until `free_meta` below.
        let c = unsafe { &*chunk };
        self.nr_empty_pop_pages -= c.nr_empty_pop_pages;
        self.nr_populated -= c.nr_populated;
        sys::mmap::unmap(c.base_addr, c.nr_units * PCPU_UNIT_SIZE);
        // SAFETY: from `create`, on no list now; the caller does not use it again.
        unsafe { Chunk::free_meta(chunk) };
        self.stats.chunk_free();
    }

    /// Populates the pages under `[bit, bit + bits)` that are not populated yet.
    unsafe fn populate_area(&mut self, chunk: *mut Chunk, bit: usize, bits: usize) {
        let (first, last) = Chunk::pages_of(bit, bits);
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        unsafe {
            self.with_pages(chunk, |c| {
                let mut p = first;
                while p <= last {
                    if c.is_populated(p) {
                        p += 1;
                        continue;
                    }
                    let start = p;
                    while p <= last && !c.is_populated(p) {
                        p += 1;
                    }
                    c.populate(start, p);
                }
            })
        }
    }

    /// Frees the area of `bits` granules at `bit` of `chunk` and relocates the chunk.
    unsafe fn free_in(&mut self, chunk: *mut Chunk, bit: usize, bits: usize) {
        // SAFETY: under the lock (`&mut self`); `chunk` is a live header.
        let d = unsafe { (*chunk).free_area(bit, bits) };
        // SAFETY: as above.
        self.account(unsafe { &*chunk }, d);
        // SAFETY: as above.
        unsafe { self.relocate(chunk) };
    }
}

/// The allocator's state is set up: the first mapping, its reserved and first chunks.
#[inline]
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Sets up the first mapping (`pcpu_setup_first_chunk`): the reserved chunk over its
/// first [`PCPU_RESERVED_SIZE`] bytes of every unit and the first dynamic chunk over
/// the rest. Called lazily by the first allocation, or by boot once the page pool is
/// up. False when memory ran out (a later call tries again).
pub(crate) fn setup_first_chunk() -> bool {
    let mut st = PCPU_LOCK.lock();
    if !st.first.is_null() {
        return true;
    }
    let nr_units = topology::nr_cpu_ids();
    let base = Chunk::map_units(nr_units);
    if base.is_null() {
        return false;
    }
    let reserved_pages = PCPU_RESERVED_SIZE / PAGE_SIZE;
    // SAFETY: the two chunks manage disjoint pages of the mapping just made.
    unsafe {
        let reserved = Chunk::create(base, nr_units, 0, reserved_pages, ChunkKind::Reserved);
        if reserved.is_null() {
            sys::mmap::unmap(base, nr_units * PCPU_UNIT_SIZE);
            return false;
        }
        let first = Chunk::create(
            base,
            nr_units,
            reserved_pages,
            PCPU_UNIT_PAGES - reserved_pages,
            ChunkKind::First,
        );
        if first.is_null() {
            Chunk::free_meta(reserved);
            sys::mmap::unmap(base, nr_units * PCPU_UNIT_SIZE);
            return false;
        }
        st.nr_units = nr_units;
        st.reserved = reserved;
        st.first = first;
        st.all_add(reserved);
        st.all_add(first);
        st.slot_add(first, PCPU_FREE_SLOT, false);
        st.stats.chunk_alloc();
    }
    READY.store(true, Ordering::Release);
    true
}

/// Sets up the first chunk if boot has not (it does so before anything else allocates
/// per-CPU memory): a per-CPU allocation before boot sets up the page pool's part of
/// boot and the first chunk itself, without booting the layers above.
/// [`PercpuError::NotReady`] where cpuslab cannot run.
#[inline]
pub(super) fn ensure_init() -> Result<(), PercpuError> {
    if ready() {
        Ok(())
    } else {
        init_slow()
    }
}

#[cold]
fn init_slow() -> Result<(), PercpuError> {
    if crate::page::setup::ensure_up().is_err() {
        return Err(PercpuError::NotReady);
    }
    if setup_first_chunk() {
        Ok(())
    } else {
        Err(PercpuError::NoMemory)
    }
}

/// Checks a request: a size of 1 to [`PCPU_MAX_ALLOC_SIZE`] bytes, an alignment that
/// is a power of two up to a page.
fn check_request(size: usize, align: usize) -> Result<(), PercpuError> {
    if size == 0 {
        return Err(PercpuError::ZeroSize);
    }
    if size > PCPU_MAX_ALLOC_SIZE {
        return Err(PercpuError::TooLarge(size));
    }
    if !align.is_power_of_two() || align > PAGE_SIZE {
        return Err(PercpuError::Alignment(align));
    }
    Ok(())
}

/// `pcpu_alloc`: an area of `size` bytes aligned to `align` in every CPU's unit, zeroed
/// in all of them; from the reserved chunk when `reserved`. `lazy`: its pages are
/// neither populated nor zeroed (see [`alloc_percpu_lazy`]).
pub(crate) fn pcpu_alloc(
    size: usize,
    align: usize,
    reserved: bool,
    lazy: bool,
) -> Result<PcpuPtr, PercpuError> {
    check_request(size, align)?;
    ensure_init()?;
    let size = align_up(size, PCPU_MIN_ALLOC_SIZE);
    let bits = size / PCPU_MIN_ALLOC_SIZE;
    let align = align.max(PCPU_MIN_ALLOC_SIZE) / PCPU_MIN_ALLOC_SIZE;
    let mut st = PCPU_LOCK.lock();
    // SAFETY: chunks are only touched under the lock, which is held.
    let found = unsafe {
        let found = if reserved {
            let c = st.reserved;
            match (*c).find_fit(bits, align) {
                Some(bit) => (c, bit),
                None => return Err(PercpuError::ReservedFull(size)),
            }
        } else {
            match st.find_chunk(bits, align) {
                Some(found) => found,
                None => {
                    let c = st.create_chunk()?;
                    // A new chunk holds any area up to the limit.
                    match (*c).find_fit(bits, align) {
                        Some(bit) => (c, bit),
                        None => return Err(PercpuError::NoMemory),
                    }
                }
            }
        };
        let (c, bit) = found;
        let d = (*c).alloc_area(bit, bits);
        st.account(&*c, d);
        st.relocate(c);
        let dirty = (*c).is_dirty(bit, bits);
        if !lazy {
            st.populate_area(c, bit, bits);
        }
        (found, dirty)
    };
    let ((chunk, bit), dirty) = found;
    st.stats.area_alloc(size);
    // A lazy area needs no populated page ready for the next one.
    if !reserved && !lazy && st.nr_empty_pop_pages < balance::PCPU_EMPTY_POP_PAGES_LOW {
        balance::populate_ahead(&mut st);
    }
    let nr_units = st.nr_units;
    // SAFETY: the chunk holds the live area just allocated, so it stays.
    let addr = unsafe { (*chunk).bit_addr(bit) };
    drop(st);
    if !lazy && dirty {
        for cpu in 0..nr_units {
            // SAFETY: the area is ours, `size` bytes (a multiple of the 8-byte granule,
            // aligned to it) in every unit.
            unsafe { zero_unless_zero(addr.add(cpu * PCPU_UNIT_SIZE), size) };
        }
    }
    Ok(PcpuPtr {
        // SAFETY: chunk addresses come from a successful mmap.
        addr: unsafe { NonNull::new_unchecked(addr) },
        // SAFETY: as above, from the page pool.
        chunk: unsafe { NonNull::new_unchecked(chunk) },
    })
}

/// Zeroes one unit's copy of an area where it does not read as zero already, page by
/// page: a page not resident (no CPU wrote it since it was given back) is neither
/// written, which would commit it for a CPU that may never run, nor read, which would
/// map the kernel's zero page there; a resident one is written only where it holds
/// something.
///
/// # Safety
/// `[addr, addr + size)` is an area's copy that the caller owns, 8-byte aligned, `size`
/// a multiple of 8.
unsafe fn zero_unless_zero(addr: *mut u8, size: usize) {
    let end = addr as usize + size;
    let mut at = addr as usize;
    while at < end {
        let page = at & !(PAGE_SIZE - 1);
        let next = (page + PAGE_SIZE).min(end);
        if sys::mmap::may_hold_data(page as *const u8, PAGE_SIZE) {
            let words = at as *const u64;
            // SAFETY: inside the caller's area, aligned for `u64` reads.
            let clean = (0..(next - at) / 8).all(|i| unsafe { words.add(i).read() } == 0);
            if !clean {
                // SAFETY: as above.
                unsafe { ptr::write_bytes(at as *mut u8, 0, next - at) };
            }
        }
        at = next;
    }
}

/// `alloc_percpu`: an area of `size` bytes (1 to [`PCPU_MAX_ALLOC_SIZE`]) aligned to
/// `align` (a power of two up to a page) in every possible CPU's unit, zeroed in all
/// of them. Never panics; a bad request gets its [`PercpuError`].
pub fn alloc_percpu(size: usize, align: usize) -> Result<PcpuPtr, PercpuError> {
    pcpu_alloc(size, align, false, false)
}

/// [`alloc_percpu`] for an area most CPUs may never touch (an array cache's entries on
/// a machine of many CPUs): its pages are not populated ahead, so each CPU's copy
/// becomes resident only as that CPU writes it, and its contents start undefined (not
/// zeroed; fresh pages read as zero, reused ones do not). A touch can then fail for
/// want of memory as any anonymous page can; [`alloc_percpu`] commits up front instead.
/// Its pages that nothing else uses are given back when it is freed.
pub fn alloc_percpu_lazy(size: usize, align: usize) -> Result<PcpuPtr, PercpuError> {
    pcpu_alloc(size, align, false, true)
}

/// `__alloc_reserved_percpu`: as [`alloc_percpu`], from the reserved chunk that holds
/// cpuslab's own static per-CPU data ([`PCPU_RESERVED_SIZE`] bytes a CPU). Fails with
/// [`PercpuError::ReservedFull`] rather than use a dynamic chunk.
pub fn alloc_reserved_percpu(size: usize, align: usize) -> Result<PcpuPtr, PercpuError> {
    pcpu_alloc(size, align, true, false)
}

/// `free_percpu`: frees an area in every CPU's unit, and runs the balance work when
/// too many empty pages are populated or more than one chunk is empty.
///
/// A pointer that names no live area (freed twice) aborts the process with a message:
/// it means heap corruption.
///
/// # Safety
/// `ptr` came from [`alloc_percpu`] or [`alloc_reserved_percpu`] and was not freed;
/// nothing uses any CPU's copy of the area afterwards.
pub unsafe fn free_percpu(ptr: PcpuPtr) {
    let chunk = ptr.chunk.as_ptr();
    let mut st = PCPU_LOCK.lock();
    // SAFETY: under the lock; the chunk holds the caller's live area, so it stays.
    let c = unsafe { &*chunk };
    let live = c
        .addr_bit(ptr.addr.as_ptr())
        .and_then(|bit| Some((bit, c.area_bits(bit)?)));
    let Some((bit, bits)) = live else {
        drop(st);
        sys::io::fatal(format_args!(
            "free_percpu: {:p} is not a live per-CPU area",
            ptr.addr
        ));
    };
    let kind = c.kind;
    // SAFETY: as above; `[bit, bit + bits)` is the live area, which the caller gives up.
    unsafe { st.free_in(chunk, bit, bits) };
    // Pages that only lazy areas used were never populated, so the balance work, which
    // gives back empty populated pages, would never give them back: they go now.
    // SAFETY: as above; the chunk stays while its lock is held.
    unsafe { (*chunk).purge_empty_unpopulated(bit, bits) };
    st.stats.area_free();
    if kind != ChunkKind::Reserved && balance::needed(&st) {
        balance::pcpu_balance(&mut st);
    }
}

/// Takes `pcpu_lock` (fork: prepare).
pub(crate) fn lock_all() {
    PCPU_LOCK.lock_raw();
}

/// Releases the lock taken by [`lock_all`].
///
/// # Safety
/// Only after [`lock_all`], by the thread that called it (in the parent or the child).
pub(crate) unsafe fn unlock_all() {
    // SAFETY: the caller took the lock with `lock_all` (or is its forked child).
    unsafe { PCPU_LOCK.force_unlock() };
}

/// A per-CPU area: one copy in every possible CPU's unit of a chunk, the copies
/// [`PCPU_UNIT_SIZE`] bytes apart. What the kernel's `__percpu` pointer is, with the
/// chunk beside it so that freeing needs no lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpuPtr {
    /// CPU 0's copy.
    addr: NonNull<u8>,
    /// The chunk holding the area.
    chunk: NonNull<Chunk>,
}

// SAFETY: a handle to memory that any thread may address; access is the user's
// business, through raw pointers.
unsafe impl Send for PcpuPtr {}
// SAFETY: as above.
unsafe impl Sync for PcpuPtr {}

impl PcpuPtr {
    /// `per_cpu_ptr`: CPU `cpu`'s copy of the area, or null for a CPU id that is not
    /// possible (`cpu >= nr_cpu_ids()`).
    #[inline]
    pub fn per_cpu_ptr(self, cpu: usize) -> *mut u8 {
        if cpu < topology::nr_cpu_ids() {
            self.addr.as_ptr().wrapping_add(cpu * PCPU_UNIT_SIZE)
        } else {
            ptr::null_mut()
        }
    }

    /// `this_cpu_ptr`: the copy of the CPU the calling thread runs on. The thread may
    /// migrate right after: the copy must be used under the per-CPU discipline (its own
    /// atomics, or a lock that is tried, never waited on).
    #[inline]
    pub fn this_cpu_ptr(self) -> *mut u8 {
        self.addr.as_ptr().wrapping_add(this_cpu() * PCPU_UNIT_SIZE)
    }

    /// CPU 0's copy; copy `c` is [`PCPU_UNIT_SIZE`]` * c` bytes further.
    #[inline]
    pub fn as_ptr(self) -> *mut u8 {
        self.addr.as_ptr()
    }
}
