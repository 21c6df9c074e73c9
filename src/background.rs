//! Background reclaim, as the kernel's delayed `cache_reap` and vmstat work and
//! jemalloc's background thread: one helper thread that gives cached memory back while
//! the program does not call the allocator.
//!
//! - *Started on first need*, never at boot: by an allocation slow path holding no
//!   lock, once the allocator has committed more than `CPUSLAB_RETAIN` plus 8 MiB (a
//!   small or short-lived program never gets the thread). In a Rust program that is
//!   any slab slow path ([`slab::reap::maybe_reap`]);
//!   under the C interface only `malloc`'s slow path, because there glibc's own frees
//!   come to cpuslab, some of them holding glibc's thread-stack lock (it frees the
//!   thread-local storage of exited threads under it), which `pthread_create` takes.
//! - *Periodic work*, every [`TICK_MS`] while the program is active: `cache_reap` when
//!   due (every 2 s, as the slow paths do it) and decayed pages purged (as the page
//!   allocator's slow paths do it, at most every quarter of `CPUSLAB_DECAY_MS`), so
//!   neither waits for the program's next slow path.
//! - *Idleness* is measured without touching the fast paths: slab refills and flushes
//!   and page frees to a zone set a flag (`page::purge::note_activity`) that the
//!   thread clears each tick. After [`IDLE_MS`] without one the thread drains: every
//!   array cache and free slab as `trim()` does, but with tried locks, so a per-CPU
//!   cache in use is left alone (as `cache_reap` leaves it), every CPU's page list
//!   with a tried lock (the kernel's vmstat work drains idle CPUs' lists), and every
//!   free page beyond `CPUSLAB_RETAIN`, whatever its age. A program that runs on its
//!   fast paths alone looks idle too; draining its caches costs it one refill each.
//! - *Then it exits*, unless freed huge blocks still wait for their decay time (it
//!   sleeps until they are purged), and the next slow path starts a new one. So it
//!   never keeps the process alive (a `main` that calls `pthread_exit` ends once the
//!   other threads are done and the drain ran), and an idle process has no thread.
//! - *Sandboxes*: it is never started once the process installed a seccomp filter
//!   after boot (`/proc/thread-self/status`, read at boot and before each start), as
//!   sandboxes do and where creating a thread may kill the process; a filter the
//!   process started under (a container's) does not stop it.
//! - It never blocks an allocation: per-CPU caches and page lists are only tried; node
//!   list and zone locks are taken briefly, as the slow paths take them.
//! - *fork*: the child has no thread; `after_fork` lets its first slow path start
//!   one. *exit*: the thread touches only memory that is never unmapped or dropped,
//!   so exit may end it anywhere.
//! - `CPUSLAB_BACKGROUND=0` turns it off.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::page::{self, huge, pcp, purge};
use crate::sys::{self, errno};
use crate::{slab, topology};

/// Interval between the thread's looks while the program is active.
pub const TICK_MS: u64 = 250;
/// Time without slow-path activity after which the program counts as idle.
pub const IDLE_MS: u64 = 1000;
/// Committed bytes beyond `CPUSLAB_RETAIN` at which the thread is worth starting.
pub const START_BYTES: usize = 8 << 20;
/// Wait before another start after the kernel refused a thread.
const RETRY_MS: u64 = 1000;

/// Not booted yet, or `CPUSLAB_BACKGROUND=0`.
const DISABLED: u8 = 0;
/// No thread; the next slow path that finds enough committed memory starts one.
const STOPPED: u8 = 1;
/// A thread runs or is being started.
const RUNNING: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(DISABLED);
/// No start before this time (`sys::time::now_ms`) after a refused one.
static RETRY_AT: AtomicU64 = AtomicU64::new(0);

/// Threads started, idle drains done, and bytes those drains purged.
static STARTS: AtomicU64 = AtomicU64::new(0);
static IDLE_DRAINS: AtomicU64 = AtomicU64::new(0);
static PURGED_BYTES: AtomicU64 = AtomicU64::new(0);

