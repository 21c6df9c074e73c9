//! The cpuslab benchmark suite: every workload under every allocator, each
//! run in a child process of its own so that its peak RSS is that
//! allocator's.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench suite -- [--quick] [--threads N|1,2,4]
//!     [--only w1,w2] [--alloc a,b] [--rounds N] [--scale F] [--timeout S]
//!     [--pin] [WORKLOAD-SUBSTRING...]
//! ```
//!
//! The parent re-executes this binary as
//! `--child <workload> <allocator> <threads> <scale> <pin|nopin>` with
//! `CPUSLAB_SUITE_ALLOC=<allocator>` in the environment; the child's global
//! allocator is a [`Dispatch`] pointed at that allocator before anything is
//! allocated. The child times the workload alone, reads VmHWM, and prints one
//! `CPUSLAB_SUITE_RESULT key=value...` line; under cpuslab also a
//! `CPUSLAB_SUITE_BREAKDOWN` line, where its memory sat at the most bytes in use,
//! which the parent gathers in `target/cpuslab-suite/breakdown.txt` and the report.
//!
//! `--pairs <allocator> <N>` runs N bare 64 B alloc+free pairs on the
//! allocator's static (used by `callgrind.sh`).

use cpuslab_bench::dispatch::{self, AllocKind, Dispatch, ENV_VAR};
use cpuslab_bench::programs::PROGRAMS;
use cpuslab_bench::{c, Params, WorkloadInfo, WORKLOADS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// Prefix of the child's machine-readable result line.
const RESULT_TAG: &str = "CPUSLAB_SUITE_RESULT";

fn main() -> ExitCode {
    // Fix the global allocator before anything else can allocate.
    dispatch::init();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => child(&args[2..]),
        Some("--pairs") => pairs(&args[2..]),
        _ => parent(&args[1..]),
    }
}

// ---------------------------------------------------------------- child side

fn child(args: &[String]) -> ExitCode {
    let [workload, alloc, threads, scale, pin] = args else {
        eprintln!("usage: --child <workload> <allocator> <threads> <scale> <pin|nopin>");
        return ExitCode::from(2);
    };
    let kind = dispatch::current();
    if kind.name() != alloc {
        eprintln!(
            "child asked for allocator {alloc} but its global allocator is {} ({ENV_VAR} not set or not compiled in)",
            kind.name()
        );
        return ExitCode::from(3);
    }
    if let Err(e) = check_preload() {
        eprintln!("{e}");
        return ExitCode::from(5);
    }
    let (Ok(threads), Ok(scale)) = (threads.parse::<usize>(), scale.parse::<f64>()) else {
        eprintln!("bad threads/scale");
        return ExitCode::from(2);
    };
    let params = Params {
        threads: threads.max(1),
        scale,
        pin: pin == "pin",
    };
    // Under cpuslab a sampler thread keeps the breakdown of where its memory sits at
    // the most bytes in use seen (every 10 ms; each sample takes the caches' and
    // zones' locks briefly, which the timing includes).
    let peak = (kind.name() == "cpuslab").then(PeakSampler::start);
    let start = Instant::now();
    let outcome = cpuslab_bench::run(workload, &GLOBAL, &params)
        .or_else(|| cpuslab_bench::programs::run(workload, &params));
    let elapsed = start.elapsed();
    let breakdown = peak.map(PeakSampler::finish);
    let Some(outcome) = outcome else {
        eprintln!("unknown workload {workload}");
        return ExitCode::from(2);
    };
    println!(
        "{RESULT_TAG} workload={workload} alloc={alloc} threads={threads} time_ns={} peak_rss_kib={} checksum={:016x} allocs={}",
        elapsed.as_nanos(),
        peak_rss_kib().unwrap_or(0),
        outcome.checksum,
        outcome.allocs
    );
    if let Some(b) = breakdown {
        println!("{BREAKDOWN_TAG} workload={workload} threads={threads} {b}");
    }
    ExitCode::SUCCESS
}

/// Prefix of the child's line with cpuslab's memory breakdown at its peak.
const BREAKDOWN_TAG: &str = "CPUSLAB_SUITE_BREAKDOWN";

/// Samples `cpuslab::stats::memory()` on a thread of its own, keeping the breakdown
/// with the most bytes in use (live objects, large and huge blocks): the peak of the
/// workload, while the resident figure stays at its peak after the frees, until free
/// pages are purged.
struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<cpuslab::stats::MemoryBreakdown>,
}

