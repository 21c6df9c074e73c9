//! PID 1 of the test VM. Mounts proc, sys and devtmpfs, points stdio at the console,
//! runs `/vmtest <test>` for every test `/vmtest --list` names, each in its own process
//! and under a deadline, echoes their output to the serial console, tallies the verdict
//! lines (`PASS` / `FAIL` / `SKIP`), prints `VMTEST END pass=.. fail=.. skip=..` and
//! powers the machine off.
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

/// One test process may run this long before it is killed and counted as failed.
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
/// past [`TEST_TIMEOUT`] gets a `FAIL` line from here.
fn run_test(name: &str) -> Tally {
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
            Ok(None) if start.elapsed() > TEST_TIMEOUT => {
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
        "VMTEST BEGIN kernel={} cpus={} nodes={} mem_nodes={}",
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/sys/devices/system/cpu/online"),
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
    for name in names.split_whitespace() {
        let t = run_test(name);
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
