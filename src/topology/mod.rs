//! Machine topology: possible CPUs, NUMA nodes and the node of each CPU, read from
//! sysfs at boot without allocating; [`CpuMask`] / [`NodeMask`] and a full
//! [`Topology`] reading (online CPUs, memory nodes, distances, the process's allowed
//! set) for cpusets.

mod cpulist;
mod discover;
pub mod mask;

pub use cpulist::parse_cpulist;
pub use discover::{Topology, LOCAL_DISTANCE, REMOTE_DISTANCE};
pub use mask::{Bitmap, CpuMask, MaskError, NodeMask};

use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use crate::sys;

/// Upper bound on CPU ids, as the kernel's `CONFIG_NR_CPUS`. Per-CPU structures are
/// sized by the CPUs that exist, not by this bound; only the CPU-to-node map uses it.
pub const NR_CPUS: usize = 4096;
/// Upper bound on NUMA node ids.
pub const MAX_NUMNODES: usize = 64;

static NR_CPU_IDS: AtomicUsize = AtomicUsize::new(1);
static NR_NODE_IDS: AtomicUsize = AtomicUsize::new(1);
static CPU_TO_NODE: [AtomicU16; NR_CPUS] = [const { AtomicU16::new(0) }; NR_CPUS];

/// Number of possible CPU ids (highest possible CPU + 1).
#[inline]
pub fn nr_cpu_ids() -> usize {
    NR_CPU_IDS.load(Ordering::Relaxed)
}

/// Number of possible node ids (highest possible node + 1).
#[inline]
pub fn nr_node_ids() -> usize {
    NR_NODE_IDS.load(Ordering::Relaxed)
}

/// The NUMA node of `cpu`.
#[inline]
pub fn cpu_to_node(cpu: usize) -> usize {
    if cpu < NR_CPUS {
        CPU_TO_NODE[cpu].load(Ordering::Relaxed) as usize
    } else {
        0
    }
}

/// Reads the machine's CPUs and nodes from sysfs. Missing files leave the defaults
/// (one node; the CPUs `sysconf` reports).
pub(crate) fn discover() {
    let mut buf = [0u8; 512];
    let mut max_cpu = None;
    if let Some(n) = sys::file::read(c"/sys/devices/system/cpu/possible", &mut buf) {
        parse_cpulist(&buf[..n], |cpu| max_cpu = max_cpu.max(Some(cpu)));
    }
    let nr_cpus = match max_cpu {
        Some(m) => m + 1,
        None => {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
            n.max(1) as usize
        }
    };
    NR_CPU_IDS.store(nr_cpus.min(NR_CPUS), Ordering::Relaxed);

    let mut max_node = 0;
    if let Some(n) = sys::file::read(c"/sys/devices/system/node/possible", &mut buf) {
        parse_cpulist(&buf[..n], |node| max_node = max_node.max(node));
    }
    let nr_nodes = (max_node + 1).min(MAX_NUMNODES);
    NR_NODE_IDS.store(nr_nodes, Ordering::Relaxed);
    if nr_nodes > 1 {
        let mut placed = CpuMask::new();
        for node in 0..nr_nodes {
            let mut path = sys::io::StackBuf::<64>::new();
            let _ = core::fmt::write(
                &mut path,
                format_args!("/sys/devices/system/node/node{node}/cpulist\0"),
            );
            let Ok(path) = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()) else {
                continue;
            };
            if let Some(n) = sys::file::read(path, &mut buf) {
                parse_cpulist(&buf[..n], |cpu| {
                    if cpu < NR_CPUS {
                        CPU_TO_NODE[cpu].store(node as u16, Ordering::Relaxed);
                        placed.set(cpu);
                    }
                });
            }
        }
        // As in `Topology::discover_at`: a node's cpulist holds only its online CPUs, and
        // a present CPU offline now is placed by its `cpuN/nodeM` link, so its percpu
        // units and page list are on its node when it comes back. A possible CPU that is
        // not present has no link and stays on node 0.
        if let Some(n) = sys::file::read(c"/sys/devices/system/cpu/present", &mut buf) {
            let mut unplaced = CpuMask::new();
            parse_cpulist(&buf[..n], |cpu| {
                if cpu < nr_cpus.min(NR_CPUS) && !placed.test(cpu) {
                    unplaced.set(cpu);
                }
            });
            for cpu in unplaced.iter() {
                for node in 0..nr_nodes {
                    let mut path = sys::io::StackBuf::<64>::new();
                    let _ = core::fmt::write(
                        &mut path,
                        format_args!("/sys/devices/system/cpu/cpu{cpu}/node{node}/cpulist\0"),
                    );
                    let Ok(path) = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()) else {
                        continue;
                    };
                    if sys::file::read(path, &mut buf).is_some() {
                        CPU_TO_NODE[cpu].store(node as u16, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}
