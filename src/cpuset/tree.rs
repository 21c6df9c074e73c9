//! `CpusetTree`: the hierarchy of cpusets in a fixed table (no heap), as the kernel's
//! `struct cpuset`s under `top_cpuset`, with the threads attached to each.
//!
//! Each cpuset has configured sets (`cpus_allowed`, `mems_allowed`: the `cpuset.cpus`
//! and `cpuset.mems` files, empty meaning "what the parent has") and effective sets:
//! configured ∩ parent's effective, or the parent's effective when that is empty (the
//! cgroup v2 rule, so no cpuset is ever left with nothing to run on). The top cpuset's
//! sets are what the process may use, as [`Topology`] reads it.

use core::fmt;
use core::ptr;

use super::error::CpusetError;
use super::flags::CpusetFlags;
use super::tasks::TaskTable;
use super::validate::validate_change;
use crate::topology::{CpuMask, NodeMask, Topology};

/// How many cpusets a tree holds, the top included.
pub const MAX_CPUSETS: usize = 64;
/// Longest cpuset name, in bytes.
pub const NAME_MAX: usize = 31;

const NONE: u16 = u16::MAX;
pub(super) const TOP: u16 = 0;

/// A handle on one cpuset of a tree (the process's, or a [`CpusetTree`] of one's own).
/// It goes stale, and every use returns [`CpusetError::Removed`], once the cpuset is
/// removed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Cpuset {
    pub(super) idx: u16,
    pub(super) gen: u32,
}

/// One cpuset: the kernel's `struct cpuset`.
#[derive(Clone, Copy)]
pub(super) struct Node {
    pub used: bool,
    /// Bumped on removal so old handles go stale.
    pub gen: u32,
    pub parent: u16,
    name: [u8; NAME_MAX],
    name_len: u8,
    pub cpus_allowed: CpuMask,
    pub mems_allowed: NodeMask,
    pub effective_cpus: CpuMask,
    pub effective_mems: NodeMask,
    pub flags: CpusetFlags,
    /// The effective sets changed since the threads' affinity was last applied.
    pub changed: bool,
}

impl Node {
    const EMPTY: Self = Self {
        used: false,
        gen: 0,
        parent: NONE,
        name: [0; NAME_MAX],
        name_len: 0,
        cpus_allowed: CpuMask::new(),
        mems_allowed: NodeMask::new(),
        effective_cpus: CpuMask::new(),
        effective_mems: NodeMask::new(),
        flags: CpusetFlags::NONE,
        changed: false,
    };

    /// The top cpuset of a new tree.
    const TOP: Self = Self {
        used: true,
        flags: CpusetFlags(
            CpusetFlags::CPU_EXCLUSIVE.0
                | CpusetFlags::MEM_EXCLUSIVE.0
                | CpusetFlags::SCHED_LOAD_BALANCE.0,
        ),
        ..Self::EMPTY
    };

    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("?")
    }
}

/// A thread attached to a cpuset.
#[derive(Clone, Copy)]
pub(super) struct Task {
    pub tid: u32,
    /// Index of its cpuset; `NONE` for a free slot.
    pub cs: u16,
    /// Moved by hotplug; its affinity is to be applied again.
    pub moved: bool,
    /// The thread's start time (`sys::thread::start_time`) when it was attached by id
    /// from another thread, which can install no exit hook for it; 0 when unknown (its
    /// own exit hook forgets it).
    pub start: u64,
}

impl Task {
    pub(super) const FREE: Self = Self {
        tid: 0,
        cs: NONE,
        moved: false,
        start: 0,
    };

    pub fn is_free(&self) -> bool {
        self.cs == NONE
    }
}

/// A whole cpuset hierarchy. The process's own lives in a static behind
/// [`Cpuset`]'s methods; tests and tools can build others over a described
/// [`Topology`] (it is about 100 KiB: keep it in a static or a box).
pub struct CpusetTree {
    pub(super) nodes: [Node; MAX_CPUSETS],
    pub(super) tasks: TaskTable,
    pub(super) topo: Topology,
    pub(super) initialized: bool,
}

impl CpusetTree {
    /// A tree with only the top cpuset, on a one-CPU, one-node machine until
    /// [`update_topology`](Self::update_topology) describes the real one.
    pub const fn new() -> Self {
        let mut nodes = [Node::EMPTY; MAX_CPUSETS];
        nodes[TOP as usize] = Node::TOP;
        Self {
            nodes,
            tasks: TaskTable::new(),
            topo: Topology::SINGLE,
            initialized: false,
        }
    }

