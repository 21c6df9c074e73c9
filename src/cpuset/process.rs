//! The process's own cpuset tree: a static behind cpuslab's futex mutex, built from
//! this machine's [`Topology`] on first use, and [`Cpuset`]'s methods on it.
//!
//! Every change goes through [`CpusetTree`]'s validation, then the affinity of the
//! threads whose cpuset changed is applied again (the kernel's
//! `update_tasks_cpumask`) and the placement tables are republished.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use super::error::CpusetError;
use super::flags::CpusetFlags;
use super::tree::{Cpuset, CpusetTree, MAX_CPUSETS};
use super::{attach, placement};
use crate::ds::Deferred;
use crate::sync::{Mutex, MutexGuard};
use crate::sys::affinity::set_affinity;
use crate::sys::mempolicy;
use crate::topology::{CpuMask, NodeMask, Topology};

/// The process's tree (about 120 KiB), built on first use: in `.bss` until then, so a
/// program that never uses cpusets holds none of its pages.
static TREE: Mutex<Deferred<CpusetTree>> = Mutex::new(Deferred::new());

/// The process's tree, locked, built from this machine on first use.
pub(super) fn tree() -> MutexGuard<'static, Deferred<CpusetTree>> {
    let mut t = tree_raw();
    if !t.is_initialized() {
        let topo = Topology::discover();
        t.update_topology(&topo);
        apply_and_publish(&mut t);
    }
    t
}

/// The process's tree, locked, as it is (for rescan, which builds it itself): the
/// top cpuset alone on a one-CPU machine until then.
pub(super) fn tree_raw() -> MutexGuard<'static, Deferred<CpusetTree>> {
    let mut t = TREE.lock();
    // SAFETY: `init_in_place` writes a whole tree.
    unsafe { t.build_in_place(CpusetTree::init_in_place) };
    t
}

/// The process's tree, locked, if it was ever built; None (building nothing) in a
/// process that never used cpusets, such as a forked child's handler finds it.
pub(super) fn tree_if_built() -> Option<MutexGuard<'static, Deferred<CpusetTree>>> {
    let t = TREE.lock();
    t.is_built().then_some(t)
}

/// The process's tree if its lock is free now and it was built (no waiting, no
/// building): for callers inside allocation paths, which must not block on the lock
/// of a thread that allocates while holding it.
pub(super) fn tree_try() -> Option<MutexGuard<'static, Deferred<CpusetTree>>> {
    TREE.try_lock()
        .filter(|t| t.is_built() && t.is_initialized())
}

/// Applies the effective CPUs to every thread whose cpuset changed or that hotplug
/// moved, forgets threads that exited, and republishes placement.
pub(super) fn apply_and_publish(t: &mut CpusetTree) {
    forget_exited(t);
    for slot in 0..t.tasks.len() {
        let task = t.tasks[slot];
        if task.is_free() {
            continue;
        }
        let n = t.nodes[task.cs as usize];
        if !(task.moved || n.changed) {
            continue;
        }
        match set_affinity(task.tid, &n.effective_cpus) {
            Err(e) if e.errno == crate::sys::errno::ESRCH => t.free_slot(slot),
            _ => t.tasks[slot].moved = false,
        }
    }
    for n in t.nodes.iter_mut() {
        n.changed = false;
    }
    attach::publish_threads(t);
    placement::publish(t);
}

/// Runs `f` on the process's tree and, when it succeeds, migrates memory where a
/// `MEMORY_MIGRATE` cpuset's nodes changed, then applies and publishes.
fn change<R>(f: impl FnOnce(&mut CpusetTree) -> Result<R, CpusetError>) -> Result<R, CpusetError> {
    let mut t = tree();
    forget_exited(&mut t);
    let old: [NodeMask; MAX_CPUSETS] = core::array::from_fn(|i| t.nodes[i].effective_mems);
    let r = f(&mut t)?;
    migrate_changed(&t, &old);
    apply_and_publish(&mut t);
    Ok(r)
}

/// Forgets threads attached by id that exited, or whose id now names a newer thread,
/// before a change could count or re-pin them.
fn forget_exited(t: &mut CpusetTree) {
    for slot in 0..t.tasks.len() {
        let task = t.tasks[slot];
        if !task.is_free()
            && task.start != 0
            && crate::sys::thread::start_time(task.tid) != Some(task.start)
        {
            t.free_slot(slot);
        }
    }
}

/// Pages moved by `MEMORY_MIGRATE` so far, and pages the kernel could not move.
static MIGRATED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// `cpuset_migrate_mm` for every `MEMORY_MIGRATE` cpuset with threads whose effective
/// nodes changed: the threads share the process's address space, so, as the kernel
/// does for a task's mm, the process's pages on the old nodes move to the new ones
/// (`migrate_pages(2)`). cpuslab's own bookkeeping keeps each arena under the node it
/// was made for; new memory for the cpuset comes from arenas of its new nodes.
fn migrate_changed(t: &CpusetTree, old: &[NodeMask; MAX_CPUSETS]) {
    for (i, n) in t.nodes.iter().enumerate() {
        if !n.used
            || !n.flags.contains(CpusetFlags::MEMORY_MIGRATE)
            || n.effective_mems == old[i]
            || old[i].is_empty()
            || !t
                .tasks
                .iter()
                .any(|task| !task.is_free() && task.cs as usize == i)
        {
            continue;
        }
        let from = old[i].andnot(&n.effective_mems);
        if from.is_empty() {
            continue;
        }
        if let Ok(left) = mempolicy::migrate_pages(&from, &n.effective_mems) {
            MIGRATED[1].fetch_add(left as u64, Ordering::Relaxed);
        }
        MIGRATED[0].fetch_add(1, Ordering::Relaxed);
    }
}

