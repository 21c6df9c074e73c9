//! Attaching threads to the process's cpusets, and which cpuset each thread is in.
//!
//! [`Cpuset::attach_current`] confines the calling thread: `sched_setaffinity` to the
//! effective CPUs, `set_mempolicy(MPOL_BIND)` to the effective nodes, and cpuslab's own
//! node choice through the placement hooks. [`Cpuset::attach`] confines another thread
//! by id (its affinity only: a memory policy is set by the thread itself).
//!
//! A thread finds its cpuset in two loads: its thread-local slot, then the slot's
//! published cpuset index, which hotplug rewrites when it moves the thread.

use crate::sys::tls::ThreadWord;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, AtomicUsize, Ordering};

use super::error::CpusetError;
use super::process::{apply_and_publish, tree, tree_if_built, tree_try};
use super::tasks::{MAX_SEGMENTS, SEGMENT};
use super::tree::{Cpuset, CpusetTree, TOP};
use crate::sys::affinity::{get_affinity, set_affinity};
use crate::sys::mempolicy::{get_mempolicy, set_mempolicy, MPOL_BIND};
use crate::sys::thread::{gettid, start_time, ExitKey};

/// The cpuset index of each thread slot, for lock-free readers, segment by segment as
/// the tree's table (`tasks`): the first here, the others mapped by
/// [`publish_threads`] when the table grows, and never unmapped.
static FIRST_CPUSET: [AtomicU16; SEGMENT] = [const { AtomicU16::new(TOP) }; SEGMENT];
static MORE_CPUSET: [AtomicPtr<AtomicU16>; MAX_SEGMENTS - 1] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_SEGMENTS - 1];

/// The published cpuset index of thread slot `slot`, if its segment is mapped.
#[inline]
fn slot_cpuset(slot: usize) -> Option<&'static AtomicU16> {
    if slot < SEGMENT {
        return Some(&FIRST_CPUSET[slot]);
    }
    let seg = MORE_CPUSET.get(slot / SEGMENT - 1)?.load(Ordering::Acquire);
    // SAFETY: a published segment is a mapping of SEGMENT atomics, never unmapped.
    (!seg.is_null()).then(|| unsafe { &*seg.add(slot % SEGMENT) })
}

/// Maps the mirror of segment `seg` (at least 1) if it is not yet, every slot reading
/// the top cpuset. False when the kernel refuses the mapping.
fn map_mirror(seg: usize) -> bool {
    let at = &MORE_CPUSET[seg - 1];
    if !at.load(Ordering::Acquire).is_null() {
        return true;
    }
    let bytes = (SEGMENT * 2).next_multiple_of(crate::sys::PAGE_SIZE);
    let p = crate::sys::mmap::map_aligned(bytes, crate::sys::PAGE_SIZE, false).cast::<AtomicU16>();
    if p.is_null() {
        return false;
    }
    for i in 0..SEGMENT {
        // SAFETY: inside the fresh mapping, not yet published.
        unsafe { p.add(i).write(AtomicU16::new(TOP)) };
    }
    // Under the tree's lock: no other thread maps this segment meanwhile.
    at.store(p, Ordering::Release);
    true
}
/// pthread key + 1 whose destructor frees the thread's slot; 0 until created.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

/// The index of the cpuset the calling thread attached to (or inherited and was
/// looked up for already), the top otherwise; never looks anything up, so it takes no
/// lock.
pub(super) fn attached_index() -> usize {
    match ThreadWord::CpusetSlot.get() {
        0 => TOP as usize,
        slot => slot_cpuset(slot - 1).map_or(TOP, |c| c.load(Ordering::Relaxed)) as usize,
    }
}

/// Set by the first attach: until then every thread is in the top cpuset, and a new
/// one inherits nothing to look up.
static ANY_ATTACHED: AtomicBool = AtomicBool::new(false);

/// The index of the calling thread's cpuset: the one it attached to, else the one it
/// inherited from the thread that created it ([`inherited`]), else the top.
#[inline]
pub(super) fn current_index() -> usize {
    if ThreadWord::CpusetSlot.get() == 0 {
        inherited()
    } else {
        attached_index()
    }
}