impl PeakSampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = cpuslab::stats::MemoryBreakdown::default();
            loop {
                let b = cpuslab::stats::memory().breakdown;
                let in_use = |b: &cpuslab::stats::MemoryBreakdown| {
                    b.live_bytes + b.large_bytes + b.huge_live_bytes
                };
                if in_use(&b) >= in_use(&peak) {
                    peak = b;
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { stop, thread }
    }

    fn finish(self) -> cpuslab::stats::MemoryBreakdown {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// With `CPUSLAB_SUITE_EXPECT_LIB` set (a preloaded allocator under the
/// `system` global allocator), malloc must resolve into a library whose path
/// contains it: a preload that did not take effect must not pass for one.
fn check_preload() -> Result<(), String> {
    let Ok(want) = std::env::var(EXPECT_LIB_VAR) else {
        return Ok(());
    };
    let malloc: unsafe extern "C" fn(libc::size_t) -> *mut libc::c_void = libc::malloc;
    // SAFETY: Dl_info is plain old data; dladdr fills it or returns 0.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: any address may be asked about; dli_fname, when set, is a
    // NUL-terminated string owned by the dynamic linker.
    let from = unsafe {
        if libc::dladdr(malloc as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            String::from("?")
        } else {
            std::ffi::CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned()
        }
    };
    if from.contains(&want) {
        Ok(())
    } else {
        Err(format!(
            "malloc comes from {from}, not from a library matching {want} (LD_PRELOAD={})",
            std::env::var("LD_PRELOAD").unwrap_or_default()
        ))
    }
}

/// VmHWM (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn pairs(args: &[String]) -> ExitCode {
    let [alloc, n] = args else {
        eprintln!("usage: --pairs <allocator> <N>");
        return ExitCode::from(2);
    };
    let (Some(kind), Ok(n)) = (AllocKind::from_name(alloc.as_bytes()), n.parse::<u64>()) else {
        eprintln!("unknown allocator or bad N");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let done = cpuslab_bench::bare_pairs_on(kind, n);
    let ns = start.elapsed().as_nanos() as f64 / done.max(1) as f64;
    println!("CPUSLAB_PAIRS alloc={alloc} pairs={done} ns_per_pair={ns:.2}");
    ExitCode::SUCCESS
}

// --------------------------------------------------------------- parent side

/// The three parts of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `cpuslab_bench`'s workloads, in a child whose global allocator is the
    /// one under test.
    Rust,
    /// `cpuslab_bench::programs`: real programs on serde_json, rayon and regex,
    /// in the same kind of child as the Rust part.
    Programs,
    /// `benches/c/workloads.c`, under `LD_PRELOAD` of the one under test.
    C,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Rust => "rust",
            Part::Programs => "programs",
            Part::C => "c",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Part::Rust => "Rust part",
            Part::Programs => "Rust programs part",
            Part::C => "C part",
        }
    }

    fn workloads(self) -> &'static [WorkloadInfo] {
        match self {
            Part::Rust => WORKLOADS,
            Part::Programs => PROGRAMS,
            Part::C => c::C_WORKLOADS,
        }
    }

    /// Whether the part runs in the suite's own child, whose global allocator
    /// is the one under test (the C part runs the compiled C program).
    fn in_rust_child(self) -> bool {
        self != Part::C
    }
}

/// An allocator as one part of the suite runs it.
#[derive(Clone, Debug)]
struct Alloc {
    /// Column name: `system` in the Rust part, `glibc` in the C part.
    name: &'static str,
    /// Rust part: the child's global allocator (`system` under a preload,
    /// so that the preloaded malloc serves it).
    kind: AllocKind,
    /// Shared library preloaded into the child.
    preload: Option<PathBuf>,
}

impl Alloc {
    /// What the path of the library malloc resolves into must contain (the
    /// children check it, so a preload that did not take effect fails).
    fn expect_lib(&self) -> String {
        match &self.preload {
            Some(p) => {
                let file = p
                    .file_name()
                    .map_or(String::new(), |f| f.to_string_lossy().into_owned());
                file.split('.').next().unwrap_or_default().to_string()
            }
            None => "libc.so".into(),
        }
    }
}

/// Names `--alloc` and `--baseline` accept; `system` and `glibc` are the same
/// allocator (glibc's malloc). The order fixes each allocator's chart colour.
const ALLOC_NAMES: &[&str] = &["cpuslab", "system", "mimalloc", "jemalloc", "tcmalloc"];

fn canonical(name: &str) -> &str {
    if name == "glibc" {
        "system"
    } else {
        name
    }
}

/// Environment variable naming the library a Rust child's malloc must come
/// from (set with `LD_PRELOAD`).
const EXPECT_LIB_VAR: &str = "CPUSLAB_SUITE_EXPECT_LIB";

struct Opts {
    quick: bool,
    threads: Vec<usize>,
    parts: Vec<Part>,
    /// `--only` names, exact; None: all.
    only: Option<Vec<String>>,
    /// Bare words: workloads whose name contains one of them.
    filters: Vec<String>,
    /// `--alloc` names, canonical; None: all available.
    allocs: Option<Vec<String>>,
    baseline: String,
    rounds: usize,
    scale: f64,
    timeout: Duration,
    pin: bool,
}

