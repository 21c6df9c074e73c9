//! The parent's options: the parts, the allocators, the command line.

use super::*;

/// The three parts of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
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
    pub(crate) fn name(self) -> &'static str {
        match self {
            Part::Rust => "rust",
            Part::Programs => "programs",
            Part::C => "c",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Part::Rust => "Rust part",
            Part::Programs => "Rust programs part",
            Part::C => "C part",
        }
    }

    pub(crate) fn workloads(self) -> &'static [WorkloadInfo] {
        match self {
            Part::Rust => WORKLOADS,
            Part::Programs => PROGRAMS,
            Part::C => c::C_WORKLOADS,
        }
    }

    /// Whether the part runs in the suite's own child, whose global allocator
    /// is the one under test (the C part runs the compiled C program).
    pub(crate) fn in_rust_child(self) -> bool {
        self != Part::C
    }
}

/// An allocator as one part of the suite runs it.
#[derive(Clone, Debug)]
pub(crate) struct Alloc {
    /// Column name: `system` in the Rust part, `glibc` in the C part.
    pub(crate) name: &'static str,
    /// Rust part: the child's global allocator (`system` under a preload,
    /// so that the preloaded malloc serves it).
    pub(crate) kind: AllocKind,
    /// Shared library preloaded into the child.
    pub(crate) preload: Option<PathBuf>,
}

impl Alloc {
    /// What the path of the library malloc resolves into must contain (the
    /// children check it, so a preload that did not take effect fails).
    pub(crate) fn expect_lib(&self) -> String {
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
pub(crate) const ALLOC_NAMES: &[&str] = &["cpuslab", "system", "mimalloc", "jemalloc", "tcmalloc"];

pub(crate) fn canonical(name: &str) -> &str {
    if name == "glibc" {
        "system"
    } else {
        name
    }
}

/// Environment variable naming the library a Rust child's malloc must come
/// from (set with `LD_PRELOAD`).
pub(crate) const EXPECT_LIB_VAR: &str = "CPUSLAB_SUITE_EXPECT_LIB";

pub(crate) struct Opts {
    pub(crate) quick: bool,
    pub(crate) threads: Vec<usize>,
    pub(crate) parts: Vec<Part>,
    /// `--only` names, exact; None: all.
    pub(crate) only: Option<Vec<String>>,
    /// Bare words: workloads whose name contains one of them.
    pub(crate) filters: Vec<String>,
    /// `--alloc` names, canonical; None: all available.
    pub(crate) allocs: Option<Vec<String>>,
    pub(crate) baseline: String,
    pub(crate) rounds: usize,
    pub(crate) scale: f64,
    pub(crate) timeout: Duration,
    pub(crate) pin: bool,
}

pub(crate) const USAGE: &str = "\
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

pub(crate) fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s.trim()))
        .collect()
}

pub(crate) fn known_alloc(s: &str) -> Result<String, String> {
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

pub(crate) fn parse_opts(args: &[String]) -> Result<Opts, String> {
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
pub(crate) fn selected(o: &Opts, part: Part) -> Vec<&'static WorkloadInfo> {
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

pub(crate) fn wanted(o: &Opts, name: &str) -> bool {
    o.allocs
        .as_ref()
        .is_none_or(|v| v.iter().any(|n| n == canonical(name)))
}

/// The allocators of `part` that the options select and this machine has;
/// notes say which are missing and why. Builds the cpuslab preload library
/// for the C part.
pub(crate) fn allocators(o: &Opts, part: Part, notes: &mut Vec<String>) -> Vec<Alloc> {
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
