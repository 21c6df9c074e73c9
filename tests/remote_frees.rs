//! Small objects freed on another CPU go back to the CPU that took them from their
//! slab (`slab::cache::remote`): they wait in its inbox for its next refill instead of
//! going on top of the freeing CPU's array cache, where that CPU's next allocations
//! would write the lines their owner still writes. The test's own allocations go
//! through `CpuSlab` directly; the harness runs on the system allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::{mpsc, Mutex, MutexGuard};

use cpuslab::CpuSlab;

/// 40 bytes: the 48-byte class, under a cache line.
const SMALL: usize = 40;

fn small() -> Layout {
    Layout::from_size_align(SMALL, 8).unwrap()
}

fn alloc_small(n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            // SAFETY: a layout of non-zero size.
            let p = unsafe { CpuSlab.alloc(small()) };
            assert!(!p.is_null());
            p as usize
        })
        .collect()
}

fn free_small(objs: &[usize]) {
    for &p in objs {
        // SAFETY: allocated by `alloc_small` with this layout, freed once.
        unsafe { CpuSlab.dealloc(p as *mut u8, small()) };
    }
}

/// [`free_small`] as C `free` does it, without the size: the owner comes from the
/// page's tag (`kmalloc::kfree_unsized_fast`), or the slow path's descriptor.
fn free_small_unsized(objs: &[usize]) {
    for &p in objs {
        // SAFETY: allocated by `alloc_small`, freed once.
        unsafe {
            if !cpuslab::kmalloc::kfree_unsized_fast(p as *mut u8) {
                cpuslab::kmalloc::kfree_unsized(p as *mut u8);
            }
        }
    }
}

/// Two CPUs to pin to, or None (the test is then skipped): past 254 CPUs the caches
/// keep no inboxes.
fn two_cpus() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if cpus.len() > 254 {
        return None;
    }
    Some((*cpus.first()?, *cpus.get(1)?))
}

/// Pins the calling thread to the first of [`two_cpus`], the owner, and trims what
/// another test left (objects of the class cached on either CPU whose slabs the other
/// one claimed since); returns the other CPU, or None (the test is then skipped).
fn on_the_owner() -> Option<core_affinity::CoreId> {
    let Some((owner, other)) = two_cpus() else {
        eprintln!("fewer than two CPUs to pin to; skipped");
        return None;
    };
    assert!(core_affinity::set_for_current(owner));
    cpuslab::trim();
    Some(other)
}

/// The tests one at a time: each counts what waits in the inboxes, which another's
/// frees or trim would change.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Objects waiting in inboxes and alien caches, in bytes (`alien_bytes`).
fn in_flight() -> usize {
    cpuslab::stats::memory().breakdown.alien_bytes
}

#[test]
fn a_small_object_freed_on_another_cpu_goes_back_to_its_owner() {
    let _serial = serial();
    goes_back_to_its_owner(free_small);
}

/// The same through the free without a size, which learns the owner from the page
/// tag of its owner CPU.
#[test]
fn a_small_object_freed_unsized_on_another_cpu_goes_back_to_its_owner() {
    let _serial = serial();
    goes_back_to_its_owner(free_small_unsized);
}

/// The same on the tried-lock paths (no restartable sequences): the free's slow path
/// and `cache_alloc_refill`.
#[test]
fn a_small_object_goes_back_to_its_owner_without_rseq() {
    if common::is_child() {
        return goes_back_to_its_owner(free_small);
    }
    let (status, stderr) = common::run_child(
        "a_small_object_goes_back_to_its_owner_without_rseq",
        &[("CPUSLAB_RSEQ", "0")],
    );
    assert!(status.success(), "{stderr}");
}