const USAGE: &str = "\
cpuslab suite: each workload x allocator in its own child process; a Rust part
(the workloads in a child whose global allocator is the one under test), a Rust
programs part (serde_json, rayon and regex programs in the same kind of child)
and a C part (benches/c/workloads.c, compiled with cc, run under LD_PRELOAD).
options:
  --quick              scale 0.08 (~12x smaller), 3 rounds: about 45 s on 2 cores
  --part P,...         parts to run: rust, programs, c (default all three)
  --threads N|N,M,...  worker threads; a list runs the suite once per count (default: available CPUs)
  --only w1,w2         workloads to run, in either part (default: all)
  --alloc a,b          allocators: cpuslab, system (= glibc), mimalloc, jemalloc, tcmalloc
                       (default: all available; a missing library is reported and skipped)
  --baseline NAME      the allocator ratios are against (default cpuslab)
  --rounds N           rounds; allocators alternate within each (default 5, quick 3)
  --scale F            work multiplier (default 1, quick 0.08)
  --timeout S          seconds before a child is killed and reported FAILED (default 300, quick 60)
  --pin                pin worker i to core i % cores (Rust parts only)
  --list               list the workloads and exit
  WORDS                other words select workloads whose name contains them
";

fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

fn known_alloc(s: &str) -> Result<String, String> {
    let c = canonical(s);
    if ALLOC_NAMES.contains(&c) {
        Ok(c.to_string())
    } else {
        Err(format!(
            "unknown allocator {s}; known: {}, glibc",
            ALLOC_NAMES.join(", ")
        ))
    }
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut o = Opts {
        quick: false,
        threads: vec![cpus],
        parts: vec![Part::Rust, Part::Programs, Part::C],
        only: None,
        filters: Vec::new(),
        allocs: None,
        baseline: "cpuslab".into(),
        rounds: 0,
        scale: 0.0,
        timeout: Duration::ZERO,
        pin: false,
    };
    let mut it = args.iter().flat_map(|a| match a.split_once('=') {
        Some((k, v)) if k.starts_with("--") => vec![k.to_string(), v.to_string()],
        _ => vec![a.clone()],
    });
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--quick" => o.quick = true,
            "--pin" => o.pin = true,
            "--threads" => {
                o.threads = list(&value()?, |s| {
                    s.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("bad thread count {s}"))
                })?
            }
            "--part" => {
                o.parts = list(&value()?, |s| match s {
                    "rust" => Ok(Part::Rust),
                    "programs" => Ok(Part::Programs),
                    "c" | "C" => Ok(Part::C),
                    _ => Err(format!("unknown part {s}; known: rust, programs, c")),
                })?
            }
            "--only" => {
                o.only = Some(list(&value()?, |s| {
                    if cpuslab_bench::find(s).is_some()
                        || PROGRAMS.iter().chain(c::C_WORKLOADS).any(|w| w.name == s)
                    {
                        Ok(s.to_string())
                    } else {
                        let names: Vec<&str> = WORKLOADS
                            .iter()
                            .chain(PROGRAMS)
                            .chain(c::C_WORKLOADS)
                            .map(|w| w.name)
                            .collect();
                        Err(format!("unknown workload {s}; known: {}", names.join(", ")))
                    }
                })?)
            }
            "--alloc" => o.allocs = Some(list(&value()?, known_alloc)?),
            "--baseline" => o.baseline = known_alloc(&value()?)?,
            "--rounds" => o.rounds = value()?.parse().map_err(|_| "bad --rounds")?,
            "--scale" => o.scale = value()?.parse().map_err(|_| "bad --scale")?,
            "--timeout" => {
                o.timeout = Duration::from_secs(value()?.parse().map_err(|_| "bad --timeout")?)
            }
            "--list" => {
                for part in [Part::Rust, Part::Programs, Part::C] {
                    for w in part.workloads() {
                        println!("{:<8} {:<14} {}", part.name(), w.name, w.about);
                    }
                }
                std::process::exit(0);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => o.filters.push(s.to_string()),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 3 } else { 5 };
    }
    if o.scale <= 0.0 {
        o.scale = if o.quick { 0.08 } else { 1.0 };
    }
    if o.timeout.is_zero() {
        o.timeout = Duration::from_secs(if o.quick { 60 } else { 300 });
    }
    let mut seen = Vec::new();
    o.parts.retain(|p| {
        let new = !seen.contains(p);
        seen.push(*p);
        new
    });
    if let Some(a) = &mut o.allocs {
        let mut seen = Vec::new();
        a.retain(|n| {
            let new = !seen.contains(n);
            seen.push(n.clone());
            new
        });
    }
    if o.parts.iter().all(|&p| selected(&o, p).is_empty()) || o.allocs.as_deref() == Some(&[]) {
        return Err("nothing to run".into());
    }
    Ok(o)
}

