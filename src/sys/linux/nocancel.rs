//! The system calls the allocator makes that POSIX names cancellation points (`open`,
//! `read`, `close`, `write`, `nanosleep`), made through `syscall(2)`, which is none:
//! what glibc's own allocator does with its `__*_nocancel` calls.
//!
//! A thread that another thread cancelled (`pthread_cancel`, deferred, the default)
//! ends at the next cancellation point it reaches. Through libc's wrappers that point
//! could be inside the allocator: `malloc_trim` reads `/proc/thread-self/status` before
//! each membarrier(2), holding the lock of the chain of caches, and the cancelled
//! thread ended there with the lock held, so the next thread to trim waited for good.
//! The thread ends at the program's own cancellation point instead.

use core::ffi::{c_int, CStr};

/// `open(path, O_RDONLY | O_CLOEXEC)`: a descriptor, or -1 with errno set.
pub fn open_read(path: &CStr) -> c_int {
    // SAFETY: `path` is NUL-terminated; openat reads it and nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        ) as c_int
    }
}

/// `read(fd, buf)`: the bytes read, 0 at the end, -1 with errno set.
pub fn read(fd: c_int, buf: &mut [u8]) -> isize {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) as isize }
}

/// `write(fd, bytes)`: the bytes written, or -1 with errno set.
pub fn write(fd: c_int, bytes: &[u8]) -> isize {
    // SAFETY: the kernel reads at most `bytes.len()` bytes from `bytes`.
    unsafe { libc::syscall(libc::SYS_write, fd, bytes.as_ptr(), bytes.len()) as isize }
}

/// `close(fd)`; a failure is ignored, as the callers have nothing to do about it.
pub fn close(fd: c_int) {
    // SAFETY: closes a descriptor the caller owns; no memory is involved.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Sleeps `ts`, relative, on the monotonic clock; on a signal, 0 is not returned and
/// the time left is written back into `ts`. Returns the kernel's result (0, or an
/// error number: `clock_nanosleep` sets no errno).
pub fn sleep(ts: &mut libc::timespec) -> c_int {
    let left: *mut libc::timespec = ts;
    // SAFETY: both pointers are the live `ts`; the kernel reads the request before it
    // writes the remainder.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_nanosleep,
            libc::CLOCK_MONOTONIC,
            0,
            left as *const libc::timespec,
            left,
        )
    };
    if r == 0 {
        0
    } else {
        super::errno::get()
    }
}
