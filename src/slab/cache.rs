//! `struct kmem_cache`: a cache of equally sized objects with a per-CPU array cache in
//! front of per-node shared caches and slab lists.
//!
//! Allocation pops from the calling CPU's array cache under a tried lock; an empty cache
//! is refilled with `batchcount` objects from the node's shared cache or its slabs
//! (`cache_alloc_refill`), growing a new slab from the page pool when both are empty. A
//! free pushes onto the CPU's array cache; a full one gives `batchcount` objects to the
//! shared cache or back to their slabs (`cache_flusharray`, `free_block`). When the
//! CPU's lock is busy (its holder was preempted) the operation goes to the node.
//!
//! A debug cache (`super::debug`) has per-CPU array caches of limit 0: every
//! allocation finds its CPU's cache empty and every free finds it full, so both take
//! the slow paths here, which check each object on its way in and out.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::alien::ALIEN_LIMIT;
use super::array_cache::{ArrayCache, AC_HEADER};
use super::debug::{self, DebugLayout};
use super::fastpath;
use super::layout::{
    self, FreelistRng, Geometry, MapPlace, OFF_SLAB_HEAD_OFFSET, OFF_SLAB_TAIL_OFFSET,
};
use super::node::{KmemCacheNode, NodeLists};
use super::transfer::{self, Held, SlabCache, CHUNK};
use super::{CacheError, SlabFlags};
use crate::cpuset::{self, MemKind};
use crate::page::desc::{PG_ALLOCATED, PG_SLAB, PG_TAIL};
use crate::page::list::PageList;
use crate::page::{self, arena, page_address, virt_to_head_page, Page};
use crate::percpu::{self, PcpuPtr, PCPU_UNIT_SIZE};
use crate::rcu::{self, RcuHead};
use crate::sys::{self, PAGE_SIZE};
use crate::topology::{self, MAX_NUMNODES};

/// A per-CPU area from the reserved chunk while it has room (cpuslab's own static
/// per-CPU data), else from a dynamic chunk.
fn alloc_cpu_area(size: usize, align: usize, reserved: bool) -> Option<PcpuPtr> {
    if reserved {
        if let Ok(p) = percpu::alloc_reserved_percpu(size, align) {
            return Some(p);
        }
    }
    percpu::alloc_percpu(size, align).ok()
}

/// Allocates the entry arrays of `capacity` pointers for every possible CPU.
pub(crate) fn alloc_entries(capacity: u32) -> Option<PcpuPtr> {
    alloc_cpu_area(capacity as usize * 8, 64, false)
}

/// Pages of `TYPESAFE_BY_RCU` slabs waiting for a grace period before they go back to
/// the page pool.
pub(crate) static RCU_PENDING_PAGES: AtomicUsize = AtomicUsize::new(0);

// A slab off every list has free link fields: the RCU head overlays `next` and `prev`.
// The stack sequences address CPU `c`'s header at `base + c * STACK_STRIDE`.
const _: () = assert!(PCPU_UNIT_SIZE == sys::rseq::STACK_STRIDE);
const _: () = assert!(
    core::mem::offset_of!(Page, prev) == core::mem::offset_of!(Page, next) + 8
        && core::mem::size_of::<RcuHead>() == 16
);

/// The RCU head of a slab being freed, over its descriptor's list links.
unsafe fn slab_rcu_head(slab: *mut Page) -> *mut RcuHead {
    // SAFETY: `slab` is the head descriptor of a slab being destroyed, in the mapped
    // descriptor array; only the address of its links is taken.
    unsafe { ptr::addr_of_mut!((*slab).next).cast() }
}

/// The callback `destroy_slabs` queues: frees the slab's pages after the grace period.
unsafe fn slab_free_rcu(head: *mut RcuHead) {
    // SAFETY: `head` is the one `destroy_slabs` queued, at `next` in a slab's head
    // descriptor: stepping back stays inside that descriptor.
    let slab = unsafe { head.byte_sub(core::mem::offset_of!(Page, next)) }.cast::<Page>();
    // SAFETY: that descriptor; `order` lies outside the links the head overlays, so it
    // still holds the slab's order.
    let order = unsafe { (*slab).order } as usize;
    // SAFETY: the slab's block, allocated with this order by `cache_grow_begin`; the
    // grace period has ended, so no reader still looks at its stale objects.
    unsafe { page::free_pages(slab, order) };
    RCU_PENDING_PAGES.fetch_sub(1 << order, Ordering::Relaxed);
}

/// The low half of `slab`'s `info`, where a slab keeps its colour offset: the high
/// half of a one-page off-slab slab's holds its free map, written under the list lock
/// while frees read the colour without it, so the two are separate bytes, never one
/// `u64` access.
///
/// # Safety
/// `slab` is the head page of a slab.
#[inline(always)]
unsafe fn colour_word(slab: *mut Page) -> *mut u32 {
    // SAFETY: `slab` heads a slab (the caller's contract): a mapped descriptor.
    unsafe { ptr::addr_of_mut!((*slab).info).cast::<u32>() }
}

/// The colour offset of `slab`'s first object.
///
/// # Safety
/// `slab` is the head page of a slab.
#[inline(always)]
unsafe fn slab_colour(slab: *mut Page) -> usize {
    // SAFETY: `slab` heads a slab (the caller's contract); `cache_grow_end` wrote its
    // colour before the slab went on a list, and nothing writes it after.
    unsafe { *colour_word(slab) as usize }
}

// The colour is the low half of `info` and the map the high half (bytes 4..8) only on
// a little-endian machine.
const _: () = assert!(cfg!(target_endian = "little"));

// `cpu_cache` and `check` fill the first 32 bytes: one line at any 32-byte boundary.
const _: () = assert!(
    core::mem::offset_of!(RawCache, check) + core::mem::size_of::<FreeCheck>() <= 32
        && core::mem::align_of::<RawCache>() == 32
);

/// Bytes of a cache's name, NUL padded.
pub const NAME_LEN: usize = 32;

/// What every free checks of its pointer, always (not only in debug mode): that it can
/// be the start of an object. Kept beside `cpu_cache`, in the cache line the fast
/// paths load anyway, so the checks cost no extra line.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct FreeCheck {
    /// Address bits that are clear in every object (its alignment less one; for a
    /// power-of-two kmalloc class, the size less one, so the test is exact).
    mask: usize,
    /// The slot size's [`Geometry::div_magic`].
    div_magic: u64,
    /// Bytes from a slab's first slot to the end of its last.
    span: u32,
    /// Offset of an object in its slot (a debug cache's left red zone; else 0).
    lead: u32,
}

impl FreeCheck {
    /// A cache not set up: no pointer passes.
    const NONE: Self = Self {
        mask: usize::MAX,
        div_magic: 0,
        span: 0,
        lead: 0,
    };
}

/// The free function of the allocator that serves this process's blocks while the slab
/// caches cannot (kmalloc forwards to glibc when cpuslab cannot run on the machine), as
/// a `usize`; 0 when none.
static FOREIGN_FREE: AtomicUsize = AtomicUsize::new(0);

/// Names `free` as the owner of blocks outside the arenas that reach a cache which
/// never set up: they go to it instead of aborting as invalid frees. Set once, by
/// kmalloc, before it hands out such a block.
pub fn set_foreign_free(free: unsafe fn(*mut u8)) {
    FOREIGN_FREE.store(free as usize, Ordering::Release);
}

/// The function [`set_foreign_free`] named, if any.
fn foreign_free() -> Option<unsafe fn(*mut u8)> {
    let f = FOREIGN_FREE.load(Ordering::Acquire);
    // SAFETY: a non-zero value was stored from a function pointer of this type.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, unsafe fn(*mut u8)>(f) })
}

