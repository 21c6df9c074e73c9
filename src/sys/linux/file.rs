//! Reading small files (sysfs, procfs) into a caller's buffer.

/// Reads up to `buf.len()` bytes of the file at the NUL-terminated `path`. Returns the
/// number of bytes read, or `None` when the file cannot be opened.
pub fn read(path: &core::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed before returning and
    // `read` writes only inside `buf`.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
        Some(len)
    }
}
