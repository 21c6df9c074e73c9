//! Functions of mapped ELF objects, found in their dynamic symbol tables without the
//! dynamic loader: the vDSO's (which the loader does not list by name) and glibc's own
//! allocator, whose lookup through `dlsym` may allocate (glibc before 2.34 `calloc`s
//! each thread's error buffer on its first call) from inside an allocation.
//!
//! Only 64-bit objects: the platforms cpuslab runs on.

use core::ffi::CStr;

/// An entry of an ELF object's dynamic section (`Elf64_Dyn`).
#[repr(C)]
pub(crate) struct Dyn {
    /// The entry's kind (`DT_*`).
    pub(crate) d_tag: i64,
    /// Its value or address.
    pub(crate) d_val: u64,
}

/// `Elf64_Verdef`: one version an object defines.
#[repr(C)]
struct Verdef {
    vd_version: u16,
    vd_flags: u16,
    vd_ndx: u16,
    vd_cnt: u16,
    vd_hash: u32,
    vd_aux: u32,
    vd_next: u32,
}

/// `Elf64_Verdaux`: a version's name.
#[repr(C)]
struct Verdaux {
    vda_name: u32,
    vda_next: u32,
}

// ELF constants the `libc` crate does not carry (the ELF specification's values).
pub(crate) const DT_NULL: i64 = 0;
pub(crate) const DT_HASH: i64 = 4;
pub(crate) const DT_STRTAB: i64 = 5;
pub(crate) const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const DT_VERDEF: i64 = 0x6fff_fffc;
const DT_VERDEFNUM: i64 = 0x6fff_fffd;
const SHN_UNDEF: u16 = 0;
pub(crate) const STT_FUNC: u8 = 2;
/// The version index of a symbol that names no version (`VER_NDX_GLOBAL`); the
/// indices of the object's own versions start past it.
const VER_NDX_GLOBAL: u16 = 1;

/// The dynamic symbol tables of one mapped object, at their addresses in memory.
pub(crate) struct Object {
    bias: usize,
    symtab: usize,
    strtab: usize,
    hash: usize,
    gnu_hash: usize,
    versym: usize,
    verdef: usize,
    verdefnum: usize,
}

impl Object {
    /// The tables the dynamic section at `dynamic` names, for an object loaded at
    /// `bias` (its addresses plus `bias` are where it is mapped). None without a
    /// symbol table, a string table or a hash table to find symbols by.
    ///
    /// With `as_linked` every address is as linked (the kernel's vDSO, which nothing
    /// rewrites). Otherwise the dynamic loader may have rewritten some in place (glibc
    /// adds the bias to the symbol, string, hash and version-symbol tables' on most
    /// architectures, not to the version definitions'): an address below the bias is
    /// taken as linked, one at or past it as rewritten. A shared object loaded at a
    /// bias lies above its own linked addresses, so the two cannot be confused.
    ///
    /// # Safety
    /// `dynamic` is the mapped dynamic section of a whole, valid 64-bit ELF object
    /// loaded at `bias`, which stays mapped while the result is used.
    pub(crate) unsafe fn new(bias: usize, dynamic: *const Dyn, as_linked: bool) -> Option<Self> {
        let mut o = Object {
            bias,
            symtab: 0,
            strtab: 0,
            hash: 0,
            gnu_hash: 0,
            versym: 0,
            verdef: 0,
            verdefnum: 0,
        };
        let at = |v: u64| {
            let v = v as usize;
            if v >= bias && !as_linked {
                v
            } else {
                bias.wrapping_add(v)
            }
        };
        let mut d = dynamic;
        // SAFETY: the section ends with a DT_NULL entry (the contract: a valid object).
        unsafe {
            while (*d).d_tag != DT_NULL {
                let v = (*d).d_val;
                match (*d).d_tag {
                    DT_SYMTAB => o.symtab = at(v),
                    DT_STRTAB => o.strtab = at(v),
                    DT_HASH => o.hash = at(v),
                    DT_GNU_HASH => o.gnu_hash = at(v),
                    DT_VERSYM => o.versym = at(v),
                    DT_VERDEF => o.verdef = at(v),
                    DT_VERDEFNUM => o.verdefnum = v as usize,
                    _ => {}
                }
                d = d.add(1);
            }
        }
        (o.symtab != 0 && o.strtab != 0 && (o.hash != 0 || o.gnu_hash != 0)).then_some(o)
    }

    /// The address of the function `name` the object defines, the first whose version
    /// `accept` takes (the version's name, or None for a symbol of no version).
    ///
    /// # Safety
    /// As for [`new`](Self::new): the object is still mapped.
    pub(crate) unsafe fn function(
        &self,
        name: &[u8],
        accept: impl Fn(Option<&[u8]>) -> bool,
    ) -> Option<usize> {
        let found = |i: u32| {
            // SAFETY: `i` is an index the object's hash table gives, within its symbol
            // table; the names and versions it points to lie in the object.
            let s = unsafe { &*(self.symtab as *const libc::Elf64_Sym).add(i as usize) };
            // SAFETY: as above.
            let matches = unsafe {
                s.st_shndx != SHN_UNDEF
                    && s.st_info & 0xf == STT_FUNC
                    && self.name(s.st_name) == name
                    && accept(self.version(i))
            };
            matches.then(|| self.bias.wrapping_add(s.st_value as usize))
        };
        // SAFETY: the hash tables are the object's (the contract).
        unsafe {
            if self.gnu_hash != 0 {
                self.gnu_lookup(name, found)
            } else {
                self.sysv_lookup(name, found)
            }
        }
    }

