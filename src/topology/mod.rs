//! Machine topology: possible CPUs, NUMA nodes and the node of each CPU, read from
//! sysfs at boot without allocating; [`CpuMask`] / [`NodeMask`] and a full
//! [`Topology`] reading (online CPUs, memory nodes, distances, the process's allowed
//! set) for cpusets.

mod discover;

// The masks and the list parser live in `ds`, below `sys`, which takes masks too; they
// are named here as well, where the topology's users look for them.
pub use crate::ds::mask;
pub use crate::ds::{parse_cpulist, Bitmap, CpuMask, MaskError, NodeMask};
pub use discover::{Topology, LOCAL_DISTANCE, REMOTE_DISTANCE};

use core::sync::atomic::{AtomicU16, AtomicU8, AtomicUsize, Ordering};

use crate::sys;

/// Upper bound on CPU ids, as the kernel's `CONFIG_NR_CPUS`. Per-CPU structures are
/// sized by the CPUs that exist, not by this bound; only the CPU-to-node map uses it.
pub const NR_CPUS: usize = 4096;
const _: () = assert!(NR_CPUS == crate::ds::CpuMask::BITS);
/// Upper bound on NUMA node ids.
pub const MAX_NUMNODES: usize = 64;

static NR_CPU_IDS: AtomicUsize = AtomicUsize::new(1);
static NR_ONLINE_CPUS: AtomicUsize = AtomicUsize::new(1);
static NR_NODE_IDS: AtomicUsize = AtomicUsize::new(1);
static CPU_TO_NODE: [AtomicU16; NR_CPUS] = [const { AtomicU16::new(0) }; NR_CPUS];
/// Each node's zonelist, as the kernel's `build_zonelists`: every node id, nearest
/// first by SLIT distance (`nodeN/distance`), ties by id; nodes without a distance
/// (offline) last. Row `n` starts with `n`. Filled at boot; identity until then.
static ZONELIST: [[AtomicU8; MAX_NUMNODES]; MAX_NUMNODES] = {
    let mut rows = [const { [const { AtomicU8::new(0) }; MAX_NUMNODES] }; MAX_NUMNODES];
    let mut from = 0;
    while from < MAX_NUMNODES {
        let mut i = 0;
        while i < MAX_NUMNODES {
            rows[from][i] = AtomicU8::new(((from + i) % MAX_NUMNODES) as u8);
            i += 1;
        }
        from += 1;
    }
    rows
};

/// The nodes memory for `from` may fall back to, nearest first (its zonelist, `from`
/// itself first), over the possible nodes.
pub fn zonelist(from: usize) -> impl Iterator<Item = usize> {
    let row = &ZONELIST[from.min(MAX_NUMNODES - 1)];
    let nr = nr_node_ids();
    row.iter()
        .map(|n| n.load(Ordering::Relaxed) as usize)
        .filter(move |&n| n < nr)
}