/// A slab cache (`struct kmem_cache`). Shared by reference between threads; every
/// mutable part is atomic or under a lock.
///
/// `repr(C)` and 32-byte aligned so that `cpu_cache` and `check`, the 32 bytes every
/// free reads, share one cache line (in the kmalloc table and in the cache of caches
/// alike), while the size (736 bytes) keeps the table's stride one multiplication.
#[repr(C, align(32))]
pub struct RawCache {
    /// CPU 0's array cache header; CPU `c`'s is `c * PCPU_UNIT_SIZE` bytes further.
    /// Null until the cache is set up; never moves afterwards.
    pub(crate) cpu_cache: AtomicPtr<ArrayCache>,
    /// The pointer checks of every free, derived from `geom` and `dbg`.
    check: UnsafeCell<FreeCheck>,
    /// The per-CPU area of the headers, for teardown.
    headers: UnsafeCell<Option<PcpuPtr>>,
    /// The per-CPU area of the entry arrays; replaced by `do_tune_cpucache` under the
    /// cache chain lock.
    entries: UnsafeCell<Option<PcpuPtr>>,
    geom: UnsafeCell<Geometry>,
    /// Where objects sit in their slots: debugging on or off, for the cache's life.
    dbg: UnsafeCell<DebugLayout>,
    /// The cache's stream of freelist-permutation seeds: each new slab takes a step.
    random: AtomicU64,
    name: UnsafeCell<[u8; NAME_LEN]>,
    /// `SlabFlags` bits.
    pub(crate) flags: AtomicU32,
    /// Tunables as last set, for slabinfo.
    pub(crate) limit: AtomicU32,
    pub(crate) batchcount: AtomicU32,
    pub(crate) shared: AtomicU32,
    nodes: [AtomicPtr<KmemCacheNode>; MAX_NUMNODES],
    /// Next cache on the cache chain.
    pub(crate) next: AtomicPtr<RawCache>,
}

// SAFETY: `geom`, `check`, `dbg`, `name` and `headers` are written only while the
// cache is being set up, before it is published; `entries` only under the cache chain
// lock; everything else is atomic or behind the node and per-CPU locks.
unsafe impl Sync for RawCache {}
// SAFETY: as above.
unsafe impl Send for RawCache {}

impl RawCache {
    /// A cache that is not set up yet: allocation returns null until [`setup`].
    ///
    /// [`setup`]: Self::setup
    pub const fn new() -> Self {
        Self {
            cpu_cache: AtomicPtr::new(ptr::null_mut()),
            check: UnsafeCell::new(FreeCheck::NONE),
            headers: UnsafeCell::new(None),
            entries: UnsafeCell::new(None),
            geom: UnsafeCell::new(Geometry {
                size: 0,
                align: 0,
                num: 0,
                order: 0,
                colour: 0,
                colour_off: 0,
                off_slab: false,
                idx_u8: false,
                div_magic: 0,
                shuffled: false,
                per_line: 0,
            }),
            dbg: UnsafeCell::new(DebugLayout::off(0)),
            random: AtomicU64::new(0),
            name: UnsafeCell::new([0; NAME_LEN]),
            flags: AtomicU32::new(0),
            limit: AtomicU32::new(0),
            batchcount: AtomicU32::new(0),
            shared: AtomicU32::new(0),
            nodes: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_NUMNODES],
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Sets the cache up for objects of `size` bytes aligned to `align`: geometry, node
    /// structures, array caches tuned by `enable_cpucache`. On failure the cache stays
    /// unusable and everything it got is given back.
    ///
    /// # Safety
    /// Called once, before the cache is shared with other threads.
    pub unsafe fn setup(
        &self,
        name: &str,
        size: usize,
        align: usize,
        flags: u32,
    ) -> Result<(), CacheError> {
        // Above a page only for kmalloc's naturally aligned classes (KmemCache stops
        // at a page): slabs are aligned to their size, so such objects still fit.
        if !align.is_power_of_two() || align > PAGE_SIZE << layout::MAX_SLAB_ORDER {
            return Err(CacheError::Alignment(align));
        }
        // Fixed for the cache's life: its slabs keep their free objects one way.
        let shuffled = layout::freelist_random();
        let plain = Geometry::calculate(size, align, shuffled).ok_or(CacheError::TooLarge(size))?;
        let (geom, dbg) = if debug::enabled() {
            // Poison would destroy what a TYPESAFE_BY_RCU reader may still read.
            let poison = flags & SlabFlags::TYPESAFE_BY_RCU.0 == 0;
            let d = DebugLayout::new(plain.size, plain.align, poison);
            let g = Geometry::calculate(d.slot_size, plain.align, shuffled)
                .ok_or(CacheError::TooLarge(size))?;
            (g, d)
        } else {
            (plain, DebugLayout::off(plain.size))
        };
        // SAFETY: `setup` runs once, before the cache is shared (the caller's contract):
        // nothing reads these cells yet.
        unsafe {
            *self.geom.get() = geom;
            *self.dbg.get() = dbg;
            *self.check.get() = FreeCheck {
                mask: geom.align - 1,
                div_magic: geom.div_magic,
                // Below 2^32: a slab is at most 2^MAX_SLAB_ORDER pages.
                span: (geom.num * geom.size) as u32,
                lead: dbg.offset as u32,
            };
        }
        self.random.store(
            layout::random_seed(self as *const Self as usize),
            Ordering::Relaxed,
        );
        // Cut at a character boundary, so the name stays valid UTF-8.
        let mut n = name.len().min(NAME_LEN - 1);
        while !name.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: not shared yet, as above.
        unsafe { (&mut *self.name.get())[..n].copy_from_slice(&name.as_bytes()[..n]) };
        self.flags.store(flags, Ordering::Relaxed);
        let (limit, batchcount, shared) = super::tune::enable_cpucache_params(geom.size);
        // A debug cache keeps no object per CPU: every operation takes a checked path.
        let cpu_limit = if dbg.on { 0 } else { limit };
        for node in 0..topology::nr_node_ids() {
            let cpus_on_node = (0..topology::nr_cpu_ids())
                .filter(|&c| topology::cpu_to_node(c) == node)
                .count();
            let free_limit = (1 + cpus_on_node) * batchcount as usize + geom.num;
            let n = KmemCacheNode::create(free_limit, shared * batchcount, batchcount);
            if n.is_null() {
                // SAFETY: not shared yet and no slab grown: nobody uses the cache.
                unsafe { self.teardown() };
                return Err(CacheError::NoMemory);
            }
            self.nodes[node].store(n, Ordering::Relaxed);
        }
        let (Some(headers), Some(entries)) = (
            alloc_cpu_area(AC_HEADER, AC_HEADER, true),
            alloc_entries(limit),
        ) else {
            // SAFETY: as above.
            unsafe { self.teardown() };
            return Err(CacheError::NoMemory);
        };
        // SAFETY: not shared yet, as above.
        unsafe {
            *self.headers.get() = Some(headers);
            *self.entries.get() = Some(entries);
        }
        for cpu in 0..topology::nr_cpu_ids() {
            // SAFETY: a possible CPU's copies of the fresh areas: a header of `AC_HEADER`
            // bytes and an entry array of `limit` pointers (`alloc_entries`).
            unsafe {
                ArrayCache::init_with(
                    headers.per_cpu_ptr(cpu).cast(),
                    cpu_limit,
                    batchcount,
                    limit,
                    entries.per_cpu_ptr(cpu).cast(),
                )
            };
        }
        self.limit.store(cpu_limit, Ordering::Relaxed);
        self.batchcount.store(batchcount, Ordering::Relaxed);
        self.shared.store(shared, Ordering::Relaxed);
        self.cpu_cache
            .store(headers.as_ptr().cast(), Ordering::Release);
        Ok(())
    }

    /// The array cache of `cpu`, if the cache is set up and `cpu` is possible.
    #[inline(always)]
    pub(crate) fn cpu_ac(&self, cpu: usize) -> Option<*mut ArrayCache> {
        let base = self.cpu_cache.load(Ordering::Acquire);
        if base.is_null() || cpu >= topology::nr_cpu_ids() {
            return None;
        }
        Some(base.wrapping_byte_add(cpu * PCPU_UNIT_SIZE))
    }

    /// Cross-CPU work on the array caches of `cpus`: stops each (takes its lock,
    /// waiting for a holder when `wait`, else skipping a busy one), then, on the rseq
    /// path, restarts every sequence in flight so none still works on a stopped cache;
    /// runs `f` on each stopped cache and releases it.
    pub(crate) fn with_stopped_caches(
        &self,
        cpus: core::ops::Range<usize>,
        wait: bool,
        mut f: impl FnMut(usize, *mut ArrayCache),
    ) {
        let mut stopped = [0u64; topology::NR_CPUS / 64];
        let mut any = false;
        for cpu in cpus.clone() {
            let Some(ac) = self.cpu_ac(cpu) else {
                continue;
            };
            // SAFETY: the headers live as long as the cache.
            let ok = unsafe {
                if wait {
                    (*ac).lock.lock_wait()
                } else {
                    (*ac).lock.try_lock()
                }
            };
            if ok && cpu < topology::NR_CPUS {
                stopped[cpu / 64] |= 1 << (cpu % 64);
                any = true;
            }
        }
        if !any {
            return;
        }
        fastpath::fence((cpus.len() == 1).then_some(cpus.start));
        for cpu in cpus {
            if stopped[cpu / 64] & (1 << (cpu % 64)) == 0 {
                continue;
            }
            if let Some(ac) = self.cpu_ac(cpu) {
                f(cpu, ac);
                // SAFETY: stopped above by this thread.
                unsafe { (*ac).lock.unlock() };
            }
        }
    }

    /// Makes `new` the per-CPU area of the entry arrays; returns the old one.
    ///
    /// # Safety
    /// The caller holds the cache chain lock and every CPU's array cache points into
    /// `new` already.
    pub(crate) unsafe fn replace_entries(&self, new: PcpuPtr) -> Option<PcpuPtr> {
        // SAFETY: `entries` is written only under the cache chain lock, which the
        // caller holds.
        unsafe { (*self.entries.get()).replace(new) }
    }

    /// Frees the node structures and array caches of a cache whose slabs are all gone.
    ///
    /// # Safety
    /// No thread uses the cache any more and it holds no slab.
    pub(crate) unsafe fn teardown(&self) {
        self.cpu_cache.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: nobody uses the cache any more (the caller's contract): the cell is
        // ours.
        if let Some(p) = unsafe { (*self.headers.get()).take() } {
            // SAFETY: from `alloc_cpu_area` in `setup`; taken out of its cell, so freed
            // once, and no CPU uses its array cache any more.
            unsafe { percpu::free_percpu(p) };
        }
        // SAFETY: as for `headers`.
        if let Some(p) = unsafe { (*self.entries.get()).take() } {
            // SAFETY: the entry arrays in use (`alloc_entries`; a retune frees the ones
            // it replaces); taken out of the cell, so freed once.
            unsafe { percpu::free_percpu(p) };
        }
        for slot in &self.nodes {
            let n = slot.swap(ptr::null_mut(), Ordering::AcqRel);
            if !n.is_null() {
                // SAFETY: swapped out of its slot, so nobody reaches it any more; the
                // cache holds no slab (the caller's contract), so its lists are empty.
                unsafe { KmemCacheNode::destroy(n) };
            }
        }
    }

    /// The slab geometry.
    #[inline(always)]
    pub fn geom(&self) -> &Geometry {
        // SAFETY: written only before the cache is published.
        unsafe { &*self.geom.get() }
    }

    /// The object size users see (without a debug cache's red zones).
    #[inline]
    pub fn object_size(&self) -> usize {
        self.debug_layout().obj_size
    }

    /// Where objects sit in their slots.
    #[inline]
    pub fn debug_layout(&self) -> &DebugLayout {
        // SAFETY: written only before the cache is published.
        unsafe { &*self.dbg.get() }
    }

    /// Whether this is a debug cache: its objects are checked on every allocation and
    /// free.
    #[inline]
    pub fn debug(&self) -> bool {
        self.debug_layout().on
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        // SAFETY: written only before the cache is published.
        let bytes = unsafe { &*self.name.get() };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&bytes[..len]).unwrap_or("?")
    }

    /// The node structure of `node`.
    #[inline]
    pub(crate) fn node(&self, node: usize) -> &KmemCacheNode {
        let n = self.nodes[node.min(MAX_NUMNODES - 1)].load(Ordering::Acquire);
        let n = if n.is_null() {
            self.nodes[0].load(Ordering::Acquire)
        } else {
            n
        };
        // SAFETY: set up before the cache was published; freed only at destruction.
        unsafe { &*n }
    }

    /// The allocation fast path: one object off this CPU's array cache by restartable
    /// sequence, or null for anything else (rseq off, placement under a cpuset — the
    /// `HOLD_POP` bit —, an empty or stopped cache, not set up), which
    /// [`alloc`](Self::alloc) then serves.
    /// Small on purpose: callers inline it and keep to the caller-saved registers.
    #[inline(always)]
    pub fn alloc_fast(&self) -> *mut u8 {
        Self::alloc_fast_from(self.cpu_cache.load(Ordering::Acquire))
    }

    /// [`alloc_fast`](Self::alloc_fast) on the array caches `base` of a cache (its
    /// `cpu_cache`, null before it is set up), for a caller that keeps that pointer at
    /// hand: kmalloc's table of them by size saves the load of the class and then of
    /// the cache's pointer, one dependent load on every small allocation.
    #[inline(always)]
    pub fn alloc_fast_from(base: *mut ArrayCache) -> *mut u8 {
        if sys::rseq::held() & (sys::rseq::HOLD_POP | sys::rseq::HOLD_STOPPED) != 0 {
            return ptr::null_mut();
        }
        if base.is_null() {
            return base.cast();
        }
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); as in `alloc`.
        unsafe { sys::rseq::stack_pop(base.cast()) }
    }

