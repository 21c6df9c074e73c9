//! `synchronize` with nobody to share a grace period with (none running, none asked
//! for) runs it on the caller's thread, as liburcu does, rather than waking the
//! grace-period thread and sleeping until it is done. In a binary of its own, on the
//! system allocator, so that nothing else in the process asks for grace periods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cpuslab::rcu;

#[test]
fn an_uncontended_synchronize_runs_on_the_caller() {
    // A registered reader thread outside any section, then one inside a section for a
    // while: the grace periods must wait for the second and only for it.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        drop(rcu::read_lock());
        ready_tx.send(()).unwrap();
        stop_rx.recv().unwrap();
    });
    ready_rx.recv().unwrap();
    let before = rcu::rcu_stats();
    for _ in 0..100 {
        rcu::synchronize();
    }
    let (inside_tx, inside_rx) = mpsc::channel();
    let left = Arc::new(AtomicBool::new(false));
    let flag = left.clone();
    let busy = std::thread::spawn(move || {
        let guard = rcu::read_lock();
        inside_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        flag.store(true, Ordering::SeqCst);
        drop(guard);
    });
    inside_rx.recv().unwrap();
    rcu::synchronize();
    assert!(
        left.load(Ordering::SeqCst),
        "synchronize returned while a reader that began before it was inside"
    );
    let after = rcu::rcu_stats();
    busy.join().unwrap();
    stop_tx.send(()).unwrap();
    idle.join().unwrap();
    assert_eq!(
        after.completed - before.completed,
        101,
        "one grace period per call: {before:?} → {after:?}"
    );
    assert!(
        !after.kthread,
        "the grace-period thread was started for callers that needed none: {after:?}"
    );
}
