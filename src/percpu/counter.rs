//! `PercpuCounter`, the kernel's `percpu_counter`: a count kept as a per-CPU delta on
//! every CPU plus a global value, the deltas folded into the global value once they
//! reach a batch. Adding touches only the calling CPU's cache line; reading the global
//! value is approximate, summing every delta exact.
//!
//! A delta may be touched by several threads (those on that CPU, or one that migrated
//! between reading its CPU and adding). Where the kernel supports restartable
//! sequences, an add is one of them (`sys::rseq`): a plain load, add and store that
//! the kernel restarts if the thread is preempted or migrated before the store, as the
//! kernel's own `this_cpu_add` is one instruction that cannot be interrupted halfway.
//! Elsewhere the delta is an atomic and the add one uncontended locked instruction.

use core::cmp::Ordering as CmpOrdering;
use core::sync::atomic::{AtomicI64, Ordering};

use super::{PerCpu, PercpuError};
use crossbeam_utils::CachePadded;

use super::PCPU_UNIT_SIZE;
use crate::sync::Mutex;
use crate::{sys, topology};

/// A counter cheap to add to from many CPUs at once (`struct percpu_counter`).
///
/// ```
/// use cpuslab::percpu::PercpuCounter;
///
/// let c = PercpuCounter::new(0).unwrap();
/// c.add(5);
/// c.add(-2);
/// assert_eq!(c.sum(), 3);
/// ```
pub struct PercpuCounter {
    /// Each CPU's delta not folded yet, written by restartable sequences where they
    /// run, else by atomic read-modify-writes (see the module docs).
    counters: PerCpu<AtomicI64>,
    /// A delta that reaches this size (either sign) is folded.
    batch: i64,
    /// The folded part of the count and its lock, on a line of their own so that a
    /// fold does not take the line the adders read `counters` and `batch` from.
    global: CachePadded<Global>,
}

/// The shared part of a [`PercpuCounter`].
struct Global {
    /// The folded part of the count.
    count: AtomicI64,
    /// Serialises folds against exact sums and `set` (the kernel's `fbc->lock`).
    lock: Mutex<()>,
}

impl PercpuCounter {
    /// A counter starting at `initial`, with the kernel's default batch
    /// (`percpu_counter_batch`: 32, or twice the number of CPUs when larger).
    pub fn new(initial: i64) -> Result<Self, PercpuError> {
        let batch = (2 * topology::nr_cpu_ids()).max(32) as i64;
        Self::with_batch(initial, batch)
    }

    /// A counter starting at `initial` that folds deltas of `batch` or more (at least 1).
    pub fn with_batch(initial: i64, batch: i64) -> Result<Self, PercpuError> {
        Ok(Self {
            counters: PerCpu::new()?,
            batch: batch.max(1),
            global: CachePadded::new(Global {
                count: AtomicI64::new(initial),
                lock: Mutex::new(()),
            }),
        })
    }

    /// The batch of this counter.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// `percpu_counter_add`: adds `amount` (either sign).
    #[inline]
    pub fn add(&self, amount: i64) {
        self.add_batch(amount, self.batch);
    }

