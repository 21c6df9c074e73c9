//! The `rcu_node` tree: reader records grouped under leaves of 16, leaves under inner
//! nodes of 64, inner nodes under the root. At the start of a grace period every
//! node's `qsmask` is set from the readers (or children) it has; a quiescent state
//! clears the reader's bit in its leaf, and the last bit cleared at a node clears the
//! node's bit in its parent. The grace period ends when the root's `qsmask` is empty.
//!
//! The algorithm is [`RcuTree`], of any number of leaves and inner nodes; cpuslab has
//! one, sized for [`MAX_READERS`], behind the free functions below, and loom models
//! build small ones.

use crate::sync::atomic::{fence, AtomicUsize, Ordering};
use crate::sync::prim::const_fn;
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
    const_fn! {
        fn new() -> Self {
            Self {
                masks: Mutex::new(Masks {
                    qsmask: 0,
                    qsmaskinit: 0,
                }),
            }
        }
    }
}

/// An `rcu_node` tree of `L` leaves (readers `16 * l ..`) under `I` inner nodes (leaves
/// `64 * i ..`) under one root. `I` must be at least `L / 64` rounded up.
pub struct RcuTree<const L: usize, const I: usize> {
    leaves: [RcuNode; L],
    inner: [RcuNode; I],
    root: RcuNode,
    /// One past the highest leaf that ever held a reader.
    leaf_high: AtomicUsize,
    /// Readers present (the bits set in the leaves' `qsmaskinit`).
    online: AtomicUsize,
}