    /// Writes [`new`](Self::new)'s tree at `p` piece by piece, without a whole tree on
    /// the stack (the first thread to use cpusets may have a small one).
    ///
    /// # Safety
    /// `p` is valid for writes of a tree; what it held is overwritten, not dropped.
    pub(super) unsafe fn init_in_place(p: *mut Self) {
        // SAFETY: every field of `*p` is written once through raw pointers (the
        // caller's contract), none read.
        unsafe {
            for i in 0..MAX_CPUSETS {
                let node = if i == TOP as usize {
                    Node::TOP
                } else {
                    Node::EMPTY
                };
                ptr::addr_of_mut!((*p).nodes[i]).write(node);
            }
            TaskTable::init_in_place(ptr::addr_of_mut!((*p).tasks));
            Topology::write_single(ptr::addr_of_mut!((*p).topo));
            ptr::addr_of_mut!((*p).initialized).write(false);
        }
    }

    /// Whether [`update_topology`](Self::update_topology) has run.
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// The topology the tree was last updated with.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The top cpuset: everything the process may use.
    pub fn top(&self) -> Cpuset {
        Cpuset {
            idx: TOP,
            gen: self.nodes[TOP as usize].gen,
        }
    }

    pub(super) fn handle(&self, idx: u16) -> Cpuset {
        Cpuset {
            idx,
            gen: self.nodes[idx as usize].gen,
        }
    }

    pub(super) fn node(&self, cs: Cpuset) -> Result<&Node, CpusetError> {
        match self.nodes.get(cs.idx as usize) {
            Some(n) if n.used && n.gen == cs.gen => Ok(n),
            _ => Err(CpusetError::Removed),
        }
    }

    /// Whether `cs` names a live cpuset of this tree.
    pub fn contains(&self, cs: Cpuset) -> bool {
        self.node(cs).is_ok()
    }

    /// The name of `cs` (`""` for the top).
    pub fn name(&self, cs: Cpuset) -> Result<&str, CpusetError> {
        self.node(cs).map(Node::name)
    }

    /// The parent of `cs`; `None` for the top.
    pub fn parent(&self, cs: Cpuset) -> Result<Option<Cpuset>, CpusetError> {
        let n = self.node(cs)?;
        Ok((n.parent != NONE).then(|| self.handle(n.parent)))
    }

