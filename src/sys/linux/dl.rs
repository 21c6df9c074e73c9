//! The dynamic loader: keeping the object cpuslab lives in mapped for the life of the
//! process.
//!
//! A Rust library (a Python extension, a plugin) that uses `CpuSlab` as its global
//! allocator can be unloaded with `dlclose`. Its code and statics would go with it
//! while other threads still point into them: each thread's rseq area names a
//! descriptor in the library's `__rseq_cs` section (the kernel reads it on the next
//! preemption and kills the thread with SIGSEGV when it is gone), the RCU
//! grace-period thread runs the library's code, and blocks the library handed out
//! may still be freed by the host. So once cpuslab has booted, its object is marked
//! `RTLD_NODELETE`, as if linked with `-z nodelete`: `dlclose` then drops the
//! reference but leaves the object mapped, and a later `dlopen` finds the same one.

use core::ffi::c_void;

/// Marks the loaded object that holds this function `RTLD_NODELETE`. Does nothing for
/// the main program (it is never unloaded). Returns whether the object is now pinned.
///
/// Takes the loader's lock and may allocate (an error message): call it where a
/// nested allocation is served, after boot.
pub fn pin_own_object() -> bool {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads the address; `info` is a live out-parameter.
    let found = unsafe { libc::dladdr(pin_own_object as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: `dli_fname` is the loader's NUL-terminated name of a loaded object;
    // RTLD_NOLOAD only looks it up (the main program is not found by its name).
    let handle = unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
    if handle.is_null() {
        // SAFETY: clears the loader's error state; no preconditions.
        unsafe { libc::dlerror() };
        return false;
    }
    // The flag stays; only the reference the lookup took is given back.
    // SAFETY: `handle` came from the dlopen above.
    unsafe { libc::dlclose(handle) };
    true
}
