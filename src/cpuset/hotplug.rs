//! CPU and node hotplug, as the kernel's `cpuset_hotplug_workfn`: read the machine
//! again, give the top cpuset what the process may use now, propagate down the tree,
//! move the threads of cpusets whose own CPUs or nodes are all gone to the nearest
//! ancestor that still has some, and run the CPU-dead path for every CPU that left.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::process::{apply_and_publish, tree_raw};
use super::tree::{CpusetTree, MAX_CPUSETS, TOP};
use crate::topology::{CpuMask, NodeMask, Topology};

/// What one topology update changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HotplugReport {
    /// CPUs online before and offline now: their per-CPU caches must be drained.
    pub offline_cpus: CpuMask,
    /// CPUs offline before and online now.
    pub online_cpus: CpuMask,
    /// Nodes that had memory before and have none now.
    pub offline_nodes: NodeMask,
    /// Cpusets whose own CPUs or nodes all went away.
    pub emptied: usize,
    /// Threads moved out of those cpusets to an ancestor.
    pub moved_threads: usize,
}

impl CpusetTree {
    /// Takes a new reading of the machine: the top cpuset's sets become
    /// [`Topology::usable_cpus`] / [`Topology::usable_mems`], every effective set is
    /// recomputed, and threads of a cpuset left without its own CPUs or nodes move to
    /// the nearest ancestor that has some (the kernel's
    /// `remove_tasks_in_empty_cpuset`). The first call builds the tree and reports
    /// nothing offline.
    pub fn update_topology(&mut self, topo: &Topology) -> HotplugReport {
        let mut report = HotplugReport::default();
        if self.initialized {
            let old = &self.topo;
            report.offline_cpus = old.online_cpus().andnot(topo.online_cpus());
            report.online_cpus = topo.online_cpus().andnot(old.online_cpus());
            report.offline_nodes = old.memory_nodes().andnot(topo.memory_nodes());
        }
        self.topo.clone_from(topo);
        self.initialized = true;
        let top = &mut self.nodes[TOP as usize];
        top.cpus_allowed = topo.usable_cpus();
        top.mems_allowed = topo.usable_mems();
        self.propagate(TOP);

        for i in 0..MAX_CPUSETS as u16 {
            if !self.nodes[i as usize].used || !self.starved(i) {
                continue;
            }
            report.emptied += 1;
            let mut to = self.nodes[i as usize].parent;
            while self.starved(to) {
                to = self.nodes[to as usize].parent;
            }
            for t in self.tasks.iter_mut().filter(|t| t.cs == i) {
                t.cs = to;
                t.moved = true;
                report.moved_threads += 1;
            }
        }
        report
    }

    /// Whether cpuset `i` set CPUs or nodes of its own and its parent has none of them
    /// left (its effective sets then fell back to the parent's).
    fn starved(&self, i: u16) -> bool {
        let n = &self.nodes[i as usize];
        if i == TOP {
            return false;
        }
        let p = &self.nodes[n.parent as usize];
        (!n.cpus_allowed.is_empty() && !n.cpus_allowed.intersects(&p.effective_cpus))
            || (!n.mems_allowed.is_empty() && !n.mems_allowed.intersects(&p.effective_mems))
    }
}

/// Reads this machine again and updates the process's cpusets (see [`rescan_at`]).
pub fn rescan() -> HotplugReport {
    rescan_at("/sys", "/proc")
}

/// Reads the machine under `sys_root` / `proc_root` and updates the process's
/// cpusets: effective sets, thread moves and affinity, placement tables; then runs
/// the CPU-dead hook (`cpu_dead_hook`) for every CPU that went offline since the last reading.
pub fn rescan_at(sys_root: &str, proc_root: &str) -> HotplugReport {
    let mut topo = Topology::discover_at(sys_root, proc_root);
    let report = {
        let mut t = tree_raw();
        if t.is_initialized() && t.thread_cpuset(crate::sys::process::pid()).is_some() {
            // Cpus_allowed shows the main thread's affinity, which a cpuset set: keep
            // the last reading rather than narrow the top to the cpuset.
            topo.set_cpus_allowed(*t.topology().cpus_allowed());
        }
        let report = t.update_topology(&topo);
        apply_and_publish(&mut t);
        report
    };
    // Outside the tree's lock: draining takes the page pool's and caches' locks.
    for cpu in report.offline_cpus.iter() {
        crate::cpuset::cpu_dead_hook(cpu);
    }
    report
}

/// Notices CPU and memory-node hotplug without the application's help: each
/// [`check_at`](Self::check_at) reads the online CPU list and the nodes with memory
/// (two small sysfs files) and acts when either changed since the last look. A process
/// that built its cpuset tree is rescanned ([`rescan_at`]); one that never used
/// cpusets keeps its fast paths (building the tree would route every allocation
/// through placement) and only runs the CPU-dead path for CPUs that went offline. The
/// background reclaim thread looks at `/sys` every tick while it runs; a program whose
/// allocator is idle, with no thread running, is looked at when it next gets busy.
pub struct HotplugWatch {
    /// The online CPUs and a hash of both files at the last look (none yet: `None`).
    last: crate::sync::Mutex<Option<(CpuMask, u64)>>,
}

impl HotplugWatch {
    /// A watch that has looked at nothing yet.
    pub const fn new() -> Self {
        Self {
            last: crate::sync::Mutex::new(None),
        }
    }

