//! RCU: rcutorture-style readers against writers that retire through every path,
//! grace-period semantics, forward progress, barrier, polling, stalls, fork and
//! thread churn.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpuslab::rcu::{self, RcuCell, RcuHead};

const MAGIC: u64 = 0x5A5A_1234_8765_A5A5;
const POISON: u64 = 0xDEAD_DEAD_DEAD_DEAD;

#[repr(C)]
struct Item {
    head: RcuHead,
    a: AtomicU64,
    b: AtomicU64,
    /// Grace periods completed when the item was removed; u64::MAX while published.
    retired_at: AtomicU64,
}

fn completed() -> u64 {
    rcu::rcu_stats().completed
}

fn new_item(v: u64) -> *mut Item {
    Box::into_raw(Box::new(Item {
        head: RcuHead::new(),
        a: AtomicU64::new(v),
        b: AtomicU64::new(MAGIC.wrapping_sub(v)),
        retired_at: AtomicU64::new(u64::MAX),
    }))
}

unsafe fn poison_and_free(p: *mut Item) {
    (*p).a.store(POISON, Ordering::Relaxed);
    (*p).b.store(POISON, Ordering::Relaxed);
    drop(Box::from_raw(p));
}

unsafe fn poison_cb(head: *mut RcuHead) {
    poison_and_free(head.cast::<Item>());
}

