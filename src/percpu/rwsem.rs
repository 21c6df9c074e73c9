//! `PercpuRwSem`, the kernel's `percpu_rw_semaphore` (what `cpuset_rwsem` is): readers
//! count themselves on their own CPU and never write a shared line; a writer blocks new
//! readers and waits for the per-CPU counts to drain.
//!
//! The kernel's readers skip even a full barrier while no writer is around, because
//! the writer first waits for an RCU grace period (`rcu_sync`). Here the percpu layer
//! sits below cpuslab's RCU (whose per-CPU state lives in percpu memory), so it cannot
//! wait for a grace period; the two sides meet Dekker-style through sequentially
//! consistent operations instead: a reader increments its CPU's count and then loads
//! the writer flag; a writer stores the flag and then loads every count. Either the
//! reader sees the flag (and backs out) or the writer sees the reader's count (and
//! waits). On x86 the reader's locked increment is the barrier already, so the fast
//! path costs one uncontended locked add and one load.
//!
//! A reader may increment on one CPU and decrement on another (it migrated): a CPU's
//! count may go negative, only the sum over CPUs means anything.
//!
//! The protocol is [`RwSemCore`], apart from where the per-CPU counts live, so that a
//! loom model can run it over an array of counts (`loom-tests/`).

use crate::sync::atomic::{AtomicIsize, AtomicU32, Ordering};
use crate::sync::prim::futex;
use crate::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
use super::{PerCpu, PercpuError};

/// A reader-writer semaphore whose readers scale with the CPUs
/// (`struct percpu_rw_semaphore`).
///
/// ```
/// use cpuslab::percpu::PercpuRwSem;
///
/// let sem = PercpuRwSem::new().unwrap();
/// {
///     let _r1 = sem.down_read();
///     let _r2 = sem.down_read();
/// }
/// let _w = sem.down_write();
/// assert!(sem.try_down_read().is_none());
/// ```
#[cfg(not(loom))]
pub struct PercpuRwSem {
    /// Readers inside, counted on the CPU each entered or left on (`read_count`).
    read_count: PerCpu<AtomicIsize>,
    /// The writer's side.
    core: RwSemCore,
}

/// The shared half of a [`PercpuRwSem`] and its protocol, whichever memory holds the
/// per-CPU reader counts: the semaphore keeps them in a percpu area, a loom model in
/// an array. A count is named by a closure that gives the count of the CPU the thread
/// runs on now; all of them by a closure that sums them.
pub struct RwSemCore {
    /// 1 while a writer holds the semaphore or waits for readers (`block`); readers
    /// sleep on it.
    block: AtomicU32,
    /// Bumped by every reader that leaves while `block` is set; the writer sleeps on it
    /// (the kernel's `writer` rcuwait).
    writer_wake: AtomicU32,
    /// Serialises writers (the kernel's `rw_sem`).
    writer: Mutex<()>,
}

impl RwSemCore {
    /// A free semaphore.
    pub fn new() -> Self {
        let core = Self {
            block: AtomicU32::new(0),
            writer_wake: AtomicU32::new(0),
            writer: Mutex::new(()),
        };
        // Loom takes an atomic's initial value for a release store, outside the order
        // of sequentially consistent operations, and would let a SeqCst load read it
        // after a later SeqCst store; C11 forbids that, and this puts it in the order.
        #[cfg(loom)]
        {
            core.block.store(0, Ordering::SeqCst);
            core.writer_wake.store(0, Ordering::SeqCst);
        }
        core
    }

