//! The C++ runtime's own `operator new`, reached after cpuslab's, for what only it can
//! do: call the program's `new_handler` and throw `std::bad_alloc`.
//!
//! The C interface's `operator new` (x86_64) serves what it can itself. When it cannot
//! (out of memory, or a size past any block), it jumps to the definition that follows
//! cpuslab's in the lookup order (libstdc++'s or libc++'s, `dlsym(RTLD_NEXT)`), which
//! calls `malloc` (cpuslab's) again in its loop around the handler and throws when that
//! fails. The jump is a tail jump by [`cpuslab_cxx_next`], an assembly stub: the
//! exception then unwinds from the runtime's frame straight into the program's, and
//! never through a frame of this library, which has no unwinding (a Rust frame with
//! `panic = abort` that an exception crossed would abort the process).

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The `operator new` variants, by the index [`cpuslab_cxx_next`] takes.
pub const NEW: usize = 0;
/// `operator new[](size_t)`.
pub const NEW_ARRAY: usize = 1;
/// `operator new(size_t, const std::nothrow_t &)`.
pub const NEW_NOTHROW: usize = 2;
/// `operator new[](size_t, const std::nothrow_t &)`.
pub const NEW_ARRAY_NOTHROW: usize = 3;
/// `operator new(size_t, std::align_val_t)`.
pub const NEW_ALIGNED: usize = 4;
/// `operator new[](size_t, std::align_val_t)`.
pub const NEW_ARRAY_ALIGNED: usize = 5;
/// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`.
pub const NEW_ALIGNED_NOTHROW: usize = 6;
/// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`.
pub const NEW_ARRAY_ALIGNED_NOTHROW: usize = 7;

/// The Itanium C++ ABI's names of the variants, by index.
pub const NAMES: [&CStr; 8] = [
    c"_Znwm",
    c"_Znam",
    c"_ZnwmRKSt9nothrow_t",
    c"_ZnamRKSt9nothrow_t",
    c"_ZnwmSt11align_val_t",
    c"_ZnamSt11align_val_t",
    c"_ZnwmSt11align_val_tRKSt9nothrow_t",
    c"_ZnamSt11align_val_tRKSt9nothrow_t",
];

/// Whether the variant `op` reports failure by a null rather than by throwing.
const fn is_nothrow(op: usize) -> bool {
    matches!(
        op,
        NEW_NOTHROW | NEW_ARRAY_NOTHROW | NEW_ALIGNED_NOTHROW | NEW_ARRAY_ALIGNED_NOTHROW
    )
}

/// The runtime's definitions, by variant: 0 before the first lookup.
static NEXT: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

extern "C" {
    /// Jumps to the C++ runtime's `operator new` variant `op` with the first three
    /// arguments as they are (the size, then the alignment or the `nothrow_t`, then the
    /// `nothrow_t`): its result is the caller's result, and its exception the caller's
    /// caller's. Called in tail position, it leaves no frame of cpuslab's on the stack.
    /// A nothrow variant without a runtime returns null; a throwing one aborts with a
    /// `cpuslab:` line (there is no way to throw).
    ///
    /// # Safety
    /// `op` is one of the variant indices; `a`, `b` and `c` are that variant's
    /// arguments (unused ones anything).
    pub fn cpuslab_cxx_next(a: usize, b: usize, c: usize, op: usize) -> *mut c_void;
}

// The stub: the three argument registers saved around the lookup (three pushes keep
// the stack 16-byte aligned at the call), then a jump. Call frame information so that
// a debugger or profiler can walk through it; nothing unwinds through it.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.cpuslab_cxx_next,\"ax\",@progbits",
    ".globl cpuslab_cxx_next",
    ".hidden cpuslab_cxx_next",
    ".type cpuslab_cxx_next, @function",
    "cpuslab_cxx_next:",
    ".cfi_startproc",
    "push rdi",
    ".cfi_adjust_cfa_offset 8",
    "push rsi",
    ".cfi_adjust_cfa_offset 8",
    "push rdx",
    ".cfi_adjust_cfa_offset 8",
    "mov rdi, rcx",
    "call {lookup}",
    "pop rdx",
    ".cfi_adjust_cfa_offset -8",
    "pop rsi",
    ".cfi_adjust_cfa_offset -8",
    "pop rdi",
    ".cfi_adjust_cfa_offset -8",
    "jmp rax",
    ".cfi_endproc",
    ".size cpuslab_cxx_next, . - cpuslab_cxx_next",
    ".popsection",
    lookup = sym lookup,
);

