//! `MEMORY_MIGRATE`: a thread in a cpuset of every CPU and the first memory node fills
//! blocks (small boxes and a large vector) on that node; moving the cpuset to the last
//! node with the flag set moves those pages there (the kernel's `cpuset_migrate_mm`,
//! `migrate_pages(2)` here). Tolerance: every page of the blocks on the new node.

use cpuslab::cpuset::{self, CpusetFlags};

use crate::util::{confine, memory_nodes, one_node, online_cpus, verdict, NodeCounts};

pub fn run() {
    let nodes: Vec<usize> = memory_nodes().iter().collect();
    let (Some(&a), Some(&b)) = (nodes.first(), nodes.last()) else {
        verdict("memory_migrate", false, format_args!("no memory node"));
        return;
    };
    if a == b {
        verdict(
            "memory_migrate",
            false,
            format_args!("needs 2 memory nodes"),
        );
        return;
    }
    let r = std::thread::spawn(move || {
        let cs = confine(
            "migrate",
            &online_cpus(),
            &one_node(a),
            CpusetFlags::MEMORY_MIGRATE,
        )?;
        let mut boxes: Vec<Box<[u64; 8]>> = (0..4000).map(|i| Box::new([i; 8])).collect();
        // Filling writes every page, so all are present before the move.
        let mut big = vec![1u8; 2 << 20];
        let count = |boxes: &Vec<Box<[u64; 8]>>, big: &Vec<u8>| {
            let mut c = NodeCounts::default();
            for bx in boxes {
                c.add_range(bx.as_ptr().cast(), 64);
            }
            c.add_range(big.as_ptr(), big.len());
            c
        };
        let before = count(&boxes, &big);
        let (runs0, _) = cpuset::migrations();
        cs.set_mems(&one_node(b))
            .map_err(|e| format!("set_mems: {e}"))?;
        let (runs1, left) = cpuset::migrations();
        let after = count(&boxes, &big);
        // The contents survived the move.
        let intact = boxes
            .iter()
            .enumerate()
            .all(|(i, bx)| **bx == [i as u64; 8])
            && big.iter().all(|&x| x == 1);
        boxes.clear();
        big.clear();
        Ok::<_, String>((before, after, runs1 - runs0, left, intact))
    })
    .join();
    match r {
        Ok(Ok((before, after, runs, left, intact))) => verdict(
            "memory_migrate",
            before.on[a] == before.total() && after.on[b] == after.total() && runs == 1 && intact,
            format_args!(
                "before: {} of {} pages on node {a}; after moving the cpuset to node {b}: \
                 {} of {} on node {b}; migrations {runs}, pages the kernel left {left}; \
                 contents intact: {intact}",
                before.on[a],
                before.total(),
                after.on[b],
                after.total()
            ),
        ),
        Ok(Err(e)) => verdict("memory_migrate", false, format_args!("{e}")),
        Err(_) => verdict("memory_migrate", false, format_args!("thread panicked")),
    }
}