impl<const L: usize, const I: usize> RcuTree<L, I> {
    /// A tree without readers.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            leaves: [const { RcuNode::new() }; L],
            inner: [const { RcuNode::new() }; I],
            root: RcuNode::new(),
            leaf_high: AtomicUsize::new(0),
            online: AtomicUsize::new(0),
        }
    }

    /// A tree without readers.
    #[cfg(loom)]
    pub fn new() -> Self {
        let tree = Self {
            leaves: core::array::from_fn(|_| RcuNode::new()),
            inner: core::array::from_fn(|_| RcuNode::new()),
            root: RcuNode::new(),
            leaf_high: AtomicUsize::new(0),
            online: AtomicUsize::new(0),
        };
        // loom keeps an initial value out of the SeqCst order; stored again, it is in.
        tree.online.store(0, Ordering::SeqCst);
        tree
    }

    /// Marks reader `slot` present (it is waited on from the next grace period).
    pub fn reader_online(&self, slot: usize) {
        // Counted before the reader's first section, with a full barrier: a grace
        // period that reads the count after publishing its start either sees this
        // reader or is seen by all of its sections (see `only_online`).
        self.online.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let leaf = slot / LEAF_FANOUT;
        self.leaf_high.fetch_max(leaf + 1, Ordering::Relaxed);
        self.leaves[leaf].masks.lock().qsmaskinit |= 1 << (slot % LEAF_FANOUT);
    }

    /// Marks reader `slot` gone, reporting its quiescent state if the grace period in
    /// progress still waits for it. Returns true if that ended the grace period's wait.
    pub fn reader_offline(&self, slot: usize) -> bool {
        let leaf = slot / LEAF_FANOUT;
        self.leaves[leaf].masks.lock().qsmaskinit &= !(1 << (slot % LEAF_FANOUT));
        let ended = self.report_qs(slot);
        self.online.fetch_sub(1, Ordering::Release);
        ended
    }

    /// Whether the readers present are at most `me` (the caller's own slot, which is
    /// outside any section), read with a full barrier. A reader that comes online
    /// later counts itself with a full barrier before its first section, so that
    /// section sees whatever the caller stored before this call.
    pub fn only_online(&self, me: Option<usize>) -> bool {
        // Pairs with the fence after a new reader's count: of the two fences, the one
        // first in the total order makes its side's earlier accesses seen after the
        // other (here: the caller's stores by the reader's first section).
        fence(Ordering::SeqCst);
        let n = self.online.load(Ordering::SeqCst);
        n == 0
            || (n == 1
                && me.is_some_and(|slot| {
                    let leaf = &self.leaves[slot / LEAF_FANOUT];
                    leaf.masks.lock().qsmaskinit & (1 << (slot % LEAF_FANOUT)) != 0
                }))
    }

    /// `rcu_gp_init`'s tree part: every node's `qsmask` from its `qsmaskinit`, from the
    /// root down. Returns whether any reader must be waited for.
    ///
    /// Readers report concurrently (a thread that exits, a section that ends with
    /// `need_qs` left from the last grace period). Set bottom-up, a report that empties
    /// a leaf or an inner node before its parent's mask is set finds the parent's bit
    /// clear, stops there, and the parent's bit set afterwards is never cleared: the
    /// grace period waits forever for a node that owes nothing. Set top-down, a node's
    /// bit is in its parent before the node can empty; a leaf whose readers all left
    /// between the census and its own mask is reported up here.
    pub fn init_qsmasks(&self) -> bool {
        let high = self.leaf_high.load(Ordering::Relaxed);
        // The census: which leaves have readers.
        let mut inner_masks = [0u64; I];
        for (leaf, node) in self.leaves[..high].iter().enumerate() {
            if node.masks.lock().qsmaskinit != 0 {
                inner_masks[leaf / INNER_FANOUT] |= 1 << (leaf % INNER_FANOUT);
            }
        }
        let root_mask = inner_masks
            .iter()
            .enumerate()
            .filter(|(_, &m)| m != 0)
            .fold(0u64, |r, (i, _)| r | 1 << i);
        {
            let mut r = self.root.masks.lock();
            r.qsmaskinit = root_mask;
            r.qsmask = root_mask;
        }
        // Inner nodes past the one over `high` never had a leaf in a census, so their
        // masks are still empty: only those up to it are set (locking all 64 was most of
        // a grace period's cost with few readers).
        let inner_high = high.div_ceil(INNER_FANOUT).min(I);
        for (node, &mask) in self.inner[..inner_high].iter().zip(&inner_masks) {
            let mut m = node.masks.lock();
            m.qsmaskinit = mask;
            m.qsmask = mask;
        }
        for (leaf, node) in self.leaves[..high].iter().enumerate() {
            let counted = inner_masks[leaf / INNER_FANOUT] & 1 << (leaf % INNER_FANOUT) != 0;
            let (emptied, waited) = {
                let mut m = node.masks.lock();
                // A leaf left out of the census waits for nobody: its readers came
                // online after the grace period started.
                m.qsmask = if counted { m.qsmaskinit } else { 0 };
                (counted && m.qsmask == 0, m.qsmask)
            };
            if waited != 0 {
                trace_started_leaf(leaf, waited);
            }
            if emptied {
                self.report_leaf_qs(leaf);
            }
        }
        !self.root_done()
    }

    /// Whether the grace period in progress waits for no reader any more.
    pub fn root_done(&self) -> bool {
        self.root.masks.lock().qsmask == 0
    }

    /// Whether the grace period waits for reader `slot`.
    pub fn waits_for(&self, slot: usize) -> bool {
        self.leaves[slot / LEAF_FANOUT].masks.lock().qsmask & (1 << (slot % LEAF_FANOUT)) != 0
    }

    /// The leaves whose `qsmask` is not empty, as (leaf, mask) pairs, for forcing
    /// quiescent states. Calls `f` for each, with no lock held.
    pub fn for_each_blocking_leaf(&self, mut f: impl FnMut(usize, u64)) {
        let high = self.leaf_high.load(Ordering::Relaxed);
        for (leaf, node) in self.leaves[..high].iter().enumerate() {
            let mask = node.masks.lock().qsmask;
            if mask != 0 {
                f(leaf, mask);
            }
        }
    }

    /// `rcu_report_qs_rnp`: clears reader `slot`'s bit and, where a node's mask
    /// empties, its bit in the parent. Returns true when this report emptied the root.
    pub fn report_qs(&self, slot: usize) -> bool {
        let leaf = slot / LEAF_FANOUT;
        {
            let mut m = self.leaves[leaf].masks.lock();
            let bit = 1 << (slot % LEAF_FANOUT);
            if m.qsmask & bit == 0 {
                return false;
            }
            m.qsmask &= !bit;
            if m.qsmask != 0 {
                return false;
            }
        }
        self.report_leaf_qs(leaf)
    }

    /// Leaf `leaf` owes nothing any more: clears its bit in its inner node and, where
    /// that empties, the inner node's bit in the root. Returns true when this emptied
    /// the root.
    fn report_leaf_qs(&self, leaf: usize) -> bool {
        let inner = leaf / INNER_FANOUT;
        {
            let mut m = self.inner[inner].masks.lock();
            let bit = 1 << (leaf % INNER_FANOUT);
            if m.qsmask & bit == 0 {
                return false;
            }
            m.qsmask &= !bit;
            if m.qsmask != 0 {
                return false;
            }
        }
        let mut r = self.root.masks.lock();
        let bit = 1 << inner;
        if r.qsmask & bit == 0 {
            return false;
        }
        r.qsmask &= !bit;
        r.qsmask == 0
    }

    /// Readers present, for statistics.
    pub fn nr_readers(&self) -> usize {
        let high = self.leaf_high.load(Ordering::Relaxed);
        self.leaves[..high]
            .iter()
            .map(|n| n.masks.lock().qsmaskinit.count_ones() as usize)
            .sum()
    }

    /// fork, child: the tree's locks may have been held by threads that are gone.
    ///
    /// # Safety
    /// Only in a forked child, whose only thread is the caller.
    pub unsafe fn reset_locks_after_fork(&self) {
        let high = self.leaf_high.load(Ordering::Relaxed);
        for n in self.leaves[..high]
            .iter()
            .chain(self.inner.iter())
            .chain(core::iter::once(&self.root))
        {
            // SAFETY: a forked child whose only thread is the caller (its contract).
            unsafe { n.masks.force_unlock_if_locked() };
        }
    }
}

