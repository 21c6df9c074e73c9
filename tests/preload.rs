//! The C interface under `LD_PRELOAD`: real programs — python3, git, sort, gcc and a
//! threaded Rust program on the system allocator — run with `libcpuslab_preload.so`
//! and without it, and must exit 0 with byte-identical output (and, for gcc, an
//! identical object file), while the `CPUSLAB_STATS=1` report each process prints at
//! exit shows that cpuslab served it. A C program (`tests/capi/capi_test.c`) checks
//! every exported function, error cases included.
//!
//! The library is built by this test with `cargo build --release -p cpuslab-preload`
//! into `<target>/tmp/preload` (the test's own target directory is locked by the
//! running `cargo test`); set `CPUSLAB_PRELOAD_SO` to test an existing build instead.
//! The programs must be installed: a missing one fails the test.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `libcpuslab_preload.so`, built once for all tests.
fn preload_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        if let Some(path) = std::env::var_os("CPUSLAB_PRELOAD_SO") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "CPUSLAB_PRELOAD_SO={path:?} is not a file");
            return path;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("preload");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let out = Command::new(cargo)
            .args(["build", "--release", "-p", "cpuslab-preload"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building cpuslab-preload failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let so = target.join("release/libcpuslab_preload.so");
        assert!(so.is_file(), "{so:?} was not built");
        so
    })
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("preload-runs")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/capi")
        .join(name)
}

/// Runs `cmd`, failing with a clear message when the program is not installed.
fn output(mut cmd: Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {program}: {e} (the preload tests need it installed)"),
    }
}

/// One process's `CPUSLAB_STATS` report.
#[derive(Debug)]
struct Report {
    comm: String,
    committed_kib: u64,
    slab_objects: u64,
    /// Whether the report had its `cpuslab: where:` breakdown line.
    breakdown: bool,
}

/// Splits the reports out of `stderr`: returns them and what remains, which is the
/// program's own error output.
fn split_reports(stderr: &[u8]) -> (Vec<Report>, Vec<u8>) {
    let text = String::from_utf8_lossy(stderr);
    let mut reports = Vec::new();
    let mut rest = String::new();
    let mut current: Option<Report> = None;
    for line in text.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("cpuslab: served pid ") {
            assert!(current.is_none(), "reports interleaved:\n{text}");
            let comm = header
                .split_once('(')
                .and_then(|(_, c)| c.trim_end().strip_suffix(')'))
                .expect("report header names the process");
            current = Some(Report {
                comm: comm.to_string(),
                committed_kib: 0,
                slab_objects: 0,
                breakdown: false,
            });
            continue;
        }
        let Some(report) = current.as_mut() else {
            rest.push_str(line);
            continue;
        };
        if line.starts_with("cpuslab: where: resident ") {
            report.breakdown = true;
        } else if let Some(summary) = line.strip_prefix("cpuslab: reserved ") {
            assert!(
                report.breakdown,
                "no breakdown line before the summary:\n{text}"
            );
            report.committed_kib = summary
                .split_once("committed ")
                .and_then(|(_, c)| c.split(' ').next())
                .and_then(|n| n.parse().ok())
                .expect("summary shows committed KiB");
            reports.push(current.take().expect("in a report"));
        } else if line.starts_with("kmalloc-") {
            let active: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("slabinfo line has active_objs");
            report.slab_objects += active;
        }
    }
    assert!(current.is_none(), "unterminated report:\n{text}");
    (reports, rest.into_bytes())
}