/// `MEMORY_MIGRATE` so far: how many migrations ran, and the pages the kernel reported
/// it could not move.
pub fn migrations() -> (u64, u64) {
    (
        MIGRATED[0].load(Ordering::Relaxed),
        MIGRATED[1].load(Ordering::Relaxed),
    )
}

impl Cpuset {
    /// The top cpuset of the process's tree: everything the process may use.
    pub fn top() -> Self {
        tree().top()
    }

    /// The cpuset of the process's tree at `path` (`"/"` is the top, `"/a/b"` the
    /// child `b` of `a`).
    pub fn find(path: &str) -> Option<Self> {
        tree().find(path)
    }

    /// Runs `f` with the process's tree locked: for reading several things at once.
    /// `f` must not call other `Cpuset` methods (they would wait on the same lock).
    pub fn with_tree<R>(f: impl FnOnce(&CpusetTree) -> R) -> R {
        f(&tree())
    }

    /// Creates the child `name` of this cpuset (see [`CpusetTree::create`]).
    pub fn create_child(self, name: &str) -> Result<Self, CpusetError> {
        change(|t| t.create(self, name))
    }

    /// Removes this cpuset once it has no children and no live threads (threads that
    /// exited are forgotten first).
    pub fn remove(self) -> Result<(), CpusetError> {
        change(|t| {
            let mut dead = [0u32; 64];
            let mut n = 0;
            for tid in t.threads(self) {
                if n < dead.len() && !crate::sys::affinity::thread_alive(tid) {
                    dead[n] = tid;
                    n += 1;
                }
            }
            dead[..n].iter().for_each(|&tid| t.remove_thread(tid));
            t.remove(self)
        })
    }

    /// The name of this cpuset, copied into `buf` (31 bytes at most).
    pub fn name(self, buf: &mut [u8; 31]) -> Result<&str, CpusetError> {
        let t = tree();
        let name = t.name(self)?.as_bytes();
        buf[..name.len()].copy_from_slice(name);
        core::str::from_utf8(&buf[..name.len()]).map_err(|_| CpusetError::BadName)
    }

    /// The parent cpuset; `None` for the top.
    pub fn parent(self) -> Result<Option<Self>, CpusetError> {
        tree().parent(self)
    }

    /// `cpuset.cpus` (empty: the parent's).
    pub fn cpus(self) -> Result<CpuMask, CpusetError> {
        tree().cpus(self)
    }

    /// `cpuset.mems` (empty: the parent's).
    pub fn mems(self) -> Result<NodeMask, CpusetError> {
        tree().mems(self)
    }

    /// `cpuset.cpus.effective`.
    pub fn effective_cpus(self) -> Result<CpuMask, CpusetError> {
        tree().effective_cpus(self)
    }

    /// `cpuset.mems.effective`.
    pub fn effective_mems(self) -> Result<NodeMask, CpusetError> {
        tree().effective_mems(self)
    }

    /// The flags.
    pub fn flags(self) -> Result<CpusetFlags, CpusetError> {
        tree().flags(self)
    }

    /// Sets `cpuset.cpus`; threads in this cpuset and its descendants follow.
    pub fn set_cpus(self, cpus: &CpuMask) -> Result<(), CpusetError> {
        change(|t| t.set_cpus(self, cpus))
    }

    /// Sets `cpuset.mems`; cpuslab's placement for its threads follows at once (their
    /// kernel memory policy at their next [`attach_current`](Self::attach_current)).
    pub fn set_mems(self, mems: &NodeMask) -> Result<(), CpusetError> {
        change(|t| t.set_mems(self, mems))
    }

    /// Sets (`on`) or clears `flags`.
    pub fn set_flags(self, flags: CpusetFlags, on: bool) -> Result<(), CpusetError> {
        change(|t| t.set_flags(self, flags, on))
    }

    /// Writes a cpuset file, as `echo value > file` (see [`CpusetTree::write_file`]).
    pub fn write_file(self, file: &str, value: &str) -> Result<(), CpusetError> {
        change(|t| t.write_file(self, file, value))
    }

    /// Reads a cpuset file into `w` (see [`CpusetTree::read_file`]).
    pub fn read_file(self, file: &str, w: &mut impl fmt::Write) -> Result<(), CpusetError> {
        tree().read_file(self, file, w)
    }
}

/// **Fork hooks** for the allocator's `pthread_atfork` handlers: take the tree's lock
/// before `fork`, so the child never inherits it held by a thread that is not there.
pub(crate) fn fork_prepare() {
    TREE.lock_raw();
}

/// Releases the lock [`fork_prepare`] took, in the parent.
pub(crate) fn fork_parent() {
    // SAFETY: fork_prepare took the lock in this thread.
    unsafe { TREE.force_unlock() }
}

/// Opens the lock in the child, whose only thread is the one that forked, and leaves
/// only that thread in the thread table.
pub(crate) fn fork_child() {
    // SAFETY: a forked child before any other thread exists.
    unsafe { TREE.force_unlock_if_locked() }
    attach::after_fork();
}
