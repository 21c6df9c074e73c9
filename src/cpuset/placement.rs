//! Which node a thread's memory comes from, as the kernel decides it under cpusets.
//!
//! The rule ([`Placement::node_for`]): the node of the CPU the thread runs on when its
//! cpuset allows it, else the allowed node nearest to it by SLIT distance; with
//! `SPREAD_PAGE` (page refills) or `SPREAD_SLAB` (slab growth), the next allowed node
//! after a per-thread rotor instead (`cpuset_mem_spread_node`). When the chosen node
//! has no memory left, the page pool may fall back only to nodes
//! [`Placement::node_allowed`] accepts (`cpuset_node_allowed`): never outside the
//! cpuset's nodes under `MEM_HARDWALL` or `MEM_EXCLUSIVE`, else within the nearest
//! such ancestor's (the top, at worst).
//!
//! The rule is pure, over masks and a [`Topology`], so tests run it on described
//! machines. For the allocator's own paths, the process's tree publishes each
//! cpuset's answer per CPU node into atomics, and [`mem_node_for`] reads it without a
//! lock: two loads after the thread-local lookup.

use crate::sys::tls::ThreadWord;
use core::sync::atomic::{fence, AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use super::error::CpusetError;
use super::flags::CpusetFlags;
use super::tree::{Cpuset, CpusetTree, MAX_CPUSETS};
use crate::topology::{NodeMask, Topology, MAX_NUMNODES};

/// What a node is picked for, choosing the spread flag that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// A page-pool refill (`SPREAD_PAGE`).
    Page,
    /// A new slab (`SPREAD_SLAB`).
    Slab,
}

impl MemKind {
    fn spread_flag(self) -> CpusetFlags {
        match self {
            Self::Page => CpusetFlags::SPREAD_PAGE,
            Self::Slab => CpusetFlags::SPREAD_SLAB,
        }
    }
}

/// What placement needs to know of one cpuset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The cpuset's effective nodes.
    pub mems: NodeMask,
    /// The effective nodes of its nearest `MEM_HARDWALL` / `MEM_EXCLUSIVE` ancestor,
    /// itself included (the top when none): where fallback may go.
    pub hardwall_mems: NodeMask,
    /// Its flags.
    pub flags: CpusetFlags,
}

impl Placement {
    /// The node for memory wanted by a thread running on a CPU of node `cpu_node`:
    /// that node when allowed, else the nearest allowed one; with the spread flag of
    /// `kind`, the next allowed node after `rotor` (which it advances). `None` when
    /// the cpuset has no nodes.
    pub fn node_for(
        &self,
        cpu_node: usize,
        kind: MemKind,
        topo: &Topology,
        rotor: &mut usize,
    ) -> Option<usize> {
        if self.flags.contains(kind.spread_flag()) {
            spread_node(&self.mems, rotor)
        } else {
            nearest_node(cpu_node, &self.mems, topo)
        }
    }

    /// Whether memory may come from `node` when the chosen one has none left
    /// (`cpuset_node_allowed`): a node of the cpuset, or one of its nearest hardwall
    /// ancestor's.
    pub fn node_allowed(&self, node: usize) -> bool {
        self.mems.test(node) || self.hardwall_mems.test(node)
    }

    /// The nodes to try, in order, for a thread on node `from`: the cpuset's nodes by
    /// distance, then the other nodes fallback may use, by distance (the zonelist
    /// walk filtered by `cpuset_zone_allowed`).
    pub fn fallback_order<'a>(
        &'a self,
        from: usize,
        topo: &'a Topology,
    ) -> impl Iterator<Item = usize> + 'a {
        NodeOrder::new(from, self.mems, topo).chain(NodeOrder::new(
            from,
            self.hardwall_mems.andnot(&self.mems),
            topo,
        ))
    }
}

/// `from` when `allowed` holds it, else the allowed node nearest to `from` (lowest id
/// among equals). `None` when `allowed` is empty.
pub fn nearest_node(from: usize, allowed: &NodeMask, topo: &Topology) -> Option<usize> {
    if allowed.test(from) {
        return Some(from);
    }
    allowed
        .iter()
        .min_by_key(|&n| (topo.node_distance(from, n), n))
}

