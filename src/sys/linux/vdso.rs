//! The vDSO's `clock_gettime`, found in the kernel's image and called directly.
//!
//! glibc's `clock_gettime` is a wrapper around the same function; calling it costs a
//! small program 56-64 KiB of peak RSS, because the wrapper sits in a 64 KiB window of
//! libc's text that nothing else such a program runs touches, and the kernel maps the
//! whole window around the fault (`capi/footprint.sh`: 2012 -> 1956 KiB with the
//! wrapper interposed by a direct call). The image is an ELF shared object the kernel
//! maps into every process (`AT_SYSINFO_EHDR`); its dynamic symbol table names
//! `__vdso_clock_gettime`. Where there is no image (a kernel booted with `vdso=0`,
//! valgrind) or no such symbol, [`clock_gettime`] falls back to libc's.

use core::sync::atomic::{AtomicUsize, Ordering};

/// An entry of an ELF image's dynamic section (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

// ELF constants the `libc` crate does not carry (the ELF specification's values).
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const SHN_UNDEF: u16 = 0;
const STT_FUNC: u8 = 2;

/// `int (*)(clockid_t, struct timespec *)`, the vDSO's and libc's alike.
type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The function [`clock_gettime`] calls, as a `usize`: 0 until it is looked up.
static FUNCTION: AtomicUsize = AtomicUsize::new(0);

/// `clock_gettime(clock, ts)` through the vDSO when it has one, else libc's.
///
/// # Safety
/// `ts` points to a writable `timespec`.
#[inline]
pub unsafe fn clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> libc::c_int {
    let mut f = FUNCTION.load(Ordering::Relaxed);
    if f == 0 {
        f = resolve();
    }
    // SAFETY: `FUNCTION` only ever holds a `ClockGettime` (`resolve`); the caller
    // passes a writable `timespec`.
    unsafe { core::mem::transmute::<usize, ClockGettime>(f)(clock, ts) }
}

/// Looks the function up once (racing threads find the same one).
#[cold]
fn resolve() -> usize {
    let libc_fn: ClockGettime = libc::clock_gettime;
    let f = lookup(c"__vdso_clock_gettime").unwrap_or(libc_fn as usize);
    FUNCTION.store(f, Ordering::Relaxed);
    f
}

/// The address of the vDSO's function `name`, if the process has a vDSO that defines
/// it.
fn lookup(name: &core::ffi::CStr) -> Option<usize> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return None;
    }
    // SAFETY: the kernel maps a whole, valid ELF image at `base` for the life of the
    // process (`AT_SYSINFO_EHDR`); every address read below lies inside it, as its own
    // headers and dynamic section give them.
    unsafe { find_symbol(base, name.to_bytes()) }
}

/// Finds the defined function `name` in the dynamic symbol table of the ELF image
/// mapped at `base` (walked through `DT_HASH`, which the kernel's vDSO carries).
///
/// # Safety
/// `base` maps a whole, valid 64-bit ELF shared object.
unsafe fn find_symbol(base: usize, name: &[u8]) -> Option<usize> {
    // SAFETY: every read is inside the image (its headers, dynamic section, symbol,
    // string and hash tables, at the addresses its own headers give), per the contract.
    unsafe {
        let eh = &*(base as *const libc::Elf64_Ehdr);
        if eh.e_ident[..4] != *b"\x7fELF" || eh.e_ident[4] != 2 {
            return None;
        }
        let phdrs = core::slice::from_raw_parts(
            (base + eh.e_phoff as usize) as *const libc::Elf64_Phdr,
            eh.e_phnum as usize,
        );
        // The image's addresses are relative to where its first segment was linked.
        let load = phdrs.iter().find(|p| p.p_type == libc::PT_LOAD)?;
        let bias = base
            .wrapping_add(load.p_offset as usize)
            .wrapping_sub(load.p_vaddr as usize);
        let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
        let mut dyn_ = bias.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
        let (mut symtab, mut strtab, mut hash) = (0usize, 0usize, 0usize);
        while (*dyn_).d_tag != DT_NULL {
            let at = bias.wrapping_add((*dyn_).d_val as usize);
            match (*dyn_).d_tag {
                DT_SYMTAB => symtab = at,
                DT_STRTAB => strtab = at,
                DT_HASH => hash = at,
                _ => {}
            }
            dyn_ = dyn_.add(1);
        }
        if symtab == 0 || strtab == 0 || hash == 0 {
            return None;
        }
        // DT_HASH: nbucket, nchain, ...; nchain is the number of symbols.
        let nsyms = *(hash as *const u32).add(1) as usize;
        let syms = core::slice::from_raw_parts(symtab as *const libc::Elf64_Sym, nsyms);
        syms.iter()
            .find(|s| {
                s.st_shndx != SHN_UNDEF
                    && s.st_info & 0xf == STT_FUNC
                    && core::ffi::CStr::from_ptr((strtab + s.st_name as usize) as *const _)
                        .to_bytes()
                        == name
            })
            .map(|s| bias.wrapping_add(s.st_value as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vDSO defines the function on x86_64 Linux, and its clock agrees with libc's.
    #[test]
    fn finds_the_vdso_clock_and_it_agrees_with_libc() {
        let f = lookup(c"__vdso_clock_gettime").expect("the vDSO's clock_gettime");
        let libc_fn: ClockGettime = libc::clock_gettime;
        assert_ne!(f, libc_fn as usize);
        assert!(lookup(c"__vdso_no_such_function").is_none());
        let read = |via_vdso: bool| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is writable.
            let r = unsafe {
                if via_vdso {
                    clock_gettime(libc::CLOCK_MONOTONIC, &mut ts)
                } else {
                    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts)
                }
            };
            assert_eq!(r, 0);
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        let (a, b, c) = (read(false), read(true), read(false));
        assert!(a <= b && b <= c, "{a} {b} {c}");
        assert_eq!(FUNCTION.load(Ordering::Relaxed), f);
    }
}
