//! `Topology`: one reading of the machine and of what this process may use, from sysfs
//! and procfs under roots that tests can point at a described machine.
//!
//! Read:
//! - `<sys>/devices/system/cpu/{possible,online}`;
//! - `<sys>/devices/system/node/{possible,online,has_memory}`, `nodeN/cpulist` and
//!   `nodeN/distance` (one distance per online node, in node order);
//! - `<proc>/self/status`: `Cpus_allowed_list`, `Mems_allowed_list` (the kernel's own
//!   cpuset for this task);
//! - `<proc>/self/cgroup`'s `0::/path` and, under `<sys>/fs/cgroup/path`, the cgroup v2
//!   `cpuset.cpus.effective` and `cpuset.mems.effective` when present.
//!
//! Nothing here allocates; the struct is about 15 KiB and owned by the caller.

use core::ffi::CStr;
use core::fmt;
use core::ptr;

use super::{MAX_NUMNODES, NR_CPUS};
use crate::ds::{CpuMask, NodeMask};
use crate::sys;
use crate::sys::io::StackBuf;

/// Distance to the node itself, as the kernel's `LOCAL_DISTANCE`.
pub const LOCAL_DISTANCE: u8 = 10;
/// Distance between nodes when sysfs does not say, the kernel's `REMOTE_DISTANCE`.
pub const REMOTE_DISTANCE: u8 = 20;

/// The machine's CPUs and nodes and the process's share of them.
#[derive(Clone)]
pub struct Topology {
    possible_cpus: CpuMask,
    online_cpus: CpuMask,
    possible_nodes: NodeMask,
    online_nodes: NodeMask,
    memory_nodes: NodeMask,
    cpus_allowed: CpuMask,
    mems_allowed: NodeMask,
    cgroup_cpus: Option<CpuMask>,
    cgroup_mems: Option<NodeMask>,
    cpu_node: [u16; NR_CPUS],
    distance: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
}

impl Topology {
    /// One CPU (0) and one node (0), everything allowed: what a machine without sysfs
    /// looks like.
    pub const SINGLE: Self = {
        let mut w = [0u64; 64];
        w[0] = 1;
        let cpu = CpuMask::from_words(w);
        let mut w = [0u64; 16];
        w[0] = 1;
        let node = NodeMask::from_words(w);
        Self {
            possible_cpus: cpu,
            online_cpus: cpu,
            possible_nodes: node,
            online_nodes: node,
            memory_nodes: node,
            cpus_allowed: cpu,
            mems_allowed: node,
            cgroup_cpus: None,
            cgroup_mems: None,
            cpu_node: [0; NR_CPUS],
            distance: default_distances(),
        }
    };

    /// Writes [`SINGLE`](Self::SINGLE) at `p` field by field. Copying the constant
    /// copies its 15 KiB (the CPU-to-node map and the distance table) out of
    /// `.rodata`, and each place that copied it kept a copy there: two of them pushed
    /// the strings boot reads into a 64 KiB window of the library's file that a small
    /// program then kept resident (the kernel maps a file's pages 64 KiB around a
    /// fault); written here they are stores and fills.
    ///
    /// # Safety
    /// `p` is valid for writes of a `Topology`; what it held is overwritten, not
    /// dropped.
    pub unsafe fn write_single(p: *mut Self) {
        let mut cpu = CpuMask::new();
        cpu.set(0);
        let mut node = NodeMask::new();
        node.set(0);
        // SAFETY: every field of `*p` is written once through raw pointers (the
        // caller's contract), none read.
        unsafe {
            ptr::addr_of_mut!((*p).possible_cpus).write(cpu);
            ptr::addr_of_mut!((*p).online_cpus).write(cpu);
            ptr::addr_of_mut!((*p).possible_nodes).write(node);
            ptr::addr_of_mut!((*p).online_nodes).write(node);
            ptr::addr_of_mut!((*p).memory_nodes).write(node);
            ptr::addr_of_mut!((*p).cpus_allowed).write(cpu);
            ptr::addr_of_mut!((*p).mems_allowed).write(node);
            ptr::addr_of_mut!((*p).cgroup_cpus).write(None);
            ptr::addr_of_mut!((*p).cgroup_mems).write(None);
            ptr::addr_of_mut!((*p).cpu_node).write_bytes(0, 1);
            let d = ptr::addr_of_mut!((*p).distance).cast::<u8>();
            d.write_bytes(REMOTE_DISTANCE, MAX_NUMNODES * MAX_NUMNODES);
            for i in 0..MAX_NUMNODES {
                d.add(i * MAX_NUMNODES + i).write(LOCAL_DISTANCE);
            }
        }
    }