fn goes_back_to_its_owner(free: fn(&[usize])) {
    let Some(other) = on_the_owner() else {
        return;
    };
    let given = alloc_small(50);
    let before = in_flight();
    let seen_there = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(other));
            free(&given);
            let waiting = in_flight();
            // The other CPU's own allocations: none of them may be an object it just
            // freed, which would then share lines with the owner's.
            let there = alloc_small(50);
            free_small(&there);
            (waiting, there)
        })
        .join()
        .unwrap()
    });
    let (waiting, there) = seen_there;
    assert!(
        waiting >= before + 50 * 48,
        "the 50 objects freed on the other CPU are not waiting for their owner \
         ({before} bytes in flight before, {waiting} after)"
    );
    let given_set: HashSet<usize> = given.iter().copied().collect();
    let reused = there.iter().filter(|p| given_set.contains(p)).count();
    assert_eq!(
        reused, 0,
        "the other CPU handed out {reused} of the objects it freed for its owner"
    );
    // Back on the owner: its next refill takes them home. Its array cache may hold
    // up to a few hundred objects first.
    let mut back = Vec::new();
    let mut found = HashSet::new();
    while found.len() < given.len() && back.len() < 4000 {
        let p = alloc_small(1)[0];
        if given_set.contains(&p) {
            found.insert(p);
        }
        back.push(p);
    }
    free_small(&back);
    assert_eq!(
        found.len(),
        given.len(),
        "only {} of the {} objects came back to their owner in {} allocations",
        found.len(),
        given.len(),
        back.len()
    );
}

#[test]
fn a_full_inbox_goes_to_the_node_and_trimming_empties_them() {
    let _serial = serial();
    let Some(other) = on_the_owner() else {
        return;
    };
    let given = alloc_small(100);
    let more = alloc_small(300);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(other));
            free_small(&given);
            assert!(in_flight() >= 100 * 48, "nothing waits in the inbox");
            // Past the bound (256 objects) the free that finds the inbox full sends
            // it to the node.
            free_small(&more);
            let waiting = in_flight();
            assert!(
                waiting <= 256 * 48,
                "{waiting} bytes wait in an inbox of at most 256 objects"
            );
            cpuslab::trim();
            assert_eq!(in_flight(), 0, "trim left remote frees in flight");
        });
    });
}

/// Two threads on two CPUs hand objects of every class under a cache line back and
/// forth and free what they receive: each object keeps the stamp its allocator wrote
/// until its free, and none is handed out twice while live.
#[test]
fn objects_crossing_cpus_are_conserved() {
    let _serial = serial();
    let Some((a, b)) = two_cpus() else {
        eprintln!("fewer than two CPUs to pin to; skipped");
        return;
    };
    const ROUNDS: usize = 200;
    const BATCH: usize = 300;
    let live = std::sync::Mutex::new(HashSet::<usize>::new());
    let (to_b, from_a) = mpsc::sync_channel::<Vec<(usize, usize, u64)>>(4);
    let (to_a, from_b) = mpsc::sync_channel::<Vec<(usize, usize, u64)>>(4);
    let worker = |cpu: core_affinity::CoreId,
                  me: u64,
                  tx: mpsc::SyncSender<Vec<(usize, usize, u64)>>,
                  rx: mpsc::Receiver<Vec<(usize, usize, u64)>>| {
        let live = &live;
        move || {
            assert!(core_affinity::set_for_current(cpu));
            let mut rng = common::Rng::new(me);
            for round in 0..ROUNDS {
                let mut out = Vec::with_capacity(BATCH);
                for i in 0..BATCH {
                    let size = [8, 16, 24, 32, 40, 48][rng.below(6) as usize];
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a layout of non-zero size.
                    let p = unsafe { CpuSlab.alloc(layout) };
                    assert!(!p.is_null());
                    assert!(
                        live.lock().unwrap().insert(p as usize),
                        "{p:p} handed out while live"
                    );
                    let stamp = me << 48 | (round * BATCH + i) as u64;
                    // SAFETY: at least 8 bytes, aligned to 8, ours.
                    unsafe { p.cast::<u64>().write(stamp) };
                    out.push((p as usize, size, stamp));
                }
                // Keep half, send half: frees on both CPUs of objects of both.
                let sent = out.split_off(BATCH / 2);
                tx.send(sent).unwrap();
                let got = rx.recv().unwrap();
                for (p, size, stamp) in out.into_iter().chain(got) {
                    // SAFETY: written when allocated, live until the free below.
                    assert_eq!(
                        unsafe { (p as *const u64).read() },
                        stamp,
                        "{p:#x} overwritten"
                    );
                    assert!(live.lock().unwrap().remove(&p));
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: allocated with `layout`, freed once.
                    unsafe { CpuSlab.dealloc(p as *mut u8, layout) };
                }
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(worker(a, 1, to_b, from_b));
        s.spawn(worker(b, 2, to_a, from_a));
    });
    assert!(live.lock().unwrap().is_empty());
}

/// Runs `test` of this binary in a child process (where two CPUs can be pinned) and
/// requires it to abort with a `cpuslab:` line that says `report`.
fn expect_abort(test: &str, report: &str, unnoticed: &str) {
    if two_cpus().is_none() {
        eprintln!("fewer than two CPUs to pin to; skipped");
        return;
    }
    let (status, stderr) = common::run_child(test, &[]);
    assert!(!status.success(), "{unnoticed}");
    assert!(
        stderr.contains("cpuslab:") && stderr.contains(report),
        "no report: {stderr}"
    );
}

/// In a child: `blocks` small blocks allocated on the first CPU and freed, in order,
/// `times` times on the second, which sends them to the first one's inbox (the last
/// on top, linked to the one before); returns them.
fn free_on_the_other_cpu(blocks: usize, times: usize) -> Vec<usize> {
    let (owner, other) = two_cpus().unwrap();
    assert!(core_affinity::set_for_current(owner));
    let given = alloc_small(blocks);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(other));
            for _ in 0..times {
                free_small(&given);
            }
        });
    });
    // Back on the owner, where the caller goes on.
    given
}

