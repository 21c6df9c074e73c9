//! This process: its id and name, for reports that several processes write to one
//! terminal, and a copy of its standard error that outlives the program's own
//! `close(2)` (coreutils close stderr in an `atexit` handler, before the report at
//! exit is written).

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The limit on the address space cpuslab may map, in bytes: the smaller of the
/// address-space limit (`RLIMIT_AS`, what `ulimit -v` sets) and the data limit
/// (`RLIMIT_DATA`, `ulimit -d`, which counts private writable mappings, so every
/// reservation of cpuslab's, touched or not); None when there is neither. In the
/// program's own sandbox ([`sandboxed_since_boot`]) the value last read: `getrlimit`
/// (`prlimit64(2)`) is no call glibc's malloc makes, and OpenSSH's filter kills on it.
pub fn address_space_limit() -> Option<usize> {
    if sandboxed_since_boot() {
        let last = AS_LIMIT.load(Ordering::Relaxed);
        return (last != usize::MAX).then_some(last);
    }
    let limit = [libc::RLIMIT_AS, libc::RLIMIT_DATA]
        .into_iter()
        .filter_map(|resource| {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the struct it is given and nothing else.
            let ok = unsafe { libc::getrlimit(resource, &mut r) } == 0;
            (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as usize)
        })
        .min();
    AS_LIMIT.store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    limit
}

/// The last [`address_space_limit`] read (`usize::MAX`: none).
static AS_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The process id.
pub fn pid() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The command name (`/proc/self/comm`, at most 15 bytes) copied into `buf`; empty
/// when procfs is not mounted.
pub fn comm(buf: &mut [u8; 16]) -> &[u8] {
    let n = super::file::read(c"/proc/self/comm", buf).unwrap_or(0);
    let name = &buf[..n];
    name.strip_suffix(b"\n").unwrap_or(name)
}

/// Duplicates standard error onto a close-on-exec descriptor numbered 100 or more (out
/// of the way of programs that expect the lowest free numbers), or 3 or more when the
/// descriptor limit is lower. `None` when standard error is closed.
pub fn dup_stderr() -> Option<c_int> {
    for lowest in [100, 3] {
        // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor and touches no memory.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, lowest) };
        if fd >= 0 {
            return Some(fd);
        }
    }
    None
}