    /// [`SINGLE`](Self::SINGLE), built by [`write_single`](Self::write_single).
    pub fn single() -> Self {
        let mut t = core::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: `t` is writable, and `write_single` writes every field.
        unsafe {
            Self::write_single(t.as_mut_ptr());
            t.assume_init()
        }
    }

    /// Reads this machine (`/sys`, `/proc`).
    pub fn discover() -> Self {
        Self::discover_at("/sys", "/proc")
    }

    /// Reads the machine described under `sys_root` and `proc_root` (for this machine,
    /// `/sys` and `/proc`). A missing file leaves a default: online CPUs stand in for
    /// possible ones and the other way round, one node 0 holding every CPU, everything
    /// allowed, no cgroup limit.
    pub fn discover_at(sys_root: &str, proc_root: &str) -> Self {
        let mut t = Self::single();
        let mut buf = [0u8; 16 * 1024];

        let possible = read_mask::<64>(sys_root, "/devices/system/cpu/possible", &mut buf);
        let online = read_mask::<64>(sys_root, "/devices/system/cpu/online", &mut buf);
        match (possible, online) {
            (Some(p), Some(o)) => (t.possible_cpus, t.online_cpus) = (p, o.and(&p)),
            (Some(p), None) => (t.possible_cpus, t.online_cpus) = (p, p),
            (None, Some(o)) => (t.possible_cpus, t.online_cpus) = (o, o),
            (None, None) => {}
        }

        let node_possible = read_mask::<16>(sys_root, "/devices/system/node/possible", &mut buf);
        let node_online = read_mask::<16>(sys_root, "/devices/system/node/online", &mut buf);
        if let Some(n) = node_possible.or(node_online) {
            t.possible_nodes = n;
            t.online_nodes = node_online.unwrap_or(n).and(&n);
        }
        t.memory_nodes = read_mask::<16>(sys_root, "/devices/system/node/has_memory", &mut buf)
            .unwrap_or(t.online_nodes);

        let online_nodes = t.online_nodes;
        let mut placed = CpuMask::new();
        for node in t.possible_nodes.iter() {
            let mut path = StackBuf::<64>::new();
            let _ = fmt::write(
                &mut path,
                format_args!("/devices/system/node/node{node}/cpulist"),
            );
            if let Some(cpus) = read_mask::<64>(sys_root, text(&path), &mut buf) {
                for cpu in cpus.iter().take_while(|&c| c < NR_CPUS) {
                    t.cpu_node[cpu] = node as u16;
                }
                placed = placed.or(&cpus);
            }
            if node >= MAX_NUMNODES {
                continue;
            }
            let mut path = StackBuf::<64>::new();
            let _ = fmt::write(
                &mut path,
                format_args!("/devices/system/node/node{node}/distance"),
            );
            if let Some(text) = read_file(sys_root, text(&path), &mut buf) {
                // One number per online node, in node order.
                let numbers = text
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty());
                for (to, d) in online_nodes.iter().zip(numbers) {
                    if let (true, Some(d)) = (to < MAX_NUMNODES, small_number(d)) {
                        t.distance[node][to] = d;
                    }
                }
            }
        }

        // A node's cpulist holds only its online CPUs: the kernel takes a CPU out of its
        // node's mask when it goes offline. A present CPU that is offline now keeps its
        // `cpuN/nodeM` link, and its percpu units and page list belong on that node for
        // when it comes back. (A possible CPU that is not present has no link: it stays
        // on node 0, as userspace cannot read the firmware's table the kernel used.)
        let present = read_mask::<64>(sys_root, "/devices/system/cpu/present", &mut buf)
            .unwrap_or(t.possible_cpus);
        let unplaced = present.and(&t.possible_cpus).andnot(&placed);
        for cpu in unplaced.iter().take_while(|&c| c < NR_CPUS) {
            for node in t.possible_nodes.iter() {
                let mut path = StackBuf::<64>::new();
                let _ = fmt::write(
                    &mut path,
                    format_args!("/devices/system/cpu/cpu{cpu}/node{node}/cpulist"),
                );
                if read_file(sys_root, text(&path), &mut buf).is_some() {
                    t.cpu_node[cpu] = node as u16;
                    break;
                }
            }
        }

