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
//! the slow paths (`fallback`), which check each object on its way in and out.
//!
//! The code is split by concern, one file each:
//! - this file: the cache itself, its setup and teardown, and the accessors the other
//!   parts read;
//! - `fast`: the per-CPU array-cache paths every allocation and free takes, with their
//!   refill and flush;
//! - `fallback`: the paths that go to a node's lists instead (a busy CPU cache, a debug
//!   cache, a cpuset placing memory off the CPU's node) and the frees of remote objects
//!   through the alien caches;
//! - `check`: the checks a freed pointer passes, and the aborts when it fails them;
//! - `remote`: the inboxes that return small objects freed on another CPU to the CPU
//!   that took them from their slab;
//! - `slabs`: inside a slab (its colour, free map and freelist), growing and destroying
//!   slabs, and the `transfer::SlabCache` operations that the batch moves use.

mod check;
mod fallback;
mod fast;
mod remote;
mod slabs;

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::array_cache::{ArrayCache, AC_HEADER};
use super::debug::{self, DebugLayout};
use super::fastpath;
use super::layout::{self, Geometry};
use super::node::KmemCacheNode;
use super::{CacheError, SlabFlags};
use crate::percpu::{self, PcpuPtr, PCPU_UNIT_SIZE};
use crate::sys::PAGE_SIZE;
use crate::topology::{self, MAX_NUMNODES};
use check::FreeCheck;

pub use check::TagCheck;
pub(crate) use slabs::RCU_PENDING_PAGES;

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

/// Entries of a CPU's first array cache array, where its full array would take half a
/// page or more (see [`RawCache::widen`]): 512 bytes, eight classes' first arrays to a
/// page.
pub(crate) const FIRST_ENTRIES: u32 = 64;

/// States of [`RawCache`]'s full entry arrays (`wide`).
const WIDE_NONE: u32 = 0;
/// See [`WIDE_NONE`]: a CPU is allocating them.
const WIDE_FILLING: u32 = 1;
/// See [`WIDE_NONE`]: allocated, in `entries`.
const WIDE_READY: u32 = 2;

/// Allocates the entry arrays of `capacity` pointers for every possible CPU. Lazily
/// committed: an entry is never read before it is written, and a small class's array
/// is 4 KiB a CPU, which only the CPUs that use the class should pay for. An array of
/// half a page or more is page aligned, so that no smaller area, populated when it is
/// allocated, shares its pages and commits them.
pub(crate) fn alloc_entries(capacity: u32) -> Option<PcpuPtr> {
    let bytes = capacity as usize * 8;
    let align = if bytes >= PAGE_SIZE / 2 {
        PAGE_SIZE
    } else {
        64
    };
    percpu::alloc_percpu_lazy(bytes, align).ok()
}

// `cpu_cache` and `check` fill the first 32 bytes: one line at any 32-byte boundary.
const _: () = assert!(
    core::mem::offset_of!(RawCache, check) + core::mem::size_of::<FreeCheck>() <= 32
        && core::mem::align_of::<RawCache>() == 32
);

