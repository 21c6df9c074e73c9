//! The runtime-selected global allocator, end to end: this test binary uses
//! `Dispatch` as its global allocator and re-runs itself once per allocator
//! with `CPUSLAB_SUITE_ALLOC` set, as the suite does with its children.

use cpuslab_bench::dispatch::{self, AllocKind, Dispatch, ENV_VAR};
use cpuslab_bench::{Params, WORKLOADS};
use std::process::Command;

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// Names the allocator the re-run child must have picked.
const EXPECT: &str = "CPUSLAB_BENCH_EXPECT";

/// In a child (EXPECT set): checks the selection and runs every workload,
/// generic ones through `GLOBAL`, at a tiny scale. Otherwise does nothing.
#[test]
fn probe() {
    let Ok(expect) = std::env::var(EXPECT) else {
        return;
    };
    assert_eq!(dispatch::current().name(), expect);
    for w in WORKLOADS {
        let out = cpuslab_bench::run(w.name, &GLOBAL, &Params::new(2, 0.002)).expect("known");
        assert!(out.allocs > 0, "{}", w.name);
    }
}

#[test]
fn each_allocator_is_selected_by_the_environment() {
    let exe = std::env::current_exe().expect("own path");
    for k in AllocKind::ALL {
        let out = Command::new(&exe)
            .args(["--exact", "probe", "--test-threads", "1"])
            .env(ENV_VAR, k.name())
            .env(EXPECT, k.name())
            .output()
            .expect("re-run");
        assert!(
            out.status.success(),
            "{}: {}{}",
            k.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The probe must really have run (not been filtered out).
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}: probe did not run",
            k.name()
        );
    }
}

#[test]
fn unset_means_system() {
    if std::env::var_os(ENV_VAR).is_none() {
        assert_eq!(dispatch::current(), AllocKind::System);
    }
}