impl<const L: usize, const I: usize> Default for RcuTree<L, I> {
    fn default() -> Self {
        Self::new()
    }
}

/// The tree of every reader record.
#[cfg(not(loom))]
static TREE: RcuTree<NR_LEAVES, INNER_FANOUT> = RcuTree::new();

/// Marks reader `slot` present (it is waited on from the next grace period).
#[cfg(not(loom))]
pub fn reader_online(slot: usize) {
    TREE.reader_online(slot)
}

/// Marks reader `slot` gone, reporting its quiescent state if the grace period in
/// progress still waits for it. Returns true if that ended the grace period's wait.
#[cfg(not(loom))]
pub fn reader_offline(slot: usize) -> bool {
    TREE.reader_offline(slot)
}

/// `rcu_gp_init`'s tree part: every node's `qsmask` from its `qsmaskinit`, from the root
/// down. Returns whether any reader must be waited for.
#[cfg(not(loom))]
pub fn init_qsmasks() -> bool {
    TREE.init_qsmasks()
}

/// Whether the grace period in progress waits for no reader any more.
#[cfg(not(loom))]
pub fn root_done() -> bool {
    TREE.root_done()
}

/// Whether the grace period waits for reader `slot`.
#[cfg(not(loom))]
pub fn waits_for(slot: usize) -> bool {
    TREE.waits_for(slot)
}

/// The leaves whose `qsmask` is not empty, as (leaf, mask) pairs, for forcing
/// quiescent states. Calls `f` for each.
#[cfg(not(loom))]
pub fn for_each_blocking_leaf(f: impl FnMut(usize, u64)) {
    TREE.for_each_blocking_leaf(f)
}

/// `rcu_report_qs_rnp`: clears reader `slot`'s bit and, where a node's mask empties,
/// its bit in the parent. Returns true when this report emptied the root.
#[cfg(not(loom))]
pub fn report_qs(slot: usize) -> bool {
    TREE.report_qs(slot)
}

/// Whether no reader but the caller's own record `me` is present; see
/// [`RcuTree::only_online`].
#[cfg(not(loom))]
pub fn only_online(me: Option<usize>) -> bool {
    TREE.only_online(me)
}

/// Readers present, for statistics.
#[cfg(not(loom))]
pub fn nr_readers() -> usize {
    TREE.nr_readers()
}

/// fork, child: the tree's locks may have been held by threads that are gone.
///
/// # Safety
/// Only in a forked child, whose only thread is the caller.
#[cfg(not(loom))]
pub unsafe fn reset_locks_after_fork() {
    // SAFETY: the caller's contract, passed on.
    unsafe { TREE.reset_locks_after_fork() }
}

/// Traces a leaf included in a starting grace period (`startedleaf`) and each reader
/// it waits for (`cpustart`, with the reader's slot).
#[cfg(not(loom))]
fn trace_started_leaf(leaf: usize, mut waited: u64) {
    use super::trace::{record, Event};
    record(Event::StartedLeaf, leaf as u32);
    while waited != 0 {
        let bit = waited.trailing_zeros();
        record(Event::CpuStart, (leaf * LEAF_FANOUT) as u32 + bit);
        waited &= waited - 1;
    }
}

/// Loom models the tree alone: no trace ring.
#[cfg(loom)]
fn trace_started_leaf(_leaf: usize, _waited: u64) {}