/// The kernel's `cpuset_fork` for threads: a thread starts in its creator's cpuset.
/// Nothing in Linux names a thread's creator, but `clone` copies the creator's
/// affinity and memory policy, which attaching set to its cpuset's effective CPUs and
/// `MPOL_BIND` to its effective nodes. So a thread that never attached itself is looked
/// up once, at its first placement query after some thread attached: it joins the one
/// cpuset other than the top whose effective sets both match (or is found in the table
/// already, attached by id). Its limits: a thread that changed its affinity or policy
/// before that query is matched by what it has then; one whose sets match the top's,
/// or two cpusets' alike, stays in the top; and the lookup waits for nothing (the
/// tree's lock busy, it tries again at the next query).
#[cold]
fn inherited() -> usize {
    if ThreadWord::CpusetLookedUp.get() != 0 || !ANY_ATTACHED.load(Ordering::Acquire) {
        return TOP as usize;
    }
    let Some(mut t) = tree_try() else {
        return TOP as usize;
    };
    ThreadWord::CpusetLookedUp.set(1);
    let tid = gettid();
    let found = match t.thread_slot_of(tid) {
        Some(slot) => Some(slot),
        None => match_sets(&t).and_then(|cs| t.add_thread(cs, tid).ok()),
    };
    let Some(slot) = found else {
        return TOP as usize;
    };
    ThreadWord::CpusetSlot.set(slot + 1);
    if let Some(key) = exit_key() {
        key.set(slot + 1);
    }
    publish_threads(&t);
    let cs = t.tasks[slot].cs;
    drop(t);
    cs as usize
}

/// The one cpuset other than the top whose effective CPUs and nodes are the calling
/// thread's affinity and `MPOL_BIND` nodes.
fn match_sets(t: &CpusetTree) -> Option<Cpuset> {
    let cpus = get_affinity(0).ok()?;
    let (mode, nodes) = get_mempolicy().ok()?;
    if mode != MPOL_BIND {
        return None;
    }
    let top = t.top();
    let same = |cs: Cpuset| {
        t.effective_cpus(cs).is_ok_and(|c| c == cpus)
            && t.effective_mems(cs).is_ok_and(|m| m == nodes)
    };
    if same(top) {
        return None;
    }
    let mut found = None;
    for cs in t.cpusets().filter(|&cs| cs != top) {
        if same(cs) {
            if found.is_some() {
                return None;
            }
            found = Some(cs);
        }
    }
    found
}

/// Mirrors the tree's thread table for [`current_index`] (under the tree's lock).
pub(super) fn publish_threads(tree: &CpusetTree) {
    for seg in 1..tree.tasks.len() / SEGMENT {
        // Refused, the segment's threads read the top cpuset until a later publish
        // maps it (their slots stay recorded in the tree).
        map_mirror(seg);
    }
    for (slot, t) in tree.tasks.iter().enumerate() {
        let cs = if t.is_free() { TOP } else { t.cs };
        if let Some(c) = slot_cpuset(slot) {
            c.store(cs, Ordering::Relaxed);
        }
    }
}

impl Cpuset {
    /// Moves the calling thread into this cpuset of the process's tree: its affinity
    /// becomes the effective CPUs, its memory policy `MPOL_BIND` to the effective
    /// nodes, and cpuslab's node choice follows the cpuset. On failure nothing changed.
    pub fn attach_current(self) -> Result<(), CpusetError> {
        let tid = gettid();
        let mut t = tree();
        let n = *t.node(self)?;
        let slot = t.thread_slot(tid)?;
        let old = get_affinity(0)?;
        set_affinity(0, &n.effective_cpus)?;
        if let Err(e) = set_mempolicy(MPOL_BIND, &n.effective_mems) {
            // Put the affinity back: the attach changes nothing when it fails.
            let _ = set_affinity(0, &old);
            return Err(e.into());
        }
        t.add_thread(self, tid)?;
        ANY_ATTACHED.store(true, Ordering::Release);
        ThreadWord::CpusetSlot.set(slot + 1);
        if let Some(key) = exit_key() {
            key.set(slot + 1);
        }
        apply_and_publish(&mut t);
        Ok(())
    }

