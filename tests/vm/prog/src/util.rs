//! What every test uses: verdict lines, the machine's layout from sysfs, page nodes
//! from the kernel, and confining a thread to a new cpuset.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use cpuslab::cpuset::{Cpuset, CpusetFlags};
use cpuslab::sys::mempolicy;
use cpuslab::topology::{CpuMask, NodeMask};

/// Nodes counted per node id; the VMs have at most 4.
pub const MAX_NODES: usize = 8;
/// Bytes in a page.
pub const PAGE: usize = 4096;

static FAILED: AtomicBool = AtomicBool::new(false);

/// C `free` of `p` as the preload library does it: its inline fast path, else the
/// whole path. Whether the fast path took it.
///
/// # Safety
/// `p` is a live block of cpuslab, not used again.
pub unsafe fn free_unsized(p: *mut u8) -> bool {
    // SAFETY: the caller's contract; the whole path frees what the fast path left.
    unsafe {
        let fast = cpuslab::kmalloc::kfree_unsized_fast(p);
        if !fast {
            cpuslab::kmalloc::kfree_unsized(p);
        }
        fast
    }
}

/// Prints `PASS name: detail` or `FAIL name: detail`.
pub fn verdict(name: &str, ok: bool, detail: fmt::Arguments<'_>) {
    println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        FAILED.store(true, Ordering::Relaxed);
    }
}

/// Prints `INFO name: detail`: a figure, not a verdict.
pub fn info(name: &str, detail: fmt::Arguments<'_>) {
    println!("INFO {name}: {detail}");
}

/// Whether any verdict so far was a failure.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn parse_list<M: std::str::FromStr + Default>(path: &str) -> M {
    match read(path) {
        Some(s) if !s.is_empty() => s.parse().unwrap_or_default(),
        _ => M::default(),
    }
}

/// Moves the calling thread to `cpu` alone.
pub fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; the calls write only into it and
    // read it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The online CPUs (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> CpuMask {
    parse_list("/sys/devices/system/cpu/online")
}

/// The present CPUs (`/sys/devices/system/cpu/present`): those with a sysfs directory,
/// online or not.
pub fn present_cpus() -> CpuMask {
    parse_list("/sys/devices/system/cpu/present")
}

/// The nodes with memory (`/sys/devices/system/node/has_memory`).
pub fn memory_nodes() -> NodeMask {
    parse_list("/sys/devices/system/node/has_memory")
}

/// The online CPUs of `node` (`/sys/devices/system/node/nodeN/cpulist`).
pub fn node_cpus(node: usize) -> CpuMask {
    parse_list(&format!("/sys/devices/system/node/node{node}/cpulist"))
}

/// The nodes with memory and at least one online CPU, in id order.
pub fn cpu_nodes() -> Vec<usize> {
    memory_nodes()
        .iter()
        .filter(|&n| !node_cpus(n).is_empty())
        .collect()
}

/// The node of `cpu`: the `nodeN` link in its sysfs directory.
pub fn cpu_node(cpu: usize) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}")).ok()?;
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|name| name.strip_prefix("node")?.parse().ok())
}

/// `{node}` as a mask.
pub fn one_node(node: usize) -> NodeMask {
    let mut m = NodeMask::new();
    m.set(node);
    m
}

/// Writes one byte in every page of `[ptr, ptr + len)`, so each page is faulted in
/// (and placed by the mapping's policy) before the kernel is asked where it is.
///
/// # Safety
/// The range is writable memory the caller owns, and the byte written is not needed.
pub unsafe fn touch(ptr: *mut u8, len: usize) {
    let mut page = ptr as usize & !(PAGE - 1);
    let end = ptr as usize + len.max(1);
    while page < end {
        let at = page.max(ptr as usize) as *mut u8;
        // SAFETY: inside the caller's range.
        unsafe { at.write_volatile(0x5a) };
        page += PAGE;
    }
}

/// The node holding the page at `addr`, by `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`.
pub fn page_node(addr: *const u8) -> Option<usize> {
    mempolicy::node_of(addr).ok()
}

/// Pages counted per node.
#[derive(Clone, Copy, Default)]
pub struct NodeCounts {
    /// Pages on each node.
    pub on: [usize; MAX_NODES],
    /// Pages whose node the kernel would not tell (or past `MAX_NODES`).
    pub unknown: usize,
}

impl NodeCounts {
    /// Counts the node of every page of `[ptr, ptr + len)`.
    pub fn add_range(&mut self, ptr: *const u8, len: usize) {
        let mut page = ptr as usize & !(PAGE - 1);
        let end = ptr as usize + len.max(1);
        while page < end {
            self.add(page_node(page as *const u8));
            page += PAGE;
        }
    }

    /// Counts one page on `node`.
    pub fn add(&mut self, node: Option<usize>) {
        match node {
            Some(n) if n < MAX_NODES => self.on[n] += 1,
            _ => self.unknown += 1,
        }
    }

    /// All pages counted.
    pub fn total(&self) -> usize {
        self.on.iter().sum::<usize>() + self.unknown
    }

    /// Pages on nodes of `nodes`.
    pub fn within(&self, nodes: &NodeMask) -> usize {
        nodes
            .iter()
            .filter(|&n| n < MAX_NODES)
            .map(|n| self.on[n])
            .sum()
    }

    /// Adds another count into this one.
    pub fn merge(&mut self, other: &NodeCounts) {
        for (a, b) in self.on.iter_mut().zip(other.on) {
            *a += b;
        }
        self.unknown += other.unknown;
    }
}

impl fmt::Display for NodeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (n, &c) in self.on.iter().enumerate().filter(|(_, &c)| c > 0) {
            write!(f, "{sep}n{n}={c}")?;
            sep = " ";
        }
        if self.unknown > 0 {
            write!(f, "{sep}unknown={}", self.unknown)?;
        } else if sep.is_empty() {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Creates cpuset `name` under the top with `cpus`, `mems` and `flags`, and moves the
/// calling thread into it.
pub fn confine(
    name: &str,
    cpus: &CpuMask,
    mems: &NodeMask,
    flags: CpusetFlags,
) -> Result<Cpuset, String> {
    let cs = Cpuset::top()
        .create_child(name)
        .map_err(|e| format!("create_child({name}): {e}"))?;
    cs.set_cpus(cpus)
        .map_err(|e| format!("set_cpus({cpus}): {e}"))?;
    cs.set_mems(mems)
        .map_err(|e| format!("set_mems({mems}): {e}"))?;
    if flags != CpusetFlags::NONE {
        cs.set_flags(flags, true)
            .map_err(|e| format!("set_flags({flags:?}): {e}"))?;
    }
    cs.attach_current()
        .map_err(|e| format!("attach_current({name}): {e}"))?;
    Ok(cs)
}

/// The value of `key=` on the kernel command line (run.sh passes a machine's test
/// settings there; the kernel ignores dotted names it has no module for).
pub fn cmdline_param(key: &str) -> Option<String> {
    read("/proc/cmdline")?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}
