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
//! `CPUSLAB_SUITE_RESULT key=value...` line.
//!
//! `--pairs <allocator> <N>` runs N bare 64 B alloc+free pairs on the
//! allocator's static (used by `callgrind.sh`).

use cpuslab_bench::dispatch::{self, AllocKind, Dispatch, ENV_VAR};
use cpuslab_bench::{Params, WorkloadInfo, WORKLOADS};
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
    let (Ok(threads), Ok(scale)) = (threads.parse::<usize>(), scale.parse::<f64>()) else {
        eprintln!("bad threads/scale");
        return ExitCode::from(2);
    };
    let params = Params {
        threads: threads.max(1),
        scale,
        pin: pin == "pin",
    };
    let start = Instant::now();
    let outcome = cpuslab_bench::run(workload, &GLOBAL, &params);
    let elapsed = start.elapsed();
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
    ExitCode::SUCCESS
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

struct Opts {
    quick: bool,
    threads: Vec<usize>,
    workloads: Vec<&'static WorkloadInfo>,
    allocs: Vec<AllocKind>,
    rounds: usize,
    scale: f64,
    timeout: Duration,
    pin: bool,
}

const USAGE: &str = "\
cpuslab suite: each workload x allocator in its own child process.
options:
  --quick              scale 0.08 (~12x smaller), 3 rounds: about 25 s on 2 idle cores
  --threads N|N,M,...  worker threads; a list runs the suite once per count (default: available CPUs)
  --only w1,w2         workloads to run (default: all)
  --alloc a,b          allocators (default: all compiled in; ratios are against cpuslab,
                       or the first one listed if cpuslab is not)
  --rounds N           rounds; allocators alternate within each (default 5, quick 3)
  --scale F            work multiplier (default 1, quick 0.08)
  --timeout S          seconds before a child is killed and reported FAILED (default 300, quick 60)
  --pin                pin worker i to core i % cores
  --list               list the workloads and exit
  WORDS                other words select workloads whose name contains them
";

fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut o = Opts {
        quick: false,
        threads: vec![cpus],
        workloads: WORKLOADS.iter().collect(),
        allocs: AllocKind::ALL.to_vec(),
        rounds: 0,
        scale: 0.0,
        timeout: Duration::ZERO,
        pin: false,
    };
    let mut filters: Vec<String> = Vec::new();
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
            "--only" => {
                o.workloads = list(&value()?, |s| {
                    cpuslab_bench::find(s).ok_or(format!(
                        "unknown workload {s}; known: {}",
                        WORKLOADS
                            .iter()
                            .map(|w| w.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
            }
            "--alloc" => {
                o.allocs = list(&value()?, |s| {
                    AllocKind::from_name(s.as_bytes()).ok_or(format!(
                        "unknown allocator {s}; compiled in: {}",
                        AllocKind::ALL
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
            }
            "--rounds" => o.rounds = value()?.parse().map_err(|_| "bad --rounds")?,
            "--scale" => o.scale = value()?.parse().map_err(|_| "bad --scale")?,
            "--timeout" => {
                o.timeout = Duration::from_secs(value()?.parse().map_err(|_| "bad --timeout")?)
            }
            "--list" => {
                for w in WORKLOADS {
                    println!("{:<14} {}", w.name, w.about);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => filters.push(s.to_string()),
        }
    }
    if !filters.is_empty() {
        o.workloads
            .retain(|w| filters.iter().any(|f| w.name.contains(f.as_str())));
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
    o.allocs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    let mut seen = Vec::new();
    o.workloads.retain(|w| {
        let new = !seen.contains(&w.name);
        seen.push(w.name);
        new
    });
    if o.workloads.is_empty() || o.allocs.is_empty() {
        return Err("nothing to run".into());
    }
    Ok(o)
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

/// All cells for one thread count.
struct Section {
    threads: usize,
    workloads: Vec<&'static WorkloadInfo>,
    cells: BTreeMap<(usize, usize), Cell>, // (workload index, alloc index)
}

fn run_child(
    exe: &Path,
    w: &WorkloadInfo,
    a: AllocKind,
    threads: usize,
    o: &Opts,
) -> Result<Sample, String> {
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(w.name)
        .arg(a.name())
        .arg(threads.to_string())
        .arg(o.scale.to_string())
        .arg(if o.pin { "pin" } else { "nopin" })
        .env(ENV_VAR, a.name())
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
    let deadline = Instant::now() + o.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = lines.len().saturating_sub(4);
        lines[from..].join(" | ")
    };
    let Some(status) = status else {
        return Err(format!("timed out after {} s", o.timeout.as_secs()));
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "abnormal exit".to_string(),
        };
        let t = tail();
        return Err(if t.is_empty() {
            how
        } else {
            format!("{how}: {t}")
        });
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with(RESULT_TAG))
        .ok_or_else(|| format!("no result line: {}", tail()))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| format!("result line lacks {k}: {line}"))
    };
    let num = |k: &str| field(k)?.parse::<u64>().map_err(|e| format!("{k}: {e}"));
    Ok(Sample {
        time: Duration::from_nanos(num("time_ns")?),
        rss_kib: num("peak_rss_kib")?,
        checksum: u64::from_str_radix(field("checksum")?, 16).map_err(|e| e.to_string())?,
    })
}

fn parent(args: &[String]) -> ExitCode {
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
    let mut sections: Vec<Section> = o
        .threads
        .iter()
        .enumerate()
        .map(|(i, &threads)| Section {
            threads,
            // Single-threaded workloads do not depend on the thread count:
            // run them in the first section only.
            workloads: o
                .workloads
                .iter()
                .copied()
                .filter(|w| i == 0 || w.multi_threaded)
                .collect(),
            cells: BTreeMap::new(),
        })
        .collect();
    let total: usize =
        sections.iter().map(|s| s.workloads.len()).sum::<usize>() * o.allocs.len() * o.rounds;
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    eprintln!(
        "cpuslab suite: {} workloads x {} allocators x {} rounds, threads {:?}, scale {}",
        o.workloads.len(),
        o.allocs.len(),
        o.rounds,
        o.threads,
        o.scale
    );
    let started = Instant::now();
    let mut done = 0usize;
    for round in 0..o.rounds {
        for sec in sections.iter_mut() {
            for (wi, w) in sec.workloads.clone().into_iter().enumerate() {
                let mut line = format!(
                    "round {}/{} threads {} {:<14}",
                    round + 1,
                    o.rounds,
                    sec.threads,
                    w.name
                );
                // Rotate the allocator order each round so none always runs
                // first (cold caches, CPU frequency ramps, noisy neighbours).
                for k in 0..o.allocs.len() {
                    let ai = (k + round) % o.allocs.len();
                    let a = o.allocs[ai];
                    done += 1;
                    if tty {
                        eprint!("\r\x1b[2K[{done}/{total}] {line} {} ...", a.name());
                        let _ = std::io::stderr().flush();
                    }
                    let threads = if w.multi_threaded { sec.threads } else { 1 };
                    let r = run_child(&exe, w, a, threads, &o);
                    let cell = sec.cells.entry((wi, ai)).or_default();
                    match r {
                        Ok(s) => {
                            let _ = write!(line, " {} {:.3}s", a.name(), s.time.as_secs_f64());
                            cell.samples.push(s);
                        }
                        Err(e) => {
                            let _ = write!(line, " {} FAILED", a.name());
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
        cross_check_checksums(sec, &o);
    }

    let mut md = String::new();
    let mut failed = Vec::new();
    for sec in &sections {
        let table = render_table(sec, &o);
        println!("\nthreads = {}\n{table}", sec.threads);
        let _ = writeln!(md, "\n### threads = {}\n\n{table}", sec.threads);
        for ((wi, ai), cell) in &sec.cells {
            for f in &cell.failures {
                failed.push(format!(
                    "{} / {} / threads {}: {f}",
                    sec.workloads[*wi].name,
                    o.allocs[*ai].name(),
                    sec.threads
                ));
            }
        }
    }
    println!(
        "\ntime and RSS are medians over {} rounds; x = ratio to {} (lower is better); wall {:.1} s",
        o.rounds,
        o.allocs[baseline(&o)].name(),
        wall.as_secs_f64()
    );
    if !failed.is_empty() {
        println!("\nFAILED runs:");
        for f in &failed {
            println!("  {f}");
        }
    }
    match write_report(&sections, &o, &md, &failed, wall) {
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
fn cross_check_checksums(sec: &mut Section, o: &Opts) {
    for wi in 0..sec.workloads.len() {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for ai in 0..o.allocs.len() {
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
        for ai in 0..o.allocs.len() {
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

fn baseline(o: &Opts) -> usize {
    o.allocs
        .iter()
        .position(|&a| a == AllocKind::Cpuslab)
        .unwrap_or(0)
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
    let b = baseline(o);
    (0..sec.workloads.len())
        .map(|wi| {
            let base = cell_medians(sec, wi, b);
            (0..o.allocs.len())
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
    let b = baseline(o);
    let r = ratios(sec, o);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["workload".to_string()];
    head.extend(o.allocs.iter().map(|a| format!("{} time", a.name())));
    head.extend(o.allocs.iter().map(|a| format!("{} RSS", a.name())));
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
        for ai in 0..o.allocs.len() {
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
        "## Results\n\nMedian wall time of the workload alone and median peak RSS (VmHWM of the \
         child process) over {} rounds; ×N is the ratio to {} (below 1: faster or smaller). \
         FAILED: a run crashed, timed out, failed verification, or its checksum disagreed.",
        o.rounds,
        o.allocs[baseline(o)].name()
    );
    md.push_str(tables);
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## Failures\n");
        for f in failed {
            let _ = writeln!(md, "- {f}");
        }
    }
    let _ = writeln!(md, "\n## Workloads\n");
    for w in &o.workloads {
        let _ = writeln!(md, "- `{}`: {}", w.name, w.about);
    }
    let _ = writeln!(md, "\n## Raw times (seconds, in run order)\n");
    for sec in sections {
        for (wi, w) in sec.workloads.iter().enumerate() {
            let mut line = format!("- threads {} `{}`:", sec.threads, w.name);
            for (ai, a) in o.allocs.iter().enumerate() {
                if let Some(c) = sec.cells.get(&(wi, ai)) {
                    let ts: Vec<String> = c
                        .samples
                        .iter()
                        .map(|s| format!("{:.4}", s.time.as_secs_f64()))
                        .collect();
                    let _ = write!(line, " {} [{}]", a.name(), ts.join(", "));
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
    allocs: &[AllocKind],
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
            COLORS[i % COLORS.len()],
            x + 14.0,
            y0 + 17.0,
            a.name()
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
                        COLORS[ai % COLORS.len()],
                        esc(name),
                        allocs[ai].name()
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d00" text-anchor="middle">✗<title>{} {}: FAILED</title></text>"##,
                        x + BAR / 2.0,
                        mid + 4.0,
                        esc(name),
                        allocs[ai].name()
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
    let base = o.allocs[baseline(o)].name();
    let mut body = String::new();
    let mut y = 10.0;
    let mut width: f64 = 400.0;
    for sec in sections {
        let r = ratios(sec, o);
        let names: Vec<&str> = sec.workloads.iter().map(|w| w.name).collect();
        width = width.max(70.0 + names.len() as f64 * (o.allocs.len() as f64 * 9.0 + 14.0) + 20.0);
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
                "{label} ratio vs {base}, threads = {} (lower is better)",
                sec.threads
            );
            y += svg_chart(&mut body, y, &title, &names, &o.allocs, &vals);
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{y:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}
