//! The grace-period trace ring (`rcu::trace`), in a binary of its own so that no other
//! test's grace periods interleave: one grace period with a reader inside a section
//! records the kernel's events in order.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::sync::mpsc;
use std::time::Duration;

use cpuslab::rcu::trace::{snapshot, Event, TraceEntry};

#[test]
fn one_grace_period_in_order() {
    let (inside_tx, inside_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let guard = cpuslab::rcu::read_lock();
        inside_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(guard);
    });
    inside_rx.recv().unwrap();
    cpuslab::rcu::synchronize();
    reader.join().unwrap();
    let mut ring = [TraceEntry {
        time_ns: 0,
        gp_seq: 0,
        event: Event::NewReq,
        arg: 0,
    }; 512];
    let n = snapshot(&mut ring);
    let events = &ring[..n];
    // Some grace period in the ring, from its request to its cleanup, waited for the
    // reader (others, the allocator's own, may have run too).
    let order = [
        Event::Start,
        Event::StartedLeaf,
        Event::CpuStart,
        Event::FqsStart,
        Event::FqsEnd,
        Event::CpuQs,
        Event::End,
        Event::CpuEnd,
    ];
    let follows = |from: usize| -> Option<usize> {
        let mut at = from;
        for want in order {
            at += events[at..].iter().position(|e| e.event == want)?;
        }
        Some(at)
    };
    let found = (0..n)
        .filter(|&i| events[i].event == Event::Start)
        .find_map(|start| {
            let end = follows(start)?;
            // The request may be recorded after the start of the grace period that
            // serves it: `synchronize` snapshots an idle `gp_seq`, a grace period for
            // someone else starts, then the request is recorded. That grace period
            // still began after the snapshot, so it serves the request. What must
            // hold is that the request came after the previous grace period's
            // cleanup, and that the caller waited before this one ended.
            let since = events[..start]
                .iter()
                .rposition(|e| e.event == Event::CpuEnd)
                .map_or(0, |i| i + 1);
            let req = since
                + events[since..end]
                    .iter()
                    .position(|e| e.event == Event::NewReq)?;
            let cpu_start = start
                + events[start..]
                    .iter()
                    .position(|e| e.event == Event::CpuStart)?;
            let waits = events[req..end].iter().any(|e| e.event == Event::ReqWait);
            (waits && events[cpu_start].gp_seq == events[start].gp_seq).then_some((start, end))
        });
    let Some((start, end)) = found else {
        panic!("no grace period in order ({order:?}, with newreq and reqwait before its end): {events:#?}");
    };
    // gp_seq: in progress (low bits set) from start on, complete at cleanup.
    assert_ne!(events[start].gp_seq & 3, 0, "{:?}", events[start]);
    assert_eq!(events[end].gp_seq & 3, 0, "{:?}", events[end]);
    assert!(events[end].gp_seq > events[start].gp_seq);
}
