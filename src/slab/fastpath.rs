//! Which per-CPU fast path the slab caches take, chosen once at boot.
//!
//! - **rseq**: a pop or a push is one restartable sequence on the calling CPU's array
//!   cache (`sys::rseq::stack_pop` / `stack_push`): plain loads and stores, no atomic
//!   read-modify-write. A cache is only ever changed by sequences on its own CPU, or by
//!   cross-CPU work (reaping, draining, retuning) that first takes the cache's lock —
//!   which sequences check and back off from — and then restarts every sequence in
//!   flight with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`.
//! - **trylock**: each operation takes the cache's tried lock (one compare-exchange),
//!   where rseq cannot run: no rseq area (`GLIBC_TUNABLES=glibc.pthread.rseq=0`,
//!   valgrind), a kernel without the membarrier command, other architectures, or
//!   `CPUSLAB_RSEQ=0`. A process whose membarrier is denied after boot (a seccomp
//!   filter installed later, a forked child that cannot register) moves from rseq to
//!   the tried lock while it runs (`sys::rseq::retire_stacks`).

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::sys;

/// The fast path in use and, for the tried lock, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastPath {
    /// Not chosen yet (the allocator has not booted).
    Undecided,
    /// Restartable sequences.
    Rseq,
    /// The tried lock: `CPUSLAB_RSEQ=0` asked for it.
    TryLockByRequest,
    /// The tried lock: no rseq area for this thread or architecture.
    TryLockNoRseq,
    /// The tried lock: the kernel refused `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ`.
    TryLockNoMembarrier,
    /// The tried lock: rseq ran until the kernel refused membarrier (a sandbox
    /// installed after boot, a forked child).
    TryLockMembarrierLost,
}

impl fmt::Display for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FastPath::Undecided => "undecided (not booted)",
            FastPath::Rseq => "rseq (restartable sequences, no atomic operation)",
            FastPath::TryLockByRequest => "trylock (CPUSLAB_RSEQ=0)",
            FastPath::TryLockNoRseq => "trylock (no rseq area: glibc < 2.35, tunable or valgrind)",
            FastPath::TryLockNoMembarrier => "trylock (membarrier RSEQ command refused)",
            FastPath::TryLockMembarrierLost => {
                "trylock (rseq until membarrier was refused while running)"
            }
        })
    }
}

static MODE: AtomicU8 = AtomicU8::new(0);
const RSEQ: u8 = 1;

fn encode(p: FastPath) -> u8 {
    match p {
        FastPath::Undecided => 0,
        FastPath::Rseq => RSEQ,
        FastPath::TryLockByRequest => 2,
        FastPath::TryLockNoRseq => 3,
        FastPath::TryLockNoMembarrier => 4,
        FastPath::TryLockMembarrierLost => 5,
    }
}

/// Chooses the fast path. Called by boot before any cache is set up, so no cache is
/// ever used both ways.
pub(crate) fn init() {
    if crate::topology::nr_node_ids() > 1 {
        // A free may be of another node's object (an alien free), which must go home
        // rather than onto this CPU's cache: the push fast paths compare nodes first.
        sys::rseq::hold(sys::rseq::HOLD_NODES);
    }
    let choice = if sys::env::get(c"CPUSLAB_RSEQ") == Some(b"0") {
        FastPath::TryLockByRequest
    } else if !sys::rseq::available() || !sys::cpu::rseq_cpu_valid() {
        FastPath::TryLockNoRseq
    } else if !sys::membarrier::register_rseq() {
        FastPath::TryLockNoMembarrier
    } else {
        sys::rseq::enable_stacks(crate::topology::nr_cpu_ids());
        FastPath::Rseq
    };
    MODE.store(encode(choice), Ordering::Relaxed);
}

/// Whether the caches run on restartable sequences: they were enabled and have not
/// been retired (one load of the hold word the inline paths read anyway).
#[inline(always)]
pub(crate) fn rseq() -> bool {
    sys::rseq::held() & sys::rseq::HOLD_STOPPED == 0
}

/// The fast path in use.
pub fn fast_path() -> FastPath {
    match MODE.load(Ordering::Relaxed) {
        0 => FastPath::Undecided,
        RSEQ if !rseq() => FastPath::TryLockMembarrierLost,
        RSEQ => FastPath::Rseq,
        2 => FastPath::TryLockByRequest,
        3 => FastPath::TryLockNoRseq,
        _ => FastPath::TryLockNoMembarrier,
    }
}

/// After array caches were stopped (their locks taken): on the rseq path, restarts
/// every sequence in flight on `cpu` (all CPUs for `None`) so that none still works on
/// a stopped cache. Nothing to do on the tried-lock path. If the kernel refuses, the
/// sequences are retired for good (which also leaves none in flight) and the caches
/// go on with the tried lock (`retire_stacks` says so on stderr).
pub(crate) fn fence(cpu: Option<usize>) {
    if rseq() && !sys::membarrier::rseq_fence(cpu) {
        sys::rseq::retire_stacks(false);
    }
}

/// fork, child: the membarrier registration belongs to the parent's address space.
/// The child registers again before its first fence (`membarrier::rseq_fence`), not
/// here: most children exec at once, and the look for a sandbox that comes with the
/// registration costs 15-18 µs. A child that cannot register then retires the
/// sequences there ([`fence`]).
pub(crate) fn after_fork() {
    if rseq() {
        sys::membarrier::register_rseq_later();
    }
}