/// The workloads of `part` that the options select.
fn selected(o: &Opts, part: Part) -> Vec<&'static WorkloadInfo> {
    part.workloads()
        .iter()
        .filter(|w| {
            o.only
                .as_ref()
                .is_none_or(|v| v.iter().any(|n| n == w.name))
        })
        .filter(|w| o.filters.is_empty() || o.filters.iter().any(|f| w.name.contains(f.as_str())))
        .collect()
}

fn wanted(o: &Opts, name: &str) -> bool {
    o.allocs
        .as_ref()
        .is_none_or(|v| v.iter().any(|n| n == canonical(name)))
}

/// The allocators of `part` that the options select and this machine has;
/// notes say which are missing and why. Builds the cpuslab preload library
/// for the C part.
fn allocators(o: &Opts, part: Part, notes: &mut Vec<String>) -> Vec<Alloc> {
    let mut v = Vec::new();
    let library = |name: &'static str, v: &mut Vec<Alloc>, notes: &mut Vec<String>| {
        let lib = c::library(name).expect("listed");
        match c::find_library(lib) {
            Ok(p) => v.push(Alloc {
                name,
                kind: AllocKind::System,
                preload: Some(p),
            }),
            Err(e) => notes.push(format!("{} part: {name} not run: {e}", part.name())),
        }
    };
    match part {
        Part::Rust | Part::Programs => {
            for &k in AllocKind::ALL {
                if wanted(o, k.name()) {
                    v.push(Alloc {
                        name: k.name(),
                        kind: k,
                        preload: None,
                    });
                }
            }
            if wanted(o, "tcmalloc") {
                library("tcmalloc", &mut v, notes);
            }
        }
        Part::C => {
            if wanted(o, "cpuslab") {
                eprintln!("building libcpuslab_preload.so ...");
                match c::build_preload() {
                    Ok(p) => v.push(Alloc {
                        name: "cpuslab",
                        kind: AllocKind::Cpuslab,
                        preload: Some(p),
                    }),
                    Err(e) => notes.push(format!("c part: cpuslab not run: {e}")),
                }
            }
            if wanted(o, "glibc") {
                v.push(Alloc {
                    name: "glibc",
                    kind: AllocKind::System,
                    preload: None,
                });
            }
            for name in ["jemalloc", "mimalloc", "tcmalloc"] {
                if wanted(o, name) {
                    library(name, &mut v, notes);
                }
            }
        }
    }
    v
}

/// One successful child run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    time: Duration,
    rss_kib: u64,
    checksum: u64,
}

/// Results of one (workload, allocator) cell: successes and failure reasons.
#[derive(Default)]
struct Cell {
    samples: Vec<Sample>,
    failures: Vec<String>,
}

/// All cells for one part and thread count.
struct Section {
    part: Part,
    threads: usize,
    workloads: Vec<&'static WorkloadInfo>,
    allocs: Vec<Alloc>,
    cells: BTreeMap<(usize, usize), Cell>, // (workload index, alloc index)
}

/// What a child is.
struct Child<'a> {
    part: Part,
    /// The suite's own executable (Rust part) or the compiled C program.
    exe: &'a Path,
    w: &'a WorkloadInfo,
    a: &'a Alloc,
    threads: usize,
}

fn run_child(ch: &Child, o: &Opts) -> Result<Sample, String> {
    let mut cmd = Command::new(ch.exe);
    match ch.part {
        Part::Rust | Part::Programs => {
            cmd.arg("--child")
                .arg(ch.w.name)
                .arg(ch.a.kind.name())
                .arg(ch.threads.to_string())
                .arg(o.scale.to_string())
                .arg(if o.pin { "pin" } else { "nopin" })
                .env(ENV_VAR, ch.a.kind.name());
            if ch.a.preload.is_some() {
                cmd.env(EXPECT_LIB_VAR, ch.a.expect_lib());
            }
        }
        Part::C => {
            cmd.arg(ch.w.name)
                .arg(ch.threads.to_string())
                .arg(o.scale.to_string())
                .env(c::EXPECT_LIB_VAR, ch.a.expect_lib());
        }
    }
    match &ch.a.preload {
        Some(p) => cmd.env("LD_PRELOAD", p),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    // Drain both pipes on threads so a chatty child cannot block.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    // Reaped with wait4 rather than Child::wait for the child's own rusage:
    // its ru_maxrss is the C part's peak RSS.
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + o.timeout;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let timed_out = loop {
        // SAFETY: waits for our own child; status and ru are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break false;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() >= deadline {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut ru);
            }
            break true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = lines.len().saturating_sub(4);
        lines[from..].join(" | ")
    };
    if timed_out {
        return Err(format!("timed out after {} s", o.timeout.as_secs()));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let how = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            "abnormal exit".to_string()
        };
        let t = tail();
        return Err(if t.is_empty() {
            how
        } else {
            format!("{how}: {t}")
        });
    }
    let tag = if ch.part.in_rust_child() {
        RESULT_TAG
    } else {
        c::RESULT_TAG
    };
    if let Some(b) = stdout.lines().find(|l| l.starts_with(BREAKDOWN_TAG)) {
        record_breakdown(b);
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with(tag))
        .ok_or_else(|| format!("no result line: {}", tail()))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| format!("result line lacks {k}: {line}"))
    };
    let num = |k: &str| field(k)?.parse::<u64>().map_err(|e| format!("{k}: {e}"));
    Ok(Sample {
        time: Duration::from_nanos(num("time_ns")?),
        rss_kib: if ch.part.in_rust_child() {
            num("peak_rss_kib")?
        } else {
            // ru_maxrss is in KiB on Linux.
            ru.ru_maxrss.max(0) as u64
        },
        checksum: u64::from_str_radix(field("checksum")?, 16).map_err(|e| e.to_string())?,
    })
}

