//! The C++ runtime's own operators, reached after cpuslab's: for what only the runtime
//! can do (call the program's `new_handler` and throw `std::bad_alloc`), and for a
//! program that replaces some operators itself.
//!
//! The C interface's `operator new` (x86_64) serves what it can itself. When it cannot
//! (out of memory, or a size past any block), it jumps to the definition that follows
//! cpuslab's in the lookup order (libstdc++'s or libc++'s, `dlsym(RTLD_NEXT)`), which
//! calls cpuslab's `malloc` (or `aligned_alloc`) again in its loop around the handler
//! and throws when that fails. Where the program defines some of the operators itself,
//! every operator of the library's jumps to the runtime's ([`decide_operators`]). The
//! jump is a tail jump by [`cpuslab_cxx_next`], an assembly stub: an exception then
//! unwinds from the runtime's frame straight into the program's, through no frame of
//! this library. The library's frames carry unwind tables without a personality
//! routine, which an unwinder would pass through, but that is not promised for every
//! build (an unoptimised one, or one whose frames need cleanups); with no frame on the
//! stack nothing depends on it. `tests/capi/cxx_test.cc` checks the stack at the
//! `new_handler`.

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// The operators, by the index [`cpuslab_cxx_next`] takes: `operator new(size_t)`.
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
/// The first `operator delete` form: the forms from here on are in [`NAMES`]' order.
pub const DELETE: usize = 8;

