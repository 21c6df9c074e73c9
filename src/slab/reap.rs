//! Giving cached memory back: `cache_reap` every two seconds from the slow paths or the
//! background reclaim thread (part of every untouched array cache, then surplus free
//! slabs), the growth reap (every 256 KiB of new slabs, what this CPU and its node
//! hold of caches nobody allocated from since the last one), `shrink` on demand, and
//! the reclaim thread's idle drain, `shrink` with tried per-CPU locks.

use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::array_cache::ArrayCache;
use super::cache::RawCache;
use super::growth;
use super::node::NodeLists;
use super::CHAIN;
use crate::page::list::PageList;
use crate::sync::MutexGuard;
use crate::{page, sys, topology};

/// Interval between reaps (the kernel's `REAPTIMEOUT_AC`).
pub const REAPTIMEOUT_MS: u64 = 2000;

static NEXT_REAP_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Schedules the first reap; called at boot.
pub(crate) fn arm() {
    NEXT_REAP_MS.store(sys::time::now_ms() + REAPTIMEOUT_MS, Ordering::Relaxed);
}

/// Called by every [`maybe_reap`] once boot registered it (the background reclaim
/// thread's starter, which sits above this layer); 0: none.
static SLOW_PATH_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Registers `hook` to run on every slab slow path, holding no lock (boot registers
/// the background reclaim thread's starter).
pub(crate) fn set_slow_path_hook(hook: fn()) {
    SLOW_PATH_HOOK.store(hook as usize, Ordering::Release);
}

/// Bytes of slabs grown since the last growth reap. A cache's slabs grown back within
/// what its frees gave back since the last timed reap (its `regrow_credit`) do not
/// count: a program that builds and drops more objects of one class than the caches
/// keep, round after round, frees slabs and grows them again every round without its
/// footprint growing, and counting them walked every cache each 256 KiB and drained
/// the idle ones (20 rounds of 2048 objects of 1 KiB emptied another cache's 1008).
/// Growth into pages another class gave back still counts: it is the program moving
/// on to other sizes, whose finished caches are better drained (counting only pages
/// never touched before, the footprint's own growth, drained them too late: peaks
/// 2-7% higher).
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// Slab growth between two growth reaps.
pub const GROWTH_REAP_BYTES: usize = 256 * 1024;

/// Counts a new slab of `bytes` that is growth (`cache_grow_begin`).
#[inline]
pub(crate) fn note_growth(bytes: usize) {
    GROWN.fetch_add(bytes, Ordering::Relaxed);
}

/// Reaps every cache if the interval has passed and no other thread is reaping, and
/// runs the growth reap when slabs grew by [`GROWTH_REAP_BYTES`] since the last one.
/// Called from slow paths holding no lock.
pub fn maybe_reap() {
    page::purge::note_activity();
    if GROWN.load(Ordering::Relaxed) >= GROWTH_REAP_BYTES
        && GROWN.swap(0, Ordering::Relaxed) >= GROWTH_REAP_BYTES
    {
        reap_idle_local();
    }
    let hook = SLOW_PATH_HOOK.load(Ordering::Acquire);
    if hook != 0 {
        // SAFETY: only `set_slow_path_hook` stores here, and it stores a `fn()`.
        let hook: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        hook();
    }
    reap_if_due(sys::time::now_ms());
}

/// [`maybe_reap`] at time `now` without counting as activity or calling the hook: the
/// background reclaim thread's periodic reap.
pub(crate) fn reap_if_due(now: u64) {
    let next = NEXT_REAP_MS.load(Ordering::Relaxed);
    if now < next
        || NEXT_REAP_MS
            .compare_exchange(
                next,
                now + REAPTIMEOUT_MS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    // Never wait for the chain here: the caller may be inside an allocation made while
    // this thread holds the chain (statistics, cache creation).
    let Some(chain) = CHAIN.try_lock() else {
        return;
    };
    let mut cache = chain.first;
    while !cache.is_null() {
        // SAFETY: caches on the chain stay alive while the chain is held.
        unsafe {
            cache_reap(&*cache);
            cache = (*cache).next.load(Ordering::Relaxed);
        }
    }
    drop(chain);
    for node in 0..topology::nr_node_ids() {
        page::purge::maybe_purge(page::zone(node), now);
    }
}

/// The growth reap: the program's slabs are growing, so the objects that caches nobody
/// allocated from lately keep on this CPU and its node are better given back, their
/// empty slabs with them, for the growing caches' slabs to reuse: a program that works
/// through sizes in phases otherwise carries every finished phase's objects in per-CPU
/// and shared caches (up to 128 KiB and 216 objects a class) until the two-second reap
/// drains them a fifth at a time. For every cache, the calling CPU's array cache, the
/// node's shared cache and the node's free slabs are each emptied when not used since
/// the last look (the kernel's `touched` and `free_touched`, which the look clears),
/// so a class in use is never drained. Only the calling CPU's cache: it is stopped
/// with its lock alone (this thread runs on it), and each CPU's own growth reaps its
/// own. Busy locks are skipped; the chain is only tried.
fn reap_idle_local() {
    let Some(chain) = CHAIN.try_lock() else {
        return;
    };
    let cpu = sys::cpu::current();
    let node = topology::cpu_to_node(cpu);
    let mut cache = chain.first;
    while !cache.is_null() {
        // SAFETY: caches on the chain stay alive while the chain is held; this thread
        // holds no other lock (the caller's contract).
        unsafe {
            reap_idle_cache(&*cache, cpu, node);
            cache = (*cache).next.load(Ordering::Relaxed);
        }
    }
}

/// [`reap_idle_local`] for one cache.
///
/// # Safety
/// The caller holds the chain and no list or array cache lock.
unsafe fn reap_idle_cache(cache: &RawCache, cpu: usize, node: usize) {
    let mut to_destroy = PageList::new();
    if let Some(ac) = cache.stop_local(cpu) {
        // SAFETY: stopped just above by this thread, which unlocks it after.
        unsafe {
            reap_cpu_cache(cache, cpu, ac, true, &mut to_destroy);
            (*ac).lock.unlock();
        }
    }
    // SAFETY: the caller holds no list lock.
    unsafe { reap_node(cache, node, true, &mut to_destroy) };
    // SAFETY: only empty slabs of this cache, off every list, are on `to_destroy`.
    unsafe { cache.destroy_slabs(&mut to_destroy, true) };
}

/// Reaps one stopped per-CPU array cache of `cache`: clears its `touched`, or, when it
/// was not used since the last look, drains a fifth of its limit (everything with
/// `all`), at least what it holds beyond its tuned limit, and lowers a grown limit back
/// to the tuned one, paying its CPU's growth budget back (`growth` grows it).
///
/// Used means `touched` (a refill, a flush, a tried-lock allocation) or a count that
/// moved since the last look: the restartable pop writes nothing but the count. A cache
/// that went round to the count it had (as many frees as allocations, no refill)
/// passes for unused: it gives a fifth back and refills it later, once per look.
///
/// # Safety
/// The caller holds `ac`'s lock, settled, and no list lock; `ac` is `cpu`'s.
unsafe fn reap_cpu_cache(
    cache: &RawCache,
    cpu: usize,
    ac: *mut ArrayCache,
    all: bool,
    to_destroy: &mut PageList,
) {
    let base_limit = cache.limit.load(Ordering::Relaxed);
    // SAFETY: the header and entries are the caller's under the lock it holds.
    unsafe {
        let avail = (*ac).avail;
        let moved = avail != (*ac).reap_avail;
        if (*ac).touched != 0 || moved {
            (*ac).touched = 0;
            (*ac).reap_avail = avail;
            return;
        }
        let over = avail.saturating_sub(base_limit);
        let nr = if all {
            avail
        } else {
            (*ac).limit.div_ceil(5).max(over).min(avail)
        };
        if nr > 0 {
            drop(cache.drain_array(ac, nr, None, None, to_destroy));
        }
        let lowered = (*ac).limit.min(base_limit.max((*ac).avail));
        growth::set_limit(ac, cpu, cache.geom().size, base_limit, lowered);
        (*ac).reap_avail = (*ac).avail;
    }
}

/// Empties `cpu`'s array cache `ac` of `cache` back to the node and puts it back to
/// its tuned limit, its growth paid back (`growth::reset`).
///
/// # Safety
/// The caller has `ac` stopped and holds no list lock; `ac` is `cpu`'s.
unsafe fn empty_cpu_cache(
    cache: &RawCache,
    cpu: usize,
    ac: *mut ArrayCache,
    to_destroy: &mut PageList,
) {
    // SAFETY: the caller has the cache stopped: its header and entries are ours.
    unsafe {
        drop(cache.drain_array(ac, (*ac).avail, None, None, to_destroy));
        growth::reset(
            ac,
            cpu,
            cache.geom().size,
            cache.limit.load(Ordering::Relaxed),
        );
    }
}

/// Reaps `node`'s lists of `cache`: its shared cache and its free slabs, each when not
/// used since the last look (clearing the mark otherwise), a fifth at a time, or
/// entirely with `all`.
///
/// # Safety
/// The caller holds no list lock.
unsafe fn reap_node(cache: &RawCache, node: usize, all: bool, to_destroy: &mut PageList) {
    let l = cache.node(node).list_lock.lock();
    let sh: *mut ArrayCache = l.shared;
    let mut held = Some((node, l));
    // SAFETY: the shared cache is read and drained under its node's list lock, held.
    unsafe {
        if !sh.is_null() {
            if (*sh).touched != 0 {
                (*sh).touched = 0;
            } else if (*sh).avail > 0 {
                let fifth = (*sh).limit.div_ceil(5);
                let nr = if all {
                    (*sh).avail
                } else {
                    fifth.min((*sh).avail)
                };
                held = cache.drain_array(sh, nr, Some(node), held, to_destroy);
            }
        }
    }
    let mut l = relock(cache, node, held);
    if l.free_touched {
        l.free_touched = false;
    } else {
        let tofree = if all {
            usize::MAX
        } else {
            l.free_limit.div_ceil(5 * cache.geom().num)
        };
        drain_freelist(cache, &mut l, tofree, to_destroy);
    }
}

/// Makes sure `held` is the lock of `node`.
fn relock<'a>(
    cache: &'a RawCache,
    node: usize,
    held: Option<(usize, MutexGuard<'a, NodeLists>)>,
) -> MutexGuard<'a, NodeLists> {
    match held {
        Some((n, l)) if n == node => l,
        other => {
            drop(other);
            cache.node(node).list_lock.lock()
        }
    }
}

/// `drain_freelist`: moves up to `tofree` free slabs to `to_destroy`.
fn drain_freelist(cache: &RawCache, l: &mut NodeLists, tofree: usize, to_destroy: &mut PageList) {
    let num = cache.geom().num;
    for _ in 0..tofree {
        let slab = l.slabs_free.pop_front();
        if slab.is_null() {
            return;
        }
        l.total_slabs -= 1;
        l.free_objects -= num;
        // SAFETY: the slab was just unlinked.
        unsafe { to_destroy.push_back(slab) };
    }
}

/// `cache_reap` for one cache: drains a fifth of every array cache not used since the
/// last reap, and some free slabs of nodes whose free list was not used.
fn cache_reap(cache: &RawCache) {
    if !cache.is_set_up() {
        return;
    }
    // What frees gave back two seconds ago and more is no longer cycling: slabs grown
    // now count as growth again (see `note_growth`).
    cache.regrow_credit.store(0, Ordering::Relaxed);
    // `reap_alien`: remote frees go home at least this often, and so does every
    // CPU's inbox, whatever its owner is doing (a busy owner refills from the node).
    cache.drain_aliens();
    cache.drain_inboxes(0..topology::nr_cpu_ids());
    let mut to_destroy = PageList::new();
    // SAFETY: array caches are touched under their locks, tried only; no list lock is
    // held here.
    unsafe {
        cache.with_stopped_caches(0..topology::nr_cpu_ids(), false, |cpu, ac| {
            reap_cpu_cache(cache, cpu, ac, false, &mut to_destroy)
        });
        for node in 0..topology::nr_node_ids() {
            reap_node(cache, node, false, &mut to_destroy);
        }
        cache.destroy_slabs(&mut to_destroy, true);
    }
}

/// Empties every array cache of `cache` and frees all its free slabs; the array
/// caches start over at their tuned limits (`growth::reset`). Waits for busy per-CPU
/// caches, so it is for explicit calls, not allocation paths. Returns the pages given
/// back to the page pool.
pub fn shrink(cache: &RawCache) -> usize {
    shrink_with(cache, true)
}

/// [`shrink`], waiting for busy per-CPU caches or (`wait` false) leaving them alone as
/// `cache_reap` does; the node locks are taken as the slow paths take them, briefly.
fn shrink_with(cache: &RawCache, wait: bool) -> usize {
    if !cache.is_set_up() {
        return 0;
    }
    // Remote frees first: they go to their nodes' shared caches and slabs, which are
    // emptied below.
    cache.drain_aliens();
    cache.drain_inboxes(0..topology::nr_cpu_ids());
    let mut to_destroy = PageList::new();
    // SAFETY: as in `cache_reap`, with waiting or tried locks.
    unsafe {
        // Stopping the CPUs' caches costs a fence (a membarrier(2) for the restartable
        // path): not for a cache that none of them holds objects of or has grown
        // (most of a small program's, at a `malloc_trim`). A push in flight meanwhile
        // stays where it lands, as it would after the drain.
        if cpu_caches_hold_something(cache) {
            cache.with_stopped_caches(0..topology::nr_cpu_ids(), wait, |cpu, ac| {
                empty_cpu_cache(cache, cpu, ac, &mut to_destroy)
            });
        } else {
            forget_refills(cache);
        }
        for node in 0..topology::nr_node_ids() {
            let l = cache.node(node).list_lock.lock();
            let sh: *mut ArrayCache = l.shared;
            let mut held = Some((node, l));
            if !sh.is_null() {
                held = cache.drain_array(sh, (*sh).avail, Some(node), held, &mut to_destroy);
            }
            let mut l = relock(cache, node, held);
            drain_freelist(cache, &mut l, usize::MAX, &mut to_destroy);
        }
        cache.destroy_slabs(&mut to_destroy, true)
    }
}

/// Whether a CPU's array cache of `cache` holds objects, or has a limit grown past the
/// tuned one (which emptying it puts back), by words read without the caches' locks
/// (a hint: a word may change as it is read).
fn cpu_caches_hold_something(cache: &RawCache) -> bool {
    let base = cache.limit.load(Ordering::Relaxed);
    (0..topology::nr_cpu_ids()).any(|cpu| {
        cache.cpu_ac(cpu).is_some_and(|ac| {
            // SAFETY: the headers live as long as the cache; the count and the limit
            // are words their CPU (or a stopper) writes, read whole.
            unsafe {
                ptr::read_volatile(ptr::addr_of!((*ac).avail)) > 0
                    || ptr::read_volatile(ptr::addr_of!((*ac).limit)) > base
            }
        })
    })
}

/// For a cache [`shrink`] passes over (empty, at its tuned limit): forgets the objects
/// each CPU refilled since its last overflow, as emptying it would (`growth::reset`),
/// so the refills before the shrink do not count as a shortfall at the next overflow
/// and grow the limit past the free growth at once. The count is atomic: no stop.
/// (Passed over with its count, a cache emptied by its program and shrunk grew at once
/// on the next round when it should have grown a batch:
/// `slab_tuning::a_shortfall_within_the_free_growth_grows_a_batch_at_a_time`, run
/// alone.)
fn forget_refills(cache: &RawCache) {
    for cpu in 0..topology::nr_cpu_ids() {
        if let Some(ac) = cache.cpu_ac(cpu) {
            // SAFETY: the header lives as long as the cache; the count is atomic. Read
            // first, so that the lines of the CPUs with nothing to forget stay clean.
            unsafe {
                if (*ac).refilled.load(Ordering::Relaxed) != 0 {
                    (*ac).refilled.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Empties every cache's array caches and free slabs as [`shrink`] does, but never
/// waits: a per-CPU cache whose lock is held is left alone (as `cache_reap` leaves
/// it), and nothing is done if the chain is busy. For the background reclaim thread
/// once the program is idle. Returns the pages given back to the page pool.
pub(crate) fn shrink_all_tried() -> usize {
    let Some(chain) = CHAIN.try_lock() else {
        return 0;
    };
    sys::process::with_one_look(|| {
        let mut pages = 0;
        let mut c = chain.first;
        while !c.is_null() {
            // SAFETY: caches on the chain stay alive while the chain is held.
            let cache = unsafe { &*c };
            pages += shrink_with(cache, false);
            c = cache.next.load(Ordering::Relaxed);
        }
        pages
    })
}

/// The slab part of the CPU-dead path: every cache's array cache of `cpu` is emptied
/// back to the node lists (the kernel's `slab_dead_cpu` / `cpuup_canceled`), waiting
/// for a holder of its lock to finish.
pub fn drain_cpu(cpu: usize) {
    let chain = CHAIN.lock();
    let mut c = chain.first;
    while !c.is_null() {
        // SAFETY: caches on the chain stay alive while the chain lock is held.
        let cache = unsafe { &*c };
        let mut to_destroy = PageList::new();
        cache.drain_inboxes(cpu..cpu + 1);
        // SAFETY: the array cache is drained while stopped.
        unsafe {
            cache.with_stopped_caches(cpu..cpu + 1, true, |cpu, ac| {
                empty_cpu_cache(cache, cpu, ac, &mut to_destroy)
            });
            cache.destroy_slabs(&mut to_destroy, true);
        }
        c = cache.next.load(Ordering::Relaxed);
    }
}

/// Objects held in `cpu`'s array caches over every cache (racy: for statistics).
pub fn cpu_cached_objects(cpu: usize) -> usize {
    let chain = CHAIN.lock();
    let mut c = chain.first;
    let mut total = 0;
    while !c.is_null() {
        // SAFETY: as in `drain_cpu`; `avail` is read without the per-CPU lock, which
        // is fine for a statistic.
        let cache = unsafe { &*c };
        if let Some(ac) = cache.cpu_ac(cpu) {
            // SAFETY: the header lives as long as the cache.
            total += unsafe { (*ac).avail } as usize;
        }
        c = cache.next.load(Ordering::Relaxed);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reaper tells a used per-CPU array cache from an idle one without the pop's
    /// help: a cache whose count moved since its last look (or that a slow path marked
    /// touched) is left whole and the count remembered; one whose count stayed, and
    /// that nothing marked, gives a fifth of its limit back.
    #[test]
    fn a_cache_whose_count_moved_is_left_alone() {
        assert!(crate::init::ensure());
        let cache = crate::slab::create_cache("reap-moved", 64, 8, 0).unwrap();
        let objs: Vec<*mut u8> = (0..200).map(|_| cache.alloc()).collect();
        assert!(objs.iter().all(|o| !o.is_null()));
        for &o in &objs {
            // SAFETY: allocated above from this cache, freed once.
            unsafe { cache.free(o) };
        }
        let nr = topology::nr_cpu_ids();
        let mut to_destroy = PageList::new();
        // Each round: how the caches are marked, then one reap, then what each holds.
        let reap = |to_destroy: &mut PageList, moved: bool, touched: bool| {
            let mut before = vec![0u32; nr];
            let mut after = vec![0u32; nr];
            // SAFETY: stopped caches of a live cache, this thread holding no list lock.
            unsafe {
                cache.with_stopped_caches(0..nr, true, |cpu, ac| {
                    before[cpu] = (*ac).avail;
                    (*ac).touched = u32::from(touched);
                    (*ac).reap_avail = (*ac).avail.wrapping_add(u32::from(moved));
                    reap_cpu_cache(cache, cpu, ac, false, to_destroy);
                    after[cpu] = (*ac).avail;
                    assert_eq!((*ac).touched, 0, "the mark outlived the look");
                    assert_eq!((*ac).reap_avail, (*ac).avail, "the count was not kept");
                });
            }
            (before, after)
        };
        let (before, after) = reap(&mut to_destroy, true, false);
        assert!(before.iter().any(|&n| n > 0), "no object cached anywhere");
        assert_eq!(before, after, "a cache whose count moved was drained");
        let (before, after) = reap(&mut to_destroy, false, true);
        assert_eq!(before, after, "a touched cache was drained");
        let (before, after) = reap(&mut to_destroy, false, false);
        for cpu in 0..nr {
            if before[cpu] > 0 {
                assert!(
                    after[cpu] < before[cpu],
                    "CPU {cpu}: an idle cache kept all"
                );
            }
        }
        // SAFETY: only empty slabs of this cache, off every list.
        unsafe { cache.destroy_slabs(&mut to_destroy, true) };
        // SAFETY: nothing else uses the cache, and its objects are all free.
        unsafe { crate::slab::destroy_cache(cache) }.unwrap();
    }
}