/// The side file that gathers the cpuslab children's breakdown lines of one suite run.
fn breakdown_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cpuslab-suite/breakdown.txt")
}

/// Appends a child's breakdown line (minus its tag) to the side file.
fn record_breakdown(line: &str) {
    let path = breakdown_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{}", line.trim_start_matches(BREAKDOWN_TAG).trim());
    }
}

fn parent(args: &[String]) -> ExitCode {
    // The breakdown lines are this run's alone.
    let _ = std::fs::remove_file(breakdown_path());
    let o = match parse_opts(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut notes: Vec<String> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut c_exe = PathBuf::new();
    for &part in &o.parts {
        let workloads = selected(&o, part);
        if workloads.is_empty() {
            continue;
        }
        if part == Part::C {
            match c::compile(&c::target_dir().join("cpuslab-suite/c")) {
                Ok(p) => c_exe = p,
                Err(e) => {
                    notes.push(format!("c part not run: {e}"));
                    continue;
                }
            }
        }
        let allocs = allocators(&o, part, &mut notes);
        if allocs.is_empty() {
            notes.push(format!("{} part not run: no allocator left", part.name()));
            continue;
        }
        for (i, &threads) in o.threads.iter().enumerate() {
            // Workloads with a fixed thread count do not depend on
            // --threads: run them in the first section only.
            let w: Vec<_> = workloads
                .iter()
                .copied()
                .filter(|w| i == 0 || w.multi_threaded)
                .collect();
            if !w.is_empty() {
                sections.push(Section {
                    part,
                    threads,
                    workloads: w,
                    allocs: allocs.clone(),
                    cells: BTreeMap::new(),
                });
            }
        }
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if sections.is_empty() {
        eprintln!("nothing to run");
        return ExitCode::FAILURE;
    }
    let total: usize = sections
        .iter()
        .map(|s| s.workloads.len() * s.allocs.len())
        .sum::<usize>()
        * o.rounds;
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    for sec in sections.iter().filter(|s| s.threads == o.threads[0]) {
        eprintln!(
            "cpuslab suite, {}: {} workloads x {} allocators ({}) x {} rounds, threads {:?}, scale {}",
            sec.part.title(),
            sec.workloads.len(),
            sec.allocs.len(),
            sec.allocs.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
            o.rounds,
            o.threads,
            o.scale
        );
    }
    let started = Instant::now();
    let mut done = 0usize;
    for round in 0..o.rounds {
        for sec in sections.iter_mut() {
            for (wi, w) in sec.workloads.clone().into_iter().enumerate() {
                let mut line = format!(
                    "round {}/{} {:<8} threads {} {:<14}",
                    round + 1,
                    o.rounds,
                    sec.part.name(),
                    sec.threads,
                    w.name
                );
                // Rotate the allocator order each round so none always runs
                // first (cold caches, CPU frequency ramps, noisy neighbours).
                for k in 0..sec.allocs.len() {
                    let ai = (k + round) % sec.allocs.len();
                    let a = sec.allocs[ai].clone();
                    done += 1;
                    if tty {
                        eprint!("\r\x1b[2K[{done}/{total}] {line} {} ...", a.name);
                        let _ = std::io::stderr().flush();
                    }
                    let ch = Child {
                        part: sec.part,
                        exe: if sec.part.in_rust_child() {
                            &exe
                        } else {
                            &c_exe
                        },
                        w,
                        a: &a,
                        threads: if w.multi_threaded { sec.threads } else { 1 },
                    };
                    let r = run_child(&ch, &o);
                    let cell = sec.cells.entry((wi, ai)).or_default();
                    match r {
                        Ok(s) => {
                            let _ = write!(line, " {} {:.3}s", a.name, s.time.as_secs_f64());
                            cell.samples.push(s);
                        }
                        Err(e) => {
                            let _ = write!(line, " {} FAILED", a.name);
                            cell.failures.push(format!("round {}: {e}", round + 1));
                        }
                    }
                }
                if !tty {
                    eprintln!("[{done}/{total}] {line}");
                }
            }
        }
    }
    if tty {
        eprintln!("\r\x1b[2K[{done}/{total}] done");
    }
    let wall = started.elapsed();
    for sec in sections.iter_mut() {
        cross_check_checksums(sec);
    }

    let mut md = String::new();
    let mut failed = Vec::new();
    for sec in &sections {
        let table = render_table(sec, &o);
        println!("\n{}, threads = {}\n{table}", sec.part.title(), sec.threads);
        let _ = writeln!(
            md,
            "\n### {}, threads = {}\n\n{table}",
            sec.part.title(),
            sec.threads
        );
        for ((wi, ai), cell) in &sec.cells {
            for f in &cell.failures {
                failed.push(format!(
                    "{} part / {} / {} / threads {}: {f}",
                    sec.part.name(),
                    sec.workloads[*wi].name,
                    sec.allocs[*ai].name,
                    sec.threads
                ));
            }
        }
    }
    println!(
        "\ntime and RSS are medians over {} rounds; x = ratio to {} (lower is better); wall {:.1} s",
        o.rounds,
        sections[0].allocs[baseline(&sections[0], &o)].name,
        wall.as_secs_f64()
    );
    if !notes.is_empty() {
        println!("\nnot run:");
        for n in &notes {
            println!("  {n}");
        }
    }
    if !failed.is_empty() {
        println!("\nFAILED runs:");
        for f in &failed {
            println!("  {f}");
        }
    }
    match write_report(&sections, &o, &md, &failed, &notes, wall) {
        Ok(dir) => println!(
            "\nreport: {}\nchart:  {}",
            dir.join("report.md").display(),
            dir.join("suite.svg").display()
        ),
        Err(e) => eprintln!("could not write the report: {e}"),
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every run of a workload must produce the same checksum whatever the
/// allocator. The majority value is taken as right; runs that differ fail.
fn cross_check_checksums(sec: &mut Section) {
    for wi in 0..sec.workloads.len() {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for ai in 0..sec.allocs.len() {
            if let Some(c) = sec.cells.get(&(wi, ai)) {
                for s in &c.samples {
                    *votes.entry(s.checksum).or_default() += 1;
                }
            }
        }
        if votes.len() <= 1 {
            continue;
        }
        let best = votes.values().copied().max().unwrap_or(0);
        let winners: Vec<u64> = votes
            .iter()
            .filter(|(_, &n)| n == best)
            .map(|(&c, _)| c)
            .collect();
        let right = (winners.len() == 1).then(|| winners[0]);
        for ai in 0..sec.allocs.len() {
            if let Some(c) = sec.cells.get_mut(&(wi, ai)) {
                let bad: Vec<u64> = c
                    .samples
                    .iter()
                    .map(|s| s.checksum)
                    .filter(|&x| Some(x) != right)
                    .collect();
                if !bad.is_empty() {
                    c.failures.push(format!(
                        "checksum {:016x} disagrees with the other runs (majority {})",
                        bad[0],
                        right.map_or("none".to_string(), |r| format!("{r:016x}"))
                    ));
                }
            }
        }
    }
}

// ------------------------------------------------------------------ results

/// Index of the allocator ratios are against: `--baseline`, else cpuslab,
/// else the first.
fn baseline(sec: &Section, o: &Opts) -> usize {
    let pos = |n: &str| sec.allocs.iter().position(|a| canonical(a.name) == n);
    pos(&o.baseline).or_else(|| pos("cpuslab")).unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median seconds and median peak RSS (KiB) of a cell, or None if any run
/// failed (a failure is never averaged away).
fn cell_medians(sec: &Section, wi: usize, ai: usize) -> Option<(f64, f64)> {
    let c = sec.cells.get(&(wi, ai))?;
    if !c.failures.is_empty() || c.samples.is_empty() {
        return None;
    }
    Some((
        median(c.samples.iter().map(|s| s.time.as_secs_f64()).collect()),
        median(c.samples.iter().map(|s| s.rss_kib as f64).collect()),
    ))
}

/// Ratios to the baseline per workload: (time, rss) for each allocator.
fn ratios(sec: &Section, o: &Opts) -> Vec<Vec<Option<(f64, f64)>>> {
    let b = baseline(sec, o);
    (0..sec.workloads.len())
        .map(|wi| {
            let base = cell_medians(sec, wi, b);
            (0..sec.allocs.len())
                .map(|ai| {
                    let (bt, br) = base?;
                    let (t, r) = cell_medians(sec, wi, ai)?;
                    Some((t / bt, r / br))
                })
                .collect()
        })
        .collect()
}

fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    (n > 0).then(|| (sum / n as f64).exp())
}

fn fmt_time(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn fmt_rss(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// A markdown table, padded so it also reads well as plain text.
fn render_table(sec: &Section, o: &Opts) -> String {
    let b = baseline(sec, o);
    let r = ratios(sec, o);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["workload".to_string()];
    head.extend(sec.allocs.iter().map(|a| format!("{} time", a.name)));
    head.extend(sec.allocs.iter().map(|a| format!("{} RSS", a.name)));
    rows.push(head);
    for (wi, w) in sec.workloads.iter().enumerate() {
        let mut row = vec![w.name.to_string()];
        for metric in 0..2 {
            for (ai, ratio) in r[wi].iter().enumerate() {
                row.push(match cell_medians(sec, wi, ai) {
                    None => "FAILED".to_string(),
                    Some((t, rss)) => {
                        let v = if metric == 0 {
                            fmt_time(t)
                        } else {
                            fmt_rss(rss)
                        };
                        match ratio {
                            Some(x) if ai != b => {
                                format!("{v} ×{:.2}", if metric == 0 { x.0 } else { x.1 })
                            }
                            _ => v,
                        }
                    }
                });
            }
        }
        rows.push(row);
    }
    let mut gm = vec!["geomean ratio".to_string()];
    for metric in 0..2 {
        for ai in 0..sec.allocs.len() {
            let g = geomean(r.iter().filter_map(|row| row[ai]).map(|x| {
                if metric == 0 {
                    x.0
                } else {
                    x.1
                }
            }));
            gm.push(g.map_or("-".to_string(), |g| format!("×{g:.2}")));
        }
    }
    rows.push(gm);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                if c == 0 {
                    let _ = write!(out, " {dashes} |");
                } else {
                    let _ = write!(out, " {}: |", &dashes[1..]);
                }
            }
            out.push('\n');
        }
    }
    out
}

// ------------------------------------------------------------------- report

fn machine_summary() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |k| {
            format!("{:.1} GiB", k as f64 / (1 << 20) as f64)
        });
    format!(
        "- CPUs available: {cpus}\n- CPU model: {model}\n- memory: {mem}\n- kernel: {}\n",
        uname()
    )
}

fn uname() -> String {
    // SAFETY: utsname is plain old data; uname fills it with NUL-terminated strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        let f = |p: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(p.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        format!("{} {} {}", f(&u.sysname), f(&u.release), f(&u.machine))
    }
}

