//! PID 1 of the test VM. Mounts proc, sys and devtmpfs, points stdio at the console,
//! runs `/vmtest <test>` for every test `/vmtest --list` names, each in its own process
//! and under a deadline, echoes their output to the serial console, tallies the verdict
//! lines (`PASS` / `FAIL` / `SKIP`), prints `VMTEST END pass=.. fail=.. skip=..` and
//! powers the machine off.
//!
//! Two kernel command-line parameters (read from /proc/cmdline; the kernel ignores
//! dotted names it has no module for) shape a machine's run:
//! - `vmtest.offline=LIST` takes those CPUs offline before the first test, so the tests
//!   (and cpuslab's topology discovery in each test process) start on a machine whose
//!   online CPU ids are sparse, which qemu cannot boot directly: its present CPUs are
//!   always ids 0 to N-1.
//! - `vmtest.tests=NAME,...` runs only those tests; the others get a `SKIP` line, so a
//!   big, slow machine runs the checks it exists for and the log still says what was
//!   left out.
//! - `vmtest.timeout=SECONDS` replaces [`TEST_TIMEOUT`].
//!
//! A separate program from the tests so that cpuslab, which reads the topology from
//! /sys on its first allocation, never starts before /sys is mounted, and so that a
//! test that crashes or hangs becomes a `FAIL` line instead of a kernel panic.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cpuslab::topology::CpuMask;

/// One test process may run this long before it is killed and counted as failed, unless
/// `vmtest.timeout=SECONDS` on the kernel command line says otherwise (a machine of many
/// emulated CPUs, where each CPU hotplug step takes seconds).
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Default)]
struct Tally {
    pass: usize,
    fail: usize,
    skip: usize,
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(source).unwrap(),
        CString::new(target).unwrap(),
        CString::new(fstype).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        eprintln!(
            "vminit: mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Makes /dev/console (from devtmpfs) fds 0, 1 and 2: the initramfs carries no device
/// nodes, so the kernel may have started us without any.
fn open_console() {
    let path = CString::new("/dev/console").unwrap();
    // SAFETY: a valid path; the fd is only duplicated onto 0..=2.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return;
        }
        for target in 0..=2 {
            if fd != target {
                libc::dup2(fd, target);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The value of `key=` on the kernel command line.
fn cmdline_param(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// Takes every CPU of `list` offline, one at a time as the kernel does it, and returns
/// the first failure.
fn offline_cpus(list: &str) -> Result<(), String> {
    let cpus: CpuMask = list
        .parse()
        .map_err(|e| format!("vmtest.offline={list}: {e}"))?;
    let start = Instant::now();
    for cpu in cpus.iter() {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
        std::fs::write(&path, "0").map_err(|e| format!("write 0 to {path}: {e}"))?;
    }
    println!(
        "VMTEST OFFLINE cpus={} ({} CPUs in {:.1} s) online={} possible={} present={}",
        cpus,
        cpus.weight(),
        start.elapsed().as_secs_f64(),
        read_trimmed("/sys/devices/system/cpu/online"),
        read_trimmed("/sys/devices/system/cpu/possible"),
        read_trimmed("/sys/devices/system/cpu/present"),
    );
    Ok(())
}

/// A pipe whose write end becomes the child's stdout and stderr.
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned here alone.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs one test process, echoing its output, and returns its verdict counts. A test
/// that exits unsuccessfully without a `FAIL` line, prints no verdict, crashes or runs
/// past `limit` gets a `FAIL` line from here.
fn run_test(name: &str, limit: Duration) -> Tally {
    let (read, write) = pipe();
    let child = {
        let mut cmd = Command::new("/vmtest");
        cmd.arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone().expect("dup")))
            .stderr(Stdio::from(write));
        cmd.spawn()
        // `cmd` drops here, closing our copies of the write end.
    };
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL {name}: cannot start /vmtest: {e}");
            return Tally {
                fail: 1,
                ..Tally::default()
            };
        }
    };
    let echo = thread::spawn(move || {
        let mut tally = Tally::default();
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        let stdout = std::io::stdout();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.starts_with("PASS ") {
                tally.pass += 1;
            } else if text.starts_with("FAIL ") {
                tally.fail += 1;
            } else if text.starts_with("SKIP ") {
                tally.skip += 1;
            }
            let mut out = stdout.lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
            line.clear();
        }
        tally
    });

    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                println!("FAIL {name}: waiting for the test process: {e}");
                break None;
            }
        }
    };
    let mut tally = echo.join().unwrap_or_default();
    let secs = start.elapsed().as_secs_f64();
    match status {
        None => {
            println!("FAIL {name}: killed after {secs:.1} s (timeout)");
            tally.fail += 1;
        }
        Some(s) if !s.success() && tally.fail == 0 => {
            println!("FAIL {name}: test process ended with {s} and no FAIL line");
            tally.fail += 1;
        }
        Some(_) if tally.pass + tally.fail + tally.skip == 0 => {
            println!("FAIL {name}: no verdict line");
            tally.fail += 1;
        }
        Some(_) => println!("TIME {name}: {secs:.1} s"),
    }
    tally
}

fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    open_console();

    println!(
        "VMTEST BEGIN kernel={} cpus={} possible={} nodes={} mem_nodes={}",
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/sys/devices/system/cpu/online"),
        read_trimmed("/sys/devices/system/cpu/possible"),
        read_trimmed("/sys/devices/system/node/online"),
        read_trimmed("/sys/devices/system/node/has_memory"),
    );
    let names = match Command::new("/vmtest").arg("--list").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            println!("FAIL vmtest.list: /vmtest --list ended with {}", out.status);
            String::new()
        }
        Err(e) => {
            println!("FAIL vmtest.list: cannot start /vmtest: {e}");
            String::new()
        }
    };
    let mut total = Tally::default();
    if names.trim().is_empty() {
        total.fail += 1;
    }
    let cmdline = read_trimmed("/proc/cmdline");
    if let Some(list) = cmdline_param(&cmdline, "vmtest.offline") {
        if let Err(e) = offline_cpus(&list) {
            println!("FAIL vminit.offline: {e}");
            total.fail += 1;
        }
    }
    let only = cmdline_param(&cmdline, "vmtest.tests");
    let limit = cmdline_param(&cmdline, "vmtest.timeout")
        .and_then(|s| s.parse().ok())
        .map_or(TEST_TIMEOUT, Duration::from_secs);
    for name in names.split_whitespace() {
        if let Some(only) = &only {
            if !only.split(',').any(|n| n == name) {
                println!("SKIP {name}: not run on this machine (vmtest.tests={only})");
                total.skip += 1;
                continue;
            }
        }
        let t = run_test(name, limit);
        total.pass += t.pass;
        total.fail += t.fail;
        total.skip += t.skip;
    }
    println!(
        "VMTEST END pass={} fail={} skip={}",
        total.pass, total.fail, total.skip
    );
    let _ = std::io::stdout().flush();
    // SAFETY: PID 1 powering the machine off; nothing is left to save.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) only returns on failure; PID 1 must not exit (the kernel would panic,
    // which -no-reboot turns into qemu exiting anyway).
    eprintln!("vminit: reboot: {}", std::io::Error::last_os_error());
    loop {
        thread::sleep(Duration::from_secs(60));
    }
}
