//! `call_rcu` and `rcu_barrier`: callbacks queued on the calling CPU's segmented list
//! (a tried lock; a shared list when it is busy), tagged with the grace period they
//! need, and invoked by the grace-period thread in batches of `blimit` (10), without
//! limit while more than `qhimark` (10000) are pending until fewer than `qlowmark`
//! (100) remain.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::head::{RcuCallback, RcuHead};
use super::kfree::KfreeBatch;
use super::segcblist::SegCbList;
use super::{gp, seq};
use crate::sync::{Mutex, TryLock};
use crate::sys::{self, futex, PAGE_SIZE};
use crate::{page, topology};

/// Callbacks invoked per list per pass while few are pending.
pub const BLIMIT: usize = 10;
/// Above this many pending callbacks, batches are unlimited...
pub const QHIMARK: usize = 10_000;
/// ...until fewer than this remain.
pub const QLOWMARK: usize = 100;
/// Callbacks pending above which `call_rcu` throttles its caller (forward progress
/// under a flood: producers cannot outrun the grace-period thread without bound).
pub const QOVLD: usize = 64 * QHIMARK;

/// One CPU's callbacks (`rcu_data`'s `cblist`) and its partly filled free_rcu batch.
#[repr(C, align(64))]
pub(crate) struct CbList {
    lock: TryLock,
    list: UnsafeCell<SegCbList>,
    pub(crate) kfree: UnsafeCell<*mut KfreeBatch>,
    barrier_head: UnsafeCell<RcuHead>,
    /// Whether `barrier_head` sits on `list`. Changed only under `lock`, so a forked
    /// child knows exactly which barrier heads it will still invoke.
    barrier_queued: UnsafeCell<bool>,
}

// SAFETY: the cells are only touched with `lock` held.
unsafe impl Sync for CbList {}

impl CbList {
    const fn new() -> Self {
        Self {
            lock: TryLock::new(),
            list: UnsafeCell::new(SegCbList::new()),
            kfree: UnsafeCell::new(ptr::null_mut()),
            barrier_head: UnsafeCell::new(RcuHead::new()),
            barrier_queued: UnsafeCell::new(false),
        }
    }
}

static LISTS: AtomicPtr<CbList> = AtomicPtr::new(ptr::null_mut());
static NR_LISTS: AtomicUsize = AtomicUsize::new(0);
static INIT: Mutex<()> = Mutex::new(());
/// The list of last resort, when a CPU's list is busy or does not exist.
static SHARED: CbList = CbList::new();
static SHARED_LOCK: Mutex<()> = Mutex::new(());

static PENDING: AtomicUsize = AtomicUsize::new(0);
static INVOKED: AtomicU64 = AtomicU64::new(0);
static UNLIMITED: AtomicBool = AtomicBool::new(false);

/// Allocates the per-CPU lists on first use.
fn lists() -> &'static [CbList] {
    let base = LISTS.load(Ordering::Acquire);
    if !base.is_null() {
        // SAFETY: published once, never freed.
        return unsafe { core::slice::from_raw_parts(base, NR_LISTS.load(Ordering::Relaxed)) };
    }
    init_lists()
}

#[cold]
fn init_lists() -> &'static [CbList] {
    let _g = INIT.lock();
    let base = LISTS.load(Ordering::Acquire);
    // The lists come from the page pool, whose part of boot this layer may run (it
    // never boots the layers above); where cpuslab cannot run, callbacks queue on the
    // shared list.
    if base.is_null() && crate::page::setup::ensure_up().is_ok() {
        let n = topology::nr_cpu_ids();
        let bytes = n * core::mem::size_of::<CbList>();
        let pg = page::alloc_pages_exact(bytes.div_ceil(PAGE_SIZE), 0);
        if !pg.is_null() {
            let base = page::page_address(pg).cast::<CbList>();
            for i in 0..n {
                // SAFETY: the block holds `n` lists.
                unsafe { base.add(i).write(CbList::new()) };
            }
            NR_LISTS.store(n, Ordering::Relaxed);
            LISTS.store(base, Ordering::Release);
        }
    }
    let base = LISTS.load(Ordering::Acquire);
    if base.is_null() {
        return &[];
    }
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(base, NR_LISTS.load(Ordering::Relaxed)) }
}

/// Runs `f` on this CPU's list if its lock can be had, else on the shared list.
pub(crate) fn with_local_list<R>(f: impl FnOnce(&CbList) -> R) -> R {
    let lists = lists();
    if let Some(l) = lists.get(sys::cpu::current()) {
        if l.lock.try_lock() {
            let r = f(l);
            l.lock.unlock();
            return r;
        }
    }
    let _g = SHARED_LOCK.lock();
    f(&SHARED)
}