/// Orders `out` (every node id below `nr_nodes`) for a walk from `from`: `from`
/// first, then the nodes listed in `online` by their distance in `dist` (the same
/// order as `online`, as `nodeN/distance` lists them) and then by id, then the rest
/// by id.
pub fn order_by_distance(
    from: usize,
    online: &[usize],
    dist: &[u8],
    nr_nodes: usize,
    out: &mut [u8; MAX_NUMNODES],
) {
    let key = |n: usize| -> (u16, usize) {
        if n == from {
            return (0, n);
        }
        match online.iter().position(|&o| o == n) {
            Some(i) if i < dist.len() => (dist[i] as u16 + 1, n),
            _ => (u16::MAX, n),
        }
    };
    let nr = nr_nodes.min(MAX_NUMNODES);
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = i as u8;
    }
    // Insertion sort: at most 64 nodes, at boot, without a buffer.
    for i in 1..nr {
        let mut j = i;
        while j > 0 && key(out[j] as usize) < key(out[j - 1] as usize) {
            out.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Number of possible CPU ids (highest possible CPU + 1).
#[inline]
pub fn nr_cpu_ids() -> usize {
    NR_CPU_IDS.load(Ordering::Relaxed)
}

/// Number of CPUs online at boot (at most [`nr_cpu_ids`]): what per-CPU caches that
/// share one bound divide it by, as the kernel divides `pcp->high` among the online
/// CPUs of a zone, not the possible ones (a VM's hot-plug slots).
#[inline]
pub fn nr_online_cpus() -> usize {
    NR_ONLINE_CPUS.load(Ordering::Relaxed)
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
        // Without a GOT entry: the free fast path reads it on machines of several nodes.
        let map: &[AtomicU16; NR_CPUS] = crate::sys::local_static!(CPU_TO_NODE);
        map[cpu].load(Ordering::Relaxed) as usize
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
        None => sys::cpu::configured(),
    };
    NR_CPU_IDS.store(nr_cpus.min(NR_CPUS), Ordering::Relaxed);
    let mut online = 0;
    if let Some(n) = sys::file::read(c"/sys/devices/system/cpu/online", &mut buf) {
        parse_cpulist(&buf[..n], |_| online += 1);
    }
    let online = if online == 0 { nr_cpus } else { online };
    NR_ONLINE_CPUS.store(online.clamp(1, nr_cpus.min(NR_CPUS)), Ordering::Relaxed);

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
        build_zonelists(nr_nodes, &mut buf);
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

/// Fills [`ZONELIST`] from `node/online` and each online node's `distance` file.
fn build_zonelists(nr_nodes: usize, buf: &mut [u8; 512]) {
    let mut online = [0usize; MAX_NUMNODES];
    let mut nr_online = 0;
    if let Some(n) = sys::file::read(c"/sys/devices/system/node/online", buf) {
        parse_cpulist(&buf[..n], |node| {
            if nr_online < MAX_NUMNODES && node < nr_nodes {
                online[nr_online] = node;
                nr_online += 1;
            }
        });
    }
    for &from in &online[..nr_online] {
        let mut path = sys::io::StackBuf::<64>::new();
        let _ = core::fmt::write(
            &mut path,
            format_args!("/sys/devices/system/node/node{from}/distance\0"),
        );
        let Ok(path) = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()) else {
            continue;
        };
        let Some(n) = sys::file::read(path, buf) else {
            continue;
        };
        let mut dist = [0u8; MAX_NUMNODES];
        let mut nr_dist = 0;
        for word in buf[..n].split(|b| b.is_ascii_whitespace()) {
            let parsed = core::str::from_utf8(word).ok().and_then(|w| w.parse().ok());
            if let (Some(d), true) = (parsed, nr_dist < MAX_NUMNODES) {
                dist[nr_dist] = d;
                nr_dist += 1;
            }
        }
        let mut row = [0u8; MAX_NUMNODES];
        order_by_distance(
            from,
            &online[..nr_online],
            &dist[..nr_dist],
            nr_nodes,
            &mut row,
        );
        for (slot, &node) in ZONELIST[from].iter().zip(row.iter().take(nr_nodes)) {
            slot.store(node, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four-node fixture's SLIT (`tests/fixtures/four_node`): nodes 0 and 1, and 2
    /// and 3, are pairs at 16; the pairs are 22 apart. Each zonelist is the node, its
    /// pair, then the far pair by id; an offline node goes last.
    #[test]
    fn zonelists_are_nearest_first() {
        let dist = [
            [10, 16, 22, 22],
            [16, 10, 22, 22],
            [22, 22, 10, 16],
            [22, 22, 16, 10],
        ];
        let online = [0, 1, 2, 3];
        let want = [[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1], [3, 2, 0, 1]];
        for from in 0..4 {
            let mut row = [0u8; MAX_NUMNODES];
            order_by_distance(from, &online, &dist[from], 4, &mut row);
            assert_eq!(row[..4], want[from], "from node {from}");
        }
        // Node 1 offline: listed after the nodes with a distance.
        let mut row = [0u8; MAX_NUMNODES];
        order_by_distance(2, &[0, 2, 3], &[22, 10, 16], 4, &mut row);
        assert_eq!(row[..4], [2, 3, 0, 1]);
        let mut row = [0u8; MAX_NUMNODES];
        order_by_distance(0, &[0, 2, 3], &[10, 30, 20], 4, &mut row);
        assert_eq!(row[..4], [0, 3, 2, 1]);
    }
}
