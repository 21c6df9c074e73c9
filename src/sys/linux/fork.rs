//! fork(2) hooks.

use core::ffi::{c_int, c_void};

#[cfg(target_env = "gnu")]
extern "C" {
    /// What glibc's `pthread_atfork` calls: it lives in `libc_nonshared.a`, linked
    /// into each object, and calls this through the object's PLT, whose page is
    /// touched by nothing else at run time (calls from Rust go through the GOT).
    fn __register_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
        dso_handle: *const c_void,
    ) -> c_int;
    /// The linked object's handle (crtbegin defines it in every ELF object), by which
    /// `dlclose` drops the handlers of a library it unloads.
    static __dso_handle: u8;
}

/// Registers the three `pthread_atfork` handlers. Returns false when glibc refused.
pub fn register(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: the handlers are plain functions that live as long as this object, and
    // `__dso_handle` names it, as `pthread_atfork` itself would pass.
    let r = unsafe {
        __register_atfork(
            Some(prepare),
            Some(parent),
            Some(child),
            core::ptr::addr_of!(__dso_handle).cast(),
        )
    };
    #[cfg(not(target_env = "gnu"))]
    // SAFETY: the handlers are plain functions that live for the whole program.
    let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    r == 0
}