/// The allowed node after `*rotor`, wrapping, and moves the rotor to it (the kernel's
/// `cpuset_mem_spread_node`). `None` when `allowed` is empty.
pub fn spread_node(allowed: &NodeMask, rotor: &mut usize) -> Option<usize> {
    let node = allowed.next_wrap(*rotor)?;
    *rotor = node;
    Some(node)
}

/// The nodes of a mask in increasing distance from one node (ids break ties), without
/// sorting into a buffer.
pub struct NodeOrder<'a> {
    from: usize,
    nodes: NodeMask,
    topo: &'a Topology,
    last: Option<(u8, usize)>,
}

impl<'a> NodeOrder<'a> {
    /// The nodes of `nodes` by distance from `from`.
    pub fn new(from: usize, nodes: NodeMask, topo: &'a Topology) -> Self {
        Self {
            from,
            nodes,
            topo,
            last: None,
        }
    }
}

impl Iterator for NodeOrder<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let key = |n: usize| (self.topo.node_distance(self.from, n), n);
        let next = self
            .nodes
            .iter()
            .map(key)
            .filter(|k| self.last.is_none_or(|l| *k > l))
            .min()?;
        self.last = Some(next);
        Some(next.1)
    }
}

impl CpusetTree {
    /// The placement inputs of `cs`.
    pub fn placement(&self, cs: Cpuset) -> Result<Placement, CpusetError> {
        let n = self.node(cs)?;
        let wall = CpusetFlags::MEM_HARDWALL | CpusetFlags::MEM_EXCLUSIVE;
        let mut at = cs.idx;
        while !self.nodes[at as usize].flags.intersects(wall) && at != super::tree::TOP {
            at = self.nodes[at as usize].parent;
        }
        Ok(Placement {
            mems: n.effective_mems,
            hardwall_mems: self.nodes[at as usize].effective_mems,
            flags: n.flags,
        })
    }
}

// ---- The process's placement, published for lock-free readers. ----

const NODE_WORDS: usize = NodeMask::BITS / 64;

/// One cpuset's placement as the allocator reads it. Masks are written under a
/// sequence count (`mems_allowed_seq`) so a reader never sees half of an update.
struct Published {
    seq: AtomicU32,
    mems: [AtomicU64; NODE_WORDS],
    hardwall: [AtomicU64; NODE_WORDS],
    flags: AtomicU32,
    /// `node_for` of a CPU on node `i`, without spreading, plus one; 0 for none. The
    /// offset keeps the whole table zero until it is published, so it sits in `.bss`
    /// and costs no resident page in a program that never uses cpusets.
    nearest: [AtomicU16; MAX_NUMNODES],
}

impl Published {
    const fn empty() -> Self {
        Self {
            seq: AtomicU32::new(0),
            mems: [const { AtomicU64::new(0) }; NODE_WORDS],
            hardwall: [const { AtomicU64::new(0) }; NODE_WORDS],
            flags: AtomicU32::new(0),
            nearest: [const { AtomicU16::new(0) }; MAX_NUMNODES],
        }
    }

    fn read(&self) -> (NodeMask, NodeMask) {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let mut mems = [0u64; NODE_WORDS];
                let mut hard = [0u64; NODE_WORDS];
                for i in 0..NODE_WORDS {
                    mems[i] = self.mems[i].load(Ordering::Relaxed);
                    hard[i] = self.hardwall[i].load(Ordering::Relaxed);
                }
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return (NodeMask::from_words(mems), NodeMask::from_words(hard));
                }
            }
            core::hint::spin_loop();
        }
    }
}

