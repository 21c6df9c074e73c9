//! The calling thread's `errno`, for the C interface: set on failure as glibc does, and
//! kept unchanged across calls that succeed (a failed system call inside the allocator
//! must not leak into the caller's `errno`).

use core::ffi::c_int;
use core::sync::atomic::{AtomicIsize, Ordering};

/// Out of memory.
pub const ENOMEM: c_int = libc::ENOMEM;
/// Invalid argument.
pub const EINVAL: c_int = libc::EINVAL;
/// No such process or thread.
pub const ESRCH: c_int = libc::ESRCH;
/// Not implemented.
pub const ENOSYS: c_int = libc::ENOSYS;
/// Not permitted.
pub const EPERM: c_int = libc::EPERM;
/// Bad address.
pub const EFAULT: c_int = libc::EFAULT;
/// I/O error (pages that could not be moved).
pub const EIO: c_int = libc::EIO;
/// Cross-device (a move between nodes refused).
pub const EXDEV: c_int = libc::EXDEV;
/// Busy.
pub const EBUSY: c_int = libc::EBUSY;
/// No space.
pub const ENOSPC: c_int = libc::ENOSPC;
/// Permission denied.
pub const EACCES: c_int = libc::EACCES;

/// Offset of `errno` from the thread pointer; `UNKNOWN` until first measured.
///
/// glibc's `errno` is an initial-exec TLS variable of libc.so, so it sits at the same
/// offset from the thread pointer in every thread: measuring it once turns each later
/// access into a thread-pointer read and an add, instead of a call to
/// `__errno_location` through the PLT (which cost a quarter of the time of
/// malloc+free).
static OFFSET: AtomicIsize = AtomicIsize::new(UNKNOWN);
const UNKNOWN: isize = isize::MIN;

/// The calling thread's `errno` variable.
#[inline(always)]
pub fn location() -> *mut c_int {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let offset = OFFSET.load(Ordering::Relaxed);
        if offset != UNKNOWN {
            // On these targets `thread_id` is the thread pointer.
            return super::cpu::thread_id().wrapping_add_signed(offset) as *mut c_int;
        }
        measure()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: no preconditions; glibc returns the address of this thread's `errno`.
    unsafe {
        libc::__errno_location()
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[cold]
fn measure() -> *mut c_int {
    // SAFETY: no preconditions; glibc returns the address of this thread's `errno`,
    // valid for the thread's whole life.
    let at = unsafe { libc::__errno_location() };
    let offset = (at as isize).wrapping_sub(super::cpu::thread_id() as isize);
    OFFSET.store(offset, Ordering::Relaxed);
    at
}

/// Reads `errno`.
#[inline]
pub fn get() -> c_int {
    // SAFETY: the location is this thread's live `errno`.
    unsafe { *location() }
}

/// Sets `errno`.
#[inline]
pub fn set(value: c_int) {
    // SAFETY: the location is this thread's live `errno`.
    unsafe { *location() = value }
}

/// `errno` as it was when [`Saved::new`] ran, to be put back after a call that
/// succeeded or replaced by an error code after one that failed.
pub struct Saved {
    location: *mut c_int,
    value: c_int,
}

impl Saved {
    /// Remembers the current `errno`.
    #[inline(always)]
    pub fn new() -> Self {
        let location = location();
        // SAFETY: the location is this thread's live `errno`.
        let value = unsafe { *location };
        Self { location, value }
    }

    /// Puts the remembered value back.
    #[inline(always)]
    pub fn restore(self) {
        // SAFETY: as in `new`; a `Saved` never leaves its thread (it is not `Send`).
        unsafe { *self.location = self.value }
    }

    /// Sets `errno` to `code` instead.
    #[inline(always)]
    pub fn fail(self, code: c_int) {
        // SAFETY: as in `restore`.
        unsafe { *self.location = code }
    }
}

impl Default for Saved {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_is_glibcs_errno_in_every_thread() {
        let check = || {
            for _ in 0..2 {
                // SAFETY: no preconditions.
                assert_eq!(location(), unsafe { libc::__errno_location() });
            }
            set(1234);
            assert_eq!(get(), 1234);
            // SAFETY: no preconditions.
            assert_eq!(unsafe { *libc::__errno_location() }, 1234);
        };
        check();
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(check)).collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