    /// Moves thread `tid` into this cpuset: its affinity becomes the effective CPUs.
    /// For the calling thread's own id this is [`attach_current`](Self::attach_current).
    ///
    /// No exit hook can be installed in another thread, so the thread is recorded with
    /// its start time, and every later change of the tree first forgets an attached
    /// thread whose id is gone or names a thread that started later (the id was
    /// reused): a new thread is never re-pinned as the old one.
    pub fn attach(self, tid: u32) -> Result<(), CpusetError> {
        if tid == gettid() {
            return self.attach_current();
        }
        let mut t = tree();
        let n = *t.node(self)?;
        t.thread_slot(tid)?;
        // Read before the affinity changes: a thread that exits meanwhile is not
        // recorded with the start of whichever thread gets its id next.
        let start = start_time(tid).ok_or(CpusetError::Sys(crate::sys::affinity::SysError {
            call: "sched_setaffinity",
            errno: crate::sys::errno::ESRCH,
        }))?;
        set_affinity(tid, &n.effective_cpus)?;
        let slot = t.add_thread(self, tid)?;
        ANY_ATTACHED.store(true, Ordering::Release);
        t.tasks[slot].start = start;
        apply_and_publish(&mut t);
        Ok(())
    }

    /// The cpuset the calling thread is in (the top when it never attached itself).
    pub fn current() -> Self {
        // The index first: looking up an inherited cpuset takes the tree's lock.
        let i = current_index() as u16;
        let t = tree();
        t.handle(i)
    }
}

fn exit_key() -> Option<ExitKey> {
    let k = EXIT_KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(ExitKey::from_raw((k - 1) as u32));
    }
    let key = ExitKey::create(thread_exit)?;
    match EXIT_KEY.compare_exchange(
        0,
        key.raw() as usize + 1,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(key),
        // Another thread created one first; ours stays unused (keys are plentiful).
        Err(k) => Some(ExitKey::from_raw((k - 1) as u32)),
    }
}

/// Frees the exiting thread's slot, so a later thread (perhaps with the same id)
/// starts outside every cpuset.
unsafe extern "C" fn thread_exit(value: *mut c_void) {
    let slot = value as usize;
    if slot == 0 {
        return;
    }
    let tid = gettid();
    let mut t = tree();
    if t.tasks
        .get(slot - 1)
        .is_some_and(|e| !e.is_free() && e.tid == tid)
    {
        t.free_slot(slot - 1);
        if let Some(c) = slot_cpuset(slot - 1) {
            c.store(TOP, Ordering::Relaxed);
        }
    }
    ThreadWord::CpusetSlot.set(0);
}

/// fork, child (the kernel's `cpuset_fork` for a process): the thread table is the
/// parent's, whose threads are not here. The child keeps only its one thread, under
/// its own id, in the cpuset the forking thread was in; its affinity and memory policy
/// are that thread's already. Runs in the child's atfork handler, after the tree's lock
/// was opened.
pub(super) fn after_fork() {
    // A process that never used cpusets has no tree to fix up: building it here
    // would write its 110 KiB in every forked child.
    let Some(mut t) = tree_if_built() else {
        return;
    };
    if !t.is_initialized() {
        return;
    }
    let cs = current_index() as u16;
    for slot in 0..t.tasks.len() {
        t.free_slot(slot);
    }
    ThreadWord::CpusetSlot.set(0);
    if cs != TOP {
        let handle = t.handle(cs);
        if let Ok(slot) = t.add_thread(handle, gettid()) {
            ThreadWord::CpusetSlot.set(slot + 1);
            if let Some(key) = exit_key() {
                key.set(slot + 1);
            }
        }
    }
    publish_threads(&t);
}