/// What the background reclaim thread has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundStats {
    /// Whether background reclaim is on (`CPUSLAB_BACKGROUND` is not `0` or
    /// `options::Options::background` turned it on, and the allocator has booted).
    pub enabled: bool,
    /// Whether a thread runs now.
    pub running: bool,
    /// Threads started (one per active period: each exits after its idle drain).
    pub starts: u64,
    /// Idle drains done.
    pub idle_drains: u64,
    /// Bytes purged by idle drains.
    pub purged_bytes: u64,
}

/// A snapshot of [`BackgroundStats`].
pub fn stats() -> BackgroundStats {
    let state = STATE.load(Ordering::Relaxed);
    BackgroundStats {
        enabled: state != DISABLED && !STOP_REQUESTED.load(Ordering::Relaxed),
        running: state == RUNNING,
        starts: STARTS.load(Ordering::Relaxed),
        idle_drains: IDLE_DRAINS.load(Ordering::Relaxed),
        purged_bytes: PURGED_BYTES.load(Ordering::Relaxed),
    }
}

/// Turns background reclaim on (boot, unless `CPUSLAB_BACKGROUND=0`). Starts nothing.
pub(crate) fn enable() {
    STOP_REQUESTED.store(false, Ordering::SeqCst);
    let _ = STATE.compare_exchange(DISABLED, STOPPED, Ordering::AcqRel, Ordering::Relaxed);
}

/// Set by [`disable`] while the thread runs: it exits at its next look, leaving
/// background reclaim off; [`enable`] clears it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Turns background reclaim off at run time (`config::Options::background(false)`):
/// no thread starts from now on, and a running one exits at its next look (within
/// [`TICK_MS`]).
pub(crate) fn disable() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    let _ = STATE.compare_exchange(STOPPED, DISABLED, Ordering::AcqRel, Ordering::Relaxed);
}

/// Set once the C interface serves this process (`libcpuslab_preload.so`): then glibc's
/// own frees come to cpuslab, some holding glibc's thread-stack lock, and only
/// `malloc`'s slow path may start the thread.
static C_INTERFACE: AtomicBool = AtomicBool::new(false);

/// Notes that the C interface serves this process (its constructor, and its `malloc`
/// and `free` slow paths, call this before any slow path of cpuslab runs).
#[cfg(feature = "capi")]
#[inline]
pub(crate) fn c_interface() {
    if !C_INTERFACE.load(Ordering::Relaxed) {
        C_INTERFACE.store(true, Ordering::Relaxed);
    }
}

/// Starts the thread if there is none and it is worth one. Called from allocation
/// slow paths holding no lock of cpuslab's or glibc's (see the module's notes); one
/// load when the thread runs.
#[inline]
pub(crate) fn kick() {
    if STATE.load(Ordering::SeqCst) == STOPPED {
        start();
    }
}

/// [`kick`] from a slab slow path (`maybe_reap`, allocation or free), holding no lock:
/// not under the C interface, where a free may come from inside glibc holding a lock
/// `pthread_create` takes.
pub(crate) fn kick_from_slab() {
    if !C_INTERFACE.load(Ordering::Relaxed) {
        kick();
    }
}

#[cold]
fn start() {
    // The committed count first: a small program calls this on every slow path.
    if page::arena::committed() < purge::retain_bytes() + START_BYTES {
        return;
    }
    let now = sys::time::now_ms();
    if now < RETRY_AT.load(Ordering::Relaxed) {
        return;
    }
    // The checks and the thread's creation make system calls that may set errno; the
    // caller's call succeeds.
    let saved = errno::Saved::new();
    start_thread(now);
    saved.restore();
}

