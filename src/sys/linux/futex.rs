//! futex(2) wait and wake on a 32-bit word, process-private.

use core::sync::atomic::AtomicU32;

/// Sleeps while `*word == expected`. Spurious wake-ups are possible.
pub fn wait(word: &AtomicU32, expected: u32) {
    futex_wait(word, expected, core::ptr::null());
}

/// Sleeps while `*word == expected`, at most `timeout_ns`.
pub fn wait_timeout(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    futex_wait(word, expected, &ts);
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: *const libc::timespec) {
    // SAFETY: the word lives as long as the reference; FUTEX_WAIT only reads it, and
    // `timeout` is null or a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timeout,
        );
    }
}

/// Wakes up to `n` waiters on `word`.
pub fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE does not access the word's memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// Gives the CPU to another runnable thread.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe {
        libc::sched_yield();
    }
}
