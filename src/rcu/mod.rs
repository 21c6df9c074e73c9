//! A userspace Tree RCU that never allocates through the global allocator.
//!
//! - Readers ([`read_lock`]) are threads: a read section stores the current `gp_seq`
//!   in the thread's record and costs a compiler fence (membarrier(2) orders the grace
//!   period side) or a full fence where membarrier is unavailable.
//! - Reader records sit under a tree of `rcu_node`s (leaves of 16, inner nodes of 64);
//!   a grace period sets every node's `qsmask`, and quiescent states clear bits upward.
//! - A grace-period thread, started on first need, waits for requests, initialises the
//!   masks, forces quiescent states for readers outside old read sections, and invokes
//!   callbacks. [`synchronize_expedited`] drives a grace period on the caller.
//! - Callbacks ([`call_rcu`]) are intrusive ([`RcuHead`]) and sit on per-CPU segmented
//!   lists tagged with the grace period they need; [`barrier`] waits for all of them.
//!   [`free_rcu`] defers a free without a head, through per-CPU pages of pointers.
//!
//! ```
//! use cpuslab::rcu::{self, RcuCell};
//!
//! let config = RcuCell::new(String::from("v1"));
//! {
//!     let g = rcu::read_lock();
//!     assert_eq!(config.read(&g), "v1");
//! }
//! config.replace(String::from("v2")); // "v1" is dropped after a grace period
//! rcu::barrier();
//! ```

mod callbacks;
mod cell;
mod gp;
mod head;
mod kfree;
mod reader;
pub mod segcblist;
pub mod seq;
pub mod trace;
pub mod tree;

pub use callbacks::{barrier, call_rcu, BLIMIT, QHIMARK, QLOWMARK, QOVLD};
pub use cell::RcuCell;
pub use gp::{
    cond_synchronize, get_state, poll_state, start_poll, synchronize, synchronize_expedited,
};
pub use head::{RcuCallback, RcuHead};
pub(crate) use kfree::deferred;
pub use kfree::{free_rcu, set_block_free, BlockFree};
pub use reader::{in_read_section, read_lock, RcuReadGuard};

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// What RCU has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RcuStats {
    /// Current `gp_seq` (low two bits: 1 while a grace period runs).
    pub gp_seq: u64,
    /// Furthest `gp_seq` requested.
    pub gp_seq_needed: u64,
    /// Grace periods completed.
    pub completed: u64,
    /// Of which expedited.
    pub expedited: u64,
    /// Callbacks queued and not yet invoked.
    pub pending_callbacks: usize,
    /// Callbacks invoked.
    pub invoked_callbacks: u64,
    /// Registered reader threads.
    pub readers: usize,
    /// Stall warnings printed.
    pub stalls: u64,
    /// Whether the grace-period thread runs.
    pub kthread: bool,
    /// Trace events recorded, by kind (see [`trace::EVENT_NAMES`]).
    pub events: [u64; trace::NR_EVENTS],
}

/// A snapshot of [`RcuStats`].
pub fn rcu_stats() -> RcuStats {
    RcuStats {
        gp_seq: gp::gp_seq(),
        gp_seq_needed: gp::gp_seq_needed(),
        completed: gp::COMPLETED.load(Ordering::Relaxed),
        expedited: gp::EXPEDITED.load(Ordering::Relaxed),
        pending_callbacks: callbacks::pending(),
        invoked_callbacks: callbacks::invoked(),
        readers: reader::nr_registered(),
        stalls: gp::STALLS.load(Ordering::Relaxed),
        kthread: gp::kthread_running(),
        events: core::array::from_fn(|i| trace::COUNTS[i].load(Ordering::Relaxed)),
    }
}

/// Writes [`rcu_stats`] as text.
pub fn write_rcu_stats(w: &mut dyn Write) -> fmt::Result {
    let s = rcu_stats();
    writeln!(
        w,
        "gp_seq {} (needed {}) completed {} expedited {} pending {} invoked {} readers {} stalls {} kthread {}",
        s.gp_seq, s.gp_seq_needed, s.completed, s.expedited, s.pending_callbacks, s.invoked_callbacks, s.readers, s.stalls, s.kthread
    )?;
    for (name, n) in trace::EVENT_NAMES.iter().zip(s.events) {
        write!(w, "{name} {n} ")?;
    }
    w.write_char('\n')
}

static ATFORK: AtomicBool = AtomicBool::new(false);

/// Registers RCU's fork handlers once (called when the first reader registers or the
/// first grace period is requested).
pub(crate) fn register_atfork() {
    if !ATFORK.swap(true, Ordering::Relaxed) {
        crate::sys::fork::register(fork_prepare, fork_parent, fork_child);
    }
}

extern "C" fn fork_prepare() {
    callbacks::lock_all();
}

extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took the locks on this thread.
    unsafe { callbacks::unlock_all() };
}

extern "C" fn fork_child() {
    crate::sys::membarrier::reregister_after_fork();
    // SAFETY: the child's only thread; `fork_prepare` took the list locks on it.
    unsafe {
        callbacks::reset_barrier_after_fork();
        callbacks::unlock_all();
        tree::reset_locks_after_fork();
        gp::reset_after_fork();
    }
    reader::forget_other_readers_after_fork();
}