/// UTC date and time, from the Unix clock (civil-from-days conversion).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn write_report(
    sections: &[Section],
    o: &Opts,
    tables: &str,
    failed: &[String],
    notes: &[String],
    wall: Duration,
) -> std::io::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cpuslab-suite");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# cpuslab benchmark suite\n");
    let _ = writeln!(md, "- date: {}", utc_now());
    let _ = writeln!(
        md,
        "- command: `cargo bench -p cpuslab-bench --bench suite -- {}`",
        argv.join(" ")
    );
    let _ = writeln!(
        md,
        "- scale {}, rounds {}, threads {:?}, pinning {}, wall {:.1} s",
        o.scale,
        o.rounds,
        o.threads,
        if o.pin { "on" } else { "off" },
        wall.as_secs_f64()
    );
    let _ = writeln!(md, "\n## Machine\n\n{}", machine_summary());
    let _ = writeln!(
        md,
        "## Results\n\nMedian wall time of the workload alone (the C programs time themselves) \
         and median peak RSS (the child's VmHWM in the Rust parts, its ru_maxrss from wait4 in \
         the C part) over {} rounds; ×N is the ratio to {} (below 1: faster or smaller). \
         FAILED: a run crashed, timed out, failed verification, or its checksum disagreed.",
        o.rounds,
        sections
            .first()
            .map_or("-", |s| canonical(s.allocs[baseline(s, o)].name))
    );
    md.push_str(tables);
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Not run\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## Failures\n");
        for f in failed {
            let _ = writeln!(md, "- {f}");
        }
    }
    if let Ok(b) = std::fs::read_to_string(breakdown_path()) {
        let _ = writeln!(
            md,
            "\n## Where cpuslab's memory sits\n\nThe breakdown (`stats::memory().breakdown`, \
             KiB) at the most bytes in use (live, large, huge) of each cpuslab run, sampled every 10 ms \
             (also in `breakdown.txt`):\n"
        );
        for l in b.lines() {
            let _ = writeln!(md, "- {l}");
        }
    }
    let _ = writeln!(md, "\n## Workloads\n");
    for &part in &o.parts {
        for w in selected(o, part) {
            let _ = writeln!(md, "- {} `{}`: {}", part.name(), w.name, w.about);
        }
    }
    let _ = writeln!(md, "\n## Raw times (seconds, in run order)\n");
    for sec in sections {
        for (wi, w) in sec.workloads.iter().enumerate() {
            let mut line = format!(
                "- {} threads {} `{}`:",
                sec.part.name(),
                sec.threads,
                w.name
            );
            for (ai, a) in sec.allocs.iter().enumerate() {
                if let Some(c) = sec.cells.get(&(wi, ai)) {
                    let ts: Vec<String> = c
                        .samples
                        .iter()
                        .map(|s| format!("{:.4}", s.time.as_secs_f64()))
                        .collect();
                    let _ = write!(line, " {} [{}]", a.name, ts.join(", "));
                }
            }
            let _ = writeln!(md, "{line}");
        }
    }
    let _ = writeln!(md, "\n![chart](suite.svg)");
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(dir.join("suite.svg"), render_svg(sections, o))?;
    Ok(dir)
}