    /// `percpu_counter_inc`.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// `percpu_counter_dec`.
    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }

    /// `percpu_counter_sub`.
    #[inline]
    pub fn sub(&self, amount: i64) {
        self.add(amount.wrapping_neg());
    }

    /// `percpu_counter_add_batch`: adds `amount`, folding this CPU's delta into the
    /// global count once it reaches `batch` in either sign. The fold's lock is only
    /// tried while the delta is under twice the batch, so adders rarely wait.
    #[inline]
    pub fn add_batch(&self, amount: i64, batch: i64) {
        let new = if sys::rseq::available() {
            // SAFETY: the deltas are i64s a unit apart, one per possible CPU, and are
            // only written by restartable sequences (and `set`, racy as documented).
            let new = unsafe {
                sys::rseq::percpu_add(self.deltas(), PCPU_UNIT_SIZE, self.nr_cpus(), amount)
            };
            match new {
                Some(new) => new,
                None => {
                    // A thread without an rseq area: straight into the global count.
                    self.global.count.fetch_add(amount, Ordering::Relaxed);
                    return;
                }
            }
        } else {
            self.counters
                .this_cpu()
                .fetch_add(amount, Ordering::Relaxed)
                .wrapping_add(amount)
        };
        if new.unsigned_abs() >= batch.unsigned_abs() {
            self.fold(batch);
        }
    }

    /// CPU 0's delta; CPU `c`'s is [`PCPU_UNIT_SIZE`]` * c` bytes further.
    #[inline]
    fn deltas(&self) -> *mut i64 {
        self.counters.as_pcpu_ptr().as_ptr().cast()
    }

    #[inline]
    fn nr_cpus(&self) -> usize {
        self.counters.nr_cpus()
    }

    /// Moves this CPU's whole delta into the global count, under the lock so that an
    /// exact sum never sees it in both places or in neither. The lock is tried first:
    /// when another CPU is folding (or a sum runs) the delta waits for this CPU's next
    /// add, unless it has grown to twice the batch, where the fold waits for the lock.
    #[cold]
    fn fold(&self, batch: i64) {
        let _g = match self.global.lock.try_lock() {
            Some(g) => g,
            None if self
                .counters
                .this_cpu()
                .load(Ordering::Relaxed)
                .unsigned_abs()
                < 2 * batch.unsigned_abs() =>
            {
                return
            }
            None => self.global.lock.lock(),
        };
        let v = if sys::rseq::available() {
            // SAFETY: as in `add_batch`.
            unsafe { sys::rseq::percpu_xchg(self.deltas(), PCPU_UNIT_SIZE, self.nr_cpus(), 0) }
                .unwrap_or(0)
        } else {
            self.counters.this_cpu().swap(0, Ordering::Relaxed)
        };
        self.global.count.fetch_add(v, Ordering::Relaxed);
    }

    /// `percpu_counter_read`: the global count, without the deltas not folded yet:
    /// off by less than twice the batch per CPU.
    #[inline]
    pub fn read(&self) -> i64 {
        self.global.count.load(Ordering::Relaxed)
    }

    /// `percpu_counter_read_positive`: [`read`](Self::read), at least 0.
    #[inline]
    pub fn read_positive(&self) -> i64 {
        self.read().max(0)
    }

    /// `percpu_counter_sum`: the global count plus every CPU's delta. Exact when no
    /// thread is adding; otherwise a value the count had while the sum ran.
    pub fn sum(&self) -> i64 {
        let _g = self.global.lock.lock();
        self.counters
            .iter()
            .fold(self.global.count.load(Ordering::Relaxed), |acc, (_, d)| {
                acc.wrapping_add(d.load(Ordering::Relaxed))
            })
    }

    /// `percpu_counter_sum_positive`: [`sum`](Self::sum), at least 0.
    pub fn sum_positive(&self) -> i64 {
        self.sum().max(0)
    }

    /// `percpu_counter_set`: sets the count, clearing every CPU's delta. As in the
    /// kernel, it races with adds running at the same time: such an add may land
    /// before or after, and a delta being added to as it is cleared may keep its old
    /// value.
    pub fn set(&self, value: i64) {
        let _g = self.global.lock.lock();
        for (_, d) in self.counters.iter() {
            d.store(0, Ordering::Relaxed);
        }
        self.global.count.store(value, Ordering::Relaxed);
    }

    /// `__percpu_counter_compare`: compares the count with `rhs`, from the global
    /// count when it is further than the deltas could make up, else from an exact sum.
    pub fn compare(&self, rhs: i64) -> CmpOrdering {
        let slack = self.batch.saturating_mul(2 * topology::nr_cpu_ids() as i64);
        let approx = self.read();
        if approx.abs_diff(rhs) > slack.unsigned_abs() {
            approx.cmp(&rhs)
        } else {
            self.sum().cmp(&rhs)
        }
    }
}

impl core::fmt::Debug for PercpuCounter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PercpuCounter")
            .field("count", &self.read())
            .field("batch", &self.batch)
            .finish()
    }
}
