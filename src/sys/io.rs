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

    /// Appends `s` (cut at the buffer's end).
    pub fn push_str(&mut self, s: &str) {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }

    /// Appends `n` in decimal (cut at the buffer's end), without `core::fmt`: boot names
    /// its caches with it, and `fmt`'s digit table sat alone in a 64 KiB window of the C
    /// library's read-only data that nothing else a small program runs touches, so
    /// formatting one number made the kernel map 40 KiB more of the file.
    pub fn push_decimal(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            if self.len == N {
                return;
            }
            self.buf[self.len] = d;
            self.len += 1;
        }
    }
}

impl<const N: usize> Default for StackBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
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

#[cfg(test)]
mod tests {
    use super::StackBuf;

    fn decimal<const N: usize>(n: u64) -> StackBuf<N> {
        let mut b = StackBuf::<N>::new();
        b.push_str("kmalloc-");
        b.push_decimal(n);
        b
    }

    #[test]
    fn push_decimal_writes_what_fmt_writes() {
        for n in [0, 7, 10, 64, 1024, 24576, 1 << 40, u64::MAX] {
            assert_eq!(
                decimal::<32>(n).as_bytes(),
                format!("kmalloc-{n}").as_bytes()
            );
        }
    }

    #[test]
    fn push_decimal_stops_at_the_end() {
        assert_eq!(decimal::<10>(24576).as_bytes(), b"kmalloc-24");
        assert_eq!(decimal::<8>(5).as_bytes(), b"kmalloc-");
    }
}