        t.cpus_allowed = t.possible_cpus;
        t.mems_allowed = t.possible_nodes;
        if let Some(status) = read_file(proc_root, "/self/status", &mut buf) {
            if let Some(m) = field(status, b"Cpus_allowed_list:")
                .and_then(|v| CpuMask::parse_list(v).ok())
                .or_else(|| {
                    field(status, b"Cpus_allowed:").and_then(|v| CpuMask::parse_mask(v).ok())
                })
            {
                t.cpus_allowed = m;
            }
            if let Some(m) = field(status, b"Mems_allowed_list:")
                .and_then(|v| NodeMask::parse_list(v).ok())
                .or_else(|| {
                    field(status, b"Mems_allowed:").and_then(|v| NodeMask::parse_mask(v).ok())
                })
            {
                t.mems_allowed = m;
            }
        }

        let mut cg = StackBuf::<512>::new();
        if let Some(text) = read_file(proc_root, "/self/cgroup", &mut buf) {
            if let Some(path) = text
                .split(|&b| b == b'\n')
                .find_map(|l| l.strip_prefix(b"0::"))
            {
                // A path too long for the buffer would name another file.
                if let (Ok(path), true) = (core::str::from_utf8(path), path.len() < 400) {
                    let _ = fmt::write(
                        &mut cg,
                        format_args!("/fs/cgroup{}", path.trim_end_matches('/')),
                    );
                }
            }
        }
        if !cg.as_bytes().is_empty() {
            let mut file = StackBuf::<600>::new();
            let _ = fmt::write(
                &mut file,
                format_args!("{}/cpuset.cpus.effective", text(&cg)),
            );
            t.cgroup_cpus = read_mask::<64>(sys_root, text(&file), &mut buf);
            let mut file = StackBuf::<600>::new();
            let _ = fmt::write(
                &mut file,
                format_args!("{}/cpuset.mems.effective", text(&cg)),
            );
            t.cgroup_mems = read_mask::<16>(sys_root, text(&file), &mut buf);
        }
        t
    }

    /// CPUs that can ever exist (`cpu_possible_mask`).
    pub fn possible_cpus(&self) -> &CpuMask {
        &self.possible_cpus
    }

    /// CPUs online now (`cpu_online_mask`).
    pub fn online_cpus(&self) -> &CpuMask {
        &self.online_cpus
    }

    /// Nodes that can ever exist (`node_possible_map`).
    pub fn possible_nodes(&self) -> &NodeMask {
        &self.possible_nodes
    }

    /// Nodes online now (`node_online_map`).
    pub fn online_nodes(&self) -> &NodeMask {
        &self.online_nodes
    }

    /// Nodes that have memory (`node_states[N_MEMORY]`).
    pub fn memory_nodes(&self) -> &NodeMask {
        &self.memory_nodes
    }

    /// The task's `Cpus_allowed_list`.
    pub fn cpus_allowed(&self) -> &CpuMask {
        &self.cpus_allowed
    }

    /// Replaces the task's allowed CPUs: for a caller that knows better than
    /// `/proc/self/status` (which shows the main thread's affinity, cpusets' own
    /// `sched_setaffinity` included).
    pub fn set_cpus_allowed(&mut self, cpus: CpuMask) {
        self.cpus_allowed = cpus;
    }

    /// The task's `Mems_allowed_list`.
    pub fn mems_allowed(&self) -> &NodeMask {
        &self.mems_allowed
    }

    /// The cgroup v2 `cpuset.cpus.effective`, when the process's cgroup has one.
    pub fn cgroup_cpus(&self) -> Option<&CpuMask> {
        self.cgroup_cpus.as_ref()
    }

    /// The cgroup v2 `cpuset.mems.effective`, when the process's cgroup has one.
    pub fn cgroup_mems(&self) -> Option<&NodeMask> {
        self.cgroup_mems.as_ref()
    }

    /// The CPUs this process may run on: online ∩ allowed ∩ cgroup. When that is empty
    /// (files that disagree), the online CPUs.
    pub fn usable_cpus(&self) -> CpuMask {
        let mut m = self.online_cpus.and(&self.cpus_allowed);
        if let Some(cg) = &self.cgroup_cpus {
            m = m.and(cg);
        }
        if m.is_empty() {
            self.online_cpus
        } else {
            m
        }
    }

    /// The nodes this process may take memory from: nodes with memory ∩ allowed ∩
    /// cgroup. When that is empty, the nodes with memory.
    pub fn usable_mems(&self) -> NodeMask {
        let mut m = self.memory_nodes.and(&self.mems_allowed);
        if let Some(cg) = &self.cgroup_mems {
            m = m.and(cg);
        }
        if m.is_empty() {
            self.memory_nodes
        } else {
            m
        }
    }

    /// The node of `cpu` (0 when unknown).
    pub fn cpu_to_node(&self, cpu: usize) -> usize {
        self.cpu_node.get(cpu).map_or(0, |&n| n as usize)
    }

    /// The CPUs of `node`.
    pub fn node_cpus(&self, node: usize) -> CpuMask {
        let mut m = CpuMask::new();
        for cpu in self.possible_cpus.iter().take_while(|&c| c < NR_CPUS) {
            if self.cpu_node[cpu] as usize == node {
                m.set(cpu);
            }
        }
        m
    }

    /// The SLIT distance from node `a` to node `b` (`node_distance`): 10 to itself,
    /// 20 between nodes sysfs does not describe.
    pub fn node_distance(&self, a: usize, b: usize) -> u8 {
        if a < MAX_NUMNODES && b < MAX_NUMNODES {
            self.distance[a][b]
        } else if a == b {
            LOCAL_DISTANCE
        } else {
            REMOTE_DISTANCE
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::single()
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("possible_cpus", &self.possible_cpus)
            .field("online_cpus", &self.online_cpus)
            .field("possible_nodes", &self.possible_nodes)
            .field("online_nodes", &self.online_nodes)
            .field("memory_nodes", &self.memory_nodes)
            .field("cpus_allowed", &self.cpus_allowed)
            .field("mems_allowed", &self.mems_allowed)
            .field("cgroup_cpus", &self.cgroup_cpus)
            .field("cgroup_mems", &self.cgroup_mems)
            .finish_non_exhaustive()
    }
}

