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

use super::elf::{self, Dyn};

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
/// mapped at `base` (through its `DT_HASH` table, which the kernel's vDSO carries).
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
        let dyn_ = bias.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
        elf::Object::new(bias, dyn_, true)?.function(name, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::linux::elf::{DT_HASH, DT_STRTAB, DT_SYMTAB, STT_FUNC};

    /// A minimal ELF image in a buffer, laid out as the kernel's vDSO is (linked at
    /// 0, one load segment, a dynamic section): the header, two program headers, the
    /// dynamic entries, a `DT_HASH` table of `nsyms` symbols, the symbols, the names.
    /// With `hash` false the dynamic section names no hash table.
    fn image(hash: bool) -> Vec<u64> {
        let mut b = vec![0u64; 128];
        let bytes = b.as_mut_ptr().cast::<u8>();
        let (phoff, dynoff, hashoff, symoff, stroff) = (64usize, 176, 256, 288, 384);
        // SAFETY: every write below lies inside the 1 KiB buffer, at offsets aligned
        // for the structure written.
        unsafe {
            let eh = &mut *bytes.cast::<libc::Elf64_Ehdr>();
            eh.e_ident[..5].copy_from_slice(b"\x7fELF\x02");
            eh.e_phoff = phoff as u64;
            eh.e_phnum = 2;
            let ph = bytes.add(phoff).cast::<libc::Elf64_Phdr>();
            (*ph).p_type = libc::PT_LOAD;
            (*ph.add(1)).p_type = libc::PT_DYNAMIC;
            (*ph.add(1)).p_vaddr = dynoff as u64;
            let d = bytes.add(dynoff).cast::<Dyn>();
            let tags = [(DT_SYMTAB, symoff), (DT_STRTAB, stroff), (DT_HASH, hashoff)];
            for (i, &(tag, at)) in tags.iter().take(if hash { 3 } else { 2 }).enumerate() {
                *d.add(i) = Dyn {
                    d_tag: tag,
                    d_val: at as u64,
                };
            }
            // nbucket 1, nchain 3: the null symbol, a variable and a function, all in
            // the one bucket's chain: the function (2), then the variable (1).
            let h = bytes.add(hashoff).cast::<u32>();
            (*h, *h.add(1), *h.add(2)) = (1, 3, 2);
            (*h.add(3), *h.add(4), *h.add(5)) = (0, 0, 1);
            let s = bytes.add(symoff).cast::<libc::Elf64_Sym>();
            for (i, (name, kind, value)) in [(1u32, 1u8, 0x500u64), (5, STT_FUNC, 0x700)]
                .iter()
                .enumerate()
            {
                let sym = &mut *s.add(i + 1);
                sym.st_name = *name;
                sym.st_info = *kind;
                sym.st_shndx = 7;
                sym.st_value = *value;
            }
            // The string table: an empty name at 0, then "var" at 1 and "fun" at 5.
            let names: &[u8] = b"\0var\0fun\0";
            bytes.add(stroff).copy_from(names.as_ptr(), names.len());
        }
        b
    }

    /// The walk finds a function by name, at the image's address plus its value, and
    /// nothing for a variable, a missing name or an image without a hash table.
    #[test]
    fn finds_functions_in_an_image() {
        let with = image(true);
        let base = with.as_ptr() as usize;
        // SAFETY: `with` is a whole image, built above, alive for the calls.
        unsafe {
            assert_eq!(find_symbol(base, b"fun"), Some(base + 0x700));
            assert_eq!(find_symbol(base, b"var"), None, "not a function");
            assert_eq!(find_symbol(base, b"none"), None);
        }
        let without = image(false);
        // SAFETY: as above.
        let found = unsafe { find_symbol(without.as_ptr() as usize, b"fun") };
        assert_eq!(found, None, "no DT_HASH, no walk");
    }

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