    /// The array caches of this cache (null until it is set up).
    #[inline(always)]
    pub(crate) fn cpu_caches(&self) -> *mut ArrayCache {
        self.cpu_cache.load(Ordering::Acquire)
    }

    /// The free fast path: `obj` onto this CPU's array cache by restartable sequence.
    /// False when that cannot be done; [`free`](Self::free) then frees it.
    ///
    /// # Safety
    /// As for [`free`](Self::free); on true `obj` is freed.
    #[inline(always)]
    pub unsafe fn free_fast(&self, obj: *mut u8) -> bool {
        if self.misaligned(obj) {
            // SAFETY: it reads a descriptor only after `check_obj` found `obj` in an
            // arena; it aborts unless `obj` is a foreign block it hands back.
            unsafe { self.misaligned_free(obj) };
            return true;
        }
        if sys::rseq::held() & (sys::rseq::HOLD_PUSH | sys::rseq::HOLD_STOPPED) != 0 {
            return false;
        }
        let base = self.cpu_cache.load(Ordering::Acquire);
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); as in `alloc`. `obj`, an
        // object of this cache (the caller's contract), is not null.
        !base.is_null() && unsafe { sys::rseq::stack_push(base.cast(), obj) }
    }

    /// Allocates one object; null when memory ran out or the cache is not set up.
    #[inline(always)]
    pub fn alloc(&self) -> *mut u8 {
        if cpuset::placement_active() {
            if let Some(obj) = self.alloc_alternate() {
                return obj;
            }
        }
        let base = self.cpu_cache.load(Ordering::Acquire);
        if base.is_null() {
            return ptr::null_mut();
        }
        if !fastpath::rseq() {
            return self.alloc_trylock(base);
        }
        // An empty cache is refilled; a stopped one (or a CPU past the bound) turns the
        // refill's pushes away, and its objects go back to the node.
        // SAFETY: the sequences are on; every possible CPU has a header at its unit's
        // offset, changed only by sequences on its CPU or by stopped-and-fenced
        // cross-CPU work.
        let obj = unsafe { sys::rseq::stack_pop(base.cast()) };
        if !obj.is_null() {
            return obj;
        }
        self.alloc_refill_rseq(base)
    }

    /// The tried-lock path's allocation (inline: the inline rseq fast paths are
    /// `alloc_fast`/`free_fast`, so this one no longer costs them registers).
    #[inline(always)]
    fn alloc_trylock(&self, base: *mut ArrayCache) -> *mut u8 {
        let cpu = sys::cpu::current();
        // SAFETY: the headers live as long as the cache; the array cache and its
        // entries are ours while its lock is held.
        unsafe {
            if cpu < topology::nr_cpu_ids() {
                let ac = base.byte_add(cpu * PCPU_UNIT_SIZE);
                if (*ac).lock.try_lock() {
                    let avail = (*ac).avail;
                    if avail > 0 {
                        (*ac).touched = 1;
                        let obj = *ArrayCache::entries(ac).add(avail as usize - 1);
                        (*ac).avail = avail - 1;
                        (*ac).lock.unlock();
                        return obj;
                    }
                    let obj = self.cache_alloc_refill(ac, cpu);
                    (*ac).lock.unlock();
                    super::reap::maybe_reap();
                    return obj;
                }
            }
        }
        self.alloc_fallback()
    }

    /// Frees one object of this cache. A pointer that cannot be an object of the cache
    /// (not aligned as its objects are) aborts here; one that is aligned but is not an
    /// object start, or an object already free, aborts when it reaches its slab.
    ///
    /// # Safety
    /// `obj` was allocated from this cache and is not used any more.
    #[inline(always)]
    pub unsafe fn free(&self, obj: *mut u8) {
        if self.misaligned(obj) {
            // SAFETY: as in `free_fast`.
            unsafe { self.misaligned_free(obj) };
            return;
        }
        // SAFETY: the caller's contract, and `obj` passed the pointer check.
        unsafe { self.free_unchecked(obj) }
    }

    /// [`free`](Self::free) of a pointer whose head page descriptor `slab` (a slab of
    /// this cache) the caller has loaded already: checks exactly that `obj` starts an
    /// object of the slab (C `free`, which finds the cache through that descriptor).
    ///
    /// # Safety
    /// As for [`free`](Self::free); `slab` is `virt_to_head_page(obj)`, a slab of this
    /// cache.
    #[inline(always)]
    pub unsafe fn free_in_slab(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: `slab` is `virt_to_head_page(obj)`, a slab of this cache (the caller's
        // contract).
        unsafe { self.check_in_slab(slab, obj) };
        // SAFETY: the caller's contract; the exact check `obj` passed implies the
        // pointer check.
        unsafe { self.free_unchecked(obj) }
    }

    /// The fast path of [`free_in_slab`](Self::free_in_slab): the same exact check,
    /// then `obj` onto this CPU's array cache by restartable sequence. False when the
    /// push cannot be done (rseq off or held, a full or stopped cache); the caller
    /// then takes the whole path.
    ///
    /// # Safety
    /// As for [`free_in_slab`](Self::free_in_slab); on true `obj` is freed.
    #[inline(always)]
    pub unsafe fn free_fast_in_slab(&self, slab: *mut Page, obj: *mut u8) -> bool {
        // SAFETY: as in `free_in_slab`.
        unsafe { self.check_in_slab(slab, obj) };
        if sys::rseq::held() & (sys::rseq::HOLD_PUSH | sys::rseq::HOLD_STOPPED) != 0 {
            return false;
        }
        // The slab's head descriptor holds `cpu_cache` (set when the slab grew, never
        // null: a cache with slabs is set up), in the line whose flags the caller read:
        // the push's address does not wait for a load from the cache itself.
        // SAFETY: `slab` is a slab of this cache (the caller's contract), so its head
        // descriptor is mapped; the sequences are on, as in `alloc`; `obj`, an object
        // of the slab, is not null.
        unsafe { sys::rseq::stack_push((*slab).head.cast(), obj) }
    }

    /// Aborts unless `obj` is exactly the start of an object of `slab`, a slab of this
    /// cache.
    ///
    /// # Safety
    /// `slab` is `virt_to_head_page(obj)`, a slab of this cache.
    #[inline(always)]
    unsafe fn check_in_slab(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: written before the cache was published (it owns slabs, so it was).
        let c = unsafe { &*self.check.get() };
        // SAFETY: `slab` heads a slab of this cache (the caller's contract).
        let first = page_address(slab) as usize + unsafe { slab_colour(slab) } + c.lead as usize;
        let off = (obj as usize).wrapping_sub(first);
        // `off < span < 2^32`, where the multiply test is exact (as `is_obj_offset`).
        if off >= c.span as usize || (off as u64).wrapping_mul(c.div_magic) >= c.div_magic {
            // SAFETY: `obj` lies in `slab`'s pages, so in an arena.
            unsafe { self.bad_free(obj) };
        }
    }

    /// Whether `obj` lacks the alignment every object of this cache has.
    #[inline(always)]
    fn misaligned(&self, obj: *mut u8) -> bool {
        // SAFETY: written before the cache was published; a cache not set up has a
        // full mask, and owns no object to free.
        obj as usize & unsafe { (*self.check.get()).mask } != 0
    }

    /// Aborts for a free of `obj`, which [`misaligned`](Self::misaligned) found is
    /// not an object of this cache, saying what it is instead; or hands a foreign block
    /// to its allocator (see [`set_foreign_free`]) and returns.
    #[cold]
    #[inline(never)]
    unsafe fn misaligned_free(&self, obj: *mut u8) {
        // A cache that never set up (a mask that no pointer passes) in a process whose
        // blocks another allocator serves (see `set_foreign_free`): the block is its.
        if let Some(free) = foreign_free() {
            if !arena::contains(obj) {
                // SAFETY: a block of the allocator `free` belongs to, given up by the
                // caller.
                unsafe { free(obj) };
                return;
            }
        }
        // Reports a foreign address, or an object of another cache, by name.
        // SAFETY: `check_obj` finds `obj` in an arena before it reads a descriptor.
        unsafe { self.check_obj(obj, obj) };
        // SAFETY: `check_obj` returned, so `obj` is an arena address.
        unsafe { self.bad_free(obj) }
    }

    /// Aborts for a second free of `obj` that a cheap check caught before it reached
    /// its slab: it is still among the last objects freed to this CPU's array cache.
    #[cold]
    #[inline(never)]
    fn double_free_cached(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it is still in this CPU's array cache",
            self.name()
        ))
    }

    /// [`free`](Self::free) after its pointer check (by [`free_fast`](Self::free_fast),
    /// whose caller falls back to this).
    ///
    /// # Safety
    /// As for [`free`](Self::free), and `obj` passed the pointer check.
    #[inline(always)]
    pub(crate) unsafe fn free_unchecked(&self, obj: *mut u8) {
        // SAFETY: `obj` is the cache's and no longer used (the caller's contract); no
        // list lock is held on a free.
        if topology::nr_node_ids() > 1 && unsafe { self.free_alien(obj) } {
            return;
        }
        let base = self.cpu_cache.load(Ordering::Acquire);
        if base.is_null() {
            // SAFETY: as above.
            return unsafe { self.free_fallback(obj) };
        }
        if !fastpath::rseq() {
            // SAFETY: as above; `base` is the cache's array caches, not null.
            return unsafe { self.free_trylock(base, obj) };
        }
        // A full cache is flushed; a stopped one gives the flush nothing and turns the
        // push after it away, so `obj` goes to the node.
        // SAFETY: the sequences are on; as in `alloc`. `obj`, an object, is not null.
        if !unsafe { sys::rseq::stack_push(base.cast(), obj) } {
            // SAFETY: as for `free_trylock`, on the sequences.
            unsafe { self.free_flush_rseq(base, obj) };
        }
    }

    /// The tried-lock path's free.
    #[inline(always)]
    unsafe fn free_trylock(&self, base: *mut ArrayCache, obj: *mut u8) {
        let cpu = sys::cpu::current();
        if cpu < topology::nr_cpu_ids() {
            // SAFETY: `base` is the cache's `cpu_cache`: every possible CPU has a header
            // at its unit's offset, alive as long as the cache.
            let ac = unsafe { base.byte_add(cpu * PCPU_UNIT_SIZE) };
            // SAFETY: as above.
            if unsafe { (*ac).lock.try_lock() } {
                // SAFETY: the array cache and its entries are ours while its lock is held.
                let avail = unsafe { (*ac).avail };
                // glibc's tcache check: the object on top is the one freed last, so
                // freeing it again is a double free (one load, in the line the push
                // writes).
                // SAFETY: as above; `avail > 0`, so `entry[avail - 1]` is its top.
                if avail > 0 && unsafe { *ArrayCache::entries(ac).add(avail as usize - 1) } == obj {
                    self.double_free_cached(obj);
                }
                // SAFETY: as above.
                if avail < unsafe { (*ac).limit } {
                    // SAFETY: as above; `avail < limit <= capacity`: `entry[avail]` is in
                    // the array.
                    unsafe {
                        *ArrayCache::entries(ac).add(avail as usize) = obj;
                        (*ac).avail = avail + 1;
                        (*ac).lock.unlock();
                    }
                    return;
                }
                // SAFETY: this thread holds `ac`'s lock (`cpu`'s), which `free_full`
                // releases, and no list lock; `obj` as for `free`.
                unsafe { self.free_full(ac, cpu, obj) };
                return;
            }
        }
        // SAFETY: `obj` is the cache's and no longer used, as for `free`.
        unsafe { self.free_fallback(obj) };
    }

    /// The tried-lock path's free into a full array cache (the caller holds its
    /// lock, which this releases): `cache_flusharray`, then the push. A debug cache's
    /// array caches are always full (limit 0): its objects go to the checked path.
    #[cold]
    unsafe fn free_full(&self, ac: *mut ArrayCache, cpu: usize, obj: *mut u8) {
        if self.debug() {
            // SAFETY: the caller holds the lock of `ac`, a live header.
            unsafe { (*ac).lock.unlock() };
            // SAFETY: `obj` is the cache's and no longer used, as for `free`.
            unsafe { self.free_fallback(obj) };
            return;
        }
        // SAFETY: the caller holds `ac`'s lock (`cpu`'s) and no list lock.
        unsafe { self.cache_flusharray(ac, cpu) };
        // SAFETY: ours under its lock; the flush took at least one object off the full
        // cache, so `entry[avail]` is within its capacity.
        unsafe {
            let avail = (*ac).avail;
            *ArrayCache::entries(ac).add(avail as usize) = obj;
            (*ac).avail = avail + 1;
            (*ac).lock.unlock();
        }
        super::reap::maybe_reap();
    }

    /// The rseq path's `cache_alloc_refill`: takes up to `batchcount` objects from the
    /// node (its shared cache, its slabs, a new slab), keeps one and pushes the rest
    /// onto the CPU's array cache one sequence at a time; what does not fit (the thread
    /// migrated, the cache was stopped) goes back to the node.
    #[cold]
    fn alloc_refill_rseq(&self, base: *mut ArrayCache) -> *mut u8 {
        if self.debug() {
            return self.alloc_fallback();
        }
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        let node = cpuset::mem_node_for_kind(cpu_node, MemKind::Slab);
        let batch = (self.batchcount.load(Ordering::Relaxed) as usize).clamp(1, CHUNK);
        let mut buf = [ptr::null_mut::<u8>(); CHUNK];
        // SAFETY: objects move between the node's lists (under its lock) and `buf`.
        let n = unsafe { self.fill_buf(node, &mut buf[..batch]) };
        if n == 0 {
            return ptr::null_mut();
        }
        let obj = buf[n - 1];
        let mut pushed = 0;
        while pushed < n - 1 {
            // SAFETY: as in `alloc`.
            if !unsafe { sys::rseq::stack_push(base.cast(), buf[pushed]) } {
                break;
            }
            pushed += 1;
        }
        if pushed < n - 1 {
            // SAFETY: objects of this cache nobody holds.
            unsafe { self.give_back(&buf[pushed..n - 1]) };
        }
        super::reap::maybe_reap();
        obj
    }

    /// The rseq path's `cache_flusharray`: pops up to `batchcount` objects off the
    /// CPU's full array cache, gives them to the node, and pushes `obj`.
    #[cold]
    unsafe fn free_flush_rseq(&self, base: *mut ArrayCache, obj: *mut u8) {
        if self.debug() {
            // SAFETY: `obj` is the cache's and no longer used, as for `free`.
            return unsafe { self.free_fallback(obj) };
        }
        let batch = (self.batchcount.load(Ordering::Relaxed) as usize).clamp(1, CHUNK);
        let mut buf = [ptr::null_mut::<u8>(); CHUNK];
        let mut n = 0;
        while n < batch {
            // SAFETY: the caller found the sequences on; as in `alloc`.
            let o = unsafe { sys::rseq::stack_pop(base.cast()) };
            if o.is_null() {
                break;
            }
            buf[n] = o;
            n += 1;
        }
        // The objects popped were the last ones freed here: `obj` among them is freed
        // twice (the rseq push cannot look, so the flush does; a cold path).
        if buf[..n].contains(&obj) {
            self.double_free_cached(obj);
        }
        // SAFETY: objects popped off this CPU's cache: the cache's, held by nobody
        // else; a free holds no list lock.
        unsafe { self.give_back(&buf[..n]) };
        // SAFETY: as for the pops; `obj`, an object, is not null.
        if !unsafe { sys::rseq::stack_push(base.cast(), obj) } {
            // SAFETY: `obj` is the cache's and no longer used, as for `free`.
            unsafe { self.free_fallback(obj) };
        }
        super::reap::maybe_reap();
    }

    /// Fills `buf` from `node` ([`transfer::fill_buf`]).
    unsafe fn fill_buf(&self, node: usize, buf: &mut [*mut u8]) -> usize {
        // SAFETY: the caller holds no list lock.
        unsafe { transfer::fill_buf(self, node, buf) }
    }

    /// Gives objects back to the calling CPU's node: into its shared cache while it has
    /// room, the rest to their slabs.
    unsafe fn give_back(&self, objs: &[*mut u8]) {
        let node = topology::cpu_to_node(sys::cpu::current());
        let mut to_destroy = PageList::new();
        // SAFETY: the caller's objects are the cache's and held by nobody else; it
        // holds no list lock.
        unsafe { transfer::give_back(self, node, objs, &mut to_destroy) };
        // SAFETY: `free_block` put there only empty slabs of this cache, off every list.
        unsafe { self.destroy_slabs(&mut to_destroy) };
    }

    /// `cache_alloc_refill`: fills the CPU's empty array cache with up to `batchcount`
    /// objects and pops one. The caller holds the array cache's lock.
    #[cold]
    unsafe fn cache_alloc_refill(&self, ac: *mut ArrayCache, cpu: usize) -> *mut u8 {
        if self.debug() {
            return self.alloc_fallback();
        }
        // The node the thread's cpuset places slab memory on (`cpuset_slab_spread_node`
        // with SPREAD_SLAB), normally the CPU's own.
        let node = cpuset::mem_node_for_kind(topology::cpu_to_node(cpu), MemKind::Slab);
        // SAFETY: the caller holds `ac`'s lock, and no list lock.
        unsafe { transfer::alloc_refill(self, node, ac) }
    }

    /// Allocation when the CPU's array cache is busy (for a debug cache, every
    /// allocation): one object straight from the node, checked if debugging.
    #[cold]
    #[inline(never)]
    fn alloc_fallback(&self) -> *mut u8 {
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        self.alloc_on(cpuset::mem_node_for_kind(cpu_node, MemKind::Slab))
    }

    /// `alternate_node_alloc`: a thread whose cpuset places slab memory off its CPU's
    /// node (no longer allowed there, or spreading) must not take the CPU's cached
    /// objects, which are that node's; it allocates from its node's lists instead.
    /// `None`: the CPU's node is the right one, take the fast path.
    #[cold]
    #[inline(never)]
    fn alloc_alternate(&self) -> Option<*mut u8> {
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        cpuset::alternate_slab_node(cpu_node).map(|node| self.alloc_on(node))
    }

    /// One object from `node`, checked on a debug cache.
    fn alloc_on(&self, node: usize) -> *mut u8 {
        let obj = self.alloc_from_node(node);
        if self.debug() && !obj.is_null() {
            // SAFETY: a free slot of this debug cache, now ours.
            return unsafe { debug::check_alloc(self, obj) };
        }
        obj
    }

    /// One object from `node`'s shared cache or slabs, growing a slab there.
    fn alloc_from_node(&self, node: usize) -> *mut u8 {
        let n = self.node(node);
        // SAFETY: lists and slabs are touched under the list lock.
        unsafe {
            {
                let mut l = n.list_lock.lock();
                if let Some(obj) = transfer::take_one(self, &mut l) {
                    return obj;
                }
            }
            let slab = self.cache_grow_begin(node);
            if slab.is_null() {
                return ptr::null_mut();
            }
            let mut l = self.node(page::page_node(slab)).list_lock.lock();
            self.cache_grow_end(&mut l, slab);
            transfer::take_one(self, &mut l).unwrap_or(ptr::null_mut())
        }
    }

    /// `cache_free_alien`: an object of another node than the calling CPU's goes back
    /// to its own node, so a remote free never hands the object to a local allocation:
    /// through the local node's alien cache for that node, [`ALIEN_LIMIT`] at a time
    /// (see `slab::alien`; a debug cache, whose frees are checked one by one, goes
    /// straight home). Returns false for a local object.
    #[inline(never)]
    unsafe fn free_alien(&self, obj: *mut u8) -> bool {
        if !arena::contains(obj) {
            return false; // obj_to_slab reports it
        }
        let home = page::addr_node(obj);
        let local = topology::cpu_to_node(sys::cpu::current());
        if home == local {
            return false;
        }
        let alien = if self.debug() {
            None
        } else {
            self.node(local).aliens.get(home)
        };
        let Some(alien) = alien else {
            // SAFETY: `obj` is the cache's and no longer used (as for `free`); a free
            // holds no list lock.
            unsafe { self.free_to_node(obj, home) };
            return true;
        };
        let mut batch = [ptr::null_mut(); ALIEN_LIMIT + 1];
        let n = {
            let mut a = alien.lock.lock();
            if a.avail > 0 && a.entries[a.avail - 1] == obj {
                drop(a);
                self.double_free_cached(obj);
            }
            if a.avail < ALIEN_LIMIT {
                let i = a.avail;
                a.entries[i] = obj;
                a.avail = i + 1;
                return true;
            }
            a.take_all(&mut batch)
        };
        batch[n] = obj;
        // SAFETY: objects of node `home` of this cache, freed by their callers and now
        // held by nobody; no lock held.
        unsafe { self.free_alien_batch(home, &batch[..=n]) };
        true
    }

    /// `__drain_alien_cache`: objects of node `home` go into its shared cache as far as
    /// it has room, the rest back to their slabs, under one hold of its list lock.
    ///
    /// # Safety
    /// `objs` are objects of this cache on node `home` that nobody holds; the caller
    /// holds no list lock.
    unsafe fn free_alien_batch(&self, home: usize, objs: &[*mut u8]) {
        let mut to_destroy = PageList::new();
        let l = self.node(home).list_lock.lock();
        let sh = l.shared;
        let mut rest = objs;
        if !sh.is_null() {
            // SAFETY: the shared cache is guarded by the list lock held; the copy
            // stays below its limit, inside its array.
            unsafe {
                let avail = (*sh).avail as usize;
                let n = ((*sh).limit as usize - avail).min(objs.len());
                ptr::copy_nonoverlapping(objs.as_ptr(), ArrayCache::entries(sh).add(avail), n);
                (*sh).avail += n as u32;
                rest = &objs[n..];
            }
        }
        if rest.is_empty() {
            drop(l);
        } else {
            // SAFETY: the caller's contract; the lock handed over is `home`'s.
            drop(unsafe { transfer::free_block(self, rest, Some((home, l)), &mut to_destroy) });
        }
        // SAFETY: as in `give_back`.
        unsafe { self.destroy_slabs(&mut to_destroy) };
    }

    /// Sends every object in this cache's alien caches home (the reaper, shrinking,
    /// trimming, destroying). Returns how many moved.
    pub(crate) fn drain_aliens(&self) -> usize {
        let mut moved = 0;
        for local in 0..topology::nr_node_ids() {
            let aliens = &self.node(local).aliens;
            for home in aliens.nodes() {
                let mut out = [ptr::null_mut(); ALIEN_LIMIT];
                let n = aliens.lock(home).map_or(0, |mut a| a.take_all(&mut out));
                if n > 0 {
                    // SAFETY: objects of node `home` taken out of its alien cache, where
                    // their frees left them; no lock held.
                    unsafe { self.free_alien_batch(home, &out[..n]) };
                    moved += n;
                }
            }
        }
        moved
    }

    /// Objects in this cache's alien caches, for the statistics.
    pub(crate) fn alien_objects(&self) -> usize {
        (0..topology::nr_node_ids())
            .map(|local| {
                let aliens = &self.node(local).aliens;
                aliens
                    .nodes()
                    .map(|h| aliens.lock(h).map_or(0, |a| a.avail))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Free when the CPU's array cache is busy: straight to the object's node.
    #[cold]
    #[inline(never)]
    unsafe fn free_fallback(&self, obj: *mut u8) {
        let node = if arena::contains(obj) {
            page::addr_node(obj)
        } else {
            0 // obj_to_slab (in free_block) reports it
        };
        // SAFETY: as in `free_alien`.
        unsafe { self.free_to_node(obj, node) };
    }

    /// Frees `obj` into `node`'s shared cache while it has room, else to its slab. A
    /// debug cache checks it first and frees its slot.
    #[cold]
    unsafe fn free_to_node(&self, obj: *mut u8, node: usize) {
        let obj = if self.debug() {
            let slot = obj.wrapping_sub(self.debug_layout().offset);
            // SAFETY: `check_obj` finds both in an arena before it reads a descriptor.
            unsafe { self.check_obj(slot, obj) };
            // SAFETY: `check_obj` returned: `slot` is at an object's place in a slab of
            // this cache, a debug one, and `obj` is its object.
            unsafe { debug::check_free(self, slot, obj) }
        } else {
            obj
        };
        let mut to_destroy = PageList::new();
        // SAFETY: `obj` (a debug cache's slot now) is the cache's and held by nobody
        // else, as for `free`; the caller holds no list lock.
        unsafe { transfer::free_to_node(self, node, obj, &mut to_destroy) };
        // SAFETY: as in `give_back`.
        unsafe { self.destroy_slabs(&mut to_destroy) };
    }

    /// `cache_flusharray`: makes room in the CPU's full array cache by moving its
    /// `batchcount` oldest objects to the shared cache, or back to their slabs.
    #[cold]
    unsafe fn cache_flusharray(&self, ac: *mut ArrayCache, cpu: usize) {
        let mut to_destroy = PageList::new();
        // SAFETY: the caller holds `ac`'s lock and no list lock.
        unsafe { transfer::flusharray(self, topology::cpu_to_node(cpu), ac, &mut to_destroy) };
        // SAFETY: as in `give_back`.
        unsafe { self.destroy_slabs(&mut to_destroy) };
    }

    /// The slab holding `obj`, after checking that `obj` is an object of this cache;
    /// anything else is heap corruption and aborts with a message.
    #[inline]
    unsafe fn obj_to_slab(&self, obj: *mut u8) -> *mut Page {
        // SAFETY: `check_obj` finds `obj` in an arena before it reads a descriptor.
        unsafe { self.check_obj(obj, obj) }
    }

    /// [`obj_to_slab`](Self::obj_to_slab) for the slot `slot`, naming `shown` (the
    /// pointer the caller freed) if it is not one.
    #[inline]
    unsafe fn check_obj(&self, slot: *mut u8, shown: *mut u8) -> *mut Page {
        if !arena::contains(slot) || !arena::contains(shown) {
            sys::io::fatal(format_args!(
                "invalid free of {shown:p} to cache {}: not a cpuslab address",
                self.name()
            ));
        }
        let slab = virt_to_head_page(slot);
        let g = self.geom();
        // SAFETY: `slot` is an arena address (checked above): its head descriptor is
        // mapped.
        let is_slab = unsafe { (*slab).flags() } & PG_SLAB != 0;
        // SAFETY: as above; `cache` is written only when a slab is made or destroyed,
        // and a slab holding an object in use is neither.
        let owner = unsafe { (*slab).cache }.cast::<RawCache>();
        let ok = is_slab && ptr::eq(owner, self) && {
            // SAFETY: `slab` heads a slab (`PG_SLAB`) of this cache.
            let colour = unsafe { slab_colour(slab) };
            let off = (slot as usize).wrapping_sub(page_address(slab) as usize + colour);
            g.is_obj_offset(off)
        };
        if !ok {
            // SAFETY: `shown` is an arena address (checked above).
            unsafe { self.bad_free(shown) };
        }
        slab
    }

    /// Aborts for a free of `obj`, an arena address that is not an object of this
    /// cache, saying what it is instead.
    #[cold]
    unsafe fn bad_free(&self, obj: *mut u8) -> ! {
        let head = virt_to_head_page(obj);
        // SAFETY: callers pass an arena address, whose head descriptor is mapped.
        let owner = unsafe { (*head).cache }.cast::<RawCache>();
        // SAFETY: as above.
        if unsafe { (*head).flags() } & PG_SLAB != 0 && !owner.is_null() && !ptr::eq(owner, self) {
            // SAFETY: the cache of a slab, which outlives its slabs.
            let other = unsafe { (*owner).name() };
            sys::io::fatal(format_args!(
                "invalid free of {obj:p} to cache {}: it is in a slab of cache {} \
                 (freed with a layout of another size class?)",
                self.name(),
                other
            ));
        }
        sys::io::fatal(format_args!(
            "invalid free of {obj:p} to cache {}: not an object of this cache",
            self.name()
        ));
    }

    /// The freelist (index array) of `slab`.
    #[inline]
    unsafe fn freelist(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        if g.off_slab && g.order == 0 {
            // SAFETY: callers pass a slab of this cache; a one-page off-slab slab keeps
            // its freelist in its descriptor's `spare` bytes.
            unsafe { slab.cast::<u8>().add(OFF_SLAB_HEAD_OFFSET) }
        } else if g.off_slab {
            // SAFETY: as above; a larger one, in the links of its last page's
            // descriptor, which follows the head's in the descriptor array.
            unsafe {
                slab.add((1 << g.order) - 1)
                    .cast::<u8>()
                    .add(OFF_SLAB_TAIL_OFFSET)
            }
        } else {
            // SAFETY: as above; an on-slab freelist ends the slab's pages.
            unsafe { page_address(slab).add(g.slab_bytes() - g.freelist_bytes()) }
        }
    }

    #[inline]
    unsafe fn get_free_idx(&self, slab: *mut Page, i: usize) -> usize {
        // SAFETY: callers pass a slab of this cache.
        let fl = unsafe { self.freelist(slab) };
        if self.geom().idx_u8 {
            // SAFETY: a shuffled cache's freelist holds `num` indices and callers pass
            // `i < num`; it is read under the slab's list lock, or before the slab is
            // published.
            unsafe { *fl.add(i) as usize }
        } else {
            // SAFETY: as above, of two bytes each.
            unsafe { *fl.cast::<u16>().add(i) as usize }
        }
    }

    #[inline]
    unsafe fn set_free_idx(&self, slab: *mut Page, i: usize, idx: usize) {
        // SAFETY: callers pass a slab of this cache.
        let fl = unsafe { self.freelist(slab) };
        if self.geom().idx_u8 {
            // SAFETY: as in `get_free_idx`: entry `i < num`, written under the slab's
            // list lock or before the slab is published.
            unsafe { *fl.add(i) = idx as u8 };
        } else {
            // SAFETY: as above, of two bytes each.
            unsafe { *fl.cast::<u16>().add(i) = idx as u16 };
        }
    }

    /// The free map of `slab`: bit `i` is set while object `i` is on its freelist
    /// (see `layout`).
    #[inline]
    unsafe fn free_map(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        match g.map_place() {
            // SAFETY: callers pass a slab of this cache: its descriptor's `spare` bytes.
            MapPlace::HeadSpare => unsafe { slab.cast::<u8>().add(layout::MAP_HEAD_SPARE_OFFSET) },
            // SAFETY: as above: the high half of its descriptor's `info`.
            MapPlace::HeadInfo => unsafe { slab.cast::<u8>().add(layout::MAP_HEAD_INFO_OFFSET) },
            // SAFETY: as above: inside the slab's pages, just before the freelist.
            MapPlace::InSlab => unsafe {
                page_address(slab).add(g.slab_bytes() - g.freelist_bytes() - g.map_bytes())
            },
        }
    }

    /// Marks all `num` objects of a new slab free in its map (and no bit beyond).
    unsafe fn init_free_map(&self, slab: *mut Page) {
        let g = self.geom();
        // SAFETY: `cache_grow_begin` passes its new slab of this cache.
        let map = unsafe { self.free_map(slab) };
        let bytes = match g.map_place() {
            MapPlace::HeadSpare => layout::MAP_HEAD_SPARE_BITS / 8,
            MapPlace::HeadInfo => layout::MAP_HEAD_INFO_BITS / 8,
            MapPlace::InSlab => g.map_bytes(),
        };
        // SAFETY: the map is `bytes` long where it lies, and holds the `num` bits; the
        // slab is not published yet, so nobody else reads it.
        unsafe {
            ptr::write_bytes(map, 0, bytes);
            ptr::write_bytes(map, 0xff, g.num / 8);
        }
        if !g.num.is_multiple_of(8) {
            // SAFETY: as above: the byte of the last objects' bits.
            unsafe { *map.add(g.num / 8) = (1u8 << (g.num % 8)) - 1 };
        }
    }

    /// `slab_get_obj`: the next free object of `slab`, which has one.
    #[inline]
    unsafe fn slab_get_obj(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        if !g.shuffled {
            let mut obj = ptr::null_mut();
            // SAFETY: the caller's contract; `obj` is room for the one object.
            unsafe { self.slab_get_objs(slab, &mut obj, 1) };
            return obj;
        }
        // SAFETY: the caller holds the slab's list lock and the slab has a free object:
        // `active < num` is the freelist's next entry.
        let idx = unsafe { self.get_free_idx(slab, (*slab).active as usize) };
        // SAFETY: the descriptor and the map are ours under the list lock; the freelist
        // holds indices below `num`, each with its bit in the map.
        unsafe {
            (*slab).active += 1;
            *self.free_map(slab).add(idx / 8) &= !(1 << (idx % 8));
        }
        // SAFETY: object `idx < num` lies inside the slab.
        unsafe { page_address(slab).add(slab_colour(slab) + idx * g.size) }
    }

    /// Up to `n` free objects of `slab` into `out`, the lowest last (on top of the
    /// stack it is pushed onto); how many it took. The free map is scanned once for the
    /// whole batch.
    #[inline]
    unsafe fn slab_get_objs(&self, slab: *mut Page, out: *mut *mut u8, n: usize) -> usize {
        let g = self.geom();
        // SAFETY: the caller holds the slab's list lock: its descriptor is ours.
        let n = n.min(g.num - unsafe { (*slab).active } as usize);
        if g.shuffled {
            for k in 0..n {
                // SAFETY: `out` has room for `n` (the caller's contract), and the slab
                // has a free object for each (`n <= num - active`).
                unsafe { *out.add(k) = self.slab_get_obj(slab) };
            }
            return n;
        }
        // SAFETY: `slab` is a slab of this cache (the caller's contract).
        let map = unsafe { self.free_map(slab) };
        // SAFETY: as above: its first object, inside it.
        let first = unsafe { page_address(slab).add(slab_colour(slab)) };
        let bytes = g.num.div_ceil(8);
        let mut got = 0;
        let mut at = 0;
        while got < n && at < bytes {
            // Without a freelist array the map is `HeadSpare` (16 bytes) or whole
            // words at the slab's end (`map_bytes`): no word read here runs past it;
            // bytes beyond the last object's are masked off.
            // SAFETY: as above, the word lies inside the descriptor or the slab.
            let mut word = unsafe { ptr::read_unaligned(map.add(at).cast::<u64>()) };
            if bytes - at < 8 {
                word &= (1u64 << ((bytes - at) * 8)) - 1;
            }
            while word != 0 && got < n {
                let pos = at * 8 + word.trailing_zeros() as usize;
                word &= word - 1;
                // SAFETY: byte `pos / 8 < bytes` of the map, ours under the list lock.
                unsafe { *map.add(pos / 8) &= !(1 << (pos % 8)) };
                let idx = g.position(pos);
                // Highest first in `out`: the per-CPU stack the batch is pushed onto
                // pops the last pushed first, so the program gets the objects in
                // ascending address order, the direction its reads will stream in.
                // SAFETY: `n - 1 - got < n`, which `out` has room for; only objects' bits
                // are ever set, so `idx < num` and the object lies inside the slab.
                unsafe { *out.add(n - 1 - got) = first.add(idx * g.size) };
                got += 1;
            }
            at += 8;
        }
        if got < n {
            // SAFETY: a slab of this cache, under its list lock.
            unsafe { self.corrupt_map(slab) };
        }
        // SAFETY: the descriptor is ours under the list lock.
        unsafe { (*slab).active += got as u16 };
        got
    }

    /// Aborts for a slab whose free map holds fewer free objects than its count says.
    #[cold]
    #[inline(never)]
    unsafe fn corrupt_map(&self, slab: *mut Page) -> ! {
        // SAFETY: callers pass a slab of this cache, under its list lock.
        let active = unsafe { (*slab).active };
        sys::io::fatal(format_args!(
            "slab {slab:p} of cache {} has {} of {} objects in use but fewer free in its map: heap corruption",
            self.name(),
            active,
            self.geom().num
        ))
    }

    /// `slab_put_obj`: returns `obj` (checked to be an object of `slab`) to `slab`'s
    /// freelist. An object that is on the freelist already is freed twice: that aborts,
    /// in every build, before the freelist would hold it twice.
    #[inline]
    unsafe fn slab_put_obj(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: `slab` heads a slab of this cache, `obj` one of its objects (the
        // caller's contract).
        let off = obj as usize - (page_address(slab) as usize + unsafe { slab_colour(slab) });
        let idx = self.geom().obj_to_index(off);
        // The map is by position (`Geometry::position`); the freelist array, by index.
        let pos = self.geom().position(idx);
        // SAFETY: as above; the object's bit lies in the map.
        let byte = unsafe { self.free_map(slab).add(pos / 8) };
        // SAFETY: the map is ours under the slab's list lock, which the caller holds.
        if unsafe { *byte } & (1 << (pos % 8)) != 0 {
            self.double_free_in_slab(obj);
        }
        // SAFETY: as above: so is the descriptor.
        if unsafe { (*slab).active } == 0 {
            // Unreachable while the map is intact: every object's bit is set then.
            sys::io::fatal(format_args!(
                "double free of {obj:p} in cache {}: its slab has no object in use",
                self.name()
            ));
        }
        // SAFETY: the map and the descriptor are ours under the list lock.
        unsafe {
            *byte |= 1 << (pos % 8);
            (*slab).active -= 1;
        }
        if self.geom().shuffled {
            // SAFETY: as above; `active < num` is the freelist entry the object goes to.
            unsafe { self.set_free_idx(slab, (*slab).active as usize, idx) };
        }
    }

    /// Aborts for a free of `obj` that its slab's free map says is free already.
    #[cold]
    #[inline(never)]
    fn double_free_in_slab(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it is already free in its slab",
            self.name()
        ))
    }

    /// `cache_grow_begin`: pages for a new slab on `node`, with its descriptors and
    /// freelist initialised. Null when memory ran out.
    unsafe fn cache_grow_begin(&self, node: usize) -> *mut Page {
        let g = self.geom();
        let slab = page::alloc_pages_node(node, g.order);
        if slab.is_null() {
            return slab;
        }
        // SAFETY: the head descriptor of a fresh block, ours until `cache_grow_end`
        // puts the slab on a list.
        unsafe {
            (*slab).set_flags(PG_SLAB | PG_ALLOCATED);
            (*slab).order = g.order as u8;
            (*slab).active = 0;
            (*slab).cache = (self as *const RawCache).cast_mut().cast();
            // The head page's `head` holds the array caches for `free_fast_in_slab`.
            (*slab).head = self.cpu_cache.load(Ordering::Acquire).cast();
            // Colour 0 until `cache_grow_end` sets it; the high half may hold the map.
            (*slab).info = 0;
        }
        for i in 1..(1usize << g.order) {
            // SAFETY: the descriptor of the block's page `i`, after the head's in the
            // descriptor array; ours as well.
            unsafe {
                let tail = slab.add(i);
                (*tail).head = slab;
                (*tail).set_flags(PG_TAIL);
            }
        }
        if g.shuffled {
            // shuffle_freelist: a permutation of its own for every slab.
            let seed = self.random.fetch_add(layout::SEED_STEP, Ordering::Relaxed);
            let mut rng = FreelistRng::new(seed);
            layout::shuffle_freelist(
                g.num,
                &mut rng,
                // SAFETY: `i < num`, in the new slab's freelist, which nobody else sees
                // yet.
                |i| unsafe { self.get_free_idx(slab, i) },
                // SAFETY: as above.
                |i, idx| unsafe { self.set_free_idx(slab, i, idx) },
            );
        }
        // SAFETY: the new slab of this cache, not published yet.
        unsafe { self.init_free_map(slab) };
        slab
    }

    /// `cache_grow_end`: colours the new slab and puts it on the node's free list.
    unsafe fn cache_grow_end(&self, l: &mut NodeLists, slab: *mut Page) {
        let g = self.geom();
        // The low half of `info` (a one-page off-slab slab keeps its map in the high),
        // below 2^32: a slab is at most 2^MAX_SLAB_ORDER pages.
        // SAFETY: a slab from `cache_grow_begin` (the caller's contract), on no list
        // yet: nobody else reads its colour.
        unsafe { *colour_word(slab) = (l.colour_next * g.colour_off) as u32 };
        l.colour_next += 1;
        if l.colour_next > g.colour {
            l.colour_next = 0;
        }
        if self.debug() {
            // Now that the colour places the slots: mark them free and poisoned.
            // SAFETY: as above: its first slot, inside it.
            let first = unsafe { page_address(slab).add(slab_colour(slab)) };
            for i in 0..g.num {
                // SAFETY: slot `i < num` of a new slab of this debug cache, not handed
                // out yet.
                unsafe { debug::init_slot(self.debug_layout(), first.add(i * g.size)) };
            }
        }
        // SAFETY: the slab's head descriptor, on no list yet; `l` is its node's lists,
        // locked (the caller's contract).
        unsafe { l.slabs_free.push_back(slab) };
        l.total_slabs += 1;
        l.free_objects += g.num;
    }

    /// `slab_destroy` for every slab on `list`: their pages go back to the page pool,
    /// after a grace period for a `TYPESAFE_BY_RCU` cache.
    pub(crate) unsafe fn destroy_slabs(&self, list: &mut PageList) -> usize {
        let order = self.geom().order;
        let by_rcu = self.flags.load(Ordering::Relaxed) & SlabFlags::TYPESAFE_BY_RCU.0 != 0;
        let mut pages = 0;
        loop {
            let slab = list.pop_front();
            if slab.is_null() {
                return pages;
            }
            for i in 1..(1usize << order) {
                // SAFETY: `list` holds empty slabs of this cache, taken off every node
                // list (by `free_block` or the reaper): their descriptors are ours.
                unsafe { (*slab.add(i)).set_flags(0) };
            }
            // SAFETY: as above.
            unsafe { (*slab).cache = ptr::null_mut() };
            if by_rcu {
                // No longer a slab to anyone looking up a pointer, but its pages stay
                // allocated, holding stale objects, until the grace period ends.
                // SAFETY: as above.
                unsafe { (*slab).set_flags(PG_ALLOCATED) };
                RCU_PENDING_PAGES.fetch_add(1 << order, Ordering::Relaxed);
                // SAFETY: on no list, the slab's links (the head) stay untouched until
                // `slab_free_rcu` frees its pages.
                unsafe { rcu::call_rcu(slab_rcu_head(slab), slab_free_rcu) };
            } else {
                // SAFETY: the slab's block, of the cache's order; empty and off every
                // list, so unused.
                unsafe { page::free_pages(slab, order) };
            }
            pages += 1 << order;
        }
    }

    /// Returns `nr` objects from the bottom of `ac` to their slabs.
    ///
    /// # Safety
    /// The caller holds `ac`'s lock; for the shared cache of node `shared_of`, the
    /// caller passes that node's lock in `held`, and it is retaken before every chunk
    /// (`free_block` may switch to another node's lock for remote objects).
    pub(crate) unsafe fn drain_array<'a>(
        &'a self,
        ac: *mut ArrayCache,
        nr: u32,
        shared_of: Option<usize>,
        held: Held<'a>,
        to_destroy: &mut PageList,
    ) -> Held<'a> {
        // SAFETY: the caller's contract, which is `transfer::drain_array`'s.
        unsafe { transfer::drain_array(self, ac, nr, shared_of, held, to_destroy) }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self::new()
    }
}