const fn default_distances() -> [[u8; MAX_NUMNODES]; MAX_NUMNODES] {
    let mut d = [[REMOTE_DISTANCE; MAX_NUMNODES]; MAX_NUMNODES];
    let mut i = 0;
    while i < MAX_NUMNODES {
        d[i][i] = LOCAL_DISTANCE;
        i += 1;
    }
    d
}

/// The contents of `<root><rel>`, or `None` when the path is too long or unreadable.
fn read_file<'b>(root: &str, rel: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut path = StackBuf::<1024>::new();
    if root.len() + rel.len() + 1 > 1024 || root.contains('\0') || rel.contains('\0') {
        return None;
    }
    let _ = fmt::write(&mut path, format_args!("{root}{rel}\0"));
    let path = CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
    let n = sys::file::read(path, buf)?;
    Some(&buf[..n])
}

/// What a [`StackBuf`] holds, as text (it only ever receives `str`s, cut at a byte
/// boundary that may split a character when full: then nothing).
fn text<const N: usize>(b: &StackBuf<N>) -> &str {
    core::str::from_utf8(b.as_bytes()).unwrap_or("")
}

/// A list-form mask file; `None` when missing or malformed.
fn read_mask<const W: usize>(
    root: &str,
    rel: &str,
    buf: &mut [u8],
) -> Option<crate::ds::Bitmap<W>> {
    super::mask::Bitmap::<W>::parse_list(read_file(root, rel, buf)?).ok()
}

/// The value of the `key` line of a `/proc/self/status`.
fn field<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key))
}

fn small_number(s: &[u8]) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s.iter().fold(0u32, |a, &b| a * 10 + (b - b'0') as u32);
    u8::try_from(v).ok()
}