/// Runs the command `make` builds, first plainly and then under cpuslab with
/// `CPUSLAB_STATS=1`; checks that both exit 0 with the same stdout and stderr, and
/// that a report came from a process named in `served` for each name. Returns the
/// reports.
fn compare(name: &str, mut make: impl FnMut() -> Command, served: &[&str]) -> Vec<Report> {
    let plain = output(make());
    let mut cmd = make();
    cmd.env("LD_PRELOAD", preload_so())
        .env("CPUSLAB_STATS", "1");
    let preloaded = output(cmd);
    let show = |o: &Output| {
        format!(
            "status {}\n--- stdout\n{}\n--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(plain.status.success(), "{name} failed:\n{}", show(&plain));
    assert!(
        preloaded.status.success(),
        "{name} failed under cpuslab:\n{}",
        show(&preloaded)
    );
    let (reports, stderr) = split_reports(&preloaded.stderr);
    assert!(
        plain.stdout == preloaded.stdout,
        "{name}: stdout differs under cpuslab\n--- plain\n{}\n--- cpuslab\n{}",
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&preloaded.stdout)
    );
    assert!(
        plain.stderr == stderr,
        "{name}: stderr differs under cpuslab\n--- plain\n{}\n--- cpuslab\n{}",
        String::from_utf8_lossy(&plain.stderr),
        String::from_utf8_lossy(&stderr)
    );
    for comm in served {
        let report = reports
            .iter()
            .find(|r| r.comm.starts_with(comm))
            .unwrap_or_else(|| panic!("{name}: no cpuslab report from {comm}: {reports:?}"));
        assert!(
            report.committed_kib > 0 && report.slab_objects > 0,
            "{name}: the report of {comm} shows no memory served: {report:?}"
        );
    }
    reports
}

/// What `nm` with `flags` lists of the library's symbols (failing when it fails).
fn nm(flags: &[&str]) -> String {
    let out = output({
        let mut c = Command::new("nm");
        c.args(flags).arg(preload_so());
        c
    });
    assert!(out.status.success(), "nm failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn library_exports_the_c_allocator() {
    let symbols = nm(&["-D", "--defined-only"]);
    for name in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "cfree",
        "malloc_trim",
        "malloc_stats",
        "__libc_malloc",
        "__libc_free",
        "__libc_calloc",
        "__libc_realloc",
        "__libc_memalign",
        "__libc_valloc",
        "__libc_pvalloc",
    ] {
        let line = format!(" T {name}");
        assert!(
            symbols.lines().any(|l| l.ends_with(&line)),
            "{name} is not exported:\n{symbols}"
        );
    }
}

/// The library calls none of libc's functions that POSIX makes cancellation points (a
/// thread cancelled there would end inside the allocator, perhaps holding a lock): its
/// `open`, `read`, `close`, `write` and sleeps go through `syscall(2)`. (`fcntl` is a
/// cancellation point only for `F_SETLKW`, which the library does not use; `fwrite`,
/// which `malloc_info` calls with no lock held, may be one, as in glibc's own
/// `malloc_info`.)
#[test]
fn library_calls_no_cancellation_point() {
    let imported = nm(&["-D", "--undefined-only"]);
    let names: Vec<&str> = imported
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.split('@').next())
        .collect();
    assert!(names.contains(&"syscall"), "{imported}");
    for point in [
        "accept",
        "close",
        "connect",
        "creat",
        "fdatasync",
        "fsync",
        "lockf",
        "msync",
        "nanosleep",
        "clock_nanosleep",
        "open",
        "open64",
        "openat",
        "openat64",
        "pause",
        "poll",
        "pread",
        "pread64",
        "pselect",
        "pwrite",
        "pwrite64",
        "read",
        "readv",
        "recv",
        "select",
        "sem_wait",
        "send",
        "sigsuspend",
        "sigwait",
        "sleep",
        "system",
        "tcdrain",
        "usleep",
        "wait",
        "waitpid",
        "waitid",
        "write",
        "writev",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "pthread_join",
        "pthread_testcancel",
    ] {
        assert!(
            !names.contains(&point),
            "the library imports {point}, a cancellation point:\n{imported}"
        );
    }
}

