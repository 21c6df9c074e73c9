//! The `rcu_node` tree: reader records grouped under leaves of 16, leaves under inner
//! nodes of 64, inner nodes under the root. At the start of a grace period every
//! node's `qsmask` is set from the readers (or children) it has; a quiescent state
//! clears the reader's bit in its leaf, and the last bit cleared at a node clears the
//! node's bit in its parent. The grace period ends when the root's `qsmask` is empty.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::Mutex;

/// Readers per leaf.
pub const LEAF_FANOUT: usize = 16;
/// Children per inner node (and per root).
pub const INNER_FANOUT: usize = 64;
/// Leaves in the tree.
pub const NR_LEAVES: usize = INNER_FANOUT * INNER_FANOUT;
/// Readers the tree can hold.
pub const MAX_READERS: usize = NR_LEAVES * LEAF_FANOUT;

/// A node's masks, under its lock.
#[derive(Clone, Copy, Default)]
pub struct Masks {
    /// Readers or children that still owe a quiescent state to this grace period.
    pub qsmask: u64,
    /// Readers or children present (the value `qsmask` starts from).
    pub qsmaskinit: u64,
}

/// One `rcu_node`.
pub struct RcuNode {
    /// `rnp->lock` and the masks it guards.
    pub masks: Mutex<Masks>,
}

impl RcuNode {
    const fn new() -> Self {
        Self {
            masks: Mutex::new(Masks {
                qsmask: 0,
                qsmaskinit: 0,
            }),
        }
    }
}

static LEAVES: [RcuNode; NR_LEAVES] = [const { RcuNode::new() }; NR_LEAVES];
static INNER: [RcuNode; INNER_FANOUT] = [const { RcuNode::new() }; INNER_FANOUT];
static ROOT: RcuNode = RcuNode::new();
/// One past the highest leaf that ever held a reader.
static LEAF_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Marks reader `slot` present (it is waited on from the next grace period).
pub fn reader_online(slot: usize) {
    let leaf = slot / LEAF_FANOUT;
    LEAF_HIGH.fetch_max(leaf + 1, Ordering::Relaxed);
    LEAVES[leaf].masks.lock().qsmaskinit |= 1 << (slot % LEAF_FANOUT);
}

/// Marks reader `slot` gone, reporting its quiescent state if the grace period in
/// progress still waits for it. Returns true if that ended the grace period's wait.
pub fn reader_offline(slot: usize) -> bool {
    let leaf = slot / LEAF_FANOUT;
    LEAVES[leaf].masks.lock().qsmaskinit &= !(1 << (slot % LEAF_FANOUT));
    report_qs(slot)
}

/// `rcu_gp_init`'s tree part: every node's `qsmask` from its `qsmaskinit`, leaves first.
/// Returns whether any reader must be waited for.
pub fn init_qsmasks() -> bool {
    let high = LEAF_HIGH.load(Ordering::Relaxed);
    let mut inner_masks = [0u64; INNER_FANOUT];
    for (leaf, node) in LEAVES[..high].iter().enumerate() {
        let mut m = node.masks.lock();
        m.qsmask = m.qsmaskinit;
        if m.qsmask != 0 {
            inner_masks[leaf / INNER_FANOUT] |= 1 << (leaf % INNER_FANOUT);
        }
    }
    let mut root_mask = 0;
    for (i, node) in INNER.iter().enumerate() {
        let mut m = node.masks.lock();
        m.qsmaskinit = inner_masks[i];
        m.qsmask = inner_masks[i];
        if m.qsmask != 0 {
            root_mask |= 1 << i;
        }
    }
    let mut r = ROOT.masks.lock();
    r.qsmaskinit = root_mask;
    r.qsmask = root_mask;
    root_mask != 0
}

/// Whether the grace period in progress waits for no reader any more.
pub fn root_done() -> bool {
    ROOT.masks.lock().qsmask == 0
}

/// Whether the grace period waits for reader `slot`.
pub fn waits_for(slot: usize) -> bool {
    LEAVES[slot / LEAF_FANOUT].masks.lock().qsmask & (1 << (slot % LEAF_FANOUT)) != 0
}

/// The leaves whose `qsmask` is not empty, as (leaf, mask) pairs, for forcing
/// quiescent states. Calls `f` for each.
pub fn for_each_blocking_leaf(mut f: impl FnMut(usize, u64)) {
    let high = LEAF_HIGH.load(Ordering::Relaxed);
    for (leaf, node) in LEAVES[..high].iter().enumerate() {
        let mask = node.masks.lock().qsmask;
        if mask != 0 {
            f(leaf, mask);
        }
    }
}

/// `rcu_report_qs_rnp`: clears reader `slot`'s bit and, where a node's mask empties,
/// its bit in the parent. Returns true when this report emptied the root.
pub fn report_qs(slot: usize) -> bool {
    let leaf = slot / LEAF_FANOUT;
    {
        let mut m = LEAVES[leaf].masks.lock();
        let bit = 1 << (slot % LEAF_FANOUT);
        if m.qsmask & bit == 0 {
            return false;
        }
        m.qsmask &= !bit;
        if m.qsmask != 0 {
            return false;
        }
    }
    let inner = leaf / INNER_FANOUT;
    {
        let mut m = INNER[inner].masks.lock();
        let bit = 1 << (leaf % INNER_FANOUT);
        if m.qsmask & bit == 0 {
            return false;
        }
        m.qsmask &= !bit;
        if m.qsmask != 0 {
            return false;
        }
    }
    let mut r = ROOT.masks.lock();
    let bit = 1 << inner;
    if r.qsmask & bit == 0 {
        return false;
    }
    r.qsmask &= !bit;
    r.qsmask == 0
}

/// Readers present, for statistics.
pub fn nr_readers() -> usize {
    let high = LEAF_HIGH.load(Ordering::Relaxed);
    LEAVES[..high]
        .iter()
        .map(|n| n.masks.lock().qsmaskinit.count_ones() as usize)
        .sum()
}

/// fork, child: the tree's locks may have been held by threads that are gone.
///
/// # Safety
/// Only in a forked child, whose only thread is the caller.
pub unsafe fn reset_locks_after_fork() {
    let high = LEAF_HIGH.load(Ordering::Relaxed);
    for n in LEAVES[..high]
        .iter()
        .chain(INNER.iter())
        .chain(core::iter::once(&ROOT))
    {
        n.masks.force_unlock_if_locked();
    }
}
