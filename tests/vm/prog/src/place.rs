//! Placement: a thread attached to a cpuset gets cpuslab memory on the cpuset's node,
//! for every node; under `MEM_HARDWALL`, never a page off the cpuset's nodes.

use cpuslab::cpuset::CpusetFlags;
use cpuslab::topology::CpuMask;

use crate::mix::{self, Mix};
use crate::util::{confine, cpu_nodes, memory_nodes, node_cpus, one_node, verdict};

/// Allocates the mix on a new thread confined to a new cpuset of `cpus` and `node`;
/// the error names what refused.
fn in_cpuset(name: String, cpus: CpuMask, node: usize, flags: CpusetFlags) -> Result<Mix, String> {
    std::thread::spawn(move || {
        confine(&name, &cpus, &one_node(node), flags)?;
        Ok(mix::allocate())
    })
    .join()
    .map_err(|_| "the test thread panicked".to_string())?
}

/// For each node with CPUs and memory: a thread in a cpuset of that node's CPUs and
/// that node gets every page of its blocks on that node.
pub fn run() {
    let nodes = cpu_nodes();
    if nodes.len() < 2 {
        verdict(
            "place",
            false,
            format_args!("needs 2 nodes with CPUs and memory, found {nodes:?}"),
        );
        return;
    }
    for node in nodes {
        let name = format!("place.node{node}");
        let cpus = node_cpus(node);
        match in_cpuset(format!("node{node}"), cpus, node, CpusetFlags::NONE) {
            Ok(mix) => {
                let all = mix.kernel_total();
                let on = all.on.get(node).copied().unwrap_or(0);
                let ok = on == all.total() && on > 0;
                let off = mix::offenders(&mix, &one_node(node));
                verdict(
                    &name,
                    ok,
                    format_args!(
                        "cpus {cpus} mems {node}: {on} of {} pages on node {node}{}{} [{mix}]",
                        all.total(),
                        if off.is_empty() { "" } else { "; off-node: " },
                        off
                    ),
                );
            }
            Err(e) => verdict(&name, false, format_args!("{e}")),
        }
    }
}

/// A cpuset with the first node's CPUs but only the last node's memory, flagged
/// `MEM_HARDWALL`: no page of the mix may come from anywhere but the last node.
/// Tolerance: none (a single page off the set fails).
pub fn hardwall() {
    let nodes = cpu_nodes();
    let mems = memory_nodes();
    let (Some(&first), Some(last)) = (nodes.first(), mems.last()) else {
        verdict("hardwall", false, format_args!("no node with CPUs"));
        return;
    };
    if first == last {
        verdict("hardwall", false, format_args!("needs 2 nodes with memory"));
        return;
    }
    let cpus = node_cpus(first);
    match in_cpuset("wall".into(), cpus, last, CpusetFlags::MEM_HARDWALL) {
        Ok(mix) => {
            let all = mix.kernel_total();
            let set = one_node(last);
            let inside = all.within(&set);
            let off = mix::offenders(&mix, &set);
            verdict(
                "hardwall",
                inside == all.total() && inside > 0,
                format_args!(
                    "cpus {cpus} (node {first}) mems {last} mem_hardwall: {inside} of {} pages \
                     on node {last}{}{} [{mix}]",
                    all.total(),
                    if off.is_empty() {
                        ""
                    } else {
                        "; off the set: "
                    },
                    off
                ),
            );
        }
        Err(e) => verdict("hardwall", false, format_args!("{e}")),
    }
}
