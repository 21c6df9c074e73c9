//! Per-CPU memory: every possible CPU's unit of an `alloc_percpu` area, and every CPU's
//! per-CPU page list, lies on that CPU's node. A possible CPU that is not present (qemu's
//! `maxcpus` past `cpus`) has no sysfs directory and so no node to check against: its
//! unit must still be there and writable, and the count of such CPUs is reported.

use cpuslab::page::pcp;
use cpuslab::percpu::{alloc_percpu, free_percpu};
use cpuslab::topology::nr_cpu_ids;

use crate::util::{cpu_node, page_node, present_cpus, touch, verdict, NodeCounts};

/// Areas of several sizes (a 16 KiB one spans four pages of every unit), written in
/// every CPU's copy, then each copy's pages looked up.
pub fn run() {
    let nr = nr_cpu_ids();
    let present = present_cpus();
    let absent = (0..nr).filter(|&c| !present.test(c)).count();
    let mut ok = nr > 1;
    let mut detail = format!("{nr} CPUs ({absent} of them not present, nodes unchecked);");
    for (size, align) in [(8, 8), (256, 64), (16 << 10, 4096)] {
        let area = match alloc_percpu(size, align) {
            Ok(a) => a,
            Err(e) => {
                verdict("percpu", false, format_args!("alloc_percpu({size}): {e:?}"));
                return;
            }
        };
        let mut wrong = Vec::new();
        let (mut pages, mut right_pages) = (0, 0);
        for cpu in 0..nr {
            let want = cpu_node(cpu);
            let p = area.per_cpu_ptr(cpu);
            // SAFETY: every possible CPU's copy of the area is `size` writable bytes.
            unsafe { touch(p, size) };
            if !present.test(cpu) {
                continue;
            }
            let mut c = NodeCounts::default();
            c.add_range(p, size);
            pages += c.total();
            let right = want.map_or(0, |n| c.on.get(n).copied().unwrap_or(0));
            right_pages += right;
            if want.is_none() || right != c.total() {
                wrong.push(format!("cpu{cpu} (node {want:?}): {c}"));
            }
        }
        // SAFETY: allocated above, freed once, not used afterwards.
        unsafe { free_percpu(area) };
        ok &= wrong.is_empty();
        detail += &format!(
            " area {size} B: {} of {pages} unit pages on their CPU's node{}{};",
            right_pages,
            if wrong.is_empty() { "" } else { ", wrong: " },
            wrong.join(", ")
        );
    }
    // The per-CPU page lists live in the reserved chunk: the same rule holds for them.
    let mut wrong_pcp = Vec::new();
    for cpu in 0..nr {
        let Some(list) = pcp::pcp(cpu) else {
            wrong_pcp.push(format!("cpu{cpu}: no list"));
            continue;
        };
        if !present.test(cpu) {
            continue;
        }
        let at = page_node((list as *const pcp::PerCpuPages).cast());
        if at.is_none() || at != cpu_node(cpu) {
            wrong_pcp.push(format!("cpu{cpu}: list on node {at:?}"));
        }
    }
    ok &= wrong_pcp.is_empty();
    detail += &format!(
        " per-CPU page lists: {} of {} present CPUs' on their CPU's node{}",
        nr - absent - wrong_pcp.len(),
        nr - absent,
        if wrong_pcp.is_empty() {
            String::new()
        } else {
            format!(", wrong: {}", wrong_pcp.join(", "))
        }
    );
    verdict("percpu", ok, format_args!("{detail}"));
}
