//! `arc-graph`: threads in a ring each build `Arc`-linked DAGs (nodes point
//! to a few earlier nodes), send them to the next thread, which walks and
//! verifies every node and drops the graph: reference-count traffic plus
//! node and edge-vector frees on a thread other than the allocating one.
//! Allocates through the global allocator.

use super::{Outcome, Params};
use crate::Rng;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

/// Graphs at scale 1, all threads together.
const BASE: u64 = 6_000;
/// Nodes per graph.
const NODES: usize = 1000;
/// Most edges per node.
const MAX_EDGES: usize = 4;

struct Node {
    id: u32,
    value: u64,
    /// Sum of the values of `edges`, computed when built.
    edge_sum: u64,
    edges: Vec<Arc<Node>>,
}

struct Graph {
    origin: usize,
    index: u64,
    nodes: Vec<Arc<Node>>,
}

fn value(origin: usize, index: u64, id: u32) -> u64 {
    (((origin as u64) << 48) ^ (index << 20) ^ id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn build(origin: usize, index: u64, rng: &mut Rng) -> Graph {
    let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(NODES);
    for id in 0..NODES as u32 {
        let n_edges = if id == 0 { 0 } else { rng.range(1, MAX_EDGES) };
        let edges: Vec<Arc<Node>> = (0..n_edges)
            .map(|_| Arc::clone(&nodes[rng.below(id as usize)]))
            .collect();
        let edge_sum = edges.iter().fold(0u64, |s, e| s.wrapping_add(e.value));
        nodes.push(Arc::new(Node {
            id,
            value: value(origin, index, id),
            edge_sum,
            edges,
        }));
    }
    Graph {
        origin,
        index,
        nodes,
    }
}

/// Verifies every node and edge; drops the graph from the newest node down
/// so each drop is shallow. Returns a digest.
fn verify_and_drop(mut g: Graph) -> u64 {
    let mut digest = 0u64;
    for (i, n) in g.nodes.iter().enumerate() {
        assert_eq!(n.id as usize, i, "arc-graph: node order corrupt");
        assert_eq!(
            n.value,
            value(g.origin, g.index, n.id),
            "arc-graph: node value corrupt"
        );
        let sum = n.edges.iter().fold(0u64, |s, e| {
            assert!(e.id < n.id, "arc-graph: edge points forward");
            s.wrapping_add(e.value)
        });
        assert_eq!(sum, n.edge_sum, "arc-graph: edge list corrupt");
        digest = digest.wrapping_add(n.value ^ n.edges.len() as u64);
    }
    while let Some(n) = g.nodes.pop() {
        drop(n);
    }
    digest
}

/// Runs the ring; see the module docs.
pub fn arc_graph(p: &Params) -> Outcome {
    let per_thread = p.per_thread(BASE);
    let t = p.threads;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..t).map(|_| sync_channel::<Graph>(2)).unzip();
    let mut rxs: Vec<Option<_>> = rxs.into_iter().map(Some).collect();
    let mut checksum = 0u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..t)
            .map(|i| {
                let tx = txs[(i + 1) % t].clone();
                let rx = rxs[i].take().expect("receiver");
                s.spawn(move || {
                    p.pin_worker(i);
                    let mut rng = Rng::new(0xA2C6_0000 + i as u64);
                    let mut digest = 0u64;
                    for index in 0..per_thread {
                        tx.send(build(i, index, &mut rng)).expect("ring broken");
                        let g = rx.recv().expect("ring broken");
                        digest = digest.wrapping_add(verify_and_drop(g));
                    }
                    digest
                })
            })
            .collect();
        drop(txs);
        for h in handles {
            checksum = checksum.wrapping_add(h.join().expect("arc-graph worker panicked"));
        }
    });
    Outcome {
        checksum,
        allocs: per_thread * t as u64 * NODES as u64 * 2,
    }
}