static PUBLISHED: [Published; MAX_CPUSETS] = [const { Published::empty() }; MAX_CPUSETS];
/// Set once the process's tree has been built; until then placement is the CPU's node.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether any placement restriction was ever published (the process built its cpuset
/// tree); until then every thread takes memory from its CPU's node.
#[inline]
pub fn placement_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Publishes the placement of every cpuset of the process's tree (the caller holds
/// its lock, so writers never race).
pub(super) fn publish(tree: &CpusetTree) {
    for (i, p) in PUBLISHED.iter().enumerate() {
        let cs = tree.handle(i as u16);
        let Ok(pl) = tree.placement(cs) else {
            continue;
        };
        p.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        for w in 0..NODE_WORDS {
            p.mems[w].store(pl.mems.words()[w], Ordering::Relaxed);
            p.hardwall[w].store(pl.hardwall_mems.words()[w], Ordering::Relaxed);
        }
        p.flags.store(pl.flags.0, Ordering::Relaxed);
        for (from, slot) in p.nearest.iter().enumerate() {
            let node = nearest_node(from, &pl.mems, &tree.topo);
            slot.store(node.map_or(0, |n| n as u16 + 1), Ordering::Relaxed);
        }
        p.seq.fetch_add(1, Ordering::Release);
    }
    ACTIVE.store(true, Ordering::Release);
    // The slab layer's inline allocation fast path ignores placement; from now on
    // every allocation takes the path that honours it.
    crate::sys::rseq::hold(crate::sys::rseq::HOLD_POP);
}

fn mine() -> &'static Published {
    &PUBLISHED[super::attach::current_index()]
}

/// The calling thread's cpuset's effective nodes (`cpuset_current_mems_allowed`);
/// every node before any cpuset is used. Lock-free.
pub fn current_mems_allowed() -> NodeMask {
    if !ACTIVE.load(Ordering::Acquire) {
        return NodeMask::first_n(NodeMask::BITS);
    }
    mine().read().0
}

/// **Placement hook for the page pool**: the node a page refill of the calling thread,
/// running on a CPU of node `cpu_node`, should come from. `cpu_node` itself before any
/// cpuset is used. Lock-free and allocation-free.
#[inline]
pub fn mem_node_for(cpu_node: usize) -> usize {
    mem_node_for_kind(cpu_node, MemKind::Page)
}

/// **Placement hook** for page refills ([`MemKind::Page`]) or slab growth
/// ([`MemKind::Slab`]): [`Placement::node_for`] over the calling thread's cpuset,
/// spreading with the thread's own rotor.
pub fn mem_node_for_kind(cpu_node: usize, kind: MemKind) -> usize {
    if !ACTIVE.load(Ordering::Acquire) {
        return cpu_node;
    }
    let p = mine();
    let flags = CpusetFlags(p.flags.load(Ordering::Relaxed));
    if flags.contains(kind.spread_flag()) {
        let mems = p.read().0;
        // The thread's own rotor for this kind (the task's `cpuset_mem_spread_rotor` /
        // `cpuset_slab_spread_rotor`).
        let word = match kind {
            MemKind::Page => ThreadWord::MemSpreadRotor,
            MemKind::Slab => ThreadWord::SlabSpreadRotor,
        };
        let mut rotor = word.get();
        let node = spread_node(&mems, &mut rotor);
        word.set(rotor);
        return node.unwrap_or(cpu_node);
    }
    match p.nearest.get(cpu_node).map(|n| n.load(Ordering::Relaxed)) {
        Some(0) => cpu_node,
        Some(n) => n as usize - 1,
        // A node past the distance table: the first allowed one.
        None => p.read().0.first().unwrap_or(cpu_node),
    }
}

/// `alternate_node_alloc` for slab objects: the node a thread must take an object
/// from instead of its CPU's cached ones, or `None` when the CPU's node is the right
/// one. A thread with `SPREAD_SLAB` always gets the rotor's next node (every object
/// goes through the rotor, as the kernel's `PF_SPREAD_SLAB` tasks); another gets its
/// placement node when that is not its CPU's.
pub fn alternate_slab_node(cpu_node: usize) -> Option<usize> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let spread =
        CpusetFlags(mine().flags.load(Ordering::Relaxed)).contains(MemKind::Slab.spread_flag());
    let node = mem_node_for_kind(cpu_node, MemKind::Slab);
    (spread || node != cpu_node).then_some(node)
}

/// **Fallback hook**: whether the calling thread may take memory from `node` when the
/// node [`mem_node_for`] chose has none left (`cpuset_node_allowed`). Lock-free.
pub fn node_allowed(node: usize) -> bool {
    if !ACTIVE.load(Ordering::Acquire) {
        return true;
    }
    let (mems, hard) = mine().read();
    mems.test(node) || hard.test(node)
}
