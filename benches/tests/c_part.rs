//! The suite's C part: `benches/c/workloads.c` compiles, every workload
//! passes its own checks under glibc and under `libcpuslab_preload.so` with
//! the same checksum, and a broken allocator preloaded under it is caught.
//! Skipped, saying so, where there is no C compiler.

use cpuslab_bench::c;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-part")
}

/// The compiled workloads program, or None (printed) without a compiler.
fn program() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| match c::compile(&scratch()) {
        Ok(p) => Some(p),
        Err(e) if e.starts_with("no C compiler") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    })
    .as_deref()
}

/// Runs `workload` at scale 0.01 (0.05 for malloc-large, so that it makes
/// more than a handful of blocks).
fn run(exe: &Path, workload: &str, threads: usize, preload: Option<&Path>, expect: &str) -> Output {
    let scale = if workload == "malloc-large" {
        "0.05"
    } else {
        "0.01"
    };
    let mut cmd = Command::new(exe);
    cmd.args([workload, &threads.to_string(), scale])
        .env(c::EXPECT_LIB_VAR, expect);
    match preload {
        Some(p) => cmd.env("LD_PRELOAD", p),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    cmd.output().expect("the workloads program runs")
}

/// The checksum of a successful run; panics with the output otherwise.
fn checksum(o: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what}: {}\n{stdout}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(c::RESULT_TAG))
        .unwrap_or_else(|| panic!("{what}: no result line in {stdout}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("checksum="))
        .unwrap_or_else(|| panic!("{what}: no checksum in {line}"))
        .to_string()
}

#[test]
fn the_program_lists_the_workloads_the_suite_knows() {
    let Some(exe) = program() else { return };
    let out = Command::new(exe).arg("--list").output().expect("runs");
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let known: Vec<&str> = c::C_WORKLOADS.iter().map(|w| w.name).collect();
    assert_eq!(listed, known);
}

#[test]
fn every_workload_agrees_under_glibc_and_cpuslab() {
    let Some(exe) = program() else { return };
    let so = c::build_preload().expect("libcpuslab_preload.so builds");
    for w in c::C_WORKLOADS {
        for threads in [1, 3] {
            let what = format!("{} x{threads}", w.name);
            let glibc = checksum(&run(exe, w.name, threads, None, "libc.so"), &what);
            let again = checksum(&run(exe, w.name, threads, None, "libc.so"), &what);
            assert_eq!(glibc, again, "{what} is not deterministic");
            let cpuslab = checksum(
                &run(exe, w.name, threads, Some(&so), "libcpuslab_preload"),
                &format!("{what} under cpuslab"),
            );
            assert_eq!(glibc, cpuslab, "{what}: checksums differ under cpuslab");
        }
    }
}

#[test]
fn a_preload_that_did_not_take_effect_fails() {
    let Some(exe) = program() else { return };
    let o = run(exe, "pair64", 1, None, "libjemalloc");
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("malloc comes from"));
}

/// The peak RSS a run reports is the program's own: a tiny workload's is a
/// small C program's, far below this (Rust) test process's, which a spawned
/// child's `ru_maxrss` would include; malloc-large's covers the blocks it
/// writes (four live at a time, 5 to 25 MiB each).
#[test]
fn the_peak_rss_is_the_programs_own() {
    let Some(exe) = program() else { return };
    let peak = |workload: &str| {
        let o = run(exe, workload, 1, None, "libc.so");
        checksum(&o, workload);
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("peak_rss_kib="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{workload}: no peak_rss_kib in {stdout}"))
    };
    let tiny = peak("pair64");
    assert!((100..4096).contains(&tiny), "pair64 peaked at {tiny} KiB");
    let large = peak("malloc-large");
    assert!(large > 20 << 10, "malloc-large peaked at {large} KiB");
}

/// A malloc that now and then hands out the block it handed out last while
/// that block is still live (and never frees anything, so glibc never sees a
/// double free): two live blocks overlap.
const BROKEN: &str = r#"
#include <stddef.h>
extern void *__libc_malloc(size_t);
static void *last;
static size_t last_n;
static unsigned long calls;
void *malloc(size_t n)
{
    void *l = __atomic_load_n(&last, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED) % 7 == 0 && l && n <= last_n)
        return l;
    void *p = __libc_malloc(n);
    last_n = n;
    __atomic_store_n(&last, p, __ATOMIC_RELAXED);
    return p;
}
void free(void *p)
{
    void *l = p;
    __atomic_compare_exchange_n(&last, &l, NULL, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
"#;

#[test]
fn a_broken_allocator_is_caught() {
    let Some(exe) = program() else { return };
    let dir = scratch();
    let src = dir.join("broken.c");
    let so = dir.join("libbroken.so");
    std::fs::write(&src, BROKEN).expect("write");
    let out = Command::new(c::compiler())
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for w in c::C_WORKLOADS {
        // One block live at a time per thread: nothing overlaps it unless
        // the threads happen to run at once, which a tiny run cannot promise.
        if ["pair64", "cache-thrash", "cache-scratch"].contains(&w.name) {
            continue;
        }
        let o = run(exe, w.name, 2, Some(&so), "libbroken");
        let stderr = String::from_utf8_lossy(&o.stderr);
        // The workload's own check, or glibc's (the overlap may write over the
        // header of a chunk glibc then checks first, and it aborts), or a crash
        // on a pointer the overlap overwrote before either check ran (another
        // thread may have read it first): in every case the run must not pass.
        let own = o.status.code() == Some(3) && stderr.contains("cpuslab-c");
        let signal = std::os::unix::process::ExitStatusExt::signal(&o.status);
        let glibc = signal == Some(libc::SIGABRT) && stderr.contains("malloc");
        let crashed = signal == Some(libc::SIGSEGV) || signal == Some(libc::SIGBUS);
        assert!(
            own || glibc || crashed,
            "{} did not notice overlapping blocks: {}\n{stderr}",
            w.name,
            o.status
        );
    }
}