/// What a nothrow variant without a runtime after cpuslab's returns.
extern "C" fn null_result() -> *mut c_void {
    core::ptr::null_mut()
}

/// The address [`cpuslab_cxx_next`] jumps to for variant `op`: the runtime's
/// definition, looked up at the first failure (a program that never runs out of
/// memory never looks), or [`null_result`] for a nothrow variant without one.
extern "C" fn lookup(op: usize) -> usize {
    let Some(slot) = NEXT.get(op) else {
        crate::sys::io::fatal(format_args!("operator new: no variant {op}"));
    };
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        f = find(op);
        slot.store(f, Ordering::Release);
    }
    f
}

/// The definition of variant `op` after cpuslab's, or the fallback where there is
/// none (a definition in cpuslab's own object, where the library was linked into the
/// program rather than preloaded, counts as none: jumping to it would loop).
#[cold]
fn find(op: usize) -> usize {
    // SAFETY: a NUL-terminated name; `RTLD_NEXT` is a pseudo-handle dlsym accepts. A
    // lookup allocates nothing when it succeeds, and a failed one only its error
    // message (through cpuslab, holding no lock of its).
    let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, NAMES[op].as_ptr()) };
    if !sym.is_null() && !in_own_object(sym) {
        return sym as usize;
    }
    if is_nothrow(op) {
        return null_result as *const () as usize;
    }
    crate::sys::io::fatal(format_args!(
        "operator new: out of memory, and no C++ runtime after cpuslab to throw \
         std::bad_alloc"
    ))
}

/// Whether `addr` lies in the loaded object this code is in.
fn in_own_object(addr: *mut c_void) -> bool {
    let base = |a: *const c_void| {
        // SAFETY: Dl_info is plain data; all-zero is a valid value.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        // SAFETY: dladdr only reads the address; `info` is a live out-parameter.
        let found = unsafe { libc::dladdr(a, &mut info) };
        (found != 0).then_some(info.dli_fbase as usize)
    };
    base(addr).is_some_and(|b| Some(b) == base(lookup as *const c_void))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of names follows the indices, and only the nothrow variants may
    /// return null.
    #[test]
    fn names_follow_the_indices() {
        assert_eq!(NAMES[NEW], c"_Znwm");
        assert_eq!(NAMES[NEW_ARRAY_ALIGNED], c"_ZnamSt11align_val_t");
        for (op, name) in NAMES.iter().enumerate() {
            let name = name.to_str().unwrap();
            assert_eq!(is_nothrow(op), name.ends_with("RKSt9nothrow_t"), "{name}");
            assert_eq!(name.starts_with("_Znam"), op % 2 == 1, "{name}");
            assert_eq!(name.contains("align_val_t"), op >= NEW_ALIGNED, "{name}");
        }
    }

    /// Without a C++ runtime loaded after this test binary's code (it links none), a
    /// nothrow variant's failure returns null through the stub.
    #[test]
    fn a_nothrow_failure_without_a_runtime_returns_null() {
        // The test binary may link libstdc++ (a dependency's build); either way the
        // stub must return what the runtime's nothrow operator returns for a size no
        // allocation can have: null.
        // SAFETY: the nothrow variant's arguments: a size and a `nothrow_t` reference
        // (never read by a runtime for the tag type; any address).
        let p = unsafe { cpuslab_cxx_next(usize::MAX, 1, 0, NEW_NOTHROW) };
        assert!(p.is_null());
    }
}