/// Runs `f` on every list, waiting for each lock (not for allocation paths).
pub(crate) fn for_each_list(mut f: impl FnMut(&CbList)) {
    for l in lists() {
        if l.lock.lock_wait() {
            f(l);
            l.lock.unlock();
        }
    }
    let _g = SHARED_LOCK.lock();
    f(&SHARED);
}

/// Queues `func(head)` to run after a grace period (`call_rcu`). Never allocates and
/// never waits for a per-CPU lock. When more than [`QOVLD`] callbacks are pending the
/// caller is throttled: outside a read section it sleeps (up to a millisecond at a
/// time) until the grace-period thread has brought the backlog under that mark; inside
/// one, where waiting could hold up the very grace period it waits for, it yields.
///
/// # Safety
/// `head` stays valid and untouched until `func` runs; `func` may run on another thread.
pub unsafe fn call_rcu(head: *mut RcuHead, func: RcuCallback) {
    // SAFETY: `head` is valid and left to us until `func` runs (the caller's contract).
    unsafe { (*head).func = Some(func) };
    if PENDING.fetch_add(1, Ordering::Relaxed) >= QOVLD {
        throttle();
    }
    // The snapshot is taken under the list's lock, so a list's tags never go backward.
    let snap = with_local_list(|l| {
        let snap = seq::snap(gp::gp_seq_ordered());
        // SAFETY: `with_local_list` holds the list's lock, which guards its cells.
        let list = unsafe { &mut *l.list.get() };
        // SAFETY: `head` is valid and, queued once, on no list until it is invoked.
        unsafe { list.enqueue(head) };
        list.accelerate(snap);
        snap
    });
    gp::request(snap);
}

/// `call_rcu` over [`QOVLD`]: lets the grace-period thread catch up.
#[cold]
fn throttle() {
    gp::wake_gp_driver();
    if super::reader::in_read_section() {
        futex::yield_now();
        return;
    }
    // Bounded: a grace period stuck on a stalled reader must not stop producers dead.
    for _ in 0..100 {
        if PENDING.load(Ordering::Relaxed) < QOVLD {
            return;
        }
        // Nobody wakes this word: a one-millisecond sleep.
        static THROTTLE_WORD: AtomicU32 = AtomicU32::new(0);
        futex::wait_timeout(&THROTTLE_WORD, 0, 1_000_000);
    }
}

/// Invokes every callback whose grace period has ended, in batches. Returns how many
/// ran. Called by the grace-period thread.
pub(crate) fn process() -> usize {
    let pending = PENDING.load(Ordering::Relaxed);
    if pending > QHIMARK {
        UNLIMITED.store(true, Ordering::Relaxed);
    } else if pending < QLOWMARK {
        UNLIMITED.store(false, Ordering::Relaxed);
    }
    let blimit = if UNLIMITED.load(Ordering::Relaxed) {
        usize::MAX
    } else {
        BLIMIT
    };
    let cur = gp::gp_seq();
    let mut invoked = 0;
    let mut needed: Option<u64> = None;
    let mut take = |l: &CbList| {
        // SAFETY: the caller holds the list's lock.
        unsafe {
            let list = &mut *l.list.get();
            list.advance(cur);
            // NEXT may still hold callbacks that found NEXT_READY taken by an earlier
            // grace period: give them one now (rcu_accelerate_cbs at cleanup).
            list.accelerate(seq::snap(gp::gp_seq_ordered()));
            if let Some(s) = list.needed() {
                needed = Some(needed.map_or(s, |m: u64| if seq::done(s, m) { m } else { s }));
            }
            let (chain, n) = list.extract_done(blimit);
            if *l.barrier_queued.get() && chain_contains(chain, l.barrier_head.get()) {
                *l.barrier_queued.get() = false;
            }
            (chain, n)
        }
    };
    // Each batch is detached under the list's lock and invoked after releasing it, so
    // a callback may queue callbacks (even on this list) or free memory.
    for l in lists() {
        if !l.lock.lock_wait() {
            continue;
        }
        let (chain, n) = take(l);
        l.lock.unlock();
        invoke_chain(chain);
        invoked += n;
    }
    let (chain, n) = {
        let _g = SHARED_LOCK.lock();
        take(&SHARED)
    };
    invoke_chain(chain);
    invoked += n;
    PENDING.fetch_sub(invoked, Ordering::Relaxed);
    INVOKED.fetch_add(invoked as u64, Ordering::Relaxed);
    if let Some(s) = needed {
        gp::request(s);
    }
    invoked
}