/// Bytes of a cache's name, NUL padded.
pub const NAME_LEN: usize = 32;

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
/// alike), while the size (800 bytes) keeps the table's stride one multiplication.
#[repr(C, align(32))]
pub struct RawCache {
    /// CPU 0's array cache header; CPU `c`'s is `c * PCPU_UNIT_SIZE` bytes further.
    /// Null until the cache is set up; never moves afterwards.
    pub(crate) cpu_cache: AtomicPtr<ArrayCache>,
    /// The pointer checks of every free, derived from `geom` and `dbg`.
    check: UnsafeCell<FreeCheck>,
    /// The per-CPU area of the headers, for teardown, when the cache has its own
    /// (see `setup_in`).
    headers: UnsafeCell<Option<PcpuPtr>>,
    /// The per-CPU area of the full entry arrays: from setup, or from the first CPU that
    /// fills its first array ([`widen`](Self::widen), published by `wide`); replaced by
    /// `do_tune_cpucache` under the cache chain lock.
    entries: UnsafeCell<Option<PcpuPtr>>,
    /// The per-CPU area of the small first arrays ([`FIRST_ENTRIES`] each), where the
    /// full ones are allocated on first use; freed by `do_tune_cpucache` once every CPU
    /// has left it, or at teardown.
    first: UnsafeCell<Option<PcpuPtr>>,
    /// `WIDE_NONE`, `WIDE_FILLING` or `WIDE_READY`: whether `entries` holds the full
    /// arrays yet.
    wide: AtomicU32,
    /// CPU 0's inbox of remote frees (`remote`), CPU `c`'s `c * PCPU_UNIT_SIZE` bytes
    /// further; null for a cache that keeps none (objects of a cache line or more, a
    /// debug or untagged cache).
    inboxes: AtomicPtr<AtomicU64>,
    /// The per-CPU area of the inboxes, for teardown.
    inbox_area: UnsafeCell<Option<PcpuPtr>>,
    /// The page tags that name an owner CPU (`set_owner_tags`): CPU `c`'s slabs carry
    /// tag `base + c` for `c` below the count; `base << 8 | count`, 0 for none.
    owner_tags: AtomicU32,
    /// Capacity of the full entry arrays.
    full_capacity: AtomicU32,
    geom: UnsafeCell<Geometry>,
    /// Where objects sit in their slots: debugging on or off, for the cache's life.
    dbg: UnsafeCell<DebugLayout>,
    /// The cache's stream of freelist-permutation seeds: each new slab takes a step.
    random: AtomicU64,
    name: UnsafeCell<[u8; NAME_LEN]>,
    /// The page tag of this cache's slabs (`page::tag`), 0 for none, which they carry
    /// unless a CPU with an owner tag claimed them (`owner_tags`): set by the owner
    /// of a table of caches (kmalloc, by class) before `setup`, which drops it for a
    /// debug cache.
    tag: UnsafeCell<u8>,
    /// `SlabFlags` bits.
    pub(crate) flags: AtomicU32,
    /// Tunables as last set, for slabinfo.
    pub(crate) limit: AtomicU32,
    pub(crate) batchcount: AtomicU32,
    pub(crate) shared: AtomicU32,
    /// Pages of this cache's slabs that frees emptied and gave back since the last
    /// timed reap: slabs grown again within them are the cache cycling through the
    /// same memory, not the program's slabs growing, and count for no growth reap
    /// (see `reap::note_growth`).
    pub(crate) regrow_credit: AtomicU32,
    nodes: [AtomicPtr<KmemCacheNode>; MAX_NUMNODES],
    /// Next cache on the cache chain.
    pub(crate) next: AtomicPtr<RawCache>,
}