#[test]
fn torture_readers_never_see_reclaimed_items() {
    let secs: u64 = std::env::var("CPUSLAB_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    const SLOTS: usize = 16;
    let slots: Arc<Vec<AtomicPtr<Item>>> = Arc::new(
        (0..SLOTS)
            .map(|i| AtomicPtr::new(new_item(i as u64)))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // pipe[k]: reads that found an item k or more grace periods after its removal.
    let pipe: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (slots, stop, pipe) = (slots.clone(), stop.clone(), pipe.clone());
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(100 + t);
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu::read_lock();
                    let p = slots[rng.below(SLOTS as u64) as usize].load(Ordering::Acquire);
                    // SAFETY: published items are reclaimed only after a grace period.
                    let (a, b, retired) = unsafe {
                        (
                            (*p).a.load(Ordering::Relaxed),
                            (*p).b.load(Ordering::Relaxed),
                            &(*p).retired_at,
                        )
                    };
                    assert_ne!(a, POISON, "reader saw a poisoned item");
                    assert_eq!(a.wrapping_add(b), MAGIC, "reader saw a reused item");
                    if rng.below(8) == 0 {
                        std::thread::yield_now();
                    }
                    let r = retired.load(Ordering::Relaxed);
                    if r != u64::MAX {
                        let age = completed().saturating_sub(r).min(3) as usize;
                        pipe[age].fetch_add(1, Ordering::Relaxed);
                    }
                    drop(g);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (slots, stop) = (slots.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(200 + t);
                let mut polled: Vec<(u64, *mut Item)> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let old =
                        slots[rng.below(SLOTS as u64) as usize].swap(new_item(n), Ordering::AcqRel);
                    // SAFETY: `old` is unpublished; reclaimed after a grace period below.
                    unsafe {
                        (*old).retired_at.store(completed(), Ordering::Relaxed);
                        match n % 5 {
                            0 => {
                                rcu::synchronize();
                                poison_and_free(old);
                            }
                            1 => rcu::call_rcu(&mut (*old).head, poison_cb),
                            2 => rcu::free_rcu(old.cast(), Layout::new::<Item>()),
                            3 => polled.push((rcu::start_poll(), old)),
                            _ => {
                                rcu::synchronize_expedited();
                                poison_and_free(old);
                            }
                        }
                    }
                    polled.retain(|&(cookie, p)| {
                        let done = rcu::poll_state(cookie);
                        if done {
                            // SAFETY: a full grace period passed since removal.
                            unsafe { poison_and_free(p) };
                        }
                        !done
                    });
                }
                for (cookie, p) in polled {
                    rcu::cond_synchronize(cookie);
                    // SAFETY: as above.
                    unsafe { poison_and_free(p) };
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    let updates: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    rcu::barrier();
    let hist: Vec<u64> = pipe.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!(
        "rcutorture: {reads} reads, {updates} updates, pipe {hist:?}, {:?}",
        rcu::rcu_stats()
    );
    assert!(
        reads > 1000 && updates > 100,
        "too little work: {reads} reads {updates} updates"
    );
    assert_eq!(
        hist[2] + hist[3],
        0,
        "a reader held an item past a full grace period: {hist:?}"
    );
    for s in slots.iter() {
        // SAFETY: no readers remain.
        unsafe { poison_and_free(s.load(Ordering::Relaxed)) };
    }
}

#[test]
fn synchronize_waits_for_a_reader_that_started_before() {
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let reader = {
        let (entered, release) = (entered.clone(), release.clone());
        std::thread::spawn(move || {
            let _g = rcu::read_lock();
            entered.store(true, Ordering::Release);
            while !release.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    while !entered.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let done = done.clone();
        std::thread::spawn(move || {
            rcu::synchronize();
            done.store(true, Ordering::Release);
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !done.load(Ordering::Acquire),
        "grace period ended while a reader was inside"
    );
    release.store(true, Ordering::Release);
    reader.join().unwrap();
    waiter.join().unwrap();
    assert!(done.load(Ordering::Acquire));
}

/// Guards dropped in any order: the section lasts until the last guard is gone, even
/// when the outermost one goes first, and a grace period waits for it.
#[test]
fn section_lasts_until_the_last_guard_whatever_the_drop_order() {
    let stage = Arc::new(AtomicUsize::new(0));
    let reader = {
        let stage = stage.clone();
        std::thread::spawn(move || {
            let wait_for = |n: usize| {
                while stage.load(Ordering::Acquire) != n {
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            let outer = rcu::read_lock();
            let inner = rcu::read_lock();
            let innermost = rcu::read_lock();
            drop(outer);
            assert!(rcu::in_read_section(), "outer guard dropped first ended it");
            drop(innermost);
            assert!(rcu::in_read_section(), "one guard is still alive");
            stage.store(1, Ordering::Release);
            wait_for(2);
            // A guard taken now nests in the section the dropped outer guard opened.
            let late = rcu::read_lock();
            drop(inner);
            assert!(rcu::in_read_section());
            stage.store(3, Ordering::Release);
            wait_for(4);
            drop(late);
            assert!(!rcu::in_read_section(), "the last guard did not end it");
            // In order, nested, the usual way.
            {
                let _a = rcu::read_lock();
                let _b = rcu::read_lock();
            }
            assert!(!rcu::in_read_section());
        })
    };
    // Waits for the reader to reach `n`; a reader that failed an assertion ends the
    // test here instead of leaving it waiting.
    let reached = |n: usize, reader: &std::thread::JoinHandle<()>| {
        while stage.load(Ordering::Acquire) != n {
            assert!(!reader.is_finished(), "the reader failed before stage {n}");
            std::thread::yield_now();
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    reached(1, &reader);
    let waiter = {
        let done = done.clone();
        std::thread::spawn(move || {
            rcu::synchronize();
            done.store(true, Ordering::Release);
        })
    };
    for next in [2, 4] {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::Acquire),
            "grace period ended with a guard alive (stage {})",
            next - 1
        );
        stage.store(next, Ordering::Release);
        if next == 2 {
            reached(3, &reader);
        }
    }
    reader.join().unwrap();
    waiter.join().unwrap();
    assert!(done.load(Ordering::Acquire));
}

#[test]
fn polling_cookies() {
    let c = rcu::get_state();
    assert!(!rcu::poll_state(c));
    rcu::synchronize();
    assert!(rcu::poll_state(c));
    let c = rcu::start_poll();
    let t0 = Instant::now();
    while !rcu::poll_state(c) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "started grace period never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

static COUNTED: AtomicUsize = AtomicUsize::new(0);

unsafe fn count_and_free(head: *mut RcuHead) {
    COUNTED.fetch_add(1, Ordering::Relaxed);
    drop(Box::from_raw(head));
}

#[test]
fn flood_of_ten_million_callbacks() {
    const N: usize = 10_000_000;
    let before = COUNTED.load(Ordering::Relaxed);
    let mut max_pending = 0;
    let producers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..N / 2 {
                    let h = Box::into_raw(Box::new(RcuHead::new()));
                    // SAFETY: the head is owned by the callback from now on.
                    unsafe { rcu::call_rcu(h, count_and_free) };
                    if i % 100_000 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    while producers.iter().any(|p| !p.is_finished()) {
        max_pending = max_pending.max(rcu::rcu_stats().pending_callbacks);
        std::thread::sleep(Duration::from_millis(5));
    }
    for p in producers {
        p.join().unwrap();
    }
    rcu::barrier();
    assert_eq!(
        COUNTED.load(Ordering::Relaxed) - before,
        N,
        "callbacks lost"
    );
    eprintln!("max pending callbacks during the flood: {max_pending}");
    assert!(max_pending < N / 2, "callbacks piled up: {max_pending}");
}

#[test]
fn barrier_waits_for_every_callback() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    unsafe fn cb(head: *mut RcuHead) {
        RAN.fetch_add(1, Ordering::Relaxed);
        drop(Box::from_raw(head));
    }
    let hs: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..1000 {
                    // SAFETY: owned by the callback.
                    unsafe { rcu::call_rcu(Box::into_raw(Box::new(RcuHead::new())), cb) };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    rcu::barrier();
    assert_eq!(RAN.load(Ordering::Relaxed), 4000);
}

#[test]
fn rcu_cell_replaces_after_readers() {
    let cell = Arc::new(RcuCell::new(vec![1u64; 100]));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cell, stop) = (cell.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu::read_lock();
                    let v = cell.read(&g);
                    let first = v[0];
                    assert!(v.iter().all(|&x| x == first), "torn value");
                }
            })
        })
        .collect();
    for i in 2..2000u64 {
        if i % 100 == 0 {
            assert_eq!(cell.replace_sync(vec![i; 100])[0], i - 1);
        } else {
            cell.replace(vec![i; 100]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    rcu::barrier();
    let g = rcu::read_lock();
    assert_eq!(cell.read(&g)[0], 1999);
}

#[test]
fn stall_warning_names_the_reader() {
    if common::is_child() {
        // The reader is inside its section before the grace period starts, and stays
        // until the stall was reported (or 20 s passed), however loaded the machine.
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _g = rcu::read_lock();
            inside_tx.send(()).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while rcu::rcu_stats().stalls == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        inside_rx.recv().unwrap();
        rcu::synchronize();
        t.join().unwrap();
        assert!(rcu::rcu_stats().stalls >= 1);
        return;
    }
    let (status, err) = common::run_child(
        "stall_warning_names_the_reader",
        &[("CPUSLAB_RCU_STALL_MS", "200")],
    );
    assert!(status.success(), "child failed: {err}");
    let line = err
        .lines()
        .find(|l| l.contains("rcu detected stall"))
        .unwrap_or_else(|| panic!("no stall line: {err}"));
    assert!(
        line.starts_with("cpuslab: rcu: INFO:") && line.contains("reader thread "),
        "{line}"
    );
    assert_eq!(
        err.matches("rcu detected stall").count(),
        1,
        "one line per stall: {err}"
    );
}

#[test]
fn fork_with_readers_active() {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _g = rcu::read_lock();
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    rcu::synchronize();
    for _ in 0..20 {
        // SAFETY: the child uses RCU and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = std::panic::catch_unwind(|| {
                drop(rcu::read_lock());
                rcu::synchronize();
                rcu::synchronize_expedited();
                static CHILD_RAN: AtomicUsize = AtomicUsize::new(0);
                unsafe fn child_cb(head: *mut RcuHead) {
                    CHILD_RAN.fetch_add(1, Ordering::Relaxed);
                    drop(Box::from_raw(head));
                }
                // SAFETY: owned by the callback.
                unsafe { rcu::call_rcu(Box::into_raw(Box::new(RcuHead::new())), child_cb) };
                rcu::barrier();
                CHILD_RAN.load(Ordering::Relaxed) == 1 && rcu::rcu_stats().readers == 1
            });
            // SAFETY: leave the child at once.
            unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn ten_thousand_reader_threads_leave_the_registry_at_its_floor() {
    let _g = rcu::read_lock();
    drop(_g);
    let floor = rcu::rcu_stats().readers;
    for _ in 0..200 {
        let hs: Vec<_> = (0..50)
            .map(|_| {
                std::thread::spawn(|| {
                    let _g = rcu::read_lock();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    // Other tests run concurrently and register readers of their own: allow for them.
    let after = rcu::rcu_stats().readers;
    assert!(after <= floor + 16, "registry grew from {floor} to {after}");
}