/// The object freed last onto an inbox, freed again: glibc's tcache check, made at
/// the push.
#[test]
fn a_second_free_onto_an_inbox_aborts() {
    if !common::is_child() {
        return expect_abort(
            "a_second_free_onto_an_inbox_aborts",
            "double free",
            "the double free went unnoticed",
        );
    }
    free_on_the_other_cpu(1, 2);
    eprintln!("not reached");
}

/// A freed object's first word written after its free, while it waits in an inbox:
/// the owner's refill finds a link that is no object of the cache and aborts, as
/// glibc does on a corrupted free list.
#[test]
fn a_block_written_in_an_inbox_aborts_at_the_refill() {
    if !common::is_child() {
        return expect_abort(
            "a_block_written_in_an_inbox_aborts_at_the_refill",
            "remote free list",
            "the corrupted link went unnoticed",
        );
    }
    let given = free_on_the_other_cpu(1, 1);
    // SAFETY: none: a write after free, which is the point of the test (the block
    // stays mapped, in its slab).
    unsafe { (given[0] as *mut u64).write(0xdead_beef_0000) };
    // The owner's cache empties within a few hundred allocations and refills.
    let _ = alloc_small(4000);
    eprintln!("not reached");
}

/// A block waiting in its owner's inbox, freed again on the owner: that free's store
/// to the block (`own_line`) overwrites the inbox's link through it, and the owner's
/// refill finds the list cut short and aborts. Before, the block went onto the owner's
/// array cache as well and was handed out twice, unnoticed. (The tried-lock path's
/// free does not store: there it still goes unnoticed.)
#[test]
fn a_block_freed_again_on_its_owner_while_in_its_inbox_aborts() {
    use cpuslab::slab::fastpath::{fast_path, FastPath};
    if !common::is_child() {
        // Booted here as in the child, which has the same environment.
        free_small(&alloc_small(1));
        if fast_path() != FastPath::Rseq {
            eprintln!("no restartable sequences; skipped");
            return;
        }
        return expect_abort(
            "a_block_freed_again_on_its_owner_while_in_its_inbox_aborts",
            "remote free list",
            "the double free went unnoticed",
        );
    }
    // The second on top of the owner's inbox, linked to the first.
    let given = free_on_the_other_cpu(2, 1);
    // On the owner, the one on top freed again: its link is written over.
    free_small(&given[1..]);
    // The owner's cache empties within a few hundred allocations and refills.
    let _ = alloc_small(4000);
    eprintln!("not reached");
}