    /// Reads `<sys_root>/devices/system/cpu/online` and `.../node/has_memory`; when
    /// they changed since the last call, acts as the type's docs say and returns what
    /// changed. The first call only records what it read.
    pub fn check_at(&self, sys_root: &str, proc_root: &str) -> Option<HotplugReport> {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut online = CpuMask::new();
        for (k, file) in [
            "/devices/system/cpu/online",
            "/devices/system/node/has_memory",
        ]
        .into_iter()
        .enumerate()
        {
            let mut path = [0u8; 256];
            let n = sys_root.len() + file.len();
            if n >= path.len() {
                return None;
            }
            path[..sys_root.len()].copy_from_slice(sys_root.as_bytes());
            path[sys_root.len()..n].copy_from_slice(file.as_bytes());
            let path = core::ffi::CStr::from_bytes_until_nul(&path).ok()?;
            let mut buf = [0u8; 512];
            let len = crate::sys::file::read(path, &mut buf).unwrap_or(0);
            if k == 0 {
                crate::topology::parse_cpulist(&buf[..len], |cpu| {
                    if cpu < CpuMask::BITS {
                        online.set(cpu);
                    }
                });
            }
            for &b in buf[..len].iter().chain(b"/") {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
            }
        }
        // Tried, not waited for: a forked child's restarted reclaim thread may find the
        // lock held by the parent's, which is not there.
        let old = self.last.try_lock()?.replace((online, h));
        let (old_online, old_h) = old?;
        if old_h == h {
            return None;
        }
        if super::placement::placement_active() {
            return Some(rescan_at(sys_root, proc_root));
        }
        let report = HotplugReport {
            offline_cpus: old_online.andnot(&online),
            online_cpus: online.andnot(&old_online),
            ..HotplugReport::default()
        };
        for cpu in report.offline_cpus.iter() {
            cpu_dead_hook(cpu);
        }
        Some(report)
    }
}

impl Default for HotplugWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The background thread's watch of this machine.
static MACHINE: HotplugWatch = HotplugWatch::new();

/// [`HotplugWatch::check_at`] on this machine's `/sys` (the background thread's tick).
pub(crate) fn check_machine() {
    MACHINE.check_at("/sys", "/proc");
}

/// CPUs that went offline and passed through [`cpu_dead_hook`].
static DEAD_CPUS: [AtomicU64; CpuMask::BITS / 64] =
    [const { AtomicU64::new(0) }; CpuMask::BITS / 64];

/// Callbacks of the layers that keep per-CPU caches, run for a CPU that left (the
/// kernel's CPU-hotplug notifier chain). A layer below cpuset cannot be called from
/// here directly, so each registers itself at boot.
static CPU_DEAD_CALLBACKS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

/// Registers `f` to run for every CPU that goes offline (`cpuhp_setup_state` with a
/// teardown callback). Registering the same function twice is a no-op; false when the
/// chain is full.
pub(crate) fn register_cpu_dead(f: fn(usize)) -> bool {
    let f = f as usize;
    for slot in &CPU_DEAD_CALLBACKS {
        match slot.compare_exchange(0, f, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(cur) if cur == f => return true,
            Err(_) => {}
        }
    }
    false
}

/// **CPU-dead hook**, the user-space `page_alloc_cpu_notify(CPU_DEAD)`: called by
/// [`rescan`] once for each CPU that went offline, after the cpusets were updated and
/// outside their lock. It records the CPU for [`dead_cpus`] and runs the registered
/// callbacks: the page pool drains the CPU's page lists back to the buddy zones
/// (`__drain_pages`) and the slab layer flushes its array caches to the node lists.
pub(crate) fn cpu_dead_hook(cpu: usize) {
    if let Some(w) = DEAD_CPUS.get(cpu / 64) {
        w.fetch_or(1 << (cpu % 64), Ordering::Relaxed);
    }
    for slot in &CPU_DEAD_CALLBACKS {
        let f = slot.load(Ordering::Acquire);
        if f != 0 {
            // SAFETY: only `register_cpu_dead` stores here, and it stores `fn(usize)`s.
            let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(f) };
            f(cpu);
        }
    }
}

/// Runs the CPU-dead path for `cpu` now: everything cached for it (per-CPU page
/// lists, slab array caches) goes back to the shared lists, as when [`rescan`] finds
/// the CPU offline. For a CPU the program knows it will not use again (taken out of
/// every cpuset, about to go offline); safe at any time, since a thread that runs there
/// later simply refills the caches.
pub fn cpu_dead(cpu: usize) {
    cpu_dead_hook(cpu);
}

/// The CPUs [`rescan`] has seen go offline since the process started (or since
/// [`clear_dead_cpus`]).
pub fn dead_cpus() -> CpuMask {
    let mut words = [0u64; CpuMask::BITS / 64];
    for (w, a) in words.iter_mut().zip(&DEAD_CPUS) {
        *w = a.load(Ordering::Relaxed);
    }
    CpuMask::from_words(words)
}

/// Forgets the CPUs recorded by the CPU-dead hook (a CPU that came back online and
/// was repopulated).
pub fn clear_dead_cpus(cpus: &CpuMask) {
    for (a, w) in DEAD_CPUS.iter().zip(cpus.words()) {
        a.fetch_and(!w, Ordering::Relaxed);
    }
}
