//! `PerCpu<T>`: `alloc_percpu` for one type, with a `T` in every possible CPU's unit,
//! and [`LocalLock`], the per-CPU discipline for data that is not atomic.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use super::{alloc_percpu, free_percpu, this_cpu, PcpuPtr, PercpuError};
use crate::sync::TryLock;
use crate::topology;

/// A `T` for every possible CPU, in a percpu area (`alloc_percpu(type)`).
///
/// Copies are reached by CPU id ([`get`](Self::get)), for the calling thread's CPU
/// ([`this_cpu`](Self::this_cpu)) or all together ([`iter`](Self::iter)). Any thread
/// may reach any copy, and the thread that asked for "this CPU" may migrate right
/// after: shared access therefore gives `&T`, and `T` carries its own discipline —
/// atomics, or a [`LocalLock`] that is tried, never waited on.
///
/// ```
/// use core::sync::atomic::{AtomicU64, Ordering};
/// use cpuslab::percpu::PerCpu;
///
/// let hits = PerCpu::<AtomicU64>::new().unwrap();
/// hits.this_cpu().fetch_add(1, Ordering::Relaxed);
/// let total: u64 = hits.iter().map(|(_, h)| h.load(Ordering::Relaxed)).sum();
/// assert_eq!(total, 1);
/// ```
pub struct PerCpu<T> {
    ptr: PcpuPtr,
    _owns: PhantomData<T>,
}

// SAFETY: the copies move with the owner, who drops them.
unsafe impl<T: Send> Send for PerCpu<T> {}
// SAFETY: shared access hands out `&T` to any thread.
unsafe impl<T: Sync> Sync for PerCpu<T> {}

impl<T> PerCpu<T> {
    /// Allocates a copy for every possible CPU, each initialised by `init(cpu)`.
    /// Fails when `T` is larger than an area may be or more aligned than a page.
    pub fn new_with(mut init: impl FnMut(usize) -> T) -> Result<Self, PercpuError> {
        let size = core::mem::size_of::<T>().max(1);
        let ptr = alloc_percpu(size, core::mem::align_of::<T>())?;
        for cpu in 0..topology::nr_cpu_ids() {
            // SAFETY: the copy is `size` bytes, aligned for `T`, ours and uninitialised.
            // If `init` panics the area and the copies made so far leak (no double drop).
            unsafe { ptr.per_cpu_ptr(cpu).cast::<T>().write(init(cpu)) };
        }
        Ok(Self {
            ptr,
            _owns: PhantomData,
        })
    }

    /// Allocates a copy of `T::default()` for every possible CPU.
    pub fn new() -> Result<Self, PercpuError>
    where
        T: Default,
    {
        Self::new_with(|_| T::default())
    }

    /// Number of copies: the possible CPUs.
    #[inline]
    pub fn nr_cpus(&self) -> usize {
        topology::nr_cpu_ids()
    }

    /// CPU `cpu`'s copy, or `None` for a CPU that is not possible.
    #[inline]
    pub fn get(&self, cpu: usize) -> Option<&T> {
        // SAFETY: a non-null copy is initialised and lives as long as `self`.
        unsafe { self.ptr.per_cpu_ptr(cpu).cast::<T>().as_ref() }
    }

    /// CPU `cpu`'s copy, exclusively.
    #[inline]
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        // SAFETY: as `get`; `&mut self` excludes every other access.
        unsafe { self.ptr.per_cpu_ptr(cpu).cast::<T>().as_mut() }
    }

    /// The copy of the CPU the calling thread runs on (`this_cpu_ptr`). A hint: the
    /// thread may migrate, so the copy is shared with that CPU's threads.
    #[inline]
    pub fn this_cpu(&self) -> &T {
        // SAFETY: `this_cpu()` is a possible CPU; its copy is initialised.
        unsafe { &*self.ptr.this_cpu_ptr().cast::<T>() }
    }

    /// The calling thread's CPU and its copy.
    #[inline]
    pub fn this_cpu_with_id(&self) -> (usize, &T) {
        let cpu = this_cpu();
        // SAFETY: as `this_cpu`.
        (cpu, unsafe { &*self.ptr.per_cpu_ptr(cpu).cast::<T>() })
    }

    /// Every CPU's copy with its CPU id (`for_each_possible_cpu`).
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        (0..self.nr_cpus()).filter_map(move |cpu| Some((cpu, self.get(cpu)?)))
    }

    /// Every CPU's copy with its CPU id, exclusively.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> + '_ {
        let ptr = self.ptr;
        (0..self.nr_cpus()).filter_map(move |cpu| {
            // SAFETY: each CPU's copy is yielded once; `&mut self` is held meanwhile.
            unsafe { ptr.per_cpu_ptr(cpu).cast::<T>().as_mut() }.map(|v| (cpu, v))
        })
    }

    /// The underlying area.
    #[inline]
    pub fn as_pcpu_ptr(&self) -> PcpuPtr {
        self.ptr
    }
}

impl<T> PerCpu<LocalLock<T>> {
    /// Tries the lock of the calling thread's CPU's copy: the per-CPU discipline in one
    /// call. `None` when another thread holds it; take another path then.
    #[inline]
    pub fn try_lock_this_cpu(&self) -> Option<LocalLockGuard<'_, T>> {
        self.this_cpu().try_lock()
    }
}

impl<T> Drop for PerCpu<T> {
    fn drop(&mut self) {
        for cpu in 0..self.nr_cpus() {
            // SAFETY: every copy was initialised and is dropped once, here.
            unsafe { core::ptr::drop_in_place(self.ptr.per_cpu_ptr(cpu).cast::<T>()) };
        }
        // SAFETY: the area came from `alloc_percpu` and nothing refers to it now.
        unsafe { free_percpu(self.ptr) };
    }
}

impl<T: fmt::Debug> fmt::Debug for PerCpu<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Per-CPU data that is not atomic, under a lock that is tried once and never waited
/// on (the kernel's `local_lock`, which user space cannot make by disabling
/// preemption). A thread that fails to take it takes another path: its holder may
/// have been preempted and could keep it for a whole time slice.
pub struct LocalLock<T> {
    lock: TryLock,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for LocalLock<T> {}

impl<T> LocalLock<T> {
    /// An unlocked `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: TryLock::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<LocalLockGuard<'_, T>> {
        // `then`, not `then_some`: a guard made on failure would unlock the holder's lock.
        self.lock.try_lock().then(|| LocalLockGuard { lock: self })
    }

    /// Takes the lock, yielding while it is held: only for rare work over every CPU
    /// (draining, folding), never on a fast path.
    pub fn lock_wait(&self) -> LocalLockGuard<'_, T> {
        // Never killed, so waiting always ends with the lock.
        let _ = self.lock.lock_wait();
        LocalLockGuard { lock: self }
    }

    /// The value, through exclusive access (no locking needed).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T: Default> Default for LocalLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

/// Proof that a [`LocalLock`] is held; releases it on drop.
pub struct LocalLockGuard<'a, T> {
    lock: &'a LocalLock<T>,
}

impl<T> Deref for LocalLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for LocalLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LocalLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.lock.unlock();
    }
}