/// The library as built (the release profile, whose panics abort) links no std: it
/// needs libc alone (no `libgcc_s` for std's unwinder), carries none of std's
/// backtrace printer, and exports no stand-in for Rust's unwinding personality.
#[test]
fn library_links_no_std() {
    if std::env::var_os("CPUSLAB_PRELOAD_SO").is_some() {
        eprintln!("skipped: CPUSLAB_PRELOAD_SO names a library built elsewhere");
        return;
    }
    let out = output({
        let mut c = Command::new("readelf");
        c.arg("-d").arg(preload_so());
        c
    });
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(needed, ["libc.so.6"], "{dynamic}");
    let symbols = nm(&[]);
    for std_only in ["backtrace", "gimli", "ARGV_INIT_ARRAY"] {
        assert!(
            !symbols.contains(std_only),
            "std's {std_only} is linked in:\n{}",
            symbols
                .lines()
                .filter(|l| l.contains(std_only))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let exported = nm(&["-D", "--defined-only"]);
    assert!(!exported.contains("rust_eh_personality"), "{exported}");
}

/// Whether a test of the hot-text layout (`capi/hot-text.ld`) has nothing to check:
/// the library was built elsewhere, or in the linker's own order. Says so when it
/// skips.
fn skipped_without_hot_text() -> bool {
    let skip = std::env::var_os("CPUSLAB_PRELOAD_SO").is_some()
        || std::env::var_os("CPUSLAB_NO_HOT_TEXT").is_some();
    if skip {
        eprintln!("skipped: the library is built elsewhere or in the linker's order");
    }
    skip
}

/// Compiles `tests/capi/<name>.c` with warnings as errors into a fresh scratch
/// directory `dir`, returning the program's path.
fn compile_c(dir: &str, name: &str) -> PathBuf {
    let exe = scratch(dir).join(name);
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = output({
        let mut c = Command::new(cc);
        c.args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(source(&format!("{name}.c")));
        c
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// `exe` to run in the default configuration: options such as `CPUSLAB_RSEQ=0`
/// (which a CI step sets for every test) take paths that a small program does not.
fn default_config(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CPUSLAB_") {
            c.env_remove(name);
        }
    }
    c
}

/// The code a small program runs sits at the start of the library's text
/// (`capi/hot-text.ld`): of its 190-odd KiB, the program keeps at most 96 KiB
/// resident. The kernel maps the file's pages 64 KiB around each fault; in the
/// linker's own order, boot, the allocation paths and exit fault in every window
/// and all of the text stays resident.
#[test]
fn small_program_keeps_little_library_code() {
    if skipped_without_hot_text() {
        return;
    }
    let (size, rss) = library_resident("text");
    assert!(
        size >= 160,
        "the text is {size} KiB: the check means nothing"
    );
    assert!(
        rss <= 96,
        "{rss} of the library's {size} KiB of code resident"
    );
}

/// The size of the library's mapping `what` (`text`, `rodata`) and how much of it a
/// small program (`tests/capi/text_resident.c`) keeps resident, in KiB.
fn library_resident(what: &str) -> (u64, u64) {
    let exe = compile_c(what, "text_resident");
    let out = output({
        let mut c = default_config(&exe);
        c.env("LD_PRELOAD", preload_so());
        c
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let kib: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix(what)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no line {what} SIZE RSS in {stdout}"))
        .split(' ')
        .map(|v| v.parse().expect("KiB"))
        .collect();
    (kib[0], kib[1])
}

/// The read-only data a small program reads (symbols and relocations at load, the
/// constants boot reads) fits the first 64 KiB window of the library's file, which
/// the kernel maps whole at the first fault; the unwind tables after it are never
/// read. The topology's 15 KiB default, copied out of `.rodata` where it was built
/// (twice: two copies), pushed `.rodata` past the window, and the strings boot reads
/// landed in the second: all 108 KiB resident.
#[test]
fn small_program_keeps_little_library_data() {
    let (size, rss) = library_resident("rodata");
    assert!(
        size > 64,
        "the read-only data is {size} KiB: the check means nothing"
    );
    assert!(
        rss <= 64,
        "{rss} of the library's {size} KiB of read-only data resident"
    );
}

/// Runs `exe` with `preload` (none: glibc's malloc) and the default configuration, and
/// returns the page faults it took after its last count of its own: those of `exit`.
fn exit_faults(exe: &Path, preload: Option<&Path>) -> i64 {
    let mut c = default_config(exe);
    c.env_remove("LD_PRELOAD");
    if let Some(so) = preload {
        c.env("LD_PRELOAD", so);
    }
    // Reaped by wait4 below, which gives its resource use (`Child::wait` does not).
    #[allow(clippy::zombie_processes)]
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read");
    let mut status = 0;
    // SAFETY: all zeros is a valid rusage, which wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, reaped by nobody else (`child` is never waited).
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{stdout}"
    );
    let last: i64 = stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("a count");
    (ru.ru_minflt + ru.ru_majflt) - last
}

/// A program's `exit` faults in no more pages under the library than under glibc's
/// malloc: the library's destructor and its call of `__cxa_finalize` run code that is
/// resident already. Its destructor's frame once took 16 KiB of stack, probed page by
/// page, and the PLT entry of `__cxa_finalize` sat after the cold code: three faults
/// and a window of cold text that a parent's `wait4` counted in the peak RSS.
#[test]
fn exit_faults_in_nothing_new() {
    if skipped_without_hot_text() {
        return;
    }
    let exe = compile_c("exit", "exit_faults");
    // The fewest of three runs each: a fault of a file page the page cache had
    // dropped meanwhile would count once more.
    let glibc = (0..3).map(|_| exit_faults(&exe, None)).min().unwrap();
    let cpuslab = (0..3)
        .map(|_| exit_faults(&exe, Some(preload_so())))
        .min()
        .unwrap();
    assert!(
        cpuslab <= glibc,
        "exit took {cpuslab} page faults under the library, {glibc} under glibc's malloc"
    );
}

/// Every function of cpuslab's own that `capi/hot-text.ld` names is still one of the
/// library's: a renamed or removed function leaves a stale entry, and its replacement
/// in the linker's order (`capi/hot-text.sh` regenerates the file). Entries of core
/// and alloc are not checked: what inlining leaves out of line changes with the
/// toolchain.
#[test]
fn hot_text_names_functions_of_the_library() {
    if std::env::var_os("CPUSLAB_PRELOAD_SO").is_some() {
        eprintln!("skipped: CPUSLAB_PRELOAD_SO names a library built elsewhere");
        return;
    }
    let script = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("capi/hot-text.ld"))
        .expect("capi/hot-text.ld");
    let listed = nm(&[]);
    let symbols: Vec<&str> = listed.lines().filter_map(|l| l.split(' ').nth(2)).collect();
    let names: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("*(.text."))
        .filter_map(|l| l.split(' ').next())
        .map(|n| n.trim_end_matches('*'))
        .filter(|n| n.contains("cpuslab") || !n.starts_with("_Z") && !n.starts_with("_R"))
        .collect();
    assert!(names.len() > 80, "{} entries of cpuslab's", names.len());
    let stale: Vec<&&str> = names
        .iter()
        .filter(|n| !symbols.iter().any(|s| s.starts_with(**n)))
        .collect();
    assert!(
        stale.is_empty(),
        "stale entries in capi/hot-text.ld: {stale:?}"
    );
    // The script starts each per-block entry point on a 64-byte line (a 64 B pair
    // took 4.7 ns where `free` began 16 bytes into one, 4.1 at a line's start).
    if std::env::var_os("CPUSLAB_NO_HOT_TEXT").is_none_or(|v| v != "1") {
        let exports = nm(&["-D", "--defined-only"]);
        for name in [
            "malloc",
            "free",
            "calloc",
            "realloc",
            "posix_memalign",
            #[cfg(target_arch = "x86_64")]
            "_Znwm",
            #[cfg(target_arch = "x86_64")]
            "_ZdlPv",
            #[cfg(target_arch = "x86_64")]
            "_ZdlPvm",
        ] {
            let addr = exports
                .lines()
                .find(|l| l.split(' ').nth(2) == Some(name))
                .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
                .unwrap_or_else(|| panic!("{name} not exported"));
            assert_eq!(addr % 64, 0, "{name} at {addr:#x}: not at a 64-byte line");
        }
    }
}

#[test]
fn c_test_program() {
    let dir = scratch("c");
    let exe = dir.join("capi_test");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = output({
        let mut c = Command::new(cc);
        c.args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
            .arg(&exe)
            .arg(source("capi_test.c"));
        c
    });
    assert!(
        out.status.success(),
        "compiling capi_test.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its expectations are glibc's own...
    let glibc = output({
        let mut c = Command::new(&exe);
        c.arg("glibc");
        c
    });
    assert!(
        glibc.status.success(),
        "capi_test glibc:\n{}",
        String::from_utf8_lossy(&glibc.stderr)
    );
    // ...and cpuslab meets them, several times over (some bugs need the right
    // address layout to show).
    for round in 0..4 {
        let mut c = Command::new(&exe);
        c.arg("cpuslab").env("LD_PRELOAD", preload_so());
        if round == 0 {
            c.env("CPUSLAB_STATS", "1");
        }
        let out = output(c);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("capi_test: ok"),
            "capi_test cpuslab (round {round}): {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (reports, rest) = split_reports(&out.stderr);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        if round == 0 {
            // The process's own report and that of the child that reused the number
            // of the library's copy of stderr (the report went to stderr instead).
            assert_eq!(reports.len(), 2, "{reports:?}");
            assert!(reports.iter().all(|r| r.comm == "capi_test"), "{reports:?}");
        } else {
            assert!(reports.is_empty());
        }
    }
}

/// C++'s `operator new` and `operator delete`, every form the Itanium ABI names.
#[cfg(target_arch = "x86_64")]
const CXX_OPERATORS: [&str; 20] = [
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

/// The library exports C++'s operators, as tcmalloc's, jemalloc's and mimalloc's
/// do, and C23's sized frees; `tests/capi/cxx_test.cc` meets libstdc++'s own
/// behaviour under it: every form of `new` and `delete`, the alignments, a sized
/// delete with the wrong size, `std::bad_alloc` and the `new_handler` when memory
/// runs out (the failure path jumps to libstdc++'s operator, which throws through
/// no frame of cpuslab's: the `new_handler` finds none on the stack), blocks deleted
/// on another thread.
#[cfg(target_arch = "x86_64")]
#[test]
fn cxx_test_program() {
    let exports = nm(&["-D", "--defined-only"]);
    let exported: Vec<&str> = exports
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    for name in CXX_OPERATORS
        .iter()
        .chain(&["free_sized", "free_aligned_sized"])
    {
        assert!(exported.contains(name), "{name} not exported");
    }
    let exe = compile_cxx("cxx_test");
    for (mode, preload) in [("glibc", None), ("cpuslab", Some(preload_so()))] {
        for _ in 0..2 {
            run_cxx(&exe, &[mode], preload, "cxx_test: ok");
        }
    }
}

/// A program that replaces only `operator new(size_t)` and `operator delete(void *)`
/// (`tests/capi/cxx_replaced.cc`, a header before each block) gets the C++ runtime's
/// other forms, which call its own: under the library too, where every form of the
/// library's then forwards to the runtime's. Before that, its sized `delete` handed
/// the program's pointer to `free`, which aborted.
#[cfg(target_arch = "x86_64")]
#[test]
fn cxx_replaced_operators_are_kept() {
    let exe = compile_cxx("cxx_replaced");
    for preload in [None, Some(preload_so())] {
        run_cxx(&exe, &[], preload, "cxx_replaced: ok");
    }
}

/// Runs `exe` with `args`, under `preload` where given, and asserts that it succeeds
/// and that its output starts with `ok`.
#[cfg(target_arch = "x86_64")]
fn run_cxx(exe: &Path, args: &[&str], preload: Option<&Path>, ok: &str) {
    let mut c = Command::new(exe);
    c.args(args);
    if let Some(so) = preload {
        c.env("LD_PRELOAD", so);
    }
    let out = output(c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with(ok),
        "{} {args:?} (preload {preload:?}): {}\n{stdout}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `tests/capi/{name}.cc` as a position-independent executable (so that
/// taking an operator's address resolves it as calls do) with sized deallocation (a
/// compiler default since C++14 for g++, not for every clang).
#[cfg(target_arch = "x86_64")]
fn compile_cxx(name: &str) -> PathBuf {
    let dir = scratch(name);
    let exe = dir.join(name);
    let cxx = std::env::var_os("CXX").unwrap_or_else(|| "c++".into());
    let out = output({
        let mut c = Command::new(cxx);
        c.args([
            "-O2",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-std=c++17",
            "-fsized-deallocation",
            "-fPIE",
            "-pie",
            "-pthread",
            "-o",
        ])
        .arg(&exe)
        .arg(source(&format!("{name}.cc")))
        .arg("-ldl");
        c
    });
    assert!(
        out.status.success(),
        "compiling {name}.cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn python3() {
    compare(
        "python3",
        || {
            let mut c = Command::new("python3");
            c.arg(source("alloc_heavy.py"))
                // Every object through the C allocator, not only pymalloc's arenas.
                .env("PYTHONMALLOC", "malloc")
                .env("PYTHONHASHSEED", "0");
            c
        },
        &["python3"],
    );
}

#[test]
fn git_init_add_commit() {
    let base = scratch("git");
    let mut round = 0;
    let reports = compare(
        "git",
        || {
            // A fresh repository for each run, at the same path, so the output matches.
            round += 1;
            let repo = base.join("repo");
            let _ = fs::remove_dir_all(&repo);
            for d in 0..20 {
                let dir = repo.join(format!("dir{d:02}"));
                fs::create_dir_all(&dir).expect("repo dir");
                for f in 0..25 {
                    let mut text = String::new();
                    for line in 0..(f * 7 + d) {
                        let _ = writeln!(text, "file {d}/{f} line {line} {}", line * 31 % 97);
                    }
                    fs::write(dir.join(format!("f{f:02}.txt")), text).expect("repo file");
                }
            }
            let script = "set -e
                git init -q -b main .
                git add .
                git commit -q -m 'first commit'
                echo changed >> dir03/f04.txt
                git rm -q dir05/f00.txt
                git commit -q -a -m 'second commit'
                git log --stat --format='%H %an %s'
                git repack -adq
                git fsck --full --no-progress
                git count-objects -v | grep -v size";
            let mut c = Command::new("sh");
            c.args(["-c", script])
                .current_dir(&repo)
                .env("HOME", &base)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "cpuslab")
                .env("GIT_AUTHOR_EMAIL", "cpuslab@example.org")
                .env("GIT_COMMITTER_NAME", "cpuslab")
                .env("GIT_COMMITTER_EMAIL", "cpuslab@example.org")
                .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
                .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
                .env("LC_ALL", "C");
            c
        },
        &["git"],
    );
    assert!(round == 2);
    // init, add, commit, rm, commit, log, repack (and its pack-objects), fsck, ...
    let gits = reports.iter().filter(|r| r.comm.starts_with("git")).count();
    assert!(gits >= 9, "{reports:?}");
}

#[test]
fn sort_large_file() {
    let dir = scratch("sort");
    let input = dir.join("input.txt");
    let mut text = String::with_capacity(12 << 20);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..400_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = writeln!(text, "{:x} {} line{}", x >> 40, x % 1_000_003, i % 977);
    }
    fs::write(&input, text).expect("input file");
    for args in [
        &["-S", "64M"][..],
        &["-n", "-k2", "-t", " "],
        &["-u", "-k3"],
    ] {
        compare(
            "sort",
            || {
                let mut c = Command::new("sort");
                c.args(args).arg(&input).env("LC_ALL", "C");
                c
            },
            &["sort"],
        );
    }
}

#[test]
fn gcc_compiles_and_links() {
    let dir = scratch("gcc");
    let src = dir.join("gen.c");
    let mut text = String::from("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n");
    for f in 0..300 {
        let _ = write!(
            text,
            "struct s{f} {{ int a[{n}]; char name[32]; double w; }};\n\
             static int fn{f}(int x) {{\n\
             \x20   struct s{f} v; memset(&v, 0, sizeof v);\n\
             \x20   for (int i = 0; i < {n}; i++) v.a[i] = x * i + {f};\n\
             \x20   snprintf(v.name, sizeof v.name, \"fn{f}-%d\", x);\n\
             \x20   int acc = 0; for (int i = 0; i < {n}; i++) acc ^= v.a[i] << (i % 7);\n\
             \x20   switch (x % 5) {{ case 0: acc += {f}; break; case 1: acc -= (int)strlen(v.name); break;\n\
             \x20   case 2: acc *= 3; break; default: acc = ~acc; }}\n\
             \x20   return acc;\n}}\n",
            n = f % 17 + 3
        );
    }
    text.push_str("int main(void) {\n    long sum = 0;\n");
    for f in 0..300 {
        let _ = writeln!(text, "    sum += fn{f}({});", f * 13 % 101);
    }
    text.push_str("    printf(\"%ld\\n\", sum);\n    return 0;\n}\n");
    fs::write(&src, text).expect("source file");
    // The first run writes `<out>-plain`, the second (under cpuslab) `<out>-cpuslab`.
    let gcc = |args: &'static [&'static str], out: &'static str| {
        let (src, dir) = (src.clone(), dir.clone());
        let mut runs = ["plain", "cpuslab"].into_iter();
        move || {
            let mut c = Command::new("gcc");
            let out = dir.join(format!("{out}-{}", runs.next().expect("two runs")));
            c.args(args).arg(&src).arg("-o").arg(out);
            c
        }
    };
    let same = |out: &str| {
        let plain = fs::read(dir.join(format!("{out}-plain"))).expect("gcc output");
        let preloaded = fs::read(dir.join(format!("{out}-cpuslab"))).expect("gcc output");
        assert!(plain == preloaded, "{out} differs under cpuslab");
    };
    // Compile: the object file must be identical too.
    compare(
        "gcc -c",
        gcc(&["-O2", "-c"], "gen.o"),
        &["gcc", "cc1", "as"],
    );
    same("gen.o");
    // Compile and link; the executables are identical and run the same.
    let all = ["gcc", "cc1", "as", "collect2", "ld"];
    compare("gcc", gcc(&["-O1"], "prog"), &all);
    same("prog");
    let exe = dir.join("prog-plain");
    compare("prog", || Command::new(&exe), &["prog-plain"]);
}

#[test]
fn rust_program_with_threads() {
    let dir = scratch("rust");
    let exe = dir.join("threads");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = output({
        let mut c = Command::new(rustc);
        c.args(["-O", "--edition", "2021", "-o"])
            .arg(&exe)
            .arg(source("threads.rs"));
        c
    });
    assert!(
        out.status.success(),
        "compiling threads.rs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    compare("threads", || Command::new(&exe), &["threads"]);
}

/// A C++ program's exceptions unwind while cpuslab serves its allocations (the exception objects
/// included: `__cxa_allocate_exception` calls `malloc`).
#[test]
fn cxx_exceptions_unwind_under_the_library() {
    let dir = scratch("cxx");
    let src = dir.join("throw.cpp");
    fs::write(
        &src,
        "#include <cstdio>\n#include <stdexcept>\n#include <string>\n#include <vector>\n\
         int main() {\n\
         \x20   int caught = 0;\n\
         \x20   for (int i = 0; i < 2000; i++) {\n\
         \x20       try {\n\
         \x20           std::vector<std::string> v(8, std::string(100 + i % 50, 'x'));\n\
         \x20           throw std::runtime_error(\"boom \" + std::to_string(i));\n\
         \x20       } catch (const std::exception &e) {\n\
         \x20           caught += std::string(e.what()) == \"boom \" + std::to_string(i);\n\
         \x20       }\n\
         \x20   }\n\
         \x20   std::printf(\"caught %d\\n\", caught);\n\
         \x20   return caught == 2000 ? 0 : 1;\n\
         }\n",
    )
    .expect("source file");
    let exe = dir.join("throw");
    let out = output({
        let mut c = Command::new("g++");
        c.arg("-O2").arg("-o").arg(&exe).arg(&src);
        c
    });
    assert!(
        out.status.success(),
        "g++ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = compare("throw", || Command::new(&exe), &["throw"]);
    assert!(!reports.is_empty(), "cpuslab served nothing");
}
