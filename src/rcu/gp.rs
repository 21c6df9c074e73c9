//! Grace periods: the `gp_seq` state machine, the grace-period thread (a raw pthread
//! started on first need) running the kernel's loop (wait for a request → init →
//! force quiescent states → cleanup), `synchronize`, the expedited variant that drives
//! a grace period on the caller's thread, polling, and stall warnings.

use core::ffi::c_void;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::reader::{self, record};
use super::trace::{self, Event};
use super::tree::{self, LEAF_FANOUT};
use super::{callbacks, kfree, seq};
use crate::sync::Mutex;
use crate::sys::{self, futex};

/// `rcu_state.gp_seq`; starts idle and non-zero (a reader's 0 means "not reading").
static GP_SEQ: AtomicU64 = AtomicU64::new(4);
/// The furthest `gp_seq` anyone asked for (`gp_seq_needed`).
static GP_SEQ_NEEDED: AtomicU64 = AtomicU64::new(4);
/// Serialises grace periods (the thread's and expedited ones).
static GP_MUTEX: Mutex<()> = Mutex::new(());
/// Futex word the grace-period driver sleeps on (requests, last quiescent states).
static DRIVER_WORD: AtomicU32 = AtomicU32::new(0);
/// Futex word bumped when a grace period ends.
static DONE_WORD: AtomicU32 = AtomicU32::new(0);
/// Threads sleeping on `DONE_WORD` (or about to): the end of a grace period wakes them
/// only when there are some.
static DONE_WAITERS: AtomicU32 = AtomicU32::new(0);

const KTHREAD_NONE: u8 = 0;
const KTHREAD_RUNNING: u8 = 1;
const KTHREAD_FAILED: u8 = 2;
static KTHREAD: AtomicU8 = AtomicU8::new(KTHREAD_NONE);

/// Completed grace periods, expedited ones among them, and stall reports.
pub(crate) static COMPLETED: AtomicU64 = AtomicU64::new(0);
pub(crate) static EXPEDITED: AtomicU64 = AtomicU64::new(0);
pub(crate) static STALLS: AtomicU64 = AtomicU64::new(0);

/// Stall threshold in ms (`CPUSLAB_RCU_STALL_MS`, default 21000); 0 until read.
static STALL_MS: AtomicU64 = AtomicU64::new(0);

/// The current `gp_seq`. Every outermost `read_lock` loads it: reached PC-relative,
/// not through a GOT entry, so a section costs the same in a dependent crate (a PIE
/// reaches another crate's static through the GOT) as in this one.
#[inline]
pub fn gp_seq() -> u64 {
    let seq: &AtomicU64 = crate::sys::local_static!(GP_SEQ);
    seq.load(Ordering::Relaxed)
}

/// The current `gp_seq`, ordered after everything the caller did before (for
/// snapshots that must cover an update just made).
#[inline]
pub fn gp_seq_ordered() -> u64 {
    GP_SEQ.load(Ordering::SeqCst)
}

fn stall_ms() -> u64 {
    let v = STALL_MS.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let v = sys::env::get(c"CPUSLAB_RCU_STALL_MS")
        .and_then(crate::config::parse_size)
        .unwrap_or(21_000)
        .max(1) as u64;
    STALL_MS.store(v, Ordering::Relaxed);
    v
}

/// A full barrier between the grace-period side and every reader.
fn full_barrier() {
    if !(sys::membarrier::available() && sys::membarrier::barrier()) {
        fence(Ordering::SeqCst);
    }
}

/// Wakes whoever drives the grace period (the thread, or an expedited caller).
pub fn wake_gp_driver() {
    DRIVER_WORD.fetch_add(1, Ordering::Release);
    futex::wake(&DRIVER_WORD, i32::MAX);
}

/// Asks for the grace period ending at `snap`; starts the thread if needed.
pub fn request(snap: u64) {
    let prev = GP_SEQ_NEEDED.fetch_max(snap, Ordering::AcqRel);
    // The thread may be missing even for an old request (a forked child).
    ensure_kthread();
    if prev < snap {
        super::register_atfork();
        trace::record(Event::NewReq, 0);
        wake_gp_driver();
    } else {
        trace::record(Event::Prestarted, 0);
    }
}

fn gp_needed() -> bool {
    !seq::done(
        GP_SEQ.load(Ordering::Acquire),
        GP_SEQ_NEEDED.load(Ordering::Acquire),
    )
}

