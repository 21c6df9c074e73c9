//! The per-CPU array-cache paths: what an allocation or a free does on the calling CPU,
//! by restartable sequence or under the CPU's tried lock, and the refill and flush that
//! move `batchcount` objects between the CPU's cache and its node when the cache runs
//! empty or full.
//!
//! These are the hot paths: kmalloc and C `malloc` and `free` inline the
//! `#[inline(always)]` ones, so what they call off the common case is cold or out of
//! line, here (the refill and the flush) or in `fallback` and `check`.

use core::ptr;
use core::sync::atomic::Ordering;

use super::{RawCache, TagCheck};
use crate::cpuset::{self, MemKind};
use crate::page::list::PageList;
use crate::page::{self, Page};
use crate::percpu::PCPU_UNIT_SIZE;
use crate::slab::array_cache::ArrayCache;
use crate::slab::fastpath;
use crate::slab::growth;
use crate::slab::reap;
use crate::slab::transfer::{self, ObjBuf, CHUNK};
use crate::sys;
use crate::topology;

/// Objects smaller than this (a cache line) share a line with several neighbours
/// each: [`RawCache::free_into_empty`] keeps such an object off the top of the cache.
/// (Larger ones whose size is no multiple of 64 share a line only at their ends.)
pub(super) const SHARES_A_LINE: usize = 64;

// The stack sequences address CPU `c`'s header at `base + c * STACK_STRIDE`.
const _: () = assert!(PCPU_UNIT_SIZE == sys::rseq::STACK_STRIDE);

/// Whether a push fast path must leave `obj` to the whole free path: while the
/// sequences are stopped or any of the caller's hold bits `also` is held, or, on a machine of several nodes ([`HOLD_NODES`]), when
/// `obj` is another node's than the calling CPU's (an alien free, which goes home).
/// On one node this is the one test of the hold word the push paths always made; the
/// node test costs only where there are nodes to tell apart.
///
/// The CPU is the one the sequence is about to run on as far as it can be known
/// before the sequence: a thread that moves to another node in between pushes one
/// object onto that node's cache, as the whole path's `free_alien` may. That is a
/// matter of placement only: an object that goes back to slabs goes to its own, under
/// its own node's lock (`transfer::free_block`).
///
/// [`HOLD_NODES`]: sys::rseq::HOLD_NODES
///
/// # Safety
/// `obj` lies in an arena (its arena's header, which names its node, is mapped).
#[inline(always)]
unsafe fn push_held(also: usize, obj: *mut u8) -> bool {
    // The node test reads the CPU from the rseq area, meaningful only while the
    // sequences are on: every push stops for `HOLD_STOPPED`.
    let stop = also | sys::rseq::HOLD_STOPPED;
    let held = sys::rseq::held();
    if held & (stop | sys::rseq::HOLD_NODES) == 0 {
        return false;
    }
    // Out of the straight line of one node's free.
    super::remote::unlikely();
    // Not `stop` (which includes `HOLD_STOPPED`): the sequences are on, so the CPU
    // read from the rseq area is meaningful.
    held & stop != 0 || page::addr_node(obj) != topology::cpu_to_node(sys::rseq::stack_cpu())
}

/// Stores to the first word of `obj`, a kmalloc object being freed: its line leaves
/// the free modified in this CPU's cache, as the free of an allocator that links free
/// blocks through them leaves it (glibc, tcmalloc, mimalloc).
///
/// An array cache never writes its objects, so a block the consumer of a
/// producer/consumer pair had only read went back to the producer with its line
/// still shared with the consumer's cache, and the producer's stores into it stalled.
/// One producer and one consumer on two CPUs (the C `xmalloc-test 1`: blocks of 64 B
/// written, read and freed across) took 63-65 ms, and 45-50 ms with this store
/// (mimalloc 51). A prefetch for writing instead changed nothing, and a store of the
/// word's own value, which has to load it first, stalled on frees of blocks long out
/// of the cache (`larson` 14% slower). A store alone retires at once.
///
/// A free object's contents are undefined (C, `GlobalAlloc`). Those of the small
/// classes carry an inbox link in this word while they wait on another CPU's inbox
/// (`remote`): a double free that overwrites one is caught where the inbox is taken,
/// which checks every link.
///
/// # Safety
/// `obj` is an object of a kmalloc cache, given up by the caller: its first word is
/// mapped, aligned to 8 (every class is a multiple of 8, its objects aligned to it)
/// and nobody else's.
#[inline(always)]
unsafe fn own_line(obj: *mut u8) {
    // SAFETY: the object's first word, the caller's (the contract); volatile, so that
    // the store to a block given up stays.
    unsafe { ptr::write_volatile(obj.cast::<usize>(), 0) };
}

