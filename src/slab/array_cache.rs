//! `struct array_cache`: a LIFO stack of object pointers. Each CPU has one per cache
//! (guarded by a tried lock), and each node one shared by its CPUs (guarded by the
//! node's list lock).
//!
//! A per-CPU cache is two per-CPU areas: the header, which stays where it is for the
//! cache's lifetime, and the entry array it points to, which the CPU's first overflow
//! of a small first array (`RawCache::widen`) and retuning replace under the header's
//! lock. Nothing reaches the entries without that lock, or inside a
//! restartable sequence that checks it and is restarted before the swap (see
//! `fastpath`), so the old array can be freed as soon as every CPU has switched — no
//! grace period needed. A shared
//! cache keeps its entries right after its header.
//!
//! A pop or a push is: load `avail`, load or store `entry[avail]`, store `avail`. The
//! last store commits, so the stack is consistent after every store.

use core::ptr;
use core::sync::atomic::AtomicU32;

use crate::sync::TryLock;

/// Bytes before `entry[0]`: the header, padded to a cache line.
pub const AC_HEADER: usize = 64;

/// One array cache: a header and, at `entry`, its array of object pointers (after the
/// header in the same allocation, or elsewhere: see `init_with`).
#[repr(C)]
pub struct ArrayCache {
    /// The per-CPU lock (unused in a shared cache, which the list lock guards).
    pub lock: TryLock,
    /// Number of cached objects: `entry[..avail]`.
    pub avail: u32,
    /// Most objects the cache holds.
    pub limit: u32,
    /// Objects moved per refill or flush.
    pub batchcount: u32,
    /// Set by the slow paths that refill or flush the cache and by the tried-lock
    /// path's allocations, and cleared by the reaper, which drains untouched caches.
    /// The restartable pop does not set it (see `sys::rseq::stack`): the reaper also
    /// counts a cache whose `avail` moved since its last look (`reap_avail`) as used.
    pub touched: u32,
    /// Capacity of `entry`: the limit grows up to it while the CPU cycles through more
    /// objects than the limit holds, shrinks while the CPU only frees, and the reaper
    /// puts it back (see `free_full`).
    pub capacity: u32,
    /// The entry array: `capacity` pointers.
    pub entry: *mut *mut u8,
    /// Objects refilled from the node since the cache last overflowed: a cache that
    /// empties and fills again is cycling through about this many objects more than its
    /// limit holds (see `growth::on_overflow`). Counted outside the lock by the rseq
    /// refill, so atomic.
    pub refilled: AtomicU32,
    /// Overflows since the CPU last refilled the cache (under the lock): a cache that
    /// overflows again and again without refilling only frees (see
    /// `growth::on_overflow`).
    pub dry_flushes: u32,
    /// Entries of `limit` beyond what the cache may grow to without charge, charged to
    /// its CPU's growth budget (see `growth`).
    pub grown: u32,
    /// The thread that refilled the cache last (low bits of its id): only refills by
    /// the thread that then overflows count as its burst (see `growth`).
    pub refiller: AtomicU32,
    /// Non-zero where a free may push onto this cache while it is empty, as for any
    /// other: objects of a cache line or more. Smaller ones go under a batch of the
    /// CPU's own instead (see `RawCache::free_into_empty`), which their fast path
    /// leaves to the slow one. Read by the push sequence
    /// (`sys::rseq::stack_push_nonempty`).
    pub into_empty: u32,
    /// Frees the push sequence refused here (a full, empty or stopped cache), which
    /// took the slow path: the kernel's `freemiss` statistic, for `stats::caches`.
    pub free_misses: AtomicU32,
    /// Non-zero while `entry` is the cache's first, small array (see
    /// `RawCache::widen`): a CPU's cache moves to its full array the first time it
    /// fills the small one.
    pub first_array: u32,
    /// `avail` when the reaper last looked (see `touched`).
    pub reap_avail: u32,
}

// The rseq fast path addresses the header by its size and these offsets (loom's
// larger atomics change both; the models take no rseq path).
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<ArrayCache>() == AC_HEADER);
#[cfg(not(loom))]
const _: () = {
    use core::mem::offset_of;
    assert!(crate::sys::rseq::stack::laid_out([
        offset_of!(ArrayCache, lock),
        offset_of!(ArrayCache, avail),
        offset_of!(ArrayCache, limit),
        offset_of!(ArrayCache, entry),
    ]));
    assert!(offset_of!(ArrayCache, into_empty) == crate::sys::rseq::stack::INTO_EMPTY);
};

/// Bytes needed for an array cache of `capacity` entries, rounded to a cache line.
pub const fn ac_bytes(capacity: usize) -> usize {
    (AC_HEADER + capacity * 8 + 63) & !63
}

impl ArrayCache {
    /// A header with no entries (`limit` and `capacity` 0): a node's shared cache
    /// before `set_shared` gives it some.
    #[cfg(not(loom))]
    pub const fn empty() -> ArrayCache {
        ArrayCache {
            lock: TryLock::new(),
            avail: 0,
            limit: 0,
            batchcount: 0,
            touched: 0,
            capacity: 0,
            entry: ptr::null_mut(),
            refilled: AtomicU32::new(0),
            dry_flushes: 0,
            grown: 0,
            refiller: AtomicU32::new(0),
            into_empty: 0,
            free_misses: AtomicU32::new(0),
            first_array: 0,
            reap_avail: 0,
        }
    }

