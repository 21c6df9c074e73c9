//! `cpuset.memory_pressure`, the kernel's per-cpuset filtered meter of memory
//! pressure (`fmeter` in kernel/cgroup/cpuset-v1.c): the rate of the events of the
//! threads in a cpuset that the allocator could not serve from what it had, as a
//! simple digital filter, in events per second times 1000. The events here: an
//! allocation that purged free memory to make room under pressure (the kernel counts
//! entries into direct reclaim), and an allocation that failed. Off until the top
//! cpuset's `cpuset.memory_pressure_enabled` is 1, as in the kernel. The meters are
//! the process's tree's, by cpuset index: another tree (built over a described
//! topology, for tests and tools) reads them too but has no threads to mark them.

use core::sync::atomic::{AtomicBool, Ordering};

use super::tree::MAX_CPUSETS;
use crate::sync::Mutex;

/// The filter: each second the value keeps `FM_COEF / FM_SCALE` of itself and takes
/// the rest from the events of that second.
const FM_COEF: u64 = 933;
const FM_SCALE: u64 = 1000;
/// Seconds past which a meter's value has decayed to nothing.
const FM_MAXTICKS: u64 = 99;
/// Most events counted in one second, scaled.
const FM_MAXCNT: u64 = 1_000_000;

/// One cpuset's meter.
#[derive(Clone, Copy)]
struct FMeter {
    /// Events since the last update, times `FM_SCALE`.
    cnt: u64,
    /// The filtered rate.
    val: u64,
    /// When it was last updated, in seconds.
    time: u64,
}

impl FMeter {
    const NEW: Self = Self {
        cnt: 0,
        val: 0,
        time: 0,
    };

    /// `fmeter_update`: applies the filter once for every second since the last one.
    fn update(&mut self, now: u64) {
        let ticks = now.saturating_sub(self.time).min(FM_MAXTICKS);
        for _ in 0..ticks {
            self.val = (FM_COEF * self.val) / FM_SCALE;
        }
        self.time = now;
        self.val += ((FM_SCALE - FM_COEF) * self.cnt) / FM_SCALE;
        self.cnt = 0;
    }

    /// `fmeter_markevent`.
    fn mark(&mut self, now: u64) {
        self.update(now);
        self.cnt = (self.cnt + FM_SCALE).min(FM_MAXCNT);
    }

    /// `fmeter_getrate`.
    fn rate(&mut self, now: u64) -> u64 {
        self.update(now);
        self.val
    }
}

static METERS: [Mutex<FMeter>; MAX_CPUSETS] = [const { Mutex::new(FMeter::NEW) }; MAX_CPUSETS];
/// `cpuset_memory_pressure_enabled`, the top cpuset's `memory_pressure_enabled`.
static ENABLED: AtomicBool = AtomicBool::new(false);

fn now_s() -> u64 {
    crate::sys::time::now_ms() / 1000
}

/// Whether the meters count (the top's `cpuset.memory_pressure_enabled`).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the meters on or off (`cpuset.memory_pressure_enabled` of the top cpuset).
pub(super) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

// The meters' locks are only ever tried: held for a few instructions, and a forked
// child may find one held by a thread that is not there.

/// Starts the meter of cpuset `idx` afresh (a cpuset created in a free slot).
pub(super) fn reset(idx: usize) {
    if let Some(mut m) = METERS.get(idx).and_then(Mutex::try_lock) {
        *m = FMeter::NEW;
    }
}

/// `cpuset.memory_pressure` of cpuset `idx` (0 while its meter is busy).
pub(super) fn rate(idx: usize) -> u64 {
    METERS
        .get(idx)
        .and_then(Mutex::try_lock)
        .map_or(0, |mut m| m.rate(now_s()))
}

/// **Memory-pressure event** (`__cpuset_memory_pressure_bump`) of the calling thread,
/// counted for the cpuset it attached to. Tries one leaf lock of its own and nothing
/// else, so it may be called from any allocation path outside the page pool's locks.
pub(crate) fn memory_pressure_bump() {
    if !enabled() {
        return;
    }
    let idx = super::attach::attached_index();
    // A busy meter loses the event: it is a rate, not a count.
    if let Some(mut m) = METERS.get(idx).and_then(Mutex::try_lock) {
        m.mark(now_s());
    }
}