    /// The children of `cs`, in table order.
    pub fn children(&self, cs: Cpuset) -> impl Iterator<Item = Cpuset> + '_ {
        let idx = self.node(cs).map_or(NONE, |_| cs.idx);
        self.child_indices(idx).map(|i| self.handle(i))
    }

    pub(super) fn child_indices(&self, idx: u16) -> impl Iterator<Item = u16> + '_ {
        (0..MAX_CPUSETS as u16).filter(move |&i| {
            let n = &self.nodes[i as usize];
            idx != NONE && n.used && n.parent == idx
        })
    }

    /// Every cpuset of the tree, the top first.
    pub(super) fn cpusets(&self) -> impl Iterator<Item = Cpuset> + '_ {
        (0..MAX_CPUSETS as u16)
            .filter(move |&i| self.nodes[i as usize].used)
            .map(|i| self.handle(i))
    }

    /// The slot of attached thread `tid`, if it has one.
    pub(super) fn thread_slot_of(&self, tid: u32) -> Option<usize> {
        self.tasks.iter().position(|t| !t.is_free() && t.tid == tid)
    }

    /// The cpuset at `path` (`"/"` or `""` is the top, `"/a/b"` the child `b` of `a`).
    pub fn find(&self, path: &str) -> Option<Cpuset> {
        let mut at = TOP;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = self
                .child_indices(at)
                .find(|&i| self.nodes[i as usize].name() == part)?;
        }
        Some(self.handle(at))
    }

    /// Writes the path of `cs`, as `/a/b` (`/` for the top).
    pub fn write_path(&self, cs: Cpuset, w: &mut impl fmt::Write) -> Result<(), CpusetError> {
        self.node(cs)?;
        let mut chain = [NONE; MAX_CPUSETS];
        let mut depth = 0;
        let mut at = cs.idx;
        while at != TOP && depth < MAX_CPUSETS {
            chain[depth] = at;
            depth += 1;
            at = self.nodes[at as usize].parent;
        }
        if depth == 0 {
            w.write_str("/").map_err(|_| CpusetError::Format)?;
        }
        for &i in chain[..depth].iter().rev() {
            write!(w, "/{}", self.nodes[i as usize].name()).map_err(|_| CpusetError::Format)?;
        }
        Ok(())
    }

    /// Creates the child `name` of `parent`, with no cpus or mems of its own (so it
    /// runs on what its parent has) and the parent's spread flags, as the kernel's
    /// `cpuset_css_online` does.
    pub fn create(&mut self, parent: Cpuset, name: &str) -> Result<Cpuset, CpusetError> {
        let p = *self.node(parent)?;
        let bytes = name.as_bytes();
        if bytes.is_empty()
            || bytes.len() > NAME_MAX
            || name == "."
            || name == ".."
            || bytes.iter().any(|&b| b == b'/' || b == 0)
        {
            return Err(CpusetError::BadName);
        }
        if self
            .child_indices(parent.idx)
            .any(|i| self.nodes[i as usize].name() == name)
        {
            return Err(CpusetError::NameTaken);
        }
        let idx = self
            .nodes
            .iter()
            .position(|n| !n.used)
            .ok_or(CpusetError::TooManyCpusets)?;
        let n = &mut self.nodes[idx];
        let gen = n.gen;
        *n = Node::EMPTY;
        n.gen = gen;
        n.used = true;
        n.parent = parent.idx;
        n.name[..bytes.len()].copy_from_slice(bytes);
        n.name_len = bytes.len() as u8;
        n.flags = CpusetFlags(
            CpusetFlags::SCHED_LOAD_BALANCE.0
                | (p.flags.0 & (CpusetFlags::SPREAD_PAGE.0 | CpusetFlags::SPREAD_SLAB.0)),
        );
        n.effective_cpus = p.effective_cpus;
        n.effective_mems = p.effective_mems;
        super::pressure::reset(idx);
        Ok(self.handle(idx as u16))
    }

    /// Removes `cs`, which must have no children and no attached threads (the kernel
    /// refuses `rmdir` of a busy cpuset too).
    pub fn remove(&mut self, cs: Cpuset) -> Result<(), CpusetError> {
        self.node(cs)?;
        if cs.idx == TOP {
            return Err(CpusetError::TopIsReadOnly);
        }
        if self.child_indices(cs.idx).next().is_some() {
            return Err(CpusetError::HasChildren);
        }
        if self.tasks.iter().any(|t| t.cs == cs.idx) {
            return Err(CpusetError::HasThreads);
        }
        let n = &mut self.nodes[cs.idx as usize];
        n.used = false;
        n.gen = n.gen.wrapping_add(1);
        Ok(())
    }

    /// `cpuset.cpus`: the CPUs set on `cs` (empty: the parent's).
    pub fn cpus(&self, cs: Cpuset) -> Result<CpuMask, CpusetError> {
        self.node(cs).map(|n| n.cpus_allowed)
    }

    /// `cpuset.mems`: the nodes set on `cs` (empty: the parent's).
    pub fn mems(&self, cs: Cpuset) -> Result<NodeMask, CpusetError> {
        self.node(cs).map(|n| n.mems_allowed)
    }

    /// `cpuset.cpus.effective`: the CPUs its threads run on.
    pub fn effective_cpus(&self, cs: Cpuset) -> Result<CpuMask, CpusetError> {
        self.node(cs).map(|n| n.effective_cpus)
    }

    /// `cpuset.mems.effective`: the nodes its threads' memory comes from.
    pub fn effective_mems(&self, cs: Cpuset) -> Result<NodeMask, CpusetError> {
        self.node(cs).map(|n| n.effective_mems)
    }

    /// The flags of `cs`.
    pub fn flags(&self, cs: Cpuset) -> Result<CpusetFlags, CpusetError> {
        self.node(cs).map(|n| n.flags)
    }

    /// Sets `cpuset.cpus` (the kernel's `update_cpumask`): validated, then the
    /// effective sets of `cs` and its descendants are recomputed.
    pub fn set_cpus(&mut self, cs: Cpuset, cpus: &CpuMask) -> Result<(), CpusetError> {
        self.change(cs, |n| n.cpus_allowed = *cpus)
    }

    /// Sets `cpuset.mems` (the kernel's `update_nodemask`).
    pub fn set_mems(&mut self, cs: Cpuset, mems: &NodeMask) -> Result<(), CpusetError> {
        self.change(cs, |n| n.mems_allowed = *mems)
    }

    /// Sets (`on`) or clears the flags `flags` of `cs` (the kernel's `update_flag`).
    pub fn set_flags(
        &mut self,
        cs: Cpuset,
        flags: CpusetFlags,
        on: bool,
    ) -> Result<(), CpusetError> {
        if flags.unknown() != 0 {
            return Err(CpusetError::UnknownFlags(flags.unknown()));
        }
        self.change(cs, |n| n.flags = n.flags.with(flags, on))
    }

    /// Validates the trial copy of `cs` that `edit` makes; applies it and propagates
    /// only when every rule holds.
    fn change(&mut self, cs: Cpuset, edit: impl FnOnce(&mut Node)) -> Result<(), CpusetError> {
        let mut trial = *self.node(cs)?;
        if cs.idx == TOP {
            return Err(CpusetError::TopIsReadOnly);
        }
        edit(&mut trial);
        validate_change(self, cs.idx, &trial)?;
        self.nodes[cs.idx as usize] = trial;
        self.propagate(cs.idx);
        Ok(())
    }

    /// The CPUs `idx` was given: its own, or (when it sets none) its parent's.
    pub(super) fn base_cpus(&self, mut idx: u16) -> CpuMask {
        loop {
            let n = &self.nodes[idx as usize];
            if !n.cpus_allowed.is_empty() || n.parent == NONE {
                return n.cpus_allowed;
            }
            idx = n.parent;
        }
    }

    /// The nodes `idx` was given: its own, or (when it sets none) its parent's.
    pub(super) fn base_mems(&self, mut idx: u16) -> NodeMask {
        loop {
            let n = &self.nodes[idx as usize];
            if !n.mems_allowed.is_empty() || n.parent == NONE {
                return n.mems_allowed;
            }
            idx = n.parent;
        }
    }

    /// Recomputes the effective sets of `from` and its descendants, parents first
    /// (the kernel's `update_cpumasks_hier` / `update_nodemasks_hier`).
    pub(super) fn propagate(&mut self, from: u16) {
        let mut stack = [NONE; MAX_CPUSETS];
        stack[0] = from;
        let mut sp = 1;
        while sp > 0 {
            sp -= 1;
            let i = stack[sp];
            self.compute_effective(i);
            for c in 0..MAX_CPUSETS as u16 {
                let n = &self.nodes[c as usize];
                if n.used && n.parent == i && sp < MAX_CPUSETS {
                    stack[sp] = c;
                    sp += 1;
                }
            }
        }
    }

    fn compute_effective(&mut self, i: u16) {
        let n = self.nodes[i as usize];
        let (cpus, mems) = if n.parent == NONE {
            (n.cpus_allowed, n.mems_allowed)
        } else {
            let p = &self.nodes[n.parent as usize];
            let cpus = n.cpus_allowed.and(&p.effective_cpus);
            let mems = n.mems_allowed.and(&p.effective_mems);
            (
                if cpus.is_empty() {
                    p.effective_cpus
                } else {
                    cpus
                },
                if mems.is_empty() {
                    p.effective_mems
                } else {
                    mems
                },
            )
        };
        let n = &mut self.nodes[i as usize];
        if n.effective_cpus != cpus || n.effective_mems != mems {
            n.changed = true;
        }
        n.effective_cpus = cpus;
        n.effective_mems = mems;
    }

    /// Records that thread `tid` is in `cs` (the tree's side of an attach; the
    /// process's tree also sets the thread's affinity and policy). Returns its slot.
    pub fn add_thread(&mut self, cs: Cpuset, tid: u32) -> Result<usize, CpusetError> {
        self.node(cs)?;
        let slot = self.thread_slot(tid)?;
        self.tasks[slot] = Task {
            tid,
            cs: cs.idx,
            moved: false,
            start: 0,
        };
        Ok(slot)
    }

    /// The slot of `tid`, or a free one (mapping another segment of the table when
    /// every slot is taken).
    pub(super) fn thread_slot(&mut self, tid: u32) -> Result<usize, CpusetError> {
        if let Some(slot) = self
            .tasks
            .iter()
            .position(|t| !t.is_free() && t.tid == tid)
            .or_else(|| self.tasks.iter().position(Task::is_free))
        {
            return Ok(slot);
        }
        let first_new = self.tasks.len();
        if self.tasks.grow() {
            Ok(first_new)
        } else {
            Err(CpusetError::TooManyThreads)
        }
    }

    /// Forgets thread `tid` (it exited).
    pub fn remove_thread(&mut self, tid: u32) {
        for t in self
            .tasks
            .iter_mut()
            .filter(|t| !t.is_free() && t.tid == tid)
        {
            *t = Task::FREE;
        }
    }

    pub(super) fn free_slot(&mut self, slot: usize) {
        if let Some(t) = self.tasks.get_mut(slot) {
            *t = Task::FREE;
        }
    }

    /// The cpuset thread `tid` is attached to, if any.
    pub fn thread_cpuset(&self, tid: u32) -> Option<Cpuset> {
        self.tasks
            .iter()
            .find(|t| !t.is_free() && t.tid == tid)
            .map(|t| self.handle(t.cs))
    }

    /// The threads attached to `cs`.
    pub fn threads(&self, cs: Cpuset) -> impl Iterator<Item = u32> + '_ {
        let idx = self.node(cs).map_or(NONE, |_| cs.idx);
        self.tasks
            .iter()
            .filter(move |t| idx != NONE && t.cs == idx)
            .map(|t| t.tid)
    }

    /// Writes the contents of the cpuset file `file` (`cpuset.` prefix optional) as
    /// the kernel shows it: a list and a newline for the four sets, `0` or `1` for a
    /// flag, one thread id a line for `tasks`.
    pub fn read_file(
        &self,
        cs: Cpuset,
        file: &str,
        w: &mut impl fmt::Write,
    ) -> Result<(), CpusetError> {
        let n = self.node(cs)?;
        let short = file.strip_prefix("cpuset.").unwrap_or(file);
        let r = match short {
            "cpus" => writeln!(w, "{}", n.cpus_allowed),
            "mems" => writeln!(w, "{}", n.mems_allowed),
            "cpus.effective" | "effective_cpus" => writeln!(w, "{}", n.effective_cpus),
            "mems.effective" | "effective_mems" => writeln!(w, "{}", n.effective_mems),
            "tasks" if file == "tasks" => self.threads(cs).try_for_each(|tid| writeln!(w, "{tid}")),
            "memory_pressure" => writeln!(w, "{}", super::pressure::rate(cs.idx as usize)),
            "memory_pressure_enabled" if cs.idx == TOP => {
                writeln!(w, "{}", u8::from(super::pressure::enabled()))
            }
            _ => {
                let flag = CpusetFlags::from_file(file).ok_or(CpusetError::UnknownFile)?;
                writeln!(w, "{}", u8::from(n.flags.contains(flag)))
            }
        };
        r.map_err(|_| CpusetError::Format)
    }

    /// Writes `value` into the cpuset file `file`, as `echo value > file` would:
    /// a list for `cpuset.cpus` / `cpuset.mems`, `0` or `1` for a flag.
    pub fn write_file(&mut self, cs: Cpuset, file: &str, value: &str) -> Result<(), CpusetError> {
        self.node(cs)?;
        let short = file.strip_prefix("cpuset.").unwrap_or(file);
        match short {
            "cpus" => self.set_cpus(cs, &CpuMask::parse_list(value.as_bytes())?),
            "mems" => self.set_mems(cs, &NodeMask::parse_list(value.as_bytes())?),
            "cpus.effective" | "mems.effective" | "effective_cpus" | "effective_mems"
            | "memory_pressure" => Err(CpusetError::ReadOnlyFile),
            "memory_pressure_enabled" if cs.idx == TOP => {
                match value.trim() {
                    "0" => super::pressure::set_enabled(false),
                    "1" => super::pressure::set_enabled(true),
                    _ => return Err(CpusetError::BadFlagValue),
                }
                Ok(())
            }
            _ => {
                let flag = CpusetFlags::from_file(file).ok_or(CpusetError::UnknownFile)?;
                let on = match value.trim() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(CpusetError::BadFlagValue),
                };
                self.set_flags(cs, flag, on)
            }
        }
    }

    /// The names of the files [`read_file`](Self::read_file) shows, in the kernel's
    /// order (the top also has `cpuset.memory_pressure_enabled`).
    pub const FILES: [&'static str; 12] = [
        "cpuset.cpus",
        "cpuset.mems",
        "cpuset.cpus.effective",
        "cpuset.mems.effective",
        "cpuset.cpu_exclusive",
        "cpuset.mem_exclusive",
        "cpuset.mem_hardwall",
        "cpuset.sched_load_balance",
        "cpuset.memory_migrate",
        "cpuset.memory_pressure",
        "cpuset.memory_spread_page",
        "cpuset.memory_spread_slab",
    ];
}

impl Default for CpusetTree {
    fn default() -> Self {
        Self::new()
    }
}
