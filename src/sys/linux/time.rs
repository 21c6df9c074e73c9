//! A monotonic clock that does not allocate (the vDSO's `clock_gettime`, see
//! [`vdso`](super::vdso)).

/// Nanoseconds on the monotonic clock.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe {
        super::vdso::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds on the monotonic clock, from its coarse variant: the time of the last
/// tick (1–4 ms old), read from the vDSO without the cycle counter, which costs more
/// than the millisecond answers need. The slab and page slow paths read it for their
/// reap, decay and purge deadlines, as the kernel reads `jiffies`.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe {
        super::vdso::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sleeps the calling thread for `ms` milliseconds (retried when a signal cuts it
/// short; no cancellation point: see [`nocancel`](super::nocancel)).
pub fn sleep_ms(ms: u64) {
    let mut ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    while super::nocancel::sleep(&mut ts) == libc::EINTR {}
}
