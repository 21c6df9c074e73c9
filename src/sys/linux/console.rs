//! Standard error and abort, for `sys::io`.

/// Writes all of `bytes` to standard error, ignoring failures (no cancellation point:
/// see [`nocancel`](super::nocancel)).
pub fn write_stderr(bytes: &[u8]) {
    super::process::write_all(2, bytes);
}

/// Ends the process at once (`abort`: SIGABRT, a core dump where enabled).
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}