    /// The string at `off` in the string table.
    ///
    /// # Safety
    /// `off` is an offset of a string in the object's string table.
    unsafe fn name(&self, off: u32) -> &[u8] {
        // SAFETY: a NUL-terminated string of the table (the contract).
        unsafe { CStr::from_ptr((self.strtab + off as usize) as *const _).to_bytes() }
    }

    /// The name of the version of symbol `i`, None for a symbol of no version (or an
    /// object without versions).
    ///
    /// # Safety
    /// `i` indexes the object's symbol table.
    unsafe fn version(&self, i: u32) -> Option<&[u8]> {
        if self.versym == 0 || self.verdef == 0 {
            return None;
        }
        // SAFETY: the version table has an entry per symbol; the definitions form a
        // chain of `verdefnum` entries (or up to one whose `vd_next` is 0), each with
        // its name first among its aux entries (the contract: a valid object).
        unsafe {
            let ndx = *(self.versym as *const u16).add(i as usize) & 0x7fff;
            if ndx <= VER_NDX_GLOBAL {
                return None;
            }
            let mut d = self.verdef;
            for _ in 0..self.verdefnum.max(1) {
                let v = &*(d as *const Verdef);
                if v.vd_ndx == ndx {
                    let aux = &*((d + v.vd_aux as usize) as *const Verdaux);
                    return Some(self.name(aux.vda_name));
                }
                if v.vd_next == 0 {
                    break;
                }
                d += v.vd_next as usize;
            }
            None
        }
    }

    /// Walks the GNU hash table's chain for `name`, giving each candidate's index to
    /// `found` until it returns an address.
    ///
    /// # Safety
    /// `gnu_hash` is the object's table.
    unsafe fn gnu_lookup(
        &self,
        name: &[u8],
        found: impl Fn(u32) -> Option<usize>,
    ) -> Option<usize> {
        let h = name.iter().fold(5381u32, |h, &c| {
            h.wrapping_mul(33).wrapping_add(u32::from(c))
        });
        // SAFETY: the header's four words, then the Bloom filter (`bloom` 64-bit
        // words), the buckets and the chains (the contract).
        unsafe {
            let t = self.gnu_hash as *const u32;
            let (nbuckets, symoffset, bloom) = (*t, *t.add(1), *t.add(2) as usize);
            if nbuckets == 0 {
                return None;
            }
            let buckets = t.add(4 + 2 * bloom);
            let chains = buckets.add(nbuckets as usize);
            let mut i = *buckets.add((h % nbuckets) as usize);
            if i < symoffset {
                return None;
            }
            loop {
                let c = *chains.add((i - symoffset) as usize);
                if (c | 1) == (h | 1) {
                    if let Some(a) = found(i) {
                        return Some(a);
                    }
                }
                if c & 1 != 0 {
                    return None;
                }
                i += 1;
            }
        }
    }

    /// Walks the System V hash table's chain for `name`, as [`gnu_lookup`](Self::gnu_lookup).
    ///
    /// # Safety
    /// `hash` is the object's table.
    unsafe fn sysv_lookup(
        &self,
        name: &[u8],
        found: impl Fn(u32) -> Option<usize>,
    ) -> Option<usize> {
        let h = name.iter().fold(0u32, |h, &c| {
            let h = (h << 4).wrapping_add(u32::from(c));
            let g = h & 0xf000_0000;
            (h ^ (g >> 24)) & !g
        });
        // SAFETY: nbucket, nchain, the buckets, the chains (the contract).
        unsafe {
            let t = self.hash as *const u32;
            let (nbucket, nchain) = (*t, *t.add(1));
            if nbucket == 0 {
                return None;
            }
            let chains = t.add(2 + nbucket as usize);
            let mut i = *t.add(2 + (h % nbucket) as usize);
            // A chain is at most as long as the table (a bound against a bad one).
            for _ in 0..nchain {
                if i == 0 || i >= nchain {
                    return None;
                }
                if let Some(a) = found(i) {
                    return Some(a);
                }
                i = *chains.add(i as usize);
            }
            None
        }
    }
}

/// The first object the dynamic loader has loaded, in its order, for which `f` gives
/// an answer, with that answer (`dl_iterate_phdr`, which allocates nothing).
pub(crate) fn find_loaded(mut f: impl FnMut(&Object) -> Option<usize>) -> Option<usize> {
    struct Search<'a> {
        f: &'a mut dyn FnMut(&Object) -> Option<usize>,
        found: Option<usize>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Search` below, alive for the walk; `info` is the
        // loader's description of a loaded object, whose program headers are mapped.
        unsafe {
            let search = &mut *data.cast::<Search>();
            let info = &*info;
            if info.dlpi_phdr.is_null() {
                return 0;
            }
            let phdrs = core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
                return 0;
            };
            let bias = info.dlpi_addr as usize;
            let d = bias.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
            if let Some(o) = Object::new(bias, d, false) {
                search.found = (search.f)(&o);
            }
            i32::from(search.found.is_some())
        }
    }
    let mut search = Search {
        f: &mut f,
        found: None,
    };
    // SAFETY: `each` matches the callback's type and only reads what the loader
    // gives it; `search` outlives the walk.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut search as *mut Search).cast()) };
    search.found
}
