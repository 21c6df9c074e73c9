//! Reading small files (sysfs, procfs) into a caller's buffer.

/// Reads up to `buf.len()` bytes of the file at the NUL-terminated `path`. Returns the
/// number of bytes read, or `None` when the file cannot be opened. No cancellation
/// point: see [`nocancel`](super::nocancel).
pub fn read(path: &core::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    let fd = super::nocancel::open_read(path);
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        let n = super::nocancel::read(fd, &mut buf[len..]);
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    super::nocancel::close(fd);
    Some(len)
}
