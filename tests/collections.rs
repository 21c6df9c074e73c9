//! The standard collections under load, with every allocation of this test binary
//! (the harness included) served by cpuslab.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use common::Rng;

#[test]
fn vec_and_string_growth() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..2_000_000u64 {
        v.push(i * 3);
    }
    assert_eq!(v.iter().sum::<u64>(), 3 * (2_000_000 * 1_999_999 / 2));
    let mut s = String::new();
    for i in 0..200_000 {
        s.push_str(&i.to_string());
    }
    assert_eq!(
        s.len(),
        (0..200_000)
            .map(|i: i32| i.to_string().len())
            .sum::<usize>()
    );
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn maps_under_churn() {
    let mut rng = Rng::new(7);
    let mut h: HashMap<u64, String> = HashMap::new();
    let mut b: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for _ in 0..300_000 {
        let k = rng.below(20_000);
        if rng.below(3) == 0 {
            h.remove(&k);
            b.remove(&k);
        } else {
            h.insert(k, format!("value-{k}"));
            b.insert(k, vec![k as u8; (k % 300) as usize]);
        }
    }
    for (k, v) in &h {
        assert_eq!(v, &format!("value-{k}"));
    }
    for (k, v) in &b {
        assert_eq!(v.len(), (k % 300) as usize);
        assert!(v.iter().all(|&x| x == *k as u8));
    }
    let keys: HashSet<u64> = h.keys().copied().collect();
    assert_eq!(keys, b.keys().copied().collect());
}

#[test]
fn arc_graph_across_threads() {
    struct Node {
        id: usize,
        edges: Vec<Arc<Node>>,
    }
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    for id in 0..20_000 {
        let edges = (1..=3)
            .filter(|d| id >= *d * 7)
            .map(|d| nodes[id - d * 7].clone())
            .collect();
        nodes.push(Arc::new(Node { id, edges }));
    }
    let shared = Arc::new(nodes);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let g = shared.clone();
            std::thread::spawn(move || {
                let mut q: VecDeque<Arc<Node>> = g.iter().skip(t).step_by(4).cloned().collect();
                let mut sum = 0usize;
                while let Some(n) = q.pop_front() {
                    sum += n.id + n.edges.iter().map(|e| e.id).sum::<usize>();
                }
                sum
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let want: usize = shared
        .iter()
        .map(|n| n.id + n.edges.iter().map(|e| e.id).sum::<usize>())
        .sum();
    assert_eq!(total, want);
}

#[test]
fn allocator_api2_collections() {
    use allocator_api2::vec::Vec as AVec;
    let mut v = AVec::new_in(cpuslab::CpuSlab);
    for i in 0..100_000u32 {
        v.push(i);
    }
    assert_eq!(
        v.iter().map(|&x| x as u64).sum::<u64>(),
        100_000 * 99_999 / 2
    );
}

/// `Allocator::allocate` reports the whole block (the class's size, whole pages for a
/// large block), all of it usable, and the block may be grown in place within it and
/// freed with any layout size up to it; `allocate_zeroed` reports what it zeroed.
#[test]
fn allocator_api2_reports_usable_sizes() {
    use allocator_api2::alloc::Allocator;
    use std::alloc::Layout;
    let a = cpuslab::CpuSlab;
    for (size, want) in [(20, 24), (100, 112), (1000, 1024), (40_000, 40_960)] {
        let l = Layout::from_size_align(size, 8).unwrap();
        let b = a.allocate(l).unwrap();
        assert_eq!(b.len(), want, "size {size}");
        let p = b.cast::<u8>();
        // SAFETY: the whole reported block is ours.
        unsafe { p.as_ptr().write_bytes(0xa5, b.len()) };
        // Growing within the reported length keeps the block.
        let full = Layout::from_size_align(b.len(), 8).unwrap();
        // SAFETY: `p` was allocated with `l`, and `full` is no smaller.
        let g = unsafe { a.grow(p, l, full) }.unwrap();
        assert_eq!(g.cast::<u8>(), p, "size {size}: moved within its block");
        // SAFETY: freed once, with a layout whose size lies within the block.
        unsafe { a.deallocate(p, full) };
        let z = a.allocate_zeroed(l).unwrap();
        assert_eq!(z.len(), size);
        // SAFETY: the reported length is zero.
        assert!(unsafe { z.as_ref() }.iter().all(|&x| x == 0));
        // SAFETY: allocated just above with `l`.
        unsafe { a.deallocate(z.cast(), l) };
    }
}
