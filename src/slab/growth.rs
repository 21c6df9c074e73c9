//! How far a CPU's array caches grow past their tuned limits, and who pays for it.
//!
//! SLAB's array caches are sized once, by object size (`enable_cpucache`), and
//! whatever a CPU cycles through beyond that goes through the node: a flush of the
//! oldest batch to the shared cache or the slabs (`free_block`, one object at a time),
//! then a refill back from there. A program that builds a structure of a few thousand
//! blocks and drops it, over and over, pays that round trip for each block beyond the
//! limit: 1600 blocks of 64 B cost twice tcmalloc's time per block, whose per-thread
//! lists grow with use. So, as tcmalloc's caches do, a CPU's array cache grows by what
//! it fell short (what it refilled since it last overflowed, at once for a burst) while the
//! CPU cycles through more objects than it holds, up to the capacity of its full array, and shrinks
//! while the CPU only frees (a consumer's cache: its objects only wait there for the
//! next flush, and how many wait does not change how often it flushes).
//!
//! What the caches of one CPU hold beyond their free growth ([`free_limit`]: 128 KiB
//! of objects a class, as before there was a budget) is charged to the CPU, at most
//! [`cpu_budget`] for all its caches together, so a program that cycles through many
//! classes cannot make every one of them large. The charges of all CPUs together come
//! out of one pool ([`pool`]), so that memory stays bounded however many CPUs there
//! are, while the CPUs in use take what the idle ones leave: as tcmalloc moves the
//! capacity of idle CPUs' caches to busy ones, a thread alone on a machine of 16 CPUs
//! gets the budget it gets on 2. The reaper gives an idle cache's growth back, and its
//! charge to the CPU and the pool with it.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::array_cache::ArrayCache;
use super::transfer::FLUSH_MAX;
use crate::sys;
use crate::topology::{self, NR_CPUS};

/// Most objects a CPU's array cache may grow to hold: an entry array of 32 KiB, the
/// largest percpu area (tcmalloc's per-thread lists stop growing at 8192). With 2048,
/// bursts of 3000-4096 blocks of 64 B, which the CPU's budget pays for, passed the
/// excess through the node on every round: 20.6-23.7 ns a block freed out of order
/// and allocated again, against 13.8-15.2 with 4096 (mimalloc 12.6, tcmalloc 11.6).
pub const GROWN_CACHE_MAX: u32 =
    (crate::percpu::PCPU_MAX_ALLOC_SIZE / core::mem::size_of::<*mut u8>()) as u32;

/// Most bytes of objects one CPU's array cache of a class may grow to hold.
pub const GROWN_CACHE_BYTES: usize = 2 << 20;

/// Most bytes of objects a CPU's array cache grows to hold before its growth is charged
/// to the CPU's budget (see [`free_limit`]).
pub const FREE_GROWTH_BYTES: usize = 128 << 10;

/// Most objects a CPU's array cache grows to hold before its growth is charged.
pub const FREE_GROWTH_MAX: u32 = 512;

/// Most bytes of objects a producer's refill takes (see [`refill_count`]).
pub const REFILL_BYTES: usize = 16 << 10;

/// What the array caches of all CPUs together may hold beyond their free growth; each
/// CPU's share of it is [`cpu_budget`].
pub const GROWN_TOTAL_BYTES: usize = 2 << 20;

/// Bounds on one CPU's share of [`GROWN_TOTAL_BYTES`].
pub const GROWN_CPU_MIN_BYTES: usize = 128 << 10;
/// See [`GROWN_CPU_MIN_BYTES`].
pub const GROWN_CPU_MAX_BYTES: usize = 512 << 10;

/// Bytes each CPU's array caches hold room for beyond their free growth (the sum of
/// their `grown` entries times their object sizes).
static CHARGED: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(0) }; NR_CPUS];

/// The sum of [`CHARGED`]: what the pool has given out.
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The capacity a CPU's array cache of `size`-byte objects gets at setup: room for its
/// limit to grow to [`GROWN_CACHE_BYTES`] of objects, at most [`GROWN_CACHE_MAX`]
/// entries, at least `limit`. The entry arrays are committed lazily, so the room costs
/// address space until it is used.
pub fn grown_capacity(size: usize, limit: u32) -> u32 {
    objects_within(GROWN_CACHE_BYTES, GROWN_CACHE_MAX, size, limit)
}

/// How many `size`-byte objects `bytes` hold, at most `max`, never below `base`.
fn objects_within(bytes: usize, max: u32, size: usize, base: u32) -> u32 {
    ((bytes / size.max(1)).min(u32::MAX as usize) as u32).clamp(base, max.max(base))
}