/// [`start`] past its cheap checks.
fn start_thread(now: u64) {
    // RUNNING before the thread exists: one caller goes on, and the allocations of
    // `pthread_create` (its slow paths) start no other.
    if STATE
        .compare_exchange(STOPPED, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // A sandbox the program put itself in since boot may kill it for creating a
    // thread, as OpenSSH's pre-authentication sandbox kills on clone(2).
    let next = match sys::process::sandbox_since_boot() {
        Some(true) => DISABLED,
        Some(false) if sys::thread::spawn_helper(reclaim_thread, 0) => {
            STARTS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The kernel refused the thread, or the state cannot be read (no /proc, or
        // the open refused): not now.
        _ => STOPPED,
    };
    RETRY_AT.store(now + RETRY_MS, Ordering::Relaxed);
    STATE.store(next, Ordering::Release);
}

/// The thread: looks every [`TICK_MS`]; after [`IDLE_MS`] without activity drains and
/// exits.
extern "C" fn reclaim_thread(_: *mut c_void) -> *mut c_void {
    sys::thread::set_name(c"cpuslab-reclaim");
    let me = sys::cpu::thread_id();
    purge::set_reclaimer(me);
    // Whatever ran before the start was activity.
    purge::take_activity();
    let mut idle_ms = 0;
    loop {
        sys::time::sleep_ms(TICK_MS);
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            purge::set_reclaimer(0);
            STATE.store(DISABLED, Ordering::SeqCst);
            // An `enable` between the load and the store above found RUNNING and left
            // it: it cleared the request, so hand the state back to it.
            if !STOP_REQUESTED.load(Ordering::SeqCst) {
                let _ =
                    STATE.compare_exchange(DISABLED, STOPPED, Ordering::AcqRel, Ordering::Relaxed);
            }
            return core::ptr::null_mut();
        }
        let now = sys::time::now_ms();
        if purge::take_activity() {
            idle_ms = 0;
        } else {
            idle_ms += TICK_MS;
        }
        if idle_ms < IDLE_MS {
            periodic(now);
            continue;
        }
        if idle_ms == IDLE_MS {
            drain_idle();
        }
        // Freed huge blocks are purged once their decay time passed: stay for them.
        huge::decay(now);
        if huge::cached_bytes() > 0 {
            continue;
        }
        purge::set_reclaimer(0);
        STATE.store(STOPPED, Ordering::SeqCst);
        // A slow path that set the flag before the store above may have seen RUNNING
        // and started nothing: carry on for it, unless another thread already started.
        if !purge::activity_pending()
            || STATE
                .compare_exchange(STOPPED, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return core::ptr::null_mut();
        }
        purge::set_reclaimer(me);
        idle_ms = 0;
    }
}

/// The periodic work: `cache_reap` when due, decayed pages purged, and CPUs or nodes
/// that came or went noticed (`cpuset::check_machine`).
fn periodic(now: u64) {
    crate::cpuset::check_machine();
    slab::reap::reap_if_due(now);
    for node in 0..topology::nr_node_ids() {
        purge::maybe_purge(page::zone(node), now);
    }
}

/// The idle drain: caches and free slabs, page lists, free pages beyond what each
/// zone retains.
fn drain_idle() {
    slab::reap::shrink_all_tried();
    for cpu in 0..pcp::nr_lists() {
        pcp::try_drain_pages(cpu);
    }
    let mut pages = 0;
    for node in 0..topology::nr_node_ids() {
        pages += purge::purge_zone_idle(page::zone(node));
    }
    IDLE_DRAINS.fetch_add(1, Ordering::Relaxed);
    PURGED_BYTES.fetch_add(purge::pages_to_bytes(pages) as u64, Ordering::Relaxed);
}

/// fork, child: the thread did not come along; the first slow path starts one.
pub(crate) fn after_fork() {
    purge::set_reclaimer(0);
    let _ = STATE.compare_exchange(RUNNING, STOPPED, Ordering::AcqRel, Ordering::Relaxed);
}