/// The identity (device, inode) of the file open on `fd`, to tell later whether the
/// descriptor still refers to it (a program may close it and reuse the number).
#[allow(clippy::unnecessary_cast)] // `dev_t` and `ino_t` are narrower on some targets
pub fn file_identity(fd: c_int) -> Option<(u64, u64)> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into the buffer, or fails.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Ignores SIGPIPE from now on, so that a report written while the process exits into
/// a pipe whose reader is gone fails quietly instead of killing the process (and
/// changing its exit status).
pub fn ignore_sigpipe() {
    // SAFETY: installs the SIG_IGN disposition; no handler code is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Writes all of `bytes` to `fd`, ignoring failures (no cancellation point: see
/// [`nocancel`](super::nocancel)).
pub fn write_all(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = super::nocancel::write(fd, bytes);
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The calling thread's seccomp state from `/proc/thread-self/status`: the mode (0:
/// none, 1: strict, 2: filter) and, on Linux 5.9 and later, the number of filters
/// installed (`u32::MAX` where the kernel does not say). `None` when it cannot be read
/// (no /proc, or a filter refused the open). Reads into a stack buffer; allocates
/// nothing.
pub fn seccomp_state() -> Option<(u32, u32)> {
    read_seccomp().ok()
}

/// [`seccomp_state`], or why it could not be read: `Err(true)` when the open was
/// refused (`EACCES` or `EPERM`: a filter that denies it, as OpenSSH's sandbox
/// denies `open`), `Err(false)` for anything else (no /proc: a `chroot`).
fn read_seccomp() -> Result<(u32, u32), bool> {
    let mut buf = [0u8; 4096];
    // The calling thread's filters are what a thread it creates inherits; before Linux
    // 3.17 only the process's (its main thread's) can be read.
    let len = super::file::read(c"/proc/thread-self/status", &mut buf)
        .or_else(|| super::file::read(c"/proc/self/status", &mut buf))
        .ok_or_else(|| matches!(super::errno::get(), libc::EACCES | libc::EPERM))?;
    let text = &buf[..len];
    let mode = status_field(text, b"\nSeccomp:").ok_or(false)?;
    let filters = status_field(text, b"\nSeccomp_filters:").unwrap_or(u32::MAX);
    Ok((mode, filters))
}

/// The seccomp state at boot ([`seccomp_state`] as `mode << 32 | filters`), or
/// `u64::MAX` when it could not be read.
static BOOT_SECCOMP: AtomicU64 = AtomicU64::new(u64::MAX);

/// Set once a thread was found under a filter added since boot: filters are never
/// removed, and a forked child inherits them (a filter on one thread alone makes all
/// of them careful).
static SANDBOXED: AtomicBool = AtomicBool::new(false);

/// Set once the first boot ended: until then the state boot noted is the reference
/// itself, and nothing is "since boot" (boot's own calls, percpu chunks and
/// registrations, would each read the state again: 8 reads a process, 0.2 ms of every
/// short one, a shell command's).
static BOOT_DONE: AtomicBool = AtomicBool::new(false);

/// Notes the seccomp state the process started with (the first boot: one retried
/// after a failure keeps what the first saw).
pub fn note_boot_seccomp() {
    if BOOT_SECCOMP.load(Ordering::Relaxed) != u64::MAX {
        return;
    }
    if let Some((mode, filters)) = seccomp_state() {
        BOOT_SECCOMP.store(
            u64::from(mode) << 32 | u64::from(filters),
            Ordering::Relaxed,
        );
    }
}

/// Whether the calling thread is under a seccomp filter the process installed since
/// boot: the program's own sandbox, written for what that program does, which may kill
/// it for a system call glibc's malloc never makes (OpenSSH's pre-authentication
/// sandbox kills on `membarrier(2)`, `clone(2)` and `sched_setaffinity(2)`). A filter
/// the process started under (a container's, a service manager's) was written for
/// whole programs. `Some(true)` once the state shows a filter boot did not see, or once
/// a filter refuses the open of the state where boot could read it; from then on for
/// good. `None` when the state cannot be read otherwise (no /proc: a `chroot`).
/// (Before Linux 5.9 the kernel does not count filters: one added on top of a filter
/// the process started under goes unnoticed there.)
///
/// Reads `/proc/thread-self/status` (15-18 µs here) until it says so: for the rare
/// system calls that need it, never on a fast path.
pub fn sandbox_since_boot() -> Option<bool> {
    if SANDBOXED.load(Ordering::Relaxed) {
        return Some(true);
    }
    if !BOOT_DONE.load(Ordering::Relaxed) {
        return Some(false);
    }
    let me = super::cpu::thread_id();
    let scope = LOOKED.load(Ordering::Relaxed);
    if scope == me | 1 {
        return Some(false);
    }
    let boot = BOOT_SECCOMP.load(Ordering::Relaxed);
    let now = match read_seccomp() {
        Ok((mode, filters)) => {
            mode != 0 && (boot == u64::MAX || boot != u64::from(mode) << 32 | u64::from(filters))
        }
        Err(refused) if refused && boot != u64::MAX => true,
        Err(_) => return None,
    };
    if now {
        SANDBOXED.store(true, Ordering::Relaxed);
    } else if scope == me {
        // Inside `with_one_look`: this look stands for the rest of it.
        LOOKED.store(me | 1, Ordering::Relaxed);
    }
    Some(now)
}

/// The thread (`cpu::thread_id`) inside [`with_one_look`] (0: none), with the low bit
/// set once a look there found no sandbox: that look stands for the rest of the call.
/// (Thread pointers are aligned, so the bit is free.)
static LOOKED: AtomicUsize = AtomicUsize::new(0);

/// Runs `f`, in which [`sandbox_since_boot`] looks at most once for the calling
/// thread, not before each system call: for operations that make many of the rare
/// calls in a row (`malloc_trim` emptying every slab cache makes a membarrier(2) for
/// each cache that holds objects, and each look costs 15-18 µs). The thread cannot
/// install a filter while in `f`; another thread's filter synchronised onto it
/// (`TSYNC`) may land between a look and the call it guards whether one look is made
/// or many. One thread at a time: another meanwhile looks as usual.
pub fn with_one_look<R>(f: impl FnOnce() -> R) -> R {
    /// Ends the scope, also when `f` unwinds (a test's panic).
    struct Scope(bool);
    impl Drop for Scope {
        fn drop(&mut self) {
            if self.0 {
                LOOKED.store(0, Ordering::Relaxed);
            }
        }
    }
    let me = super::cpu::thread_id();
    debug_assert_eq!(me & 1, 0);
    let _scope = Scope(
        LOOKED
            .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok(),
    );
    f()
}

/// fork, child: a [`with_one_look`] another thread of the parent was in did not come
/// along; its scope ends here, or every later one would find the slot taken.
pub fn after_fork() {
    LOOKED.store(0, Ordering::Relaxed);
}

/// Boot ended (successful or not): from now on [`sandbox_since_boot`] looks.
pub fn boot_done() {
    BOOT_DONE.store(true, Ordering::Relaxed);
}

/// [`sandbox_since_boot`] is `Some(true)`.
pub fn sandboxed_since_boot() -> bool {
    sandbox_since_boot() == Some(true)
}

/// The number after `key` in a `/proc/.../status` text.
fn status_field(text: &[u8], key: &[u8]) -> Option<u32> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit());
    let mut value = None;
    for &d in digits {
        value = Some(
            value
                .unwrap_or(0u32)
                .checked_mul(10)?
                .checked_add(u32::from(d - b'0'))?,
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked while another thread of the parent is inside `with_one_look`
    /// gets the scope slot back (the fork handlers call `after_fork`): its own
    /// operations take it, or each of their calls would look again.
    #[test]
    fn a_forked_child_takes_the_look_scope_again() {
        use std::sync::{Arc, Barrier};
        crate::init::ensure();
        let inside = Arc::new(Barrier::new(2));
        let leave = Arc::new(Barrier::new(2));
        let (i, l) = (inside.clone(), leave.clone());
        let t = std::thread::spawn(move || {
            with_one_look(|| {
                i.wait();
                l.wait();
            })
        });
        inside.wait();
        let held = LOOKED.load(Ordering::Relaxed);
        // SAFETY: the child only reads atomics, runs `with_one_look` and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let me = super::super::cpu::thread_id();
            let mine = with_one_look(|| LOOKED.load(Ordering::Relaxed) & !1 == me);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if mine { 0 } else { 1 }) };
        }
        leave.wait();
        t.join().unwrap();
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_ne!(held, 0, "the thread was inside its scope at the fork");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
    }
}