/// The limit up to which a cache of `size`-byte objects with tuned limit `base` grows
/// without charge: [`FREE_GROWTH_BYTES`] of objects, at most [`FREE_GROWTH_MAX`], at
/// least `base`. Every class may grow that far, as all could before there was a
/// budget: with the budget charged from the tuned limit on, a few classes that grew
/// large kept the others at their tuned limits, and `sh6bench` (1000 blocks of 1-1000
/// B at a time) took 1.5x its time.
pub fn free_limit(size: usize, base: u32) -> u32 {
    objects_within(FREE_GROWTH_BYTES, FREE_GROWTH_MAX, size, base)
}

/// Bytes one CPU's array caches may hold room for beyond their free growth, together:
/// [`GROWN_CPU_MAX_BYTES`], and no more than the [`pool`] has. More lets a few
/// classes' larger bursts stay on the CPU (`glibc-simple`'s 1600 blocks of 1 KiB), but
/// producers and consumers that share CPUs keep it filled: on 2 CPUs the suite's
/// `channel` peaked at 11 MiB with 1 MiB a CPU, 10 with 512 KiB, 9 without growth;
/// `rptest` 22, 21 and 20.
pub fn cpu_budget() -> usize {
    cpu_budget_for(topology::nr_online_cpus())
}

/// [`cpu_budget`] on a machine of `nr_cpus` CPUs.
pub const fn cpu_budget_for(nr_cpus: usize) -> usize {
    let pool = pool_for(nr_cpus);
    if pool < GROWN_CPU_MAX_BYTES {
        pool
    } else {
        GROWN_CPU_MAX_BYTES
    }
}

/// Bytes the array caches of all CPUs together may hold room for beyond their free
/// growth: each online CPU's share ([`share_for`]) pooled, 1 MiB on 2 CPUs, 2 MiB on 4
/// to 16, 128 KiB a CPU past 16.
///
/// Before the pool each CPU had only its share: a single-threaded program on a
/// machine of 16 CPUs got 128 KiB where on 2 it got 512, and the growth that keeps
/// its bursts on the CPU stopped early. The suite's `words` (one thread building and
/// dropping maps of strings), on 2 CPUs with the budget computed for 16: 682 ms with
/// the share alone, 641 with the pool, 639 with 2 CPUs' figures (jemalloc 656-670).
pub fn pool() -> usize {
    pool_for(topology::nr_online_cpus())
}

/// [`pool`] on a machine of `nr_cpus` CPUs.
pub const fn pool_for(nr_cpus: usize) -> usize {
    let nr = if nr_cpus == 0 { 1 } else { nr_cpus };
    nr * share_for(nr)
}

/// What the pool holds for each CPU on a machine of `nr_cpus` CPUs:
/// [`GROWN_TOTAL_BYTES`] divided among them, within
/// [`GROWN_CPU_MIN_BYTES`]..=[`GROWN_CPU_MAX_BYTES`] (512 KiB a CPU up to 4 CPUs,
/// 128 KiB from 16 on).
pub const fn share_for(nr_cpus: usize) -> usize {
    let share = GROWN_TOTAL_BYTES / if nr_cpus == 0 { 1 } else { nr_cpus };
    if share < GROWN_CPU_MIN_BYTES {
        GROWN_CPU_MIN_BYTES
    } else if share > GROWN_CPU_MAX_BYTES {
        GROWN_CPU_MAX_BYTES
    } else {
        share
    }
}