impl RawCache {
    /// The allocation fast path: one object off this CPU's array cache by restartable
    /// sequence, or null for anything else (rseq off, placement under a cpuset — the
    /// `HOLD_POP` bit —, an empty or stopped cache, not set up), which
    /// [`alloc`](Self::alloc) then serves.
    /// Small on purpose: callers inline it and keep to the caller-saved registers.
    #[inline(always)]
    pub fn alloc_fast(&self) -> *mut u8 {
        let base = self.cpu_cache.load(Ordering::Acquire);
        if sys::rseq::held() & (sys::rseq::HOLD_POP | sys::rseq::HOLD_STOPPED) != 0
            || base.is_null()
        {
            return ptr::null_mut();
        }
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); as in `alloc`.
        unsafe { sys::rseq::stack_pop(base.cast()) }
    }

    /// [`alloc_fast`](Self::alloc_fast) on the array caches `base` of a cache, for
    /// kmalloc, which keeps them in tables by size: that saves the load of the class
    /// and then of the cache's pointer, one dependent load on every small allocation.
    /// Its tables are full (`base` is not null) once the `HOLD_TABLES` bit is released,
    /// so the pop tests no pointer.
    ///
    /// Also null while any of the hold bits `also` is held (a caller's own condition,
    /// tested with the others in one test).
    ///
    /// # Safety
    /// `base` is a kmalloc cache's `cpu_cache`, read from its table: not null unless
    /// `HOLD_TABLES` is still held.
    #[inline(always)]
    pub unsafe fn alloc_fast_table(base: *mut ArrayCache, also: usize) -> *mut u8 {
        let held = sys::rseq::HOLD_POP | sys::rseq::HOLD_STOPPED | sys::rseq::HOLD_TABLES | also;
        if sys::rseq::held() & held != 0 {
            return ptr::null_mut();
        }
        debug_assert!(!base.is_null(), "a kmalloc table entry left null");
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); `base` is a cache's array
        // caches (the tables are filled: no HOLD_TABLES); as in `alloc`.
        unsafe { sys::rseq::stack_pop(base.cast()) }
    }

    /// [`free_fast`](Self::free_fast) on the array caches `base` of a cache, for
    /// kmalloc's sized free, which finds them (and checks the pointer against the
    /// class's alignment) in its tables by size. False where the push cannot be done
    /// (as `free_fast`), while the tables are not filled (`HOLD_TABLES`), or once some
    /// of the blocks kmalloc's callers free may be glibc's (`HOLD_FOREIGN`). Before
    /// the push it stores to the object's first word (see `own_line`).
    ///
    /// # Safety
    /// `base` is a kmalloc cache's `cpu_cache`, read from its table (not null unless
    /// `HOLD_TABLES` is still held); `obj` is an object of that cache (or, while
    /// `HOLD_FOREIGN` is held, a block of glibc's), aligned as its
    /// objects are, given up by the caller. On true `obj` is freed. `elsewhere(cpu)`
    /// says whether `obj` belongs to another CPU than `cpu` (`remote`), which then
    /// gets it by the slow path; called only once the sequences are on and the tables
    /// filled, so that it may read the object's page.
    #[inline(always)]
    pub unsafe fn free_fast_table(
        base: *mut ArrayCache,
        obj: *mut u8,
        elsewhere: impl FnOnce(usize) -> bool,
    ) -> bool {
        // SAFETY: an object of a cache lies in an arena.
        if unsafe { push_held(sys::rseq::HOLD_TABLES | sys::rseq::HOLD_FOREIGN, obj) }
            || elsewhere(sys::rseq::stack_cpu())
        {
            return false;
        }
        debug_assert!(!base.is_null(), "a kmalloc table entry left null");
        // SAFETY: an object of a kmalloc cache (only kmalloc's tables hold `base`), the
        // caller's.
        unsafe { own_line(obj) };
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); `base` is a cache's array
        // caches (the tables are filled: no HOLD_TABLES); as in `alloc`. `obj`, an
        // object, is not null.
        unsafe { sys::rseq::stack_push_nonempty(base.cast(), obj) }
    }

    /// The array caches of this cache (null until it is set up).
    #[inline(always)]
    pub(crate) fn cpu_caches(&self) -> *mut ArrayCache {
        self.cpu_cache.load(Ordering::Acquire)
    }

    /// The free fast path: `obj` onto this CPU's array cache by restartable sequence.
    /// False when that cannot be done (also when the cache is empty, so that a small
    /// object allocated elsewhere does not go on top); [`free`](Self::free) then frees
    /// it.
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
        // SAFETY: an object of this cache (the caller's contract) lies in an arena.
        if unsafe { push_held(0, obj) } {
            return false;
        }
        let base = self.cpu_cache.load(Ordering::Acquire);
        // SAFETY: the sequences are on (no HOLD_STOPPED bit); as in `alloc`. `obj`, an
        // object of this cache (the caller's contract), is not null.
        !base.is_null() && unsafe { sys::rseq::stack_push_nonempty(base.cast(), obj) }
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
                if (ArrayCache::is_prepared(ac) || self.prepare_cpu(cpu)) && (*ac).lock.try_lock() {
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
                    reap::maybe_reap();
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
    /// An object of a kmalloc cache then gets the fast frees' store to its first word
    /// (`own_line`): C `free` comes this way whenever it leaves the fast path, on
    /// every free where restartable sequences are off (C libraries before 2.35).
    ///
    /// # Safety
    /// As for [`free`](Self::free); `slab` is `virt_to_head_page(obj)`, a slab of this
    /// cache.
    #[inline(always)]
    pub unsafe fn free_in_slab(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: `slab` is `virt_to_head_page(obj)`, a slab of this cache (the caller's
        // contract).
        unsafe { self.check_in_slab(slab, obj) };
        if self.tag() != 0 {
            // SAFETY: `obj` starts an object of this cache (just checked), a kmalloc
            // cache (only kmalloc's are tagged), which the caller gives up.
            unsafe { own_line(obj) };
        }
        // SAFETY: the caller's contract; the exact check `obj` passed implies the
        // pointer check.
        unsafe { self.free_unchecked(obj) }
    }

    /// The fast path of [`free_in_slab`](Self::free_in_slab) for an object found by its
    /// page tag (`page::tag`) rather than its descriptor: the same exact check (of a
    /// slot's start), from the offset alone (`check`, the tag's entry), then `obj` onto
    /// this CPU's array cache of the entry's cache by one restartable sequence, which
    /// first makes the entry's owner test on the CPU it reads. `Yes`: freed. `No`:
    /// nothing done (rseq off or held, an empty, full or stopped cache, another node's
    /// object, any of the hold bits `also` held, a double free on top); the caller then
    /// takes the whole path. `OtherCpu`: the CPU failed the owner test, nothing pushed
    /// but the object's first word written; the caller decides (the page's descriptor
    /// may name that CPU or none: see [`TagCheck::owned_elsewhere`]). An entry whose
    /// slot test passed has array caches (`TagCheck::cpu_caches_of_slot`): no null
    /// test.
    ///
    /// # Safety
    /// `obj` lies in a page whose tag is `check`'s (a slab page of the cache it was
    /// set from), `off` is its offset in its arena (`arena::offset_in`), and the
    /// caller gives `obj` up: it is freed when the answer is `Yes`.
    #[inline(always)]
    pub unsafe fn free_fast_tagged(
        check: &TagCheck,
        obj: *mut u8,
        off: u32,
        also: usize,
    ) -> sys::rseq::Pushed {
        // A pointer that does not start a slot goes to the slow path, which checks it
        // again (from the descriptor) and aborts there.
        // SAFETY: `off` is an offset in an arena (the contract), so `obj` lies in one.
        if !check.starts_slot(off) || unsafe { push_held(also, obj) } {
            return sys::rseq::Pushed::No;
        }
        // SAFETY: the slot test passed.
        let base = unsafe { check.cpu_caches_of_slot() };
        // Before the owner test, which the sequence makes: an object that goes to its
        // owner's inbox instead has this word written there all the same (its link).
        // SAFETY: `obj` starts a slot of a slab with a tag, so of a kmalloc cache (only
        // kmalloc's caches are tagged), and the caller gives it up.
        unsafe { own_line(obj) };
        // The C interface's free, where double frees happen: the push also turns
        // away one of the object freed before last. The owner test runs in the
        // sequence, on the CPU it reads there.
        // SAFETY: the cache's array caches; the sequences are on, as in `alloc`; `obj`,
        // an object, is not null; the owner test's words are the entry's.
        unsafe { sys::rseq::stack_push_deep_tested(base.as_ptr().cast(), obj, check.owner_test()) }
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
        // SAFETY: as above; an object of this cache is in an arena.
        if unsafe { self.free_remote(obj) } {
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
        // A full cache is flushed, an empty one takes the slow path too (for objects
        // under a cache line, a batch goes on first); a stopped one gives the flush
        // nothing and turns the push after it away, so `obj` goes to the node.
        // The deep push, as C's fast path: a free that left it lands here, and the
        // locked path below looks as deep.
        // SAFETY: the sequences are on; as in `alloc`. `obj`, an object, is not null.
        if !unsafe { sys::rseq::stack_push_deep(base.cast(), obj) } {
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
            if unsafe {
                (ArrayCache::is_prepared(ac) || self.prepare_cpu(cpu)) && (*ac).lock.try_lock()
            } {
                // SAFETY: this thread holds `ac`'s lock (`cpu`'s) and no list lock; `obj`
                // as for `free`.
                return unsafe { self.free_locked(ac, cpu, obj) };
            }
        }
        // SAFETY: `obj` is the cache's and no longer used, as for `free`.
        unsafe { self.free_fallback(obj) };
    }

    /// A free into the CPU's array cache `ac`, locked or stopped by the caller, which
    /// this releases: into an empty cache by [`free_into_empty`](Self::free_into_empty),
    /// a full one by [`free_full`](Self::free_full), else a push.
    ///
    /// # Safety
    /// The caller holds `ac`'s lock (`cpu`'s cache) and no list lock; `obj` as for
    /// [`free`](Self::free).
    #[inline(always)]
    unsafe fn free_locked(&self, ac: *mut ArrayCache, cpu: usize, obj: *mut u8) {
        // SAFETY: the array cache and its entries are ours while its lock is held.
        let (avail, limit) = unsafe { ((*ac).avail, (*ac).limit) };
        if avail == 0 {
            // SAFETY: the caller's contract, which `free_into_empty` shares.
            return unsafe { self.free_into_empty(ac, cpu, obj) };
        }
        // SAFETY: as above.
        let entries = unsafe { ArrayCache::entries(ac) };
        // The restartable push's check: the two objects on top are the ones freed last,
        // so freeing one of them again is a double free (loads in the line the push
        // writes, or the one below it).
        // SAFETY: as above; `avail > 0`, so `entry[avail - 1]` is its top, and
        // `entry[avail - 2]` the one below when `avail > 1`.
        if unsafe {
            *entries.add(avail as usize - 1) == obj
                || (avail > 1 && *entries.add(avail as usize - 2) == obj)
        } {
            // SAFETY: ours, locked by the caller.
            unsafe { (*ac).lock.unlock() };
            self.double_free_cached(obj);
        }
        if avail < limit {
            // SAFETY: as above; `avail < limit <= capacity`: `entry[avail]` is in the
            // array.
            unsafe {
                *entries.add(avail as usize) = obj;
                (*ac).avail = avail + 1;
                (*ac).lock.unlock();
            }
            return;
        }
        // SAFETY: the caller's contract, which `free_full` shares.
        unsafe { self.free_full(ac, cpu, obj) };
    }

    /// A free into the CPU's empty array cache (the caller holds its lock, which this
    /// releases). An object freed where its class has nothing cached was most likely
    /// allocated on another CPU, whose thread may still write the objects beside it.
    /// Where objects are smaller than a cache line, making it the next one this CPU
    /// hands out would put this CPU's writes on that line: the passive false sharing of
    /// Hoard's `cache-scratch`, where each thread frees the object the main thread gave
    /// it and then allocates, writes and frees again, over and over. So the cache first
    /// takes a batch of its own from what the node has free (never growing a slab for
    /// it) and `obj` goes under that batch, at the end the pops reach last and flushes
    /// send back first. Larger objects, or a node with nothing free, just push `obj`.
    #[cold]
    unsafe fn free_into_empty(&self, ac: *mut ArrayCache, cpu: usize, obj: *mut u8) {
        if self.debug() {
            // SAFETY: the caller holds the lock of `ac`, a live header.
            unsafe { (*ac).lock.unlock() };
            // SAFETY: `obj` is the cache's and no longer used, as for `free`.
            return unsafe { self.free_fallback(obj) };
        }
        let mut n = 0;
        let mut buf = ObjBuf::new();
        // SAFETY: the caller holds `ac`'s lock: the header is ours.
        let room = unsafe { ((*ac).limit as usize).saturating_sub(1) };
        let batch = (self.batchcount.load(Ordering::Relaxed) as usize)
            .min(room)
            .min(CHUNK);
        if self.geom().size < SHARES_A_LINE && batch > 0 {
            // The CPU's own node, whatever the thread's cpuset: a CPU's array cache
            // holds its node's objects only (`alloc_alternate` relies on it).
            let node = topology::cpu_to_node(cpu);
            // SAFETY: the lists passed are `node`'s, locked for the call; the caller
            // holds no list lock (its contract).
            // `batch <= CHUNK`: `buf` has room.
            n = unsafe {
                transfer::take_into(
                    self,
                    &mut self.node(node).list_lock.lock(),
                    buf.as_mut_ptr(),
                    batch,
                )
            };
            // SAFETY: `take_into` wrote the first `n`.
            let objs = unsafe { buf.objs(n) };
            // Found free at the node while being freed here: a double free, which the
            // batch would otherwise hand out twice.
            if objs.contains(&obj) {
                // SAFETY: the caller holds the lock of `ac`, a live header; the batch,
                // the node's free objects, goes back before the report.
                unsafe {
                    (*ac).lock.unlock();
                    self.give_back(objs);
                }
                self.double_free_at_node(obj);
            }
            transfer::order_for_pops(self, objs);
        }
        // SAFETY: the caller holds `ac`'s lock: its entries are ours; `1 + n <= limit`,
        // within the array's capacity (a debug cache, whose limit is 0, left above).
        // The first `n` of `buf` were written above.
        unsafe {
            let entries = ArrayCache::entries(ac);
            *entries = obj;
            ptr::copy_nonoverlapping(buf.as_mut_ptr(), entries.add(1), n);
            (*ac).avail = 1 + n as u32;
            (*ac).lock.unlock();
        }
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
        // A cache that filled its small first array, or whose refills since its last
        // overflow would grow it past that array, moves to its full one, where its
        // tuned limit may leave room already (see `widen`): growth then takes the whole
        // shortfall, as it would have on the full array.
        // SAFETY: the caller holds `ac`'s lock, `cpu`'s cache, settled.
        let widened = unsafe {
            (*ac).first_array != 0
                && ((*ac).limit >= (*ac).capacity
                    || (*ac).limit + (*ac).refilled.load(Ordering::Relaxed) > (*ac).capacity)
                && self.widen(ac, cpu)
        };
        // A cache cycling through more objects than its limit grows instead of sending
        // its oldest objects to the node, from where another CPU would take them; a
        // consumer's shrinks (see `growth::on_overflow`).
        // SAFETY: the caller holds `ac`'s lock, `cpu`'s cache: the header is ours.
        let grown = unsafe {
            (widened && (*ac).avail < (*ac).limit)
                || growth::on_overflow(
                    ac,
                    cpu,
                    self.geom().size,
                    self.limit.load(Ordering::Relaxed),
                )
        };
        let node = topology::cpu_to_node(cpu);
        let mut buf = ObjBuf::new();
        let mut n = 0;
        if !grown {
            loop {
                // SAFETY: the caller holds `ac`'s lock (`cpu`'s).
                n = unsafe { transfer::flush_take(ac, &mut buf) };
                // SAFETY: as above.
                if unsafe { (*ac).avail < (*ac).limit || (*ac).avail == 0 } {
                    break;
                }
                // Past a lowered limit it takes more than one batch: all but the last
                // go to the node with the cache still held (a rare path).
                // SAFETY: objects just taken out of the cache (the first `n` of `buf`),
                // held by nobody else; the caller holds no list lock.
                unsafe { self.give_back_to(node, buf.objs(n)) };
            }
        }
        // SAFETY: ours under its lock; the flush took at least one object off the full
        // cache, or its limit grew past `avail`: `entry[avail]` is within its capacity.
        unsafe {
            let avail = (*ac).avail;
            *ArrayCache::entries(ac).add(avail as usize) = obj;
            (*ac).avail = avail + 1;
            (*ac).lock.unlock();
        }
        // The batch crosses to the node once the cache is released (see
        // `transfer::flush_take`).
        // SAFETY: as above; no lock is held now.
        unsafe { self.give_back_to(node, buf.objs(n)) };
        reap::maybe_reap();
    }

    /// Whether `ac`, on its first array, empties as a producer's cache does, so that its
    /// next refill, sized by the tuned limit, would take more than the first array's
    /// limit lets it: a producer never overflows, so it moves to its full array here
    /// (see [`widen`](Self::widen)).
    ///
    /// # Safety
    /// `ac` is a live header of this cache (read without its lock: a hint, checked
    /// again under it).
    #[inline]
    unsafe fn producer_outgrew_first_array(&self, ac: *mut ArrayCache) -> bool {
        // SAFETY: a live header (the contract); plain fields read as the statistics read
        // them, without the lock.
        unsafe {
            if ptr::read_volatile(ptr::addr_of!((*ac).first_array)) == 0 {
                return false;
            }
            let (size, plain) = (self.geom().size, self.batchcount.load(Ordering::Relaxed));
            let limit = ptr::read_volatile(ptr::addr_of!((*ac).limit));
            let tuned = self.limit.load(Ordering::Relaxed);
            growth::refill_count(ac, size, plain, tuned)
                > growth::refill_count(ac, size, plain, limit)
        }
    }

    /// The rseq path's `cache_alloc_refill`: takes `batchcount` objects from the node
    /// (its shared cache, its slabs, new slabs), or more for a producer
    /// (`growth::refill_count`), keeps one and pushes the rest onto the CPU's array
    /// cache in one sequence (one at a time where they do not all fit); what does not
    /// fit (the thread migrated, the cache was stopped) goes back to the node.
    #[cold]
    fn alloc_refill_rseq(&self, base: *mut ArrayCache) -> *mut u8 {
        if self.debug() {
            return self.alloc_fallback();
        }
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        let node = cpuset::mem_node_for_kind(cpu_node, MemKind::Slab);
        let plain = self.batchcount.load(Ordering::Relaxed);
        let mut batch = plain;
        let cpu = sys::cpu::current();
        let mut ac = self.cpu_ac(cpu);
        // A CPU's first allocation from the cache comes here (its header refuses the
        // pops until prepared).
        if ac.is_none() && self.prepare_cpu(cpu) {
            ac = self.cpu_ac(cpu);
        }
        if let Some(ac) = ac {
            // SAFETY: the headers live as long as the cache.
            if unsafe { self.producer_outgrew_first_array(ac) } {
                if let Some(ac) = self.stop_local(cpu) {
                    // SAFETY: stopped above: the header is ours; `cpu`'s cache.
                    unsafe {
                        if (*ac).first_array != 0 {
                            self.widen(ac, cpu);
                        }
                        (*ac).lock.unlock();
                    }
                }
            }
            // The CPU's own limit, which a consumer's overflows may have lowered below
            // the tuned one: a refill sized by the tuned limit would not fit, and what
            // did not would go straight back to the node. Read outside the cache's lock,
            // as the statistics read `avail`: a hint, and a refill that no longer fits
            // is given back below.
            // SAFETY: the headers live as long as the cache.
            let limit = unsafe { ptr::read_volatile(ptr::addr_of!((*ac).limit)) };
            // SAFETY: as above.
            batch = unsafe { growth::refill_count(ac, self.geom().size, batch, limit) };
        }
        let mut buf = ObjBuf::new();
        // Objects of this CPU that other CPUs freed come home first (see `remote`).
        let mut n = self.inbox_take(cpu, &mut buf);
        if n == 0 {
            // SAFETY: objects move between the node's lists (under its lock) and `buf`;
            // the caller holds no list lock.
            n = unsafe { transfer::fill_buf(self, node, &mut buf, batch as usize, plain as usize) };
        }
        if n == 0 {
            return ptr::null_mut();
        }
        // SAFETY: `fill_buf` wrote the first `n`.
        let buf = unsafe { buf.objs(n) };
        transfer::order_for_pops(self, buf);
        let obj = buf[n - 1];
        // SAFETY: as in `alloc`; the `n - 1` objects before `obj` are the cache's and
        // nobody else's.
        let pushed = unsafe { sys::rseq::stack_push_all(base.cast(), &buf[..n - 1]) };
        if pushed < n - 1 {
            // SAFETY: objects of this cache nobody holds; no list lock is held. (Each
            // to its own node: an inbox's may come from a node the thread left.)
            unsafe { self.send_home(&buf[pushed..n - 1]) };
        }
        // Counted for `free_full` and the next refill's size: this CPU's cache emptied
        // and kept `pushed + 1` objects (what went back to the node was not taken).
        if let Some(ac) = ac {
            // SAFETY: the headers live as long as the cache.
            unsafe { growth::note_refill(ac, pushed as u32 + 1) };
        }
        reap::maybe_reap();
        obj
    }

    /// The rseq path's `cache_flusharray`: moves the `batchcount` oldest objects of the
    /// CPU's full array cache to the node and pushes `obj`; when the cache is stopped by
    /// another thread, pops what it can instead. An empty cache goes to
    /// [`free_into_empty`](Self::free_into_empty).
    #[cold]
    unsafe fn free_flush_rseq(&self, base: *mut ArrayCache, obj: *mut u8) {
        if self.debug() {
            // SAFETY: `obj` is the cache's and no longer used, as for `free`.
            return unsafe { self.free_fallback(obj) };
        }
        let batch = (self.batchcount.load(Ordering::Relaxed) as usize).clamp(1, CHUNK);
        // As the kernel's `cache_flusharray`, give the node the oldest objects (the
        // bottom of the stack) and keep the ones freed last, still in this CPU's data
        // cache: popping the top instead sent exactly those to the next CPU that
        // refills from the node, whose accesses to them then missed. Shifting the rest
        // down is no single sequence, so the cache is stopped for it: its lock, and a
        // restart of the sequences on its CPU if this thread is no longer there.
        let cpu = sys::cpu::current();
        // A CPU's first free into the cache comes here (its header refuses the pushes
        // until prepared).
        let mut ac = self.cpu_ac(cpu);
        if ac.is_none() && self.prepare_cpu(cpu) {
            ac = self.cpu_ac(cpu);
        }
        if let Some(ac) = ac {
            // SAFETY: the headers live as long as the cache; the count is atomic.
            unsafe { (*ac).free_misses.fetch_add(1, Ordering::Relaxed) };
        }
        if let Some(ac) = self.stop_local(cpu) {
            // Not full (empty, or refilled or drained by another thread on this CPU
            // since the push failed, or this thread moved): no overflow to count.
            // SAFETY: the cache is stopped: its header is ours.
            if unsafe { (*ac).avail < (*ac).limit } {
                // SAFETY: this thread holds `ac`'s lock (`cpu`'s), settled, and no list
                // lock; `obj` as for `free`.
                return unsafe { self.free_locked(ac, cpu, obj) };
            }
            // The push cannot look below the top; the flush looks at what the pops would
            // have taken (a cold path).
            // SAFETY: the cache is stopped: its entries are ours; `avail` of them are
            // set.
            let top = unsafe {
                let avail = (*ac).avail as usize;
                core::slice::from_raw_parts(ArrayCache::entries(ac), avail)
                    [avail.saturating_sub(batch)..]
                    .contains(&obj)
            };
            if top {
                // SAFETY: ours, locked above.
                unsafe { (*ac).lock.unlock() };
                self.double_free_cached(obj);
            }
            // SAFETY: this thread holds `ac`'s lock (`cpu`'s), settled, which `free_full`
            // releases, and no list lock; `obj` as for `free`.
            unsafe { self.free_full(ac, cpu, obj) };
            return;
        }
        // Stopped by someone else: pop what can be popped.
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
        reap::maybe_reap();
    }

    /// Gives objects back to the calling CPU's node: into its shared cache while it has
    /// room, the rest to their slabs.
    unsafe fn give_back(&self, objs: &[*mut u8]) {
        // SAFETY: the caller's contract.
        unsafe { self.give_back_to(topology::cpu_to_node(sys::cpu::current()), objs) };
    }

    /// Gives objects back to `node`: into its shared cache while it has room, the rest
    /// to their slabs.
    ///
    /// # Safety
    /// The objects are the cache's and held by nobody else; the caller holds no list
    /// lock.
    pub(super) unsafe fn give_back_to(&self, node: usize, objs: &[*mut u8]) {
        let mut to_destroy = PageList::new();
        // SAFETY: the caller's contract.
        unsafe { transfer::give_back(self, node, objs, &mut to_destroy) };
        // SAFETY: `free_block` put there only empty slabs of this cache, off every list.
        unsafe { self.destroy_slabs(&mut to_destroy, false) };
    }

    /// `cache_alloc_refill`: fills the CPU's empty array cache with `batchcount`
    /// objects, or more for a producer (`growth::refill_count`), and pops one. The
    /// caller holds the array cache's lock.
    #[cold]
    unsafe fn cache_alloc_refill(&self, ac: *mut ArrayCache, cpu: usize) -> *mut u8 {
        if self.debug() {
            return self.alloc_fallback();
        }
        // The node the thread's cpuset places slab memory on (`cpuset_slab_spread_node`
        // with SPREAD_SLAB), normally the CPU's own.
        let node = cpuset::mem_node_for_kind(topology::cpu_to_node(cpu), MemKind::Slab);
        // SAFETY: the caller holds `ac`'s lock, and no list lock.
        // Sized by the cache's own limit (read under its lock): at most its batch or
        // half that limit, either within it.
        let obj = unsafe {
            if self.producer_outgrew_first_array(ac) {
                self.widen(ac, cpu);
            }
            if let Some(obj) = self.refill_from_inbox(ac, cpu) {
                return obj;
            }
            let plain = (*ac).batchcount;
            let batch = growth::refill_count(ac, self.geom().size, plain, (*ac).limit);
            transfer::alloc_refill(self, node, ac, batch, plain)
        };
        // Counted for `free_full`, as on the rseq path: the refill found the cache
        // empty, so it took what it holds now and `obj`.
        // SAFETY: the caller holds `ac`'s lock.
        unsafe { growth::note_refill(ac, (*ac).avail + u32::from(!obj.is_null())) };
        obj
    }

    /// The tried-lock refill from the CPU's inbox (`remote`): what fits under the
    /// empty cache's limit goes in, one object is popped, the rest goes to the node.
    /// None when the inbox is empty.
    ///
    /// # Safety
    /// The caller holds `ac`'s lock (`cpu`'s cache, empty) and no list lock.
    unsafe fn refill_from_inbox(&self, ac: *mut ArrayCache, cpu: usize) -> Option<*mut u8> {
        let mut buf = ObjBuf::new();
        let n = self.inbox_take(cpu, &mut buf);
        if n == 0 {
            return None;
        }
        // SAFETY: `inbox_take` wrote the first `n`.
        let objs = unsafe { buf.objs(n) };
        transfer::order_for_pops(self, objs);
        let obj = objs[n - 1];
        // SAFETY: the caller holds `ac`'s lock: its header is ours.
        let keep = unsafe { ((*ac).limit as usize).min(n - 1) };
        // SAFETY: as above, and the cache is empty: the first `keep <= limit` entries
        // are in its array; `objs` is a stack buffer apart from it.
        unsafe {
            ptr::copy_nonoverlapping(objs[n - 1 - keep..].as_ptr(), ArrayCache::entries(ac), keep);
            (*ac).avail = keep as u32;
            (*ac).touched = 1;
            growth::note_refill(ac, keep as u32 + 1);
        }
        // SAFETY: objects of this cache held by nobody; no list lock is held.
        unsafe { self.send_home(&objs[..n - 1 - keep]) };
        Some(obj)
    }
}
