//! Per-CPU memory: every possible CPU's unit of an `alloc_percpu` area, and the per-CPU
//! page lists of every CPU a thread worked on, lie on that CPU's node; a CPU no thread
//! ran on (offline, or not present) has no lists (they are prepared when a thread first
//! works there). A possible CPU that is not present (qemu's `maxcpus` past `cpus`) has
//! no sysfs directory and so no node to check against: its unit must still be there
//! and writable, and the count of such CPUs is reported.

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::page::pcp;
use cpuslab::percpu::{alloc_percpu, free_percpu};
use cpuslab::topology::nr_cpu_ids;
use cpuslab::CpuSlab;

use crate::util::{
    cpu_node, online_cpus, page_node, pin, present_cpus, touch, verdict, NodeCounts,
};

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
    // The per-CPU page lists live in the reserved chunk: the same rule holds for them,
    // once a thread worked on the CPU. A 64 KiB block freed on each online CPU prepares
    // its lists.
    let online = online_cpus();
    for cpu in (0..nr).filter(|&c| online.test(c)) {
        std::thread::spawn(move || {
            if pin(cpu) {
                let l = Layout::from_size_align(64 << 10, 8).unwrap();
                // SAFETY: a valid layout; the block is freed once.
                unsafe { CpuSlab.dealloc(CpuSlab.alloc(l), l) };
            }
        })
        .join()
        .unwrap();
    }
    let mut wrong_pcp = Vec::new();
    for cpu in 0..nr {
        let list = pcp::pcp(cpu);
        if !online.test(cpu) {
            if list.is_some() {
                wrong_pcp.push(format!("cpu{cpu}: a list, never online"));
            }
            continue;
        }
        let Some(list) = list else {
            wrong_pcp.push(format!("cpu{cpu}: no list"));
            continue;
        };
        let at = page_node((list as *const pcp::PerCpuPages).cast());
        if at.is_none() || at != cpu_node(cpu) {
            wrong_pcp.push(format!("cpu{cpu}: list on node {at:?}"));
        }
    }
    ok &= wrong_pcp.is_empty();
    detail += &format!(
        " per-CPU page lists: {} of {} online CPUs' on their CPU's node, none elsewhere{}",
        online.weight().saturating_sub(wrong_pcp.len()),
        online.weight(),
        if wrong_pcp.is_empty() {
            String::new()
        } else {
            format!(", wrong: {}", wrong_pcp.join(", "))
        }
    );
    verdict("percpu", ok, format_args!("{detail}"));
}
