//! The child side: one workload under one allocator, timed, with its peak RSS and
//! (under cpuslab) where its memory sat.

use super::*;

pub(crate) fn child(args: &[String]) -> ExitCode {
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
    // In the suite's untimed breakdown run (SAMPLE_VAR set) a sampler thread keeps the
    // breakdown of where cpuslab's memory sits at the most bytes in use seen (every
    // 10 ms). Never in a timed run: each sample takes the caches' and zones' locks and
    // the thread's own stack and buffers are resident, which cost `channel` 5% of its
    // time and `pair64` 330 KiB of its peak RSS.
    let sample = kind.name() == "cpuslab" && std::env::var_os(SAMPLE_VAR).is_some();
    let peak = sample.then(PeakSampler::start);
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
pub(crate) const BREAKDOWN_TAG: &str = "CPUSLAB_SUITE_BREAKDOWN";

/// Set in the environment of the one extra, untimed cpuslab child of each workload
/// that samples the breakdown (see [`PeakSampler`]).
pub(crate) const SAMPLE_VAR: &str = "CPUSLAB_SUITE_SAMPLE";

/// Samples `cpuslab::stats::memory()` on a thread of its own, keeping the breakdown
/// with the most bytes in use (live objects, large and huge blocks): the peak of the
/// workload, while the resident figure stays at its peak after the frees, until free
/// pages are purged.
pub(crate) struct PeakSampler {
    pub(crate) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) thread: std::thread::JoinHandle<cpuslab::stats::MemoryBreakdown>,
}

impl PeakSampler {
    pub(crate) fn start() -> Self {
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

    pub(crate) fn finish(self) -> cpuslab::stats::MemoryBreakdown {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// With `CPUSLAB_SUITE_EXPECT_LIB` set (a preloaded allocator under the
/// `system` global allocator), malloc must resolve into a library whose path
/// contains it: a preload that did not take effect must not pass for one.
pub(crate) fn check_preload() -> Result<(), String> {
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
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn pairs(args: &[String]) -> ExitCode {
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
