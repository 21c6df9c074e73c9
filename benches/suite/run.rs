//! The parent's runs: every workload under every allocator in children of its own,
//! rounds alternating the allocators, the results gathered by section.

use super::*;
/// One successful child run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) time: Duration,
    pub(crate) rss_kib: u64,
    pub(crate) checksum: u64,
}

/// Results of one (workload, allocator) cell: successes and failure reasons.
#[derive(Default)]
pub(crate) struct Cell {
    pub(crate) samples: Vec<Sample>,
    pub(crate) failures: Vec<String>,
}

/// All cells for one part and thread count.
pub(crate) struct Section {
    pub(crate) part: Part,
    pub(crate) threads: usize,
    pub(crate) workloads: Vec<&'static WorkloadInfo>,
    pub(crate) allocs: Vec<Alloc>,
    pub(crate) cells: BTreeMap<(usize, usize), Cell>, // (workload index, alloc index)
}

/// What a child is.
pub(crate) struct Child<'a> {
    pub(crate) part: Part,
    /// The suite's own executable (Rust part) or the compiled C program.
    pub(crate) exe: &'a Path,
    pub(crate) w: &'a WorkloadInfo,
    pub(crate) a: &'a Alloc,
    pub(crate) threads: usize,
}

pub(crate) fn run_child(ch: &Child, o: &Opts) -> Result<Sample, String> {
    run_child_with(ch, o, false)
}

/// [`run_child`]; with `sample`, the untimed run whose child samples cpuslab's memory
/// breakdown (its line goes to the side file, its time and RSS are not used).
pub(crate) fn run_child_with(ch: &Child, o: &Opts, sample: bool) -> Result<Sample, String> {
    let mut cmd = Command::new(ch.exe);
    if sample {
        cmd.env(SAMPLE_VAR, "1");
    } else {
        cmd.env_remove(SAMPLE_VAR);
    }
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
    // Reaped with waitpid and WNOHANG, so a child past the deadline is killed.
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + o.timeout;
    let mut status: libc::c_int = 0;
    let timed_out = loop {
        // SAFETY: waits for our own child; status is valid for writes.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break false;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() >= deadline {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
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
        // Both kinds of child read their own VmHWM at their end: wait4's ru_maxrss would
        // charge a spawned child with this process's peak, which its exec inherits.
        rss_kib: num("peak_rss_kib")?,
        checksum: u64::from_str_radix(field("checksum")?, 16).map_err(|e| e.to_string())?,
    })
}

/// The side file that gathers the cpuslab children's breakdown lines of one suite run.
pub(crate) fn breakdown_path() -> PathBuf {
    c::target_dir().join("cpuslab-suite/breakdown.txt")
}

/// Appends a child's breakdown line (minus its tag) to the side file.
pub(crate) fn record_breakdown(line: &str) {
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

pub(crate) fn parent(args: &[String]) -> ExitCode {
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
    // The breakdown of where cpuslab's memory sits, from one more cpuslab run of each
    // workload of the Rust parts with the sampler on: untimed, so the sampler's locks,
    // thread and buffers never enter the tables.
    for sec in sections.iter().filter(|s| s.part.in_rust_child()) {
        let Some(a) = sec.allocs.iter().find(|a| a.kind.name() == "cpuslab") else {
            continue;
        };
        for w in &sec.workloads {
            if tty {
                eprint!("\r\x1b[2K[{done}/{total}] breakdown {} ...", w.name);
                let _ = std::io::stderr().flush();
            }
            let ch = Child {
                part: sec.part,
                exe: &exe,
                w,
                a,
                threads: if w.multi_threaded { sec.threads } else { 1 },
            };
            if let Err(e) = run_child_with(&ch, &o, true) {
                eprintln!("\nbreakdown run of {} failed: {e}", w.name);
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
pub(crate) fn cross_check_checksums(sec: &mut Section) {
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
