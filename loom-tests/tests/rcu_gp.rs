//! A grace period against two readers: no reader that may have seen the old version
//! of an object sees it freed before its read section ends.
//!
//! The readers and the grace-period driver follow `rcu/reader.rs` and `rcu/gp.rs`
//! step for step (the path without membarrier(2): full fences on both sides), over
//! the library's own `rcu_node` tree ([`RcuTree`]), `gp_seq` arithmetic ([`seq`]),
//! locks and atomics. The two readers sit in different leaves, so the last quiescent
//! state is reported up through the inner node to the root. The updater publishes a
//! new version, drives a grace period on its own thread as `synchronize_expedited`
//! does, and poisons the old version; loom checks that every read of the old version
//! is ordered before the poisoning write. A second model has a reader thread leave
//! while the masks initialise: the grace period must not wait for it forever. A third
//! has a grace period find no reader present (`only_online`), skip its membarriers and
//! scan, and a reader come online and read without fences (the membarrier path).
#![cfg(loom)]

use cpuslab::rcu::seq;
use cpuslab::rcu::tree::{RcuTree, LEAF_FANOUT};
use cpuslab::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use cpuslab_loom_tests::{model, seq_cst_u64};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

const POISON: u64 = 0xdead;

/// Bits of `rcu_special` counting the guards alive beyond the first (owner only).
const NESTING: u64 = u32::MAX as u64;
/// The bit of `rcu_special` the grace period sets.
const NEED_QS: u64 = 1 << 32;

/// `rcu_special` as the grace period reaches it (`reader::NeedQs`): `store(true)` sets
/// the need_qs bit and leaves the nesting count in the same word alone.
struct Special(AtomicU64);

impl Special {
    fn store(&self, need_qs: bool, order: Ordering) {
        if need_qs {
            self.0.fetch_or(NEED_QS, order);
        } else {
            self.0.fetch_and(!NEED_QS, order);
        }
    }
}

/// One reader's hot words (`ctr` and `rcu_special`, thread-local in the library).
struct Reader {
    slot: usize,
    /// `gp_seq` when the outermost read section began; 0 outside read sections.
    ctr: AtomicU64,
    /// The guards alive beyond the first (changed by the owner only, with atomic
    /// read-modify-writes) and the need_qs bit (set by the grace-period side).
    need_qs: Special,
}

struct Rcu {
    gp_seq: AtomicU64,
    tree: RcuTree<2, 1>,
    readers: [Reader; 2],
}

impl Rcu {
    fn new() -> Self {
        let reader = |slot| Reader {
            slot,
            ctr: seq_cst_u64(0),
            need_qs: Special(AtomicU64::new(0)),
        };
        let rcu = Self {
            // Non-zero while idle, as `GP_SEQ`: a reader's 0 means "not reading".
            gp_seq: seq_cst_u64(4),
            tree: RcuTree::new(),
            readers: [reader(0), reader(LEAF_FANOUT)],
        };
        for r in &rcu.readers {
            rcu.tree.reader_online(r.slot);
        }
        rcu
    }