/// Whether the detached chain starting at `h` holds `target`.
unsafe fn chain_contains(mut h: *mut RcuHead, target: *mut RcuHead) -> bool {
    while !h.is_null() {
        if h == target {
            return true;
        }
        // SAFETY: a chain detached under the list's lock by the caller: its heads stay
        // valid until it is invoked.
        h = unsafe { (*h).next };
    }
    false
}

fn invoke_chain(mut h: *mut RcuHead) {
    while !h.is_null() {
        // SAFETY: a detached chain of queued heads; each is handed to its callback,
        // which may free it, so `next` is read first.
        unsafe {
            let next = (*h).next;
            if let Some(f) = (*h).func {
                f(h);
            }
            h = next;
        }
    }
}

static BARRIER_MUTEX: Mutex<()> = Mutex::new(());
static BARRIER_LEFT: AtomicUsize = AtomicUsize::new(0);
static BARRIER_WORD: AtomicU32 = AtomicU32::new(0);

unsafe fn barrier_callback(_: *mut RcuHead) {
    if BARRIER_LEFT.fetch_sub(1, Ordering::AcqRel) == 1 {
        BARRIER_WORD.fetch_add(1, Ordering::Release);
        futex::wake(&BARRIER_WORD, i32::MAX);
    }
}

/// Waits until every callback queued before the call has been invoked
/// (`rcu_barrier`), including the batches of `free_rcu`.
pub fn barrier() {
    super::kfree::flush_all();
    let _g = BARRIER_MUTEX.lock();
    // A forked child may inherit a barrier of the parent still in flight: its heads
    // are queued and must be invoked before they can be queued again.
    wait_barrier_done();
    BARRIER_LEFT.store(1, Ordering::Relaxed);
    let mut snap = 0;
    for_each_list(|l| {
        snap = seq::snap(gp::gp_seq_ordered());
        BARRIER_LEFT.fetch_add(1, Ordering::Relaxed);
        PENDING.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the list's lock is held; the barrier head is idle (the barrier mutex
        // is held, so the previous barrier's heads have all been invoked).
        unsafe {
            let head = l.barrier_head.get();
            (*head).func = Some(barrier_callback);
            *l.barrier_queued.get() = true;
            let list = &mut *l.list.get();
            list.enqueue(head);
            list.accelerate(snap);
        }
    });
    gp::request(snap);
    // SAFETY: drops the initial count held while queueing.
    unsafe { barrier_callback(ptr::null_mut()) };
    wait_barrier_done();
}

fn wait_barrier_done() {
    loop {
        let w = BARRIER_WORD.load(Ordering::Acquire);
        if BARRIER_LEFT.load(Ordering::Acquire) == 0 {
            return;
        }
        gp::request(seq::snap(gp::gp_seq_ordered()));
        if gp::drive_without_kthread() {
            continue;
        }
        futex::wait_timeout(&BARRIER_WORD, w, 100_000_000);
    }
}

/// fork, child: a barrier in flight in the parent lost its caller, and any head the
/// grace-period thread had detached but not yet invoked is lost with that thread. The
/// count becomes the barrier heads still on the child's lists, which will run.
///
/// # Safety
/// Only in a forked child, with the list locks taken by `lock_all` still held.
pub(crate) unsafe fn reset_barrier_after_fork() {
    // SAFETY: a forked child (the caller's contract): its one thread is the caller.
    unsafe { BARRIER_MUTEX.force_unlock_if_locked() };
    // SAFETY: the list locks taken by `lock_all` are held (the caller's contract), and
    // they guard the cells.
    let mut left = usize::from(unsafe { *SHARED.barrier_queued.get() });
    for l in lists() {
        // SAFETY: as above.
        left += usize::from(unsafe { *l.barrier_queued.get() });
    }
    BARRIER_LEFT.store(left, Ordering::Release);
    BARRIER_WORD.fetch_add(1, Ordering::Release);
}

/// Callbacks queued and not yet invoked.
pub fn pending() -> usize {
    PENDING.load(Ordering::Relaxed)
}

/// Callbacks invoked so far.
pub fn invoked() -> u64 {
    INVOKED.load(Ordering::Relaxed)
}

/// fork, prepare: takes every list lock so no list is caught half-linked.
pub(crate) fn lock_all() {
    for l in lists() {
        l.lock.lock_wait();
    }
    SHARED_LOCK.lock_raw();
}

/// fork, parent and child: releases what [`lock_all`] took.
///
/// # Safety
/// Only after [`lock_all`] on the same thread.
pub(crate) unsafe fn unlock_all() {
    // SAFETY: `lock_all` took it with `lock_raw` on this thread (the caller's contract),
    // or in the parent of this forked child, whose one thread is that one.
    unsafe { SHARED_LOCK.force_unlock() };
    for l in lists() {
        l.lock.unlock();
    }
}