    /// Counts a reader in on this CPU; false (count undone) if a writer is there.
    #[inline]
    pub fn try_enter<'a>(&self, this_cpu: impl Fn() -> &'a AtomicIsize) -> bool {
        this_cpu().fetch_add(1, Ordering::SeqCst);
        if self.block.load(Ordering::SeqCst) == 0 {
            return true;
        }
        self.leave(this_cpu());
        false
    }

    /// Counts a reader out on `count`, this CPU's, and wakes a writer waiting for the
    /// counts.
    #[inline]
    pub fn leave(&self, count: &AtomicIsize) {
        count.fetch_sub(1, Ordering::SeqCst);
        if self.block.load(Ordering::SeqCst) != 0 {
            self.wake_writer();
        }
    }

    #[cold]
    fn wake_writer(&self) {
        self.writer_wake.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.writer_wake, 1);
    }

    /// `percpu_down_read`: counts a reader in, sleeping while a writer holds or waits.
    #[inline]
    pub fn down_read<'a>(&self, this_cpu: impl Fn() -> &'a AtomicIsize) {
        if !self.try_enter(&this_cpu) {
            self.down_read_slow(this_cpu);
        }
    }

    #[cold]
    fn down_read_slow<'a>(&self, this_cpu: impl Fn() -> &'a AtomicIsize) {
        loop {
            while self.block.load(Ordering::Acquire) != 0 {
                futex::wait(&self.block, 1);
            }
            if self.try_enter(&this_cpu) {
                return;
            }
        }
    }

    /// `percpu_down_write`: takes the writers' lock, blocks new readers, then sleeps
    /// until `readers` (the sum of every CPU's count) is 0. The write hold lasts until
    /// [`unblock_readers`](Self::unblock_readers) and the drop of the returned guard.
    pub fn down_write(&self, readers: impl Fn() -> isize) -> MutexGuard<'_, ()> {
        let writer = self.writer.lock();
        self.block.store(1, Ordering::SeqCst);
        loop {
            let seen = self.writer_wake.load(Ordering::SeqCst);
            if readers() == 0 {
                break;
            }
            // A reader leaving after the count above bumps `writer_wake` first.
            futex::wait(&self.writer_wake, seen);
        }
        writer
    }

    /// `percpu_up_write`, before the writers' lock is released: lets readers in.
    pub fn unblock_readers(&self) {
        // Readers that see 0 also see everything the writer did.
        self.block.store(0, Ordering::SeqCst);
        futex::wake(&self.block, i32::MAX);
    }

    /// Whether a writer holds the semaphore or waits for its readers.
    pub fn is_write_locked(&self) -> bool {
        self.block.load(Ordering::Relaxed) != 0
    }
}

impl Default for RwSemCore {
    fn default() -> Self {
        Self::new()
    }
}

/// A read hold of a [`PercpuRwSem`]; released on drop (`percpu_up_read`).
#[cfg(not(loom))]
#[must_use = "the read hold is released when the guard is dropped"]
pub struct PercpuReadGuard<'a> {
    sem: &'a PercpuRwSem,
}

/// The write hold of a [`PercpuRwSem`]; released on drop (`percpu_up_write`).
#[cfg(not(loom))]
#[must_use = "the write hold is released when the guard is dropped"]
pub struct PercpuWriteGuard<'a> {
    sem: &'a PercpuRwSem,
    _writer: MutexGuard<'a, ()>,
}

#[cfg(not(loom))]
impl PercpuRwSem {
    /// `percpu_init_rwsem`: a free semaphore; its counts take a percpu area.
    pub fn new() -> Result<Self, PercpuError> {
        Ok(Self {
            read_count: PerCpu::new()?,
            core: RwSemCore::new(),
        })
    }

    /// `percpu_down_read`: takes a read hold, sleeping while a writer holds or waits.
    #[inline]
    pub fn down_read(&self) -> PercpuReadGuard<'_> {
        self.core.down_read(|| self.read_count.this_cpu());
        PercpuReadGuard { sem: self }
    }

    /// `percpu_down_read_trylock`: a read hold if no writer holds or waits.
    #[inline]
    pub fn try_down_read(&self) -> Option<PercpuReadGuard<'_>> {
        // `then`, not `then_some`: a guard made on failure would count a reader out.
        self.core
            .try_enter(|| self.read_count.this_cpu())
            .then(|| PercpuReadGuard { sem: self })
    }

    /// `percpu_down_write`: takes the write hold: blocks new readers, then sleeps until
    /// every reader inside has left.
    pub fn down_write(&self) -> PercpuWriteGuard<'_> {
        let writer = self.core.down_write(|| self.readers());
        PercpuWriteGuard {
            sem: self,
            _writer: writer,
        }
    }

    /// The readers inside: the sum of every CPU's count (`readers_active_check`).
    fn readers(&self) -> isize {
        self.read_count
            .iter()
            .fold(0isize, |n, (_, c)| n.wrapping_add(c.load(Ordering::SeqCst)))
    }

    /// Whether a writer holds the semaphore or waits for its readers.
    pub fn is_write_locked(&self) -> bool {
        self.core.is_write_locked()
    }
}

#[cfg(not(loom))]
impl Drop for PercpuReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.core.leave(self.sem.read_count.this_cpu());
    }
}

#[cfg(not(loom))]
impl Drop for PercpuWriteGuard<'_> {
    fn drop(&mut self) {
        self.sem.core.unblock_readers();
        // The writer mutex is released after this, as the guard's last field drops.
    }
}

#[cfg(not(loom))]
impl core::fmt::Debug for PercpuRwSem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PercpuRwSem")
            .field("readers", &self.readers())
            .field("write_locked", &self.is_write_locked())
            .finish()
    }
}
