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
//!
//! The fold protocol is [`CounterFold`], apart from where the deltas live, so that a
//! loom model can run it over an array of deltas (`loom-tests/`).

use crate::sync::atomic::{AtomicI64, Ordering};
#[cfg(not(loom))]
use crate::sync::CachePadded;
use crate::sync::Mutex;

#[cfg(not(loom))]
use {
    super::{PerCpu, PercpuError, PCPU_UNIT_SIZE},
    crate::{sys, topology},
    core::cmp::Ordering as CmpOrdering,
};

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
#[cfg(not(loom))]
pub struct PercpuCounter {
    /// Each CPU's delta not folded yet, written by restartable sequences where they
    /// run, else by atomic read-modify-writes (see the module docs).
    counters: PerCpu<AtomicI64>,
    /// A delta that reaches this size (either sign) is folded.
    batch: i64,
    /// The folded part of the count and its lock, on a line of their own so that a
    /// fold does not take the line the adders read `counters` and `batch` from.
    global: CachePadded<CounterFold>,
}

/// The shared half of a counter and the fold protocol (`fbc->count` and `fbc->lock`),
/// whichever memory holds the per-CPU deltas: [`PercpuCounter`] keeps them in a
/// percpu area; a loom model keeps them in an array. A delta is named by a closure
/// that gives the delta of the CPU the thread runs on now.
pub struct CounterFold {
    /// The folded part of the count.
    count: AtomicI64,
    /// Serialises folds against exact sums and `set` (the kernel's `fbc->lock`).
    lock: Mutex<()>,
}

impl CounterFold {
    /// A folded count of `initial` and its lock.
    pub fn new(initial: i64) -> Self {
        Self {
            count: AtomicI64::new(initial),
            lock: Mutex::new(()),
        }
    }

    /// The folded part of the count (`percpu_counter_read`).
    #[inline]
    pub fn read(&self) -> i64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds `amount` straight to the folded part, for a thread that has no delta.
    #[inline]
    pub fn add_folded(&self, amount: i64) {
        self.count.fetch_add(amount, Ordering::Relaxed);
    }

    /// `percpu_counter_add_batch` where deltas are atomics: adds `amount` to this
    /// CPU's delta with one read-modify-write, and folds this CPU's delta once that
    /// add took it to `batch` in either sign.
    #[inline]
    pub fn add<'a>(&self, this_cpu: impl Fn() -> &'a AtomicI64, amount: i64, batch: i64) {
        let new = this_cpu()
            .fetch_add(amount, Ordering::Relaxed)
            .wrapping_add(amount);
        if new.unsigned_abs() >= batch.unsigned_abs() {
            self.fold(
                batch,
                || this_cpu().load(Ordering::Relaxed),
                || this_cpu().swap(0, Ordering::Relaxed),
            );
        }
    }

    /// Moves this CPU's whole delta (`take` exchanges it for 0) into the folded count,
    /// under the lock so that an exact sum never sees it in both places or in neither.
    /// The lock is tried first: when another CPU is folding (or a sum runs) the delta
    /// waits for this CPU's next add, unless it (`load`) has grown to twice the batch,
    /// where the fold waits for the lock.
    #[cold]
    pub fn fold(&self, batch: i64, load: impl FnOnce() -> i64, take: impl FnOnce() -> i64) {
        let _g = match self.lock.try_lock() {
            Some(g) => g,
            None if load().unsigned_abs() < 2 * batch.unsigned_abs() => return,
            None => self.lock.lock(),
        };
        let v = take();
        self.count.fetch_add(v, Ordering::Relaxed);
    }

    /// `percpu_counter_sum`: the folded count plus every delta, under the lock.
    pub fn sum<'a>(&self, deltas: impl IntoIterator<Item = &'a AtomicI64>) -> i64 {
        let _g = self.lock.lock();
        deltas
            .into_iter()
            .fold(self.count.load(Ordering::Relaxed), |acc, d| {
                acc.wrapping_add(d.load(Ordering::Relaxed))
            })
    }

    /// `percpu_counter_set`: clears every delta and sets the folded count, under the
    /// lock.
    pub fn set<'a>(&self, value: i64, deltas: impl IntoIterator<Item = &'a AtomicI64>) {
        let _g = self.lock.lock();
        for d in deltas {
            d.store(0, Ordering::Relaxed);
        }
        self.count.store(value, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
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
            global: CachePadded::new(CounterFold::new(initial)),
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
        if !sys::rseq::available() {
            self.global.add(|| self.counters.this_cpu(), amount, batch);
            return;
        }
        // SAFETY: the deltas are i64s a unit apart, one per possible CPU, and are only
        // written by restartable sequences (and `set`, racy as documented).
        let new =
            unsafe { sys::rseq::percpu_add(self.deltas(), PCPU_UNIT_SIZE, self.nr_cpus(), amount) };
        let Some(new) = new else {
            // A thread without an rseq area: straight into the global count.
            self.global.add_folded(amount);
            return;
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

    /// [`CounterFold::fold`] of this CPU's delta, exchanged by a restartable sequence.
    #[cold]
    fn fold(&self, batch: i64) {
        self.global.fold(
            batch,
            || self.counters.this_cpu().load(Ordering::Relaxed),
            || {
                // SAFETY: as in `add_batch`.
                unsafe { sys::rseq::percpu_xchg(self.deltas(), PCPU_UNIT_SIZE, self.nr_cpus(), 0) }
                    .unwrap_or(0)
            },
        );
    }

    /// `percpu_counter_read`: the global count, without the deltas not folded yet:
    /// off by less than twice the batch per CPU.
    #[inline]
    pub fn read(&self) -> i64 {
        self.global.read()
    }

    /// `percpu_counter_read_positive`: [`read`](Self::read), at least 0.
    #[inline]
    pub fn read_positive(&self) -> i64 {
        self.read().max(0)
    }

    /// `percpu_counter_sum`: the global count plus every CPU's delta. Exact when no
    /// thread is adding; otherwise a value the count had while the sum ran.
    pub fn sum(&self) -> i64 {
        self.global.sum(self.counters.iter().map(|(_, d)| d))
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
        self.global.set(value, self.counters.iter().map(|(_, d)| d));
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

#[cfg(not(loom))]
impl core::fmt::Debug for PercpuCounter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PercpuCounter")
            .field("count", &self.read())
            .field("batch", &self.batch)
            .finish()
    }
}