/// Bytes `cpu`'s array caches hold room for beyond their free growth.
pub fn charged(cpu: usize) -> usize {
    CHARGED.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Bytes the array caches of all CPUs hold room for beyond their free growth: what
/// the [`pool`] has given out.
pub fn total_charged() -> usize {
    TOTAL.load(Ordering::Relaxed)
}

/// Bytes a CPU whose caches are charged `cpu_charged` bytes may still take while all
/// CPUs' are charged `total`, on a machine of `nr_cpus` CPUs: what is left of the
/// CPU's budget and of the pool, the smaller.
pub const fn room_for(cpu_charged: usize, total: usize, nr_cpus: usize) -> usize {
    let own = cpu_budget_for(nr_cpus).saturating_sub(cpu_charged);
    let pool = pool_for(nr_cpus).saturating_sub(total);
    if own < pool {
        own
    } else {
        pool
    }
}

/// Whether a CPU whose caches are charged `cpu_charged` bytes may take `extra` more
/// while all CPUs' are charged `total`, on a machine of `nr_cpus` CPUs.
pub const fn may_charge(cpu_charged: usize, total: usize, extra: usize, nr_cpus: usize) -> bool {
    extra <= room_for(cpu_charged, total, nr_cpus)
}

/// Bytes `cpu` may still charge now ([`room_for`]).
fn room(cpu: usize) -> usize {
    room_for(charged(cpu), total_charged(), topology::nr_online_cpus())
}

/// Sets the limit of `cpu`'s array cache `ac` (of `size`-byte objects, tuned limit
/// `base`) to `want`, charging what it holds beyond [`free_limit`] to the CPU and the
/// pool. A rise that the CPU's budget or the pool cannot pay for is refused: the limit
/// stays and false is returned. A fall always succeeds and pays back.
///
/// # Safety
/// The caller holds `ac`'s lock (or has it stopped); `ac` is `cpu`'s array cache.
pub unsafe fn set_limit(
    ac: *mut ArrayCache,
    cpu: usize,
    size: usize,
    base: u32,
    want: u32,
) -> bool {
    let Some(charged) = CHARGED.get(cpu) else {
        return false;
    };
    // SAFETY: the header is the caller's under its lock (the contract).
    let old = unsafe { (*ac).grown } as usize;
    let new = want.saturating_sub(free_limit(size, base)) as usize;
    if new > old {
        let extra = (new - old) * size;
        // Relaxed: a budget, not a lock; nothing else is published through it. Both
        // counts are taken first and given back on refusal, so two CPUs that race for
        // the pool's last bytes may both be refused, never both served past it.
        let before = charged.fetch_add(extra, Ordering::Relaxed);
        let total = TOTAL.fetch_add(extra, Ordering::Relaxed);
        if !may_charge(before, total, extra, topology::nr_online_cpus()) {
            charged.fetch_sub(extra, Ordering::Relaxed);
            TOTAL.fetch_sub(extra, Ordering::Relaxed);
            return false;
        }
    } else {
        let back = (old - new) * size;
        charged.fetch_sub(back, Ordering::Relaxed);
        TOTAL.fetch_sub(back, Ordering::Relaxed);
    }
    // SAFETY: as above.
    unsafe {
        (*ac).grown = new as u32;
        (*ac).limit = want;
    }
    true
}

/// Puts `cpu`'s emptied array cache `ac` back to its tuned limit `base`, paying its
/// growth back, and forgets its refills and overflows: a cache drained by
/// `kmem_cache_shrink`, a dead CPU's, starts over.
///
/// # Safety
/// As for [`set_limit`].
pub unsafe fn reset(ac: *mut ArrayCache, cpu: usize, size: usize, base: u32) {
    // SAFETY: the header is the caller's under its lock (the contract).
    unsafe {
        set_limit(ac, cpu, size, base, base.min((*ac).capacity));
        (*ac).refilled.store(0, Ordering::Relaxed);
        (*ac).dry_flushes = 0;
    }
}

/// The low bits of the calling thread's id, as `ArrayCache::refiller` keeps them.
fn this_thread() -> u32 {
    sys::cpu::thread_id() as u32
}

/// Counts a refill of `n` objects into the array cache `ac`, which found it empty.
/// A refill by another thread than the last one starts the count again: what counts
/// as one thread's shortfall is what that thread took.
///
/// # Safety
/// `ac` is a live array cache header (its count and refiller are atomic).
pub unsafe fn note_refill(ac: *mut ArrayCache, n: u32) {
    let me = this_thread();
    // SAFETY: a live header (the contract); both fields are atomic.
    unsafe {
        if (*ac).refiller.swap(me, Ordering::Relaxed) == me {
            (*ac).refilled.fetch_add(n, Ordering::Relaxed);
        } else {
            (*ac).refilled.store(n, Ordering::Relaxed);
        }
    }
}

/// How many objects the next refill of the empty array cache `ac` (of `size`-byte
/// objects, holding at most `limit`: its own limit, which growth and a consumer's
/// overflows move) takes from the node: its `batchcount`, or more for a thread that
/// keeps emptying the cache without ever filling it (a producer, whose objects other
/// CPUs free): half of what it refilled since the cache last overflowed, up to half of
/// `limit`, [`REFILL_BYTES`] of objects and [`FLUSH_MAX`].
///
/// Every refill takes the node's list lock, which the consumers' flushes take too, and
/// the lock's cache line crosses between their CPUs each time: in a producer/consumer
/// program (`xmalloc-test`, 64 B blocks made by two threads and freed by two others)
/// the lock was a sixth of the time. Growing by half of what was taken, a producer's
/// refills reach the most within a few (60, 60, 60, 90, 135, 202, 256 for 64 B), while
/// a thread that cycles through its objects overflows the cache and starts over at a
/// batch.
///
/// The bound in bytes keeps what a producer has taken and not yet handed out within
/// its CPU's data cache: a producer of 16-512 B blocks in 30 classes, each refill up
/// to 256 of them, spread its allocations over 2 MiB instead of half of one and ran
/// 10% longer (the suite's Rust `xmalloc-test`). And larger objects need fewer trips
/// to the lock for the same work: the program's own work on each object grows with
/// its size.
///
/// # Safety
/// `ac` is a live array cache header (the counts read are atomic).
pub unsafe fn refill_count(ac: *mut ArrayCache, size: usize, batch: u32, limit: u32) -> u32 {
    let batch = batch.max(1);
    // SAFETY: a live header (the contract); both fields are atomic.
    let taken = unsafe {
        if (*ac).refiller.load(Ordering::Relaxed) == this_thread() {
            (*ac).refilled.load(Ordering::Relaxed)
        } else {
            0
        }
    };
    let bytes = (REFILL_BYTES / size.max(1)).min(FLUSH_MAX) as u32;
    let most = (limit / 2).min(bytes).max(batch);
    (taken / 2).clamp(batch, most)
}

/// What a full array cache does about the overflow the caller is about to handle:
/// true when its limit grew past `avail` instead, so the free can push without a
/// flush.
///
/// The objects refilled since the last overflow say by how much the cache fell short:
/// a thread that emptied it and took `r` objects from the node before filling it again
/// cycles through about `r` objects more than it holds (refills by another thread
/// count as one batch at most: [`note_refill`]). Where that shortfall reaches
/// past the free growth ([`free_limit`]) it is a burst, and the limit grows by `r`
/// (in whole batches) at once (up to the capacity, and as far as the CPU's budget pays), so that a program
/// that builds and drops a few thousand blocks at a time keeps the next round on the
/// CPU. Within the free growth the limit grows a batch at a time, as it always did: a
/// class whose use wanders up and down, or producers and consumers sharing the CPU,
/// held more for no gain when it took `r` at once. A cache that overflows two
/// limits' worth of objects without a refill only frees (a consumer's): its limit
/// shrinks by a batch, down to one batch, but only within the free growth: past it the
/// frees that end each burst overflow without refills too, and shrank the limit back
/// as fast as the bursts grew it. The reaper lowers an idle cache's growth, and the
/// budget bounds what is left meanwhile.
///
/// # Safety
/// As for [`set_limit`].
pub unsafe fn on_overflow(ac: *mut ArrayCache, cpu: usize, size: usize, base: u32) -> bool {
    // SAFETY: the header is the caller's under its lock (the contract).
    unsafe {
        let (limit, batch, capacity) = ((*ac).limit, (*ac).batchcount.max(1), (*ac).capacity);
        let mut short = (*ac).refilled.swap(0, Ordering::Relaxed);
        if (*ac).refiller.load(Ordering::Relaxed) != this_thread() {
            // Another thread's refills (a producer's, freed here by a consumer on the
            // same CPU) are no burst of this one: at most a batch, as a wander.
            short = short.min(batch);
        }
        let free = free_limit(size, base);
        if short == 0 {
            (*ac).dry_flushes += 1;
            // A burst's growth past the free growth is left to the reaper: the frees
            // that end a burst overflow without refills too, and shrank it back as
            // fast as it grew.
            if limit > batch && limit <= free && (*ac).dry_flushes >= 2 * limit / batch {
                (*ac).dry_flushes = 0;
                set_limit(ac, cpu, size, base, (limit - batch).max(batch));
            }
            return false;
        }
        (*ac).dry_flushes = 0;
        if limit >= capacity {
            return false;
        }
        let want = limit.saturating_add(short.div_ceil(batch).saturating_mul(batch));
        // Within the free growth a batch at a time, as a class whose use wanders grows;
        // a shortfall past it is a burst, and the limit takes it at once.
        let want = if want <= free { limit + batch } else { want }.min(capacity);
        if !set_limit(ac, cpu, size, base, want) {
            // As many batches as what is left of the budget and the pool pays for
            // (racy: another cache may take it first, and then this one is refused).
            let left = room(cpu) / size.max(1);
            let step = (left.min(u32::MAX as usize) as u32 / batch).saturating_mul(batch);
            if step == 0 || !set_limit(ac, cpu, size, base, (limit + step).min(want)) {
                return false;
            }
        }
        (*ac).avail < (*ac).limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool holds 512 KiB a CPU up to 4 CPUs, then 2 MiB divided among them, down
    /// to 128 KiB a CPU from 16 CPUs on; any one CPU may take 512 KiB of it.
    #[test]
    fn the_pool_is_shared_among_the_cpus() {
        assert_eq!(share_for(0), 512 << 10);
        assert_eq!(share_for(2), 512 << 10);
        assert_eq!(share_for(4), 512 << 10);
        assert_eq!(share_for(8), 256 << 10);
        assert_eq!(share_for(16), 128 << 10);
        assert_eq!(share_for(256), 128 << 10);
        assert_eq!(pool_for(0), 512 << 10);
        assert_eq!(pool_for(2), 1 << 20);
        assert_eq!(pool_for(4), 2 << 20);
        assert_eq!(pool_for(16), 2 << 20);
        assert_eq!(pool_for(256), 32 << 20);
        for nr in [1, 2, 4, 8, 16, 256] {
            assert_eq!(cpu_budget_for(nr), 512 << 10, "{nr} CPUs");
        }
    }

    /// On 16 CPUs one CPU may charge 512 KiB, four times its share of the pool, while
    /// the others charge nothing; the pool bounds all of them together.
    #[test]
    fn a_busy_cpu_takes_what_idle_ones_leave() {
        let (kib, nr) = (1 << 10, 16);
        // Alone: its whole budget, in one charge or in steps.
        assert!(may_charge(0, 0, 512 * kib, nr));
        assert!(may_charge(384 * kib, 384 * kib, 128 * kib, nr));
        // Never past its budget.
        assert!(!may_charge(512 * kib, 512 * kib, 8 * kib, nr));
        // Four busy CPUs use up the pool: a fifth gets nothing until one pays back.
        assert!(may_charge(0, 1536 * kib, 512 * kib, nr));
        assert!(!may_charge(0, 2048 * kib, 8 * kib, nr));
        assert!(may_charge(0, 2040 * kib, 8 * kib, nr));
        // On 2 CPUs as before: each its 512 KiB, 1 MiB in all.
        assert!(may_charge(0, 512 * kib, 512 * kib, 2));
        assert!(!may_charge(0, 1024 * kib, 8 * kib, 2));
    }

    /// A thread's refills grow by half of what it took since the last overflow, from
    /// a batch up to half the limit and 16 KiB of objects; another thread's refill
    /// starts from a batch.
    #[test]
    fn refills_grow_with_what_the_thread_took() {
        let mut ac = ArrayCache::empty();
        let ac: *mut ArrayCache = &mut ac;
        let mut sizes = Vec::new();
        for _ in 0..8 {
            // SAFETY: a live header on this stack.
            let n = unsafe { refill_count(ac, 64, 60, 512) };
            // SAFETY: as above.
            unsafe { note_refill(ac, n) };
            sizes.push(n);
        }
        assert_eq!(sizes, [60, 60, 60, 90, 135, 202, 256, 256]);
        // Never past FLUSH_MAX, half the limit or 16 KiB of objects, never below the
        // batch.
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 16, 60, 4096) }, FLUSH_MAX as u32);
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 64, 60, 64) }, 60);
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 128, 60, 512) }, 128);
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 512, 27, 128) }, 32);
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 1024, 27, 64) }, 27);
        // Another thread refilled last: a batch.
        // SAFETY: as above; the field is atomic.
        unsafe {
            (*ac)
                .refiller
                .store(this_thread().wrapping_add(1), Ordering::Relaxed)
        };
        // SAFETY: as above.
        assert_eq!(unsafe { refill_count(ac, 64, 60, 512) }, 60);
    }

    /// Room to grow: 2 MiB of objects, at most 4096 entries, never below the limit.
    #[test]
    fn capacity_follows_the_object_size() {
        assert_eq!(grown_capacity(64, 512), 4096);
        assert_eq!(grown_capacity(512, 128), 4096);
        assert_eq!(grown_capacity(1024, 64), 2048);
        assert_eq!(grown_capacity(8192, 8), 256);
        assert_eq!(grown_capacity(32768, 8), 64);
        assert_eq!(grown_capacity(1 << 20, 1), 2);
        assert_eq!(grown_capacity(4 << 20, 1), 1);
    }
}
