//! Environment lookup without allocating (std's `env::var` builds a `String`).

/// Returns the value of the NUL-terminated `name`, if set.
pub fn get(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns null or a NUL-terminated string that lives until the
    // environment changes; cpuslab reads its options once, at boot.
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}
