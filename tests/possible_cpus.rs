//! A possible CPU that never runs a thread of the process costs it no memory. A VM
//! with hot-plug slots, or a big machine a small program never spreads over, has many
//! more possible CPUs than the program uses, and every percpu area has a copy for each:
//! the array caches and page lists are prepared for a CPU when a thread first works
//! there, and nothing walks or zeroes the copies of the others. Preparing them all at
//! boot cost 8 KiB a possible CPU: a C program's anonymous memory grew by 1 MiB when
//! the machine said 128 CPUs were possible instead of 2.

mod common;

use std::process::Command;

/// Runs `tests/capi/possible_cpus.c` under the preload library, in a mount namespace
/// of its own where `/sys/devices/system/cpu/possible` reads `possible` when given;
/// its anonymous memory in KiB, or None when the namespace cannot be made.
fn anon_kib(possible: Option<&str>) -> Option<u64> {
    let exe = common::compile_c("possible_cpus.c", &[]);
    let lib = common::build_cdylib("cpuslab-preload", "cpuslab_preload");
    let mut cmd = match possible {
        None => Command::new(&exe),
        Some(list) => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("possible-cpus");
            std::fs::create_dir_all(&dir).expect("scratch directory");
            let file = dir.join("possible");
            std::fs::write(&file, format!("{list}\n")).expect("write the possible list");
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c"])
                .arg("mount --bind \"$1\" /sys/devices/system/cpu/possible && exec \"$2\"")
                .arg("sh")
                .arg(&file)
                .arg(&exe);
            c
        }
    };
    let out = cmd.env("LD_PRELOAD", lib).output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.trim().strip_prefix("anon_kb=")?.parse().ok()
}

#[test]
fn possible_cpus_that_never_run_cost_no_memory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a mount namespace needs root");
        return;
    }
    let Some(wide) = (0..3).map(|_| anon_kib(Some("0-127"))).min().flatten() else {
        eprintln!("skipped: unshare -m and a bind mount are not available here");
        return;
    };
    let own = (0..3)
        .filter_map(|_| anon_kib(None))
        .min()
        .expect("the program runs under the preload library");
    assert!(
        wide <= own + 128,
        "with 128 possible CPUs the program took {wide} KiB, with the machine's own {own}"
    );
}