// -------------------------------------------------------------------- chart

const COLORS: &[&str] = &[
    "#1f77b4", "#8c8c8c", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e",
];

/// An allocator's colour, the same in every part.
fn color(name: &str) -> &'static str {
    let i = ALLOC_NAMES
        .iter()
        .position(|&n| n == canonical(name))
        .unwrap_or(ALLOC_NAMES.len());
    COLORS[i % COLORS.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One grouped bar chart of ratios on a log2 axis from 1/8 to 8, bars
/// growing up or down from 1. Appends to `svg` at vertical offset `y0`;
/// returns the height used.
fn svg_chart(
    svg: &mut String,
    y0: f64,
    title: &str,
    names: &[&str],
    allocs: &[Alloc],
    values: &[Vec<Option<f64>>],
) -> f64 {
    const LEFT: f64 = 70.0;
    const BAR: f64 = 9.0;
    const GAP: f64 = 14.0;
    const PLOT_H: f64 = 240.0;
    const SPAN: f64 = 3.0; // log2(8)
    let group = allocs.len() as f64 * BAR + GAP;
    let width = LEFT + names.len() as f64 * group + 20.0;
    let top = y0 + 30.0;
    let mid = top + PLOT_H / 2.0;
    let y_of = |r: f64| mid - r.log2().clamp(-SPAN, SPAN) / SPAN * (PLOT_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(title)
    );
    for (i, a) in allocs.iter().enumerate() {
        let x = width - 110.0 * (allocs.len() - i) as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            y0 + 8.0,
            color(a.name),
            x + 14.0,
            y0 + 17.0,
            a.name
        );
    }
    for k in -3i32..=3 {
        let r = 2f64.powi(k);
        let y = y_of(r);
        let label = if k < 0 {
            format!("1/{}", 1 << -k)
        } else {
            format!("{}", 1 << k)
        };
        let (stroke, dash) = if k == 0 {
            ("#000", "")
        } else {
            ("#ddd", r#" stroke-dasharray="3,3""#)
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"{dash}/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{label}×</text>"#,
            width - 10.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (wi, name) in names.iter().enumerate() {
        let gx = LEFT + wi as f64 * group + GAP / 2.0;
        for (ai, v) in values[wi].iter().enumerate() {
            let x = gx + ai as f64 * BAR;
            match v {
                Some(r) => {
                    let y = y_of(*r);
                    let (ya, h) = if y < mid {
                        (y, mid - y)
                    } else {
                        (mid, y - mid)
                    };
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{ya:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: ×{r:.3}</title></rect>"#,
                        BAR - 1.0,
                        h.max(1.0),
                        color(allocs[ai].name),
                        esc(name),
                        allocs[ai].name
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d00" text-anchor="middle">✗<title>{} {}: FAILED</title></text>"##,
                        x + BAR / 2.0,
                        mid + 4.0,
                        esc(name),
                        allocs[ai].name
                    );
                }
            }
        }
        let lx = gx + group / 2.0 - GAP / 2.0;
        let ly = top + PLOT_H + 10.0;
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="11" text-anchor="end" transform="rotate(-40 {lx:.1} {ly:.1})">{}</text>"#,
            esc(name)
        );
    }
    30.0 + PLOT_H + 90.0
}

fn render_svg(sections: &[Section], o: &Opts) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    let mut width: f64 = 400.0;
    for sec in sections {
        let r = ratios(sec, o);
        let names: Vec<&str> = sec.workloads.iter().map(|w| w.name).collect();
        width =
            width.max(70.0 + names.len() as f64 * (sec.allocs.len() as f64 * 9.0 + 14.0) + 20.0);
        let base = sec.allocs[baseline(sec, o)].name;
        for (metric, label) in [(0, "time"), (1, "peak RSS")] {
            let vals: Vec<Vec<Option<f64>>> = r
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|x| x.map(|x| if metric == 0 { x.0 } else { x.1 }))
                        .collect()
                })
                .collect();
            let title = format!(
                "{}: {label} ratio vs {base}, threads = {} (lower is better)",
                sec.part.title(),
                sec.threads
            );
            y += svg_chart(&mut body, y, &title, &names, &sec.allocs, &vals);
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{y:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}