/// The batch moves of [`transfer`] over this cache's real slabs: page descriptors,
/// freelist index arrays, slabs grown from the page pool.
impl SlabCache for RawCache {
    #[inline(always)]
    fn num(&self) -> usize {
        self.geom().num
    }

    #[inline(always)]
    fn list_lock(&self, node: usize) -> &crate::sync::Mutex<NodeLists> {
        &self.node(node).list_lock
    }

    #[inline(always)]
    unsafe fn obj_to_slab(&self, obj: *mut u8) -> *mut Page {
        // SAFETY: it checks `obj` itself; it needs nothing of the caller.
        unsafe { RawCache::obj_to_slab(self, obj) }
    }

    #[inline(always)]
    unsafe fn slab_node(&self, slab: *mut Page) -> usize {
        page::page_node(slab)
    }

    #[inline(always)]
    unsafe fn slab_get_obj(&self, slab: *mut Page) -> *mut u8 {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_get_obj(self, slab) }
    }

    #[inline(always)]
    unsafe fn slab_put_obj(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_put_obj(self, slab, obj) }
    }

    #[inline(always)]
    unsafe fn slab_get_objs(&self, slab: *mut Page, out: *mut *mut u8, n: usize) -> usize {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_get_objs(self, slab, out, n) }
    }

    #[inline(always)]
    fn prefetch_obj(&self, obj: *mut u8) {
        // The page descriptor: arithmetic on the address, no load.
        sys::cpu::prefetch(crate::page::virt_to_page(obj));
    }

    unsafe fn cache_grow_begin(&self, node: usize) -> *mut Page {
        // SAFETY: the same contract.
        unsafe { RawCache::cache_grow_begin(self, node) }
    }

    unsafe fn cache_grow_end(&self, l: &mut NodeLists, slab: *mut Page) {
        // SAFETY: the same contract.
        unsafe { RawCache::cache_grow_end(self, l, slab) }
    }
}
