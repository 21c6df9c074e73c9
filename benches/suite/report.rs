//! The report file: the machine, the command, the tables and the breakdowns.

use super::*;

pub(crate) fn machine_summary() -> String {
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

pub(crate) fn uname() -> String {
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
pub(crate) fn utc_now() -> String {
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

pub(crate) fn write_report(
    sections: &[Section],
    o: &Opts,
    tables: &str,
    failed: &[String],
    notes: &[String],
    wall: Duration,
) -> std::io::Result<PathBuf> {
    let dir = cpuslab_bench::c::target_dir().join("cpuslab-suite");
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
         and median peak RSS (the child's VmHWM, which it reads at its end) over {} rounds; \
         ×N is the ratio to {} (below 1: faster or smaller). \
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
             KiB) at the most bytes in use (live, large, huge), sampled every 10 ms in one more, \
             untimed cpuslab run of each workload (also in `breakdown.txt`):\n"
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
