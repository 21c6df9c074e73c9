//! Options set from code (`cpuslab::options::Options`): applied while the allocator
//! runs, refused with an error when out of range, overridden by the environment, and
//! in effect (a heap limit refuses growth; background reclaim stops). Each check runs
//! in a child process of its own, with the environment it needs.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use cpuslab::options::{current, OptionError, Options, MAX_DECAY_MS};

/// Runs the test `name` as a child with `env`, expecting success and `ok` printed.
fn in_child(name: &str, env: &[(&str, &str)]) -> bool {
    if common::is_child() {
        return true;
    }
    let (status, err) = common::run_child(name, env);
    assert!(
        status.success() && err.contains("ok"),
        "child {name} failed:\n{err}"
    );
    false
}

#[test]
fn apply_changes_the_options_in_force() {
    if !in_child("apply_changes_the_options_in_force", &[]) {
        return;
    }
    let before = current();
    let c = Options::new()
        .decay_ms(before.decay_ms + 1234)
        .retain_bytes(before.retain_bytes + (8 << 20))
        .apply()
        .expect("valid options");
    assert_eq!(c.decay_ms, before.decay_ms + 1234);
    assert_eq!(c.retain_bytes, before.retain_bytes + (8 << 20));
    assert_eq!(current(), c);
    // Options left unset keep their values.
    assert_eq!(c.heap_limit, before.heap_limit);
    eprintln!("ok");
}

#[test]
fn bad_values_are_refused_and_change_nothing() {
    if !in_child("bad_values_are_refused_and_change_nothing", &[]) {
        return;
    }
    let before = current();
    let e = Options::new()
        .retain_bytes(1 << 20)
        .decay_ms(MAX_DECAY_MS + 1)
        .apply()
        .unwrap_err();
    assert!(
        matches!(
            e,
            OptionError::OutOfRange {
                option: "CPUSLAB_DECAY_MS",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("cpuslab: CPUSLAB_DECAY_MS="),
        "{e}"
    );
    let e = Options::new().heap_limit(4096).apply().unwrap_err();
    assert!(
        matches!(e, OptionError::LimitBelowCommitted { limit: 4096, .. }),
        "{e:?}"
    );
    assert_eq!(current(), before, "a refused apply changed something");
    eprintln!("ok");
}

#[test]
fn the_environment_overrides_the_code() {
    if !in_child(
        "the_environment_overrides_the_code",
        &[("CPUSLAB_DECAY_MS", "777")],
    ) {
        return;
    }
    let c = Options::new()
        .decay_ms(5000)
        .retain_bytes(12 << 20)
        .apply()
        .unwrap();
    assert_eq!(
        c.decay_ms, 777,
        "the code's decay replaced the environment's"
    );
    assert_eq!(c.retain_bytes, 12 << 20);
    eprintln!("ok");
}

#[test]
fn a_heap_limit_set_from_code_refuses_growth() {
    if !in_child("a_heap_limit_set_from_code_refuses_growth", &[]) {
        return;
    }
    let committed = cpuslab::stats::memory().committed_bytes;
    let limit = committed + (64 << 20);
    Options::new().heap_limit(limit).apply().unwrap();
    // 256 MiB in 1 MiB blocks, each touched: the limit stops it near 64 MiB more.
    let layout = std::alloc::Layout::from_size_align(1 << 20, 8).unwrap();
    let mut blocks = Vec::with_capacity(256);
    for _ in 0..256 {
        // SAFETY: a valid layout; null is the answer the limit gives.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            break;
        }
        // SAFETY: a live block of 1 MiB.
        unsafe { p.write_bytes(1, 1 << 20) };
        blocks.push(p);
    }
    assert!(
        (32..=64).contains(&blocks.len()),
        "{} blocks of 1 MiB under a limit 64 MiB above what was committed",
        blocks.len()
    );
    assert!(cpuslab::stats::memory().committed_bytes <= limit);
    Options::new().heap_limit(0).apply().unwrap();
    // SAFETY: allocated above with this layout.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null(), "no limit any more");
    blocks.push(p);
    for p in blocks {
        // SAFETY: each allocated above with this layout, freed once.
        unsafe { std::alloc::dealloc(p, layout) };
    }
    eprintln!("ok");
}

#[test]
fn background_reclaim_turns_off_and_on() {
    if !in_child("background_reclaim_turns_off_and_on", &[]) {
        return;
    }
    assert!(cpuslab::background::stats().enabled);
    // Enough committed memory, through slab slow paths, for the thread to start.
    let keep: Vec<Box<[u8; 256]>> = (0..100_000).map(|_| Box::new([1u8; 256])).collect();
    assert!(
        cpuslab::background::stats().running,
        "{:?}",
        cpuslab::background::stats()
    );
    let c = Options::new().background(false).apply().unwrap();
    assert!(!c.background);
    // The running thread exits within a tick, and no slow path starts another.
    let t = std::time::Instant::now();
    while cpuslab::background::stats().running {
        assert!(t.elapsed().as_secs() < 5, "the reclaim thread did not stop");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let more: Vec<Box<[u8; 256]>> = (0..100_000).map(|_| Box::new([2u8; 256])).collect();
    let s = cpuslab::background::stats();
    assert!(!s.enabled && !s.running && s.starts == 1, "{s:?}");
    // On again: the next slow path starts a thread.
    assert!(Options::new().background(true).apply().unwrap().background);
    drop(more);
    let again: Vec<Box<[u8; 256]>> = (0..100_000).map(|_| Box::new([3u8; 256])).collect();
    let s = cpuslab::background::stats();
    assert!(s.running && s.starts == 2, "{s:?}");
    drop((keep, again));
    eprintln!("ok");
}