/// The Itanium C++ ABI's names of the operators, by index: the eight `new` forms,
/// then the twelve `delete` forms.
pub const NAMES: [&CStr; 20] = [
    c"_Znwm",
    c"_Znam",
    c"_ZnwmRKSt9nothrow_t",
    c"_ZnamRKSt9nothrow_t",
    c"_ZnwmSt11align_val_t",
    c"_ZnamSt11align_val_t",
    c"_ZnwmSt11align_val_tRKSt9nothrow_t",
    c"_ZnamSt11align_val_tRKSt9nothrow_t",
    c"_ZdlPv",
    c"_ZdaPv",
    c"_ZdlPvm",
    c"_ZdaPvm",
    c"_ZdlPvRKSt9nothrow_t",
    c"_ZdaPvRKSt9nothrow_t",
    c"_ZdlPvSt11align_val_t",
    c"_ZdaPvSt11align_val_t",
    c"_ZdlPvmSt11align_val_t",
    c"_ZdaPvmSt11align_val_t",
    c"_ZdlPvSt11align_val_tRKSt9nothrow_t",
    c"_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

/// Whether operator `op` is a `new` form that reports failure by a null rather than
/// by throwing.
const fn is_nothrow(op: usize) -> bool {
    matches!(
        op,
        NEW_NOTHROW | NEW_ARRAY_NOTHROW | NEW_ALIGNED_NOTHROW | NEW_ARRAY_ALIGNED_NOTHROW
    )
}

/// Whether the library's operators serve the program ([`OURS`]), or the program (or
/// an object before the library in the lookup order) defines some of them itself
/// ([`FORWARD`]): 0 until the first operator call decides.
static STATE: AtomicU8 = AtomicU8::new(0);
/// See [`STATE`]: the library's operators serve.
const OURS: u8 = 1;
/// See [`STATE`]: every operator of the library's forwards to the C++ runtime's.
const FORWARD: u8 = 2;

/// Whether the library's operators serve the program: true once decided so, when
/// [`decide_operators`] releases the hold bit `HOLD_CXX`, which the unaligned forms'
/// fast paths test with `malloc`'s and `free`'s own hold bits.
#[inline(always)]
pub fn operators_ours() -> bool {
    crate::sys::rseq::held() & crate::sys::rseq::HOLD_CXX == 0
}

/// [`operators_ours`], deciding it at the first call.
///
/// A program that replaces some of C++'s operators (a pool's `operator new(size_t)`
/// and `operator delete(void *)`, say) gets the C++ runtime's default forms for the
/// rest, which call its replacements: its sized `delete`, which compilers emit for
/// most deletes, reaches its own `operator delete`. With the library's forms in
/// between, that sized `delete` would hand the pool's pointer to `free`. So where any
/// of the operators resolves outside the library (the program's definitions come
/// before a preloaded library's), and the runtime's own forms can be found, every
/// form of the library's forwards to the runtime's, as if it exported none.
#[cold]
pub fn decide_operators() -> bool {
    let mut state = STATE.load(Ordering::Acquire);
    if state == 0 {
        let replaced = NAMES.iter().any(|name| {
            // SAFETY: a NUL-terminated name; `RTLD_DEFAULT` is a pseudo-handle dlsym
            // accepts.
            let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            !sym.is_null() && !in_own_object(sym)
        });
        state = if replaced && find_runtime(NAMES[DELETE]) != 0 {
            FORWARD
        } else {
            OURS
        };
        STATE.store(state, Ordering::Release);
        if state == OURS {
            crate::sys::rseq::release(crate::sys::rseq::HOLD_CXX);
        }
    }
    state == OURS
}

/// The runtime's definitions, by variant: 0 before the first lookup.
static NEXT: [AtomicUsize; 20] = [const { AtomicUsize::new(0) }; 20];

extern "C" {
    /// Jumps to the C++ runtime's operator `op` (an index of [`NAMES`]) with the first
    /// three arguments as they are: its result is the caller's result, and its
    /// exception the caller's caller's. Called in tail position, it leaves no frame of
    /// cpuslab's on the stack. Without a runtime, a nothrow `new` returns null and any
    /// other operator aborts with a `cpuslab:` line (there is no way to throw).
    ///
    /// # Safety
    /// `op` is an index of [`NAMES`]; `a`, `b` and `c` are that operator's arguments
    /// (unused ones anything), with that operator's contract.
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

/// What a nothrow `new` without a runtime after cpuslab's returns.
extern "C" fn null_result() -> *mut c_void {
    core::ptr::null_mut()
}

/// The address [`cpuslab_cxx_next`] jumps to for operator `op`: the runtime's
/// definition, looked up at its first use (a program that never runs out of memory and
/// replaces no operator never looks), or [`null_result`] for a nothrow `new` without
/// one.
extern "C" fn lookup(op: usize) -> usize {
    let Some(slot) = NEXT.get(op) else {
        crate::sys::io::fatal(format_args!("C++ operator {op}: no such operator"));
    };
    let f = slot.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    let f = find_runtime(NAMES[op]);
    if f != 0 {
        slot.store(f, Ordering::Release);
        return f;
    }
    // Not kept: a runtime loaded later is found then.
    if is_nothrow(op) {
        return null_result as *const () as usize;
    }
    crate::sys::io::fatal(format_args!(
        "{}: no C++ runtime to hand it to (out of memory, or a replaced operator)",
        NAMES[op].to_str().unwrap_or("operator")
    ))
}

/// The C++ runtime's definition of `name`, 0 where there is none: the one after
/// cpuslab's in the lookup order, else that of a libstdc++ or libc++ loaded where
/// that order does not reach (a C++ extension a C host loaded with `RTLD_LOCAL`). A
/// definition in cpuslab's own object, where the library was linked into the program
/// rather than preloaded, counts as none: jumping to it would loop. A lookup allocates
/// at most its error message (through cpuslab's `malloc`, holding no lock of its; and
/// before glibc 2.34 a per-thread error buffer at the first call).
#[cold]
fn find_runtime(name: &CStr) -> usize {
    // SAFETY: a NUL-terminated name; `RTLD_NEXT` is a pseudo-handle dlsym accepts.
    let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if !sym.is_null() && !in_own_object(sym) {
        return sym as usize;
    }
    for lib in [c"libstdc++.so.6", c"libc++.so.1"] {
        // SAFETY: a NUL-terminated name; RTLD_NOLOAD only finds an object already
        // loaded (and takes a reference, dropped below).
        let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            continue;
        }
        // SAFETY: a handle dlopen returned; a NUL-terminated name.
        let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
        // SAFETY: the reference RTLD_NOLOAD took; the object stays loaded (the program
        // holds its own reference), and with it `sym`.
        unsafe { libc::dlclose(handle) };
        if !sym.is_null() && !in_own_object(sym) {
            return sym as usize;
        }
    }
    // SAFETY: clears the loader's error state; no preconditions.
    unsafe { libc::dlerror() };
    0
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
        assert_eq!(NAMES[DELETE], c"_ZdlPv");
        for (op, name) in NAMES.iter().enumerate() {
            let name = name.to_str().unwrap();
            let new = op < DELETE;
            assert_eq!(name.starts_with("_Zn"), new, "{name}");
            assert_eq!(
                is_nothrow(op),
                new && name.ends_with("RKSt9nothrow_t"),
                "{name}"
            );
            assert_eq!(
                name.starts_with("_Zna") || name.starts_with("_Zda"),
                op % 2 == 1,
                "{name}"
            );
            if new {
                assert_eq!(name.contains("align_val_t"), op >= NEW_ALIGNED, "{name}");
            }
        }
    }

    /// In a program that defines no operator of its own (this test binary), the first
    /// decision makes the library's operators serve and releases the hold bit their
    /// fast paths test; before that, and while they forward, the bit turns them away.
    #[test]
    fn serving_releases_the_operators_hold() {
        assert!(decide_operators());
        assert!(operators_ours());
        assert_eq!(crate::sys::rseq::held() & crate::sys::rseq::HOLD_CXX, 0);
        // Decided once: a second call changes nothing.
        assert!(decide_operators());
        assert_eq!(STATE.load(Ordering::Relaxed), OURS);
    }

    /// A nothrow `new` that fails returns null through the stub: the runtime's
    /// operator's null where the test binary has a C++ runtime loaded (a dependency's
    /// build may link libstdc++), [`null_result`]'s where it has none.
    #[test]
    fn a_nothrow_failure_returns_null_through_the_stub() {
        // SAFETY: the nothrow variant's arguments: a size and a `nothrow_t` reference
        // (never read by a runtime for the tag type; any address).
        let p = unsafe { cpuslab_cxx_next(usize::MAX, 1, 0, NEW_NOTHROW) };
        assert!(p.is_null());
    }
}
