//! A fixed ring of the kernel's grace-period trace events (`trace_rcu_grace_period`),
//! written without allocating, with a count per event kind.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::gp;
use crate::sys;

/// Grace-period events, named as the kernel's trace strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    /// A grace period was requested.
    NewReq = 0,
    /// A grace period started.
    Start,
    /// A reader was included in the grace period's masks.
    CpuStart,
    /// A reader reported a quiescent state itself.
    CpuQs,
    /// The driver waits before forcing quiescent states.
    FqsWait,
    /// A force-quiescent-state scan started.
    FqsStart,
    /// A force-quiescent-state scan ended.
    FqsEnd,
    /// The grace period ended.
    End,
    /// Cleanup of the grace period finished.
    CpuEnd,
    /// A caller waits for a grace period to end (`synchronize`).
    ReqWait,
    /// A leaf's readers were included in a starting grace period (`arg`: the leaf).
    StartedLeaf,
    /// A request found its grace period already requested or started.
    Prestarted,
}

/// Number of event kinds.
pub const NR_EVENTS: usize = 12;

/// Names of the events, in the kernel's spelling.
pub const EVENT_NAMES: [&str; NR_EVENTS] = [
    "newreq",
    "start",
    "cpustart",
    "cpuqs",
    "fqswait",
    "fqsstart",
    "fqsend",
    "end",
    "cpuend",
    "reqwait",
    "startedleaf",
    "prestarted",
];

/// The event of kind `k` (`k < NR_EVENTS`).
const fn event_of(k: usize) -> Event {
    match k {
        0 => Event::NewReq,
        1 => Event::Start,
        2 => Event::CpuStart,
        3 => Event::CpuQs,
        4 => Event::FqsWait,
        5 => Event::FqsStart,
        6 => Event::FqsEnd,
        7 => Event::End,
        8 => Event::CpuEnd,
        9 => Event::ReqWait,
        10 => Event::StartedLeaf,
        _ => Event::Prestarted,
    }
}

const RING: usize = 1024;

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Monotonic time in ns.
    pub time_ns: u64,
    /// `gp_seq` when it happened.
    pub gp_seq: u64,
    /// The event.
    pub event: Event,
    /// Reader slot, where the event concerns one.
    pub arg: u32,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static TIME: [AtomicU64; RING] = [const { AtomicU64::new(0) }; RING];
static SEQ: [AtomicU64; RING] = [const { AtomicU64::new(0) }; RING];
static WHAT: [AtomicU64; RING] = [const { AtomicU64::new(0) }; RING];
/// Events recorded, per kind.
pub static COUNTS: [AtomicU64; NR_EVENTS] = [const { AtomicU64::new(0) }; NR_EVENTS];

/// Records one event.
pub fn record(event: Event, arg: u32) {
    COUNTS[event as usize].fetch_add(1, Ordering::Relaxed);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % RING;
    TIME[i].store(sys::time::now_ns(), Ordering::Relaxed);
    SEQ[i].store(gp::gp_seq(), Ordering::Relaxed);
    WHAT[i].store((event as u64) << 32 | arg as u64, Ordering::Release);
}

/// The last `out.len()` events (oldest first); returns how many were copied. Entries
/// being overwritten while copying may be torn; this is a debugging aid.
pub fn snapshot(out: &mut [TraceEntry]) -> usize {
    let end = NEXT.load(Ordering::Acquire);
    let n = out.len().min(end).min(RING);
    for (k, slot) in out[..n].iter_mut().enumerate() {
        let i = (end - n + k) % RING;
        let what = WHAT[i].load(Ordering::Acquire);
        let kind = ((what >> 32) as usize).min(NR_EVENTS - 1);
        *slot = TraceEntry {
            time_ns: TIME[i].load(Ordering::Relaxed),
            gp_seq: SEQ[i].load(Ordering::Relaxed),
            event: event_of(kind),
            arg: what as u32,
        };
    }
    n
}
