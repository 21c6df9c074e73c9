//! RCU with more reader threads alive at once than the reader table's first chunk
//! holds (1024 records; later chunks are mapped as threads register). Its own test
//! binary: the thousand threads would disturb other tests' counts of readers.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpuslab::rcu;

/// Threads alive at once: past the first chunk.
const READERS: usize = 1024 + 64;

/// Every one of the threads sits in a read-side section at once, those whose records
/// lie in a mapped chunk among them: a grace period started then must wait for all of
/// them (a scan that read a chunk's records wrongly, or not at all, would see readers
/// outside any section and end it early), and ends once they leave.
#[test]
fn a_grace_period_waits_for_readers_past_the_first_chunk() {
    let inside = Arc::new(AtomicUsize::new(0));
    let leave = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let (inside, go) = (inside.clone(), leave.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let guard = rcu::read_lock();
                inside.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(guard);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // A thread limit (a container's pids.max) below the test's need: let
                // the ones started go, and say why nothing was tested.
                leave.store(true, Ordering::SeqCst);
                let started = threads.len();
                for t in threads {
                    t.join().expect("reader thread");
                }
                eprintln!("skipped: only {started} of {READERS} threads could start: {e}");
                return;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while inside.load(Ordering::SeqCst) < READERS {
        assert!(Instant::now() < deadline, "readers did not all start");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        rcu::rcu_stats().readers >= READERS,
        "{} readers registered",
        rcu::rcu_stats().readers
    );

    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let done = done.clone();
        std::thread::spawn(move || {
            rcu::synchronize();
            done.store(true, Ordering::SeqCst);
        })
    };
    // Longer than a grace period takes with no reader in its way (microseconds to a
    // few milliseconds), shorter than the stall warning.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "a grace period ended while {READERS} readers were inside sections"
    );
    leave.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("reader thread");
    }
    waiter.join().expect("synchronize");
    assert!(done.load(Ordering::SeqCst));
}