    /// Initialises an array cache in place, its entries following the header.
    ///
    /// # Safety
    /// `ac` points to at least `ac_bytes(capacity)` writable bytes.
    pub unsafe fn init(ac: *mut ArrayCache, limit: u32, batchcount: u32, capacity: u32) {
        // SAFETY: the `ac_bytes(capacity)` bytes at `ac` hold the header and, from
        // `AC_HEADER` on, `capacity` pointers: both are in the caller's writable block.
        unsafe {
            Self::init_with(
                ac,
                limit,
                batchcount,
                capacity,
                ac.cast::<u8>().add(AC_HEADER).cast(),
            );
        }
    }

    /// Initialises an array cache header whose entries live at `entry`.
    ///
    /// # Safety
    /// `ac` points to a writable header and `entry` to `capacity` writable pointers.
    pub unsafe fn init_with(
        ac: *mut ArrayCache,
        limit: u32,
        batchcount: u32,
        capacity: u32,
        entry: *mut *mut u8,
    ) {
        // SAFETY: `ac` points to a writable header (the contract); nothing is read or
        // dropped from it, so it may be uninitialised.
        unsafe {
            ac.write(ArrayCache {
                lock: TryLock::new(),
                avail: 0,
                limit,
                batchcount,
                touched: 0,
                capacity,
                entry,
                refilled: AtomicU32::new(0),
                dry_flushes: 0,
                grown: 0,
                refiller: AtomicU32::new(0),
                into_empty: 0,
                free_misses: AtomicU32::new(0),
                first_array: 0,
                reap_avail: 0,
            });
        }
    }

    /// Whether the header at `ac` was prepared for its CPU (`RawCache::prepare_cpu`):
    /// a header the percpu allocator zeroed has no capacity. A read only, so a header
    /// of a CPU that never ran a thread stays unwritten (on the kernel's zero page).
    ///
    /// # Safety
    /// `ac` points to a live header (prepared or zeroed).
    #[inline(always)]
    pub unsafe fn is_prepared(ac: *const ArrayCache) -> bool {
        // SAFETY: a live header (the contract); `capacity` changes from 0 once, under
        // the header's lock, and a racing reader that sees 0 only skips a cache with
        // nothing in it.
        unsafe { ptr::read_volatile(ptr::addr_of!((*ac).capacity)) != 0 }
    }

    /// The entry array.
    ///
    /// # Safety
    /// `ac` is an initialised array cache, and its lock (or, for a shared cache, its
    /// node's list lock) is held: retuning swaps the array under it.
    #[inline(always)]
    pub unsafe fn entries(ac: *mut ArrayCache) -> *mut *mut u8 {
        // SAFETY: `ac` is initialised, and the lock the caller holds keeps a retune from
        // swapping `entry` while it is read.
        unsafe { (*ac).entry }
    }

    /// `transfer_objects`: moves up to `max` objects from the top of `from` to the top
    /// of `to` (bounded by `to`'s limit). Returns the number moved.
    ///
    /// # Safety
    /// The caller holds the locks of both caches.
    pub unsafe fn transfer(to: *mut ArrayCache, from: *mut ArrayCache, max: u32) -> u32 {
        // SAFETY: both caches' locks are held (the contract), so their counts are ours.
        let nr = unsafe {
            max.min((*from).avail)
                .min((*to).limit - (*to).avail.min((*to).limit))
        };
        if nr == 0 {
            return 0;
        }
        // SAFETY: as above. `nr <= from.avail` entries leave the top of `from`, and `to`
        // has room for `nr` more below its limit, which never exceeds its capacity. The
        // two are distinct caches (a CPU's and a node's shared one), so the arrays do not
        // overlap.
        unsafe {
            (*from).avail -= nr;
            ptr::copy_nonoverlapping(
                Self::entries(from).add((*from).avail as usize),
                Self::entries(to).add((*to).avail as usize),
                nr as usize,
            );
            (*to).avail += nr;
        }
        nr
    }

    /// Removes the `nr` oldest objects (the bottom of the stack), copying them to
    /// `out` first. Returns how many were removed.
    ///
    /// # Safety
    /// The caller holds the cache's lock and `out` has room for `nr` pointers.
    pub unsafe fn take_bottom(ac: *mut ArrayCache, nr: u32, out: *mut *mut u8) -> u32 {
        // SAFETY: the cache's lock is held (the contract), so its count is ours.
        let nr = nr.min(unsafe { (*ac).avail });
        // SAFETY: as above; the lock keeps the array in place.
        let e = unsafe { Self::entries(ac) };
        // SAFETY: `entry[..nr]` are cached objects (`nr <= avail`), and `out` has room for
        // `nr` pointers (the contract); it is a buffer outside this cache's array (a
        // stack buffer or another cache's entries).
        unsafe { ptr::copy_nonoverlapping(e, out, nr as usize) };
        // SAFETY: the `avail - nr` entries above them slide down inside the array, under
        // the lock; `copy` allows the overlap. Then `avail` commits the removal.
        unsafe {
            ptr::copy(e.add(nr as usize), e, ((*ac).avail - nr) as usize);
            (*ac).avail -= nr;
        }
        nr
    }
}
