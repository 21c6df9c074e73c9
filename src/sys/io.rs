//! Messages written without allocating, for warnings and aborts: one `cpuslab: ...`
//! line at a time, through the implementation's console (`write(2)` and `abort` on
//! Linux).

use core::fmt;

/// Writes all of `bytes` to standard error, ignoring failures.
pub fn write_stderr(bytes: &[u8]) {
    super::console::write_stderr(bytes);
}

/// A fixed buffer that formats without allocating; text past its end is dropped.
pub struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// What has been written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> Default for StackBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one `cpuslab: ...` line to standard error and aborts the process. Used for
/// heap corruption, where carrying on would hand out memory twice.
#[cold]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    let mut line = StackBuf::<256>::new();
    let _ = fmt::write(&mut line, format_args!("cpuslab: {args}\n"));
    write_stderr(line.as_bytes());
    super::console::abort()
}

/// Writes one `cpuslab: ...` warning line to standard error.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut line = StackBuf::<256>::new();
    let _ = fmt::write(&mut line, format_args!("cpuslab: {args}\n"));
    write_stderr(line.as_bytes());
}