fn ensure_kthread() {
    if KTHREAD.load(Ordering::Acquire) != KTHREAD_NONE {
        return;
    }
    if KTHREAD
        .compare_exchange(
            KTHREAD_NONE,
            KTHREAD_RUNNING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
        && !sys::thread::spawn_raw(gp_kthread, 0)
    {
        KTHREAD.store(KTHREAD_FAILED, Ordering::Release);
    }
}

/// Without a grace-period thread (none could be started: a sandbox, a thread limit,
/// a platform without threads of cpuslab's own), one round of its work on the calling
/// thread, which is waiting for it: the grace period asked for, then the callbacks it
/// made ready. True when it did so; false, with nothing done, while the thread runs.
pub(crate) fn drive_without_kthread() -> bool {
    if KTHREAD.load(Ordering::Acquire) != KTHREAD_FAILED {
        return false;
    }
    if gp_needed() {
        run_gp(false);
    }
    callbacks::process();
    true
}

/// The grace-period thread (`rcu_gp_kthread`, which also invokes callbacks here).
extern "C" fn gp_kthread(_: *mut c_void) -> *mut c_void {
    loop {
        let word = DRIVER_WORD.load(Ordering::Acquire);
        if gp_needed() {
            run_gp(false);
            continue;
        }
        if callbacks::process() > 0 {
            continue;
        }
        if kfree::flush_all() > 0 {
            continue;
        }
        // Partly filled free_rcu batches are flushed at least once a second.
        futex::wait_timeout(
            &DRIVER_WORD,
            word,
            if kfree::pending() {
                1_000_000_000
            } else {
                10_000_000_000
            },
        );
    }
}

/// Runs one whole grace period on the calling thread. Expedited: polls the readers
/// without sleeping between scans.
pub fn run_gp(expedited: bool) {
    let _gp = GP_MUTEX.lock();
    run_gp_locked(expedited);
}

/// [`run_gp`] with `GP_MUTEX` held by the caller.
fn run_gp_locked(expedited: bool) {
    let cur = GP_SEQ.load(Ordering::Relaxed);
    // A forked child may inherit a grace period in progress: it is resumed.
    let gp = if seq::state(cur) == 1 {
        cur
    } else {
        seq::start(cur)
    };
    GP_SEQ.store(gp, Ordering::SeqCst);
    trace::record(Event::Start, 0);
    // With no reader present but the caller (outside any section), no thread can be in
    // a section that began before this grace period: a full fence here orders it for
    // any reader that comes online now (`tree::only_online`), and the membarriers,
    // whose interrupts order running readers' sections, have nothing to order. liburcu
    // returns early on an empty registry for the same reason.
    let me = reader::my_slot();
    let alone = tree::only_online(me);
    let barrier = || {
        if alone {
            fence(Ordering::SeqCst);
        } else {
            full_barrier();
        }
    };
    barrier();
    // The driver's own record, if it has one, is quiescent: every driver (the thread,
    // `synchronize*`, a waiter without the thread) runs outside any read section. Its
    // report up front spares the scan when no other reader holds the grace period.
    debug_assert!(!reader::in_read_section());
    if tree::init_qsmasks() && !me.is_some_and(tree::report_qs) {
        let start_ms = sys::time::now_ms();
        let mut wait_ns = 100_000;
        loop {
            let word = DRIVER_WORD.load(Ordering::Acquire);
            trace::record(Event::FqsStart, 0);
            force_quiescent_states(gp, start_ms);
            trace::record(Event::FqsEnd, 0);
            if tree::root_done() {
                break;
            }
            if expedited {
                futex::yield_now();
            } else {
                trace::record(Event::FqsWait, 0);
                futex::wait_timeout(&DRIVER_WORD, word, wait_ns);
                wait_ns = (wait_ns * 2).min(10_000_000);
            }
        }
    }
    barrier();
    GP_SEQ.store(seq::end(gp), Ordering::SeqCst);
    trace::record(Event::End, 0);
    COMPLETED.fetch_add(1, Ordering::Relaxed);
    if expedited {
        EXPEDITED.fetch_add(1, Ordering::Relaxed);
    }
    DONE_WORD.fetch_add(1, Ordering::SeqCst);
    // A waiter counts itself before it sleeps on the word (SeqCst on both sides): if
    // it is not counted here, its sleep finds the word changed and returns.
    if DONE_WAITERS.load(Ordering::SeqCst) != 0 {
        futex::wake(&DONE_WORD, i32::MAX);
    }
    trace::record(Event::CpuEnd, 0);
}

/// `rcu_gp_fqs`: reports every waited-for reader found outside a read section or in
/// one that began after the grace period started; asks the others to report when they
/// leave, and warns once about any that stalls the grace period.
fn force_quiescent_states(gp: u64, start_ms: u64) {
    let now = sys::time::now_ms();
    let stalled = now.saturating_sub(start_ms) >= stall_ms();
    tree::for_each_blocking_leaf(|leaf, mask| {
        let mut bits = mask;
        while bits != 0 {
            let slot = leaf * LEAF_FANOUT + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let r = record(slot);
            let quiescent = |c: u64| c == 0 || seq::done(c, gp);
            if quiescent(r.ctr.load(Ordering::Acquire)) {
                tree::report_qs(slot);
                continue;
            }
            r.need_qs.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if quiescent(r.ctr.load(Ordering::Acquire)) {
                tree::report_qs(slot);
                continue;
            }
            if stalled && r.stall_gp.swap(gp, Ordering::Relaxed) != gp {
                STALLS.fetch_add(1, Ordering::Relaxed);
                sys::io::warn(format_args!(
                    "rcu: INFO: rcu detected stall: reader thread {} has blocked grace period {} for {} ms in one read-side critical section",
                    r.tid.load(Ordering::Relaxed),
                    gp,
                    now - start_ms
                ));
            }
        }
    });
}

/// Waits until `gp_seq` reaches `snap`.
fn wait_for(snap: u64) {
    if !seq::done(GP_SEQ.load(Ordering::Acquire), snap) {
        trace::record(Event::ReqWait, 0);
    }
    loop {
        let w = DONE_WORD.load(Ordering::Acquire);
        if seq::done(GP_SEQ.load(Ordering::Acquire), snap) {
            return;
        }
        if KTHREAD.load(Ordering::Acquire) == KTHREAD_FAILED {
            // No thread could be started: drive grace periods here.
            run_gp(false);
            continue;
        }
        DONE_WAITERS.fetch_add(1, Ordering::SeqCst);
        futex::wait_timeout(&DONE_WORD, w, 100_000_000);
        DONE_WAITERS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn forbid_in_reader(what: &str) {
    if reader::in_read_section() {
        sys::io::fatal(format_args!(
            "rcu: {what} called inside a read-side critical section would wait for itself"
        ));
    }
}

/// Waits for a full grace period: every read section that began before the call has
/// ended (`synchronize_rcu`). Concurrent callers share grace periods.
pub fn synchronize() {
    forbid_in_reader("synchronize()");
    let snap = seq::snap(GP_SEQ.load(Ordering::SeqCst));
    // Nobody to share a grace period with (none running, none asked for): the caller
    // drives its own, as liburcu's `synchronize_rcu` does, instead of waking the thread
    // and sleeping until it is done. That round trip (two wake-ups, about 45 µs here)
    // was most of the cost of a grace period with no reader inside. It still sleeps
    // between scans while readers hold it up, as the thread would; a grace period
    // already running or requested is shared through the thread as before.
    if seq::state(GP_SEQ.load(Ordering::Acquire)) == 0 && !gp_needed() {
        if let Some(gp) = GP_MUTEX.try_lock() {
            trace::record(Event::NewReq, 0);
            if !seq::done(GP_SEQ.load(Ordering::Acquire), snap) {
                trace::record(Event::ReqWait, 0);
                run_gp_locked(false);
            }
            drop(gp);
            // Callbacks may have become ready: let the thread invoke them.
            if callbacks::pending() > 0 {
                ensure_kthread();
                wake_gp_driver();
            }
            return;
        }
    }
    request(snap);
    wait_for(snap);
}

/// [`synchronize`] driven on the calling thread, polling the readers instead of
/// sleeping between scans (`synchronize_rcu_expedited`).
pub fn synchronize_expedited() {
    forbid_in_reader("synchronize_expedited()");
    let snap = seq::snap(GP_SEQ.load(Ordering::SeqCst));
    while !seq::done(GP_SEQ.load(Ordering::Acquire), snap) {
        run_gp(true);
    }
    // Callbacks may have become ready: let the thread invoke them.
    if callbacks::pending() > 0 {
        ensure_kthread();
        wake_gp_driver();
    }
}

/// A cookie for [`poll_state`] (`get_state_synchronize_rcu`); starts nothing.
pub fn get_state() -> u64 {
    seq::snap(GP_SEQ.load(Ordering::SeqCst))
}

/// [`get_state`], and makes sure a grace period will come (`start_poll_synchronize_rcu`).
pub fn start_poll() -> u64 {
    let s = get_state();
    request(s);
    s
}

/// Whether a full grace period has elapsed since `cookie` was taken.
pub fn poll_state(cookie: u64) -> bool {
    seq::done(GP_SEQ.load(Ordering::Acquire), cookie)
}

/// Waits for the grace period of `cookie` unless it has already elapsed
/// (`cond_synchronize_rcu`).
pub fn cond_synchronize(cookie: u64) {
    if !poll_state(cookie) {
        forbid_in_reader("cond_synchronize()");
        request(cookie);
        wait_for(cookie);
    }
}

/// Whether the grace-period thread runs.
pub fn kthread_running() -> bool {
    KTHREAD.load(Ordering::Relaxed) == KTHREAD_RUNNING
}

/// fork, child: no other thread exists; locks are opened, the thread restarts on
/// demand, and a grace period in progress is resumed by the next driver.
///
/// # Safety
/// Only in a forked child.
pub(crate) unsafe fn reset_after_fork() {
    // SAFETY: a forked child (the caller's contract), before any other thread exists.
    unsafe { GP_MUTEX.force_unlock_if_locked() };
    KTHREAD.store(KTHREAD_NONE, Ordering::Relaxed);
    if gp_needed() || seq::state(GP_SEQ.load(Ordering::Relaxed)) == 1 {
        GP_SEQ_NEEDED.fetch_max(seq::snap(GP_SEQ.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

/// The furthest grace period requested.
pub fn gp_seq_needed() -> u64 {
    GP_SEQ_NEEDED.load(Ordering::Relaxed)
}