    /// `read_lock` (its out-of-line path, which every section takes without
    /// membarrier): the outermost guard stores `gp_seq`, the others count.
    fn read_lock(&self, r: &Reader) {
        if r.ctr.load(Ordering::Relaxed) == 0 {
            r.ctr
                .store(self.gp_seq.load(Ordering::Relaxed), Ordering::Relaxed);
            fence(Ordering::SeqCst);
        } else {
            r.need_qs.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The guard's drop (its out-of-line path), and `report_own_qs` when the grace
    /// period asked for it.
    fn read_unlock(&self, r: &Reader) {
        if r.need_qs.0.load(Ordering::Relaxed) & NESTING != 0 {
            r.need_qs.0.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        fence(Ordering::SeqCst);
        r.ctr.store(0, Ordering::Release);
        if r.need_qs.0.load(Ordering::Relaxed) & NEED_QS != 0 {
            r.need_qs.0.fetch_and(!NEED_QS, Ordering::Relaxed);
            self.tree.report_qs(r.slot);
        }
    }

    /// `synchronize_expedited`: grace periods on the caller's thread until one has
    /// elapsed since the call.
    fn synchronize(&self) {
        let snap = seq::snap(self.gp_seq.load(Ordering::SeqCst));
        while !seq::done(self.gp_seq.load(Ordering::Acquire), snap) {
            self.run_gp();
        }
    }

    /// `run_gp(true)`: start, initialise the masks, force quiescent states until the
    /// root's mask is empty, end.
    fn run_gp(&self) {
        let gp = seq::start(self.gp_seq.load(Ordering::Relaxed));
        assert_eq!(seq::state(gp), 1);
        self.gp_seq.store(gp, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.tree.init_qsmasks() {
            loop {
                self.force_quiescent_states(gp);
                if self.tree.root_done() {
                    break;
                }
                loom::thread::yield_now();
            }
        }
        fence(Ordering::SeqCst);
        self.gp_seq.store(seq::end(gp), Ordering::SeqCst);
    }

    /// `rcu_gp_fqs`: reports every waited-for reader found outside a read section or
    /// in one that began after the grace period started, and asks the others to
    /// report when they leave.
    fn force_quiescent_states(&self, gp: u64) {
        self.tree.for_each_blocking_leaf(|leaf, mask| {
            let mut bits = mask;
            while bits != 0 {
                let slot = leaf * LEAF_FANOUT + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let r = self.readers.iter().find(|r| r.slot == slot).unwrap();
                let quiescent = |c: u64| c == 0 || seq::done(c, gp);
                if quiescent(r.ctr.load(Ordering::Acquire)) {
                    self.tree.report_qs(slot);
                    continue;
                }
                r.need_qs.store(true, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                if quiescent(r.ctr.load(Ordering::Acquire)) {
                    self.tree.report_qs(slot);
                }
            }
        });
    }
}

/// The RCU-protected data: two versions of an object and the published one.
struct World {
    rcu: Rcu,
    current: AtomicUsize,
    versions: [UnsafeCell<u64>; 2],
}

// SAFETY: a version is written only once no reader can reach it, which is what the
// model checks.
unsafe impl Sync for World {}

impl World {
    /// `rcu_dereference` and a read of the version found.
    fn read(&self) -> u64 {
        let v = self.current.load(Ordering::Acquire);
        // SAFETY: inside a read section (what the model checks).
        let value = self.versions[v].with(|p| unsafe { *p });
        assert_ne!(value, POISON, "a reader saw a freed version");
        value
    }
}

#[test]
fn grace_period_waits_for_readers_that_began_before_it() {
    model(|| {
        let w = Arc::new(World {
            rcu: Rcu::new(),
            current: AtomicUsize::new(0),
            versions: [UnsafeCell::new(1), UnsafeCell::new(2)],
        });
        // A reader whose section nests: it reads again after the inner section ended,
        // still inside the outer one.
        let nested = {
            let w = w.clone();
            thread::spawn(move || {
                let r = &w.rcu.readers[0];
                w.rcu.read_lock(r);
                w.rcu.read_lock(r);
                let first = w.read();
                w.rcu.read_unlock(r);
                let again = w.read();
                w.rcu.read_unlock(r);
                assert!(again >= first, "a reader went back to an older version");
            })
        };
        let plain = {
            let w = w.clone();
            thread::spawn(move || {
                let r = &w.rcu.readers[1];
                w.rcu.read_lock(r);
                w.read();
                w.rcu.read_unlock(r);
            })
        };
        // The updater: publish version 1, wait for a grace period, free version 0.
        w.current.store(1, Ordering::Release);
        w.rcu.synchronize();
        w.versions[0].with_mut(|p| {
            // SAFETY: after a grace period no reader can reach version 0.
            unsafe { *p = POISON }
        });
        nested.join().unwrap();
        plain.join().unwrap();
        assert_eq!(seq::state(w.rcu.gp_seq.load(Ordering::Relaxed)), 0);
        assert!(w.rcu.tree.root_done());
    });
}

/// A reader thread leaves (`reader_offline`, its quiescent state reported at once)
/// while the grace period initialises the masks, and another comes online in the
/// other leaf: once both are done, one scan that reports every reader still marked
/// must empty the root. Setting the masks leaves first lost the leaving reader's report
/// when its leaf (or the inner node above) emptied before the parent's mask was set,
/// and the grace period then waited forever for a node that owed nothing.
#[test]
fn a_reader_that_leaves_during_init_is_not_waited_for_forever() {
    model(|| {
        let tree = Arc::new(RcuTree::<2, 1>::new());
        tree.reader_online(0);
        let leaving = {
            let tree = tree.clone();
            thread::spawn(move || {
                tree.reader_offline(0);
            })
        };
        let joining = {
            let tree = tree.clone();
            thread::spawn(move || tree.reader_online(LEAF_FANOUT))
        };
        let waits = tree.init_qsmasks();
        leaving.join().unwrap();
        joining.join().unwrap();
        if waits {
            // Neither reader is in a read section: every bit still set is reported.
            tree.for_each_blocking_leaf(|leaf, mask| {
                let mut bits = mask;
                while bits != 0 {
                    tree.report_qs(leaf * LEAF_FANOUT + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            });
        }
        assert!(
            tree.root_done(),
            "the grace period waits for a node that owes nothing"
        );
    });
}

/// A grace period that finds no reader present (`RcuTree::only_online`) makes no
/// membarrier and scans nothing: it frees at once. A reader thread that comes online
/// meanwhile (`reader_online`) and then reads without any fence, as sections do on the
/// membarrier path, must see the new version, never the freed one. Without the fence
/// after the count in `reader_online`, loom finds the reader reading the poisoned
/// version. (Without the one in `only_online` it does not: loom orders the SeqCst store
/// of `gp_seq` before the count's load as a fence would; C11 does not promise that.)
#[test]
fn a_grace_period_with_no_reader_present_frees_at_once() {
    model(|| {
        let w = Arc::new(World {
            rcu: Rcu {
                gp_seq: seq_cst_u64(4),
                tree: RcuTree::new(),
                readers: [
                    Reader {
                        slot: 0,
                        ctr: seq_cst_u64(0),
                        need_qs: Special(AtomicU64::new(0)),
                    },
                    Reader {
                        slot: LEAF_FANOUT,
                        ctr: seq_cst_u64(0),
                        need_qs: Special(AtomicU64::new(0)),
                    },
                ],
            },
            current: AtomicUsize::new(0),
            versions: [UnsafeCell::new(1), UnsafeCell::new(2)],
        });
        let reader = {
            let w = w.clone();
            thread::spawn(move || {
                let r = &w.rcu.readers[0];
                w.rcu.tree.reader_online(r.slot);
                // `read_lock` on the membarrier path: plain stores, no fence.
                r.ctr
                    .store(w.rcu.gp_seq.load(Ordering::Relaxed), Ordering::Relaxed);
                w.read();
                r.ctr.store(0, Ordering::Release);
            })
        };
        w.current.store(1, Ordering::Release);
        let gp = seq::start(w.rcu.gp_seq.load(Ordering::Relaxed));
        w.rcu.gp_seq.store(gp, Ordering::SeqCst);
        if w.rcu.tree.only_online(None) {
            // Alone: a fence for the barriers, no scan, and the old version is freed.
            fence(Ordering::SeqCst);
            w.rcu.gp_seq.store(seq::end(gp), Ordering::SeqCst);
            w.versions[0].with_mut(|p| {
                // SAFETY: the claim under test: no reader can reach version 0.
                unsafe { *p = POISON }
            });
        }
        reader.join().unwrap();
    });
}