// SAFETY: `geom`, `check`, `dbg`, `name`, `tag` and `headers` are written only while the
// cache is being set up, before it is published; `entries` by the one CPU that moves
// `wide` from `WIDE_NONE` to `WIDE_FILLING` (read after `WIDE_READY`), or under the cache
// chain lock once no CPU can widen (all left their first arrays), as `first`; everything
// else is atomic or behind the node and per-CPU locks.
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
            first: UnsafeCell::new(None),
            wide: AtomicU32::new(WIDE_NONE),
            inboxes: AtomicPtr::new(ptr::null_mut()),
            inbox_area: UnsafeCell::new(None),
            owner_tags: AtomicU32::new(0),
            full_capacity: AtomicU32::new(0),
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
            tag: UnsafeCell::new(0),
            flags: AtomicU32::new(0),
            limit: AtomicU32::new(0),
            batchcount: AtomicU32::new(0),
            shared: AtomicU32::new(0),
            regrow_credit: AtomicU32::new(0),
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
        // SAFETY: the caller's contract.
        unsafe { self.setup_in(name, size, align, flags, None) }
    }

    /// [`setup`](Self::setup), with the per-CPU array cache headers at `headers` (CPU
    /// 0's; CPU `c`'s [`PCPU_UNIT_SIZE`]` * c` bytes further) when given, instead of an
    /// area of the cache's own: a table of caches (kmalloc's) keeps its caches' headers
    /// side by side, so that a CPU's headers of every class share a few pages.
    ///
    /// # Safety
    /// As for [`setup`](Self::setup); `headers`, if given, is [`AC_HEADER`] writable,
    /// aligned bytes in every possible CPU's unit of a per-CPU area that outlives the
    /// cache and that nothing else uses.
    pub unsafe fn setup_in(
        &self,
        name: &str,
        size: usize,
        align: usize,
        flags: u32,
        headers: Option<*mut ArrayCache>,
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
        // SAFETY: not shared yet (the caller's contract).
        let tag = unsafe { &mut *self.tag.get() };
        let mut geom = geom;
        if dbg.on {
            // A debug cache's frees all take the checked path: nothing to find fast.
            *tag = 0;
        } else if *tag != 0 {
            // A tagged free finds its slot from the page alone: every slab's first
            // slot is its first byte (no colour). SLUB, mimalloc and tcmalloc colour
            // nothing either; the kernel's SLAB coloured for direct-mapped caches.
            geom.colour = 0;
        }
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
        // Objects that share lines go back to the CPU that took them from their slab
        // when another CPU frees them (`remote`): the caches a free finds by page tag,
        // whose pages name an owner CPU in a byte.
        let owned = *tag != 0
            && geom.size < fast::SHARES_A_LINE
            && topology::nr_cpu_ids() <= remote::MAX_OWNER_CPUS;
        // Their slabs sit on their owner's partial list (`NodeLists::pick_slab`), and a
        // node's shared cache would undo that: a CPU's overflow went there and the
        // other CPU's next refill took it, so two threads churning their own short
        // strings shared a fifth of their lines in one run of three. Without it a flush
        // puts the objects back in their slabs, on their owner's list, as SLUB's
        // per-CPU partial slabs do; remote frees come home through the inboxes anyway.
        let shared = if owned { 0 } else { shared };
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
        let capacity = super::growth::grown_capacity(geom.size, limit);
        // Full arrays of half a page or more each take a page of their own on every CPU
        // that writes one entry: 42 classes a CPU, most of which a program uses only a
        // few objects deep. Such caches start on a small first array, eight to a page,
        // and a CPU moves to the full array when it first fills the small one.
        let first_cap = if capacity > FIRST_ENTRIES && capacity as usize * 8 >= PAGE_SIZE / 2 {
            FIRST_ENTRIES
        } else {
            capacity
        };
        self.full_capacity.store(capacity, Ordering::Relaxed);
        let own = match headers {
            Some(_) => None,
            None => alloc_cpu_area(AC_HEADER, AC_HEADER, true),
        };
        let (Some(headers), Some(entries)) = (
            headers.or(own.map(|p| p.as_ptr().cast())),
            alloc_entries(first_cap),
        ) else {
            // SAFETY: not shared yet, as above; the cell holds what it must free.
            unsafe {
                *self.headers.get() = own;
                self.teardown();
            }
            return Err(CacheError::NoMemory);
        };
        let on_first = first_cap < capacity;
        // SAFETY: not shared yet, as above.
        unsafe {
            *self.headers.get() = own;
            if on_first {
                *self.first.get() = Some(entries);
            } else {
                *self.entries.get() = Some(entries);
                self.wide.store(WIDE_READY, Ordering::Relaxed);
            }
        }
        // Every CPU's header stays as the percpu allocator zeroed it (capacity 0:
        // nothing cached, every sequence refused) until a thread first works on that
        // CPU: see `prepare_cpu`.
        if owned {
            // A line of its own on every CPU: remote CPUs write it, and no neighbour
            // of the owner's should move with it.
            if let Some(area) = alloc_cpu_area(64, 64, true) {
                // SAFETY: not shared yet, as above.
                unsafe { *self.inbox_area.get() = Some(area) };
                self.inboxes.store(area.as_ptr().cast(), Ordering::Relaxed);
            }
        }
        self.limit.store(cpu_limit, Ordering::Relaxed);
        self.batchcount.store(batchcount, Ordering::Relaxed);
        self.shared.store(shared, Ordering::Relaxed);
        self.cpu_cache.store(headers, Ordering::Release);
        Ok(())
    }

    /// Stops `cpu`'s array cache for work beyond one sequence, from a thread running on
    /// that CPU: takes its lock (tried) and, if the thread has moved since, restarts the
    /// sequences in flight there. None when the cache is not set up or busy. The caller
    /// unlocks it.
    pub(crate) fn stop_local(&self, cpu: usize) -> Option<*mut ArrayCache> {
        let ac = self.cpu_ac(cpu)?;
        // SAFETY: the headers live as long as the cache.
        if !unsafe { (*ac).lock.try_lock() } {
            return None;
        }
        // A sequence of another thread on `cpu` was preempted by this one, which
        // restarts it, unless this thread left `cpu` meanwhile.
        if crate::sys::cpu::current() != cpu {
            fastpath::fence(Some(cpu));
        }
        Some(ac)
    }

    /// Gives this cache's slabs the page tag `tag` (`page::tag`, not 0), by which a
    /// free without the cache finds it ([`free_fast_tagged`](Self::free_fast_tagged)).
    ///
    /// # Safety
    /// Called before [`setup`](Self::setup), before the cache is shared; `tag` is this
    /// cache's alone, and the table the tagged free reads (kmalloc's) maps it to this
    /// cache's slot test and array caches.
    pub(crate) unsafe fn set_tag(&self, tag: u8) {
        // SAFETY: not shared yet (the caller's contract).
        unsafe { *self.tag.get() = tag };
    }

    /// The page tag of this cache's slabs (0: none).
    #[inline(always)]
    pub(crate) fn tag(&self) -> u8 {
        // SAFETY: written only before the cache is published.
        unsafe { *self.tag.get() }
    }

    /// Whether `setup` finished: the cache serves.
    #[inline]
    pub fn is_set_up(&self) -> bool {
        !self.cpu_cache.load(Ordering::Acquire).is_null()
    }

    /// The array cache of `cpu`, if the cache is set up, `cpu` is possible and a thread
    /// has worked there since (its header is prepared: see
    /// [`prepare_cpu`](Self::prepare_cpu)). A CPU without one has nothing cached, and
    /// cross-CPU work passes it over without writing (committing) its page.
    #[inline(always)]
    pub(crate) fn cpu_ac(&self, cpu: usize) -> Option<*mut ArrayCache> {
        let base = self.cpu_cache.load(Ordering::Acquire);
        if base.is_null() || cpu >= topology::nr_cpu_ids() {
            return None;
        }
        let ac = base.wrapping_byte_add(cpu * PCPU_UNIT_SIZE);
        // SAFETY: every possible CPU's header lives as long as the cache.
        (percpu::cpu_used(cpu) && unsafe { ArrayCache::is_prepared(ac) }).then_some(ac)
    }

    /// `cpuup_prepare` for one cache: gives `cpu`'s array cache its entries and limits
    /// the first time a thread of the process works on that CPU, as the kernel sets up
    /// a CPU's array caches when the CPU comes online. Until then the header is the
    /// zeroed one the percpu allocator gave (see [`setup_in`](Self::setup_in)): its
    /// limit of 0 refuses every sequence, so the first allocation or free there comes
    /// to a slow path, which calls this. Preparing at setup wrote a header, so
    /// committed a page, for every possible CPU: 2 pages a CPU with the page lists, half
    /// a MiB for a small program on a machine with 64 possible CPUs.
    ///
    /// Under the cache chain lock, which retuning holds while it swaps the entry arrays,
    /// so the header starts on the arrays in effect; only tried: the chain's holder may
    /// allocate (a cache's node structure), and a slow path that cannot prepare serves
    /// through the node as it would with a stopped cache. True when the header is
    /// prepared.
    #[cold]
    #[inline(never)]
    pub(crate) fn prepare_cpu(&self, cpu: usize) -> bool {
        let base = self.cpu_cache.load(Ordering::Acquire);
        if base.is_null() || cpu >= topology::nr_cpu_ids() {
            return false;
        }
        let ac: *mut ArrayCache = base.wrapping_byte_add(cpu * PCPU_UNIT_SIZE);
        // SAFETY: every possible CPU's header lives as long as the cache.
        if unsafe { ArrayCache::is_prepared(ac) } {
            return true;
        }
        let Some(_chain) = super::CHAIN.try_lock() else {
            return false;
        };
        percpu::mark_cpu_used(cpu);
        // SAFETY: as above. Nobody else takes an unprepared header's lock (cross-CPU work
        // passes it over, the tried-lock path prepares it first), so the wait is none;
        // only a CPU gone for good has it dead.
        unsafe {
            if ArrayCache::is_prepared(ac) {
                return true;
            }
            if !(*ac).lock.lock_wait() {
                // A CPU gone for good (`hotplug`): nothing works there any more.
                return false;
            }
        }
        // A sequence on `cpu` that read the zero limit before the lock was taken cannot
        // see the new entries with it: it is restarted, unless this thread is there
        // (then it preempted that sequence, which restarts anyway).
        if crate::sys::cpu::current() != cpu {
            fastpath::fence(Some(cpu));
        }
        let (limit, batchcount) = (
            self.limit.load(Ordering::Relaxed),
            self.batchcount.load(Ordering::Relaxed),
        );
        // SAFETY: the chain lock is held: the entry areas are not swapped meanwhile, and
        // the first arrays are taken only under it (`replace_entries`).
        let (entries, capacity, first) = unsafe {
            match *self.first.get() {
                Some(first) => (first, FIRST_ENTRIES, true),
                None => match *self.entries.get() {
                    Some(full) => (full, self.full_capacity.load(Ordering::Relaxed), false),
                    None => {
                        (*ac).lock.unlock();
                        return false;
                    }
                },
            }
        };
        // SAFETY: `cpu`'s header, stopped by this thread (its lock) with no sequence in
        // flight on it, its other fields zero as the percpu allocator gave them; its
        // entry array of `capacity` pointers in `cpu`'s unit. Field by field, the lock
        // word untouched: every sequence refuses a stopped header, and the unlock
        // publishes the rest.
        unsafe {
            (*ac).entry = entries.per_cpu_ptr(cpu).cast();
            (*ac).batchcount = batchcount;
            (*ac).first_array = u32::from(first);
            // A free into the empty cache stays on the fast path where objects share no
            // line: without it, an allocation and free in turn of a class whose cache
            // holds no more than the one object went to the slow path on every free
            // (`free_into_empty`), 15 ns a 4 KiB pair instead of 4.
            (*ac).into_empty = u32::from(self.geom().size >= fast::SHARES_A_LINE);
            (*ac).limit = limit.min(capacity);
            // Last: what `is_prepared` reads.
            ptr::write_volatile(ptr::addr_of_mut!((*ac).capacity), capacity);
            (*ac).lock.unlock();
        }
        true
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

    /// Makes `new`, of `capacity` entries a CPU, the per-CPU area of the entry arrays;
    /// returns the old full arrays and first arrays, either of which may be absent.
    ///
    /// # Safety
    /// The caller holds the cache chain lock and every CPU's array cache points into
    /// `new` already: no CPU is on its first array, so none widens any more.
    pub(crate) unsafe fn replace_entries(
        &self,
        new: PcpuPtr,
        capacity: u32,
    ) -> (Option<PcpuPtr>, Option<PcpuPtr>) {
        // What a widening would take as the full arrays' capacity, were there one.
        self.full_capacity.store(capacity, Ordering::Relaxed);
        // No CPU can be between `WIDE_FILLING` and `WIDE_READY`: each widens under its
        // cache's lock, which the caller took and released after the widening.
        self.wide.store(WIDE_READY, Ordering::Release);
        // SAFETY: the cells are written only by a widening CPU, which no longer exists
        // (the contract), or under the cache chain lock, which the caller holds.
        unsafe {
            (
                (*self.entries.get()).replace(new),
                (*self.first.get()).take(),
            )
        }
    }

    /// The `first_array` cache `ac` (`cpu`'s, whose lock the caller holds, settled)
    /// filled its small first array: moves its entries to its full array, allocated
    /// for every CPU by the first CPU that needs it, and raises its limit to the tuned
    /// one where the first array held it below. False when the full arrays cannot be
    /// had now (no memory, or another CPU is allocating them): the cache stays where
    /// it is, and its overflow is handled as any other.
    ///
    /// The small array stays in its area until a retune or teardown frees the area: it
    /// is eight classes to a page, and other CPUs may still use their copies.
    ///
    /// # Safety
    /// The caller holds `ac`'s lock (`cpu`'s cache), settled as for any overflow.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn widen(&self, ac: *mut ArrayCache, cpu: usize) -> bool {
        let full = match self.wide.load(Ordering::Acquire) {
            WIDE_READY => {
                // SAFETY: written before `WIDE_READY` was stored, which the load saw,
                // and not again while a CPU is on its first array (this one is).
                unsafe { *self.entries.get() }
            }
            WIDE_NONE => {
                if self
                    .wide
                    .compare_exchange(
                        WIDE_NONE,
                        WIDE_FILLING,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    return false;
                }
                // Percpu takes its own mutex and pages from the page pool, never a slab
                // cache's lock: safe under this cache's CPU lock.
                let p = alloc_entries(self.full_capacity.load(Ordering::Relaxed));
                // SAFETY: this CPU moved `wide` to `WIDE_FILLING`: the cell is its alone
                // until it publishes `WIDE_READY`.
                unsafe { *self.entries.get() = p };
                let next = if p.is_some() { WIDE_READY } else { WIDE_NONE };
                self.wide.store(next, Ordering::Release);
                p
            }
            _ => None,
        };
        let Some(full) = full else {
            return false;
        };
        // SAFETY: the caller holds `ac`'s lock: its header and entries are ours; the
        // full array of `cpu` has `full_capacity` entries, more than the `avail` of
        // the first array (at most `FIRST_ENTRIES`), and no other CPU writes it.
        unsafe {
            let to: *mut *mut u8 = full.per_cpu_ptr(cpu).cast();
            ptr::copy_nonoverlapping(ArrayCache::entries(ac), to, (*ac).avail as usize);
            (*ac).entry = to;
            (*ac).capacity = self.full_capacity.load(Ordering::Relaxed);
            (*ac).first_array = 0;
            let base = self.limit.load(Ordering::Relaxed);
            if (*ac).limit < base {
                super::growth::set_limit(ac, cpu, self.geom().size, base, base);
            }
        }
        true
    }

    /// Frees the node structures and array caches of a cache whose slabs are all gone.
    ///
    /// # Safety
    /// No thread uses the cache any more and it holds no slab.
    pub(crate) unsafe fn teardown(&self) {
        let headers = self.cpu_cache.swap(ptr::null_mut(), Ordering::AcqRel);
        if !headers.is_null() {
            // Growth paid back to every CPU's budget.
            for cpu in 0..topology::nr_cpu_ids() {
                let ac = headers.wrapping_byte_add(cpu * PCPU_UNIT_SIZE);
                // SAFETY: a set-up cache has a header for every possible CPU, which
                // nobody else uses any more (the caller's contract). One never prepared
                // grew nothing (and stays unwritten).
                unsafe {
                    if ArrayCache::is_prepared(ac) {
                        super::growth::set_limit(ac, cpu, self.geom().size, 0, 0);
                    }
                };
            }
        }
        // SAFETY: nobody uses the cache any more (the caller's contract): the cell is
        // ours.
        if let Some(p) = unsafe { (*self.headers.get()).take() } {
            // SAFETY: from `alloc_cpu_area` in `setup`; taken out of its cell, so freed
            // once, and no CPU uses its array cache any more. (Headers of the caller's
            // area, `setup_in`'s, are not the cache's to free.)
            unsafe { percpu::free_percpu(p) };
        }
        self.inboxes.store(ptr::null_mut(), Ordering::Relaxed);
        self.owner_tags.store(0, Ordering::Relaxed);
        for cell in [&self.entries, &self.first, &self.inbox_area] {
            // SAFETY: as for `headers`.
            if let Some(p) = unsafe { (*cell.get()).take() } {
                // SAFETY: entry arrays of this cache (`alloc_entries`; a retune frees
                // the ones it replaces); taken out of the cell, so freed once.
                unsafe { percpu::free_percpu(p) };
            }
        }
        self.wide.store(WIDE_NONE, Ordering::Relaxed);
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
}

impl Default for RawCache {
    fn default() -> Self {
        Self::new()
    }
}
