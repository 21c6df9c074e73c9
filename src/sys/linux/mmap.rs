//! Anonymous mappings: arena reservations, huge blocks, purging.

use core::ptr;

/// Maps `len` bytes of anonymous read-write memory aligned to `align` (a power of two,
/// at least a page). A `reservation` asks for no swap to be reserved (`MAP_NORESERVE`):
/// address space for arenas, committed page by page as it is touched. Without it the
/// kernel's overcommit check applies, so an absurd request fails as it does for glibc.
///
/// An alignment above a page is first sought with mappings of exactly `len` bytes: one
/// where the kernel likes, kept if it happens to be aligned, else one asked for at the
/// aligned address just below it (the kernel places mappings top-down, so the space
/// below the one it chose is usually free), or up to 31 aligned steps further down. Only when that fails is `len + align`
/// mapped and trimmed, so that under an address-space limit (`RLIMIT_AS`) the peak is
/// the mapping itself, not twice it (an arena would need 512 MiB to map 256).
///
/// Returns null when the kernel refuses (address space exhausted, `RLIMIT_AS`).
pub fn map_aligned(len: usize, align: usize, reservation: bool) -> *mut u8 {
    let noreserve = if reservation { libc::MAP_NORESERVE } else { 0 };
    debug_assert!(align.is_power_of_two() && align >= super::PAGE_SIZE);
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve;
    if align > super::PAGE_SIZE {
        let Some(exact) = map_at(ptr::null_mut(), len, flags) else {
            // The exact size is refused: more would be too.
            return ptr::null_mut();
        };
        if exact as usize & (align - 1) == 0 {
            return exact;
        }
        unmap(exact, len);
        // The aligned address just below, then further down: those may be taken by
        // mappings that start their aligned slots (arenas, each at the start of a
        // slot, stack up top-down, and one that maps part of its slot leaves the rest
        // to mappings such as this one). A refused try is one cheap system call.
        let mut hint = exact as usize & !(align - 1);
        for _ in 0..32 {
            // MAP_FIXED_NOREPLACE fails rather than replace a mapping that another
            // thread put there meanwhile; a kernel older than 4.17 ignores it and takes
            // the address as a hint, checked below.
            if let Some(p) = map_at(hint as *mut u8, len, flags | libc::MAP_FIXED_NOREPLACE) {
                if p as usize == hint {
                    return p;
                }
                unmap(p, len);
            }
            match hint.checked_sub(align) {
                Some(h) if h > 0 => hint = h,
                _ => break,
            }
        }
    }
    let Some(span) = len.checked_add(align - super::PAGE_SIZE) else {
        return ptr::null_mut();
    };
    let Some(raw) = map_at(ptr::null_mut(), span, flags) else {
        return ptr::null_mut();
    };
    let raw = raw as usize;
    let start = (raw + align - 1) & !(align - 1);
    let end = start + len;
    // Trim the slack on both sides so that only [start, end) stays mapped.
    if start > raw {
        unmap(raw as *mut u8, start - raw);
    }
    if raw + span > end {
        unmap(end as *mut u8, raw + span - end);
    }
    start as *mut u8
}

/// Two anonymous read-write mappings at a base aligned to `align` (a power of two above
/// a page): `[base, base + head)` and `[base + tail_at, base + tail_at + tail)`, the
/// range between left to the kernel for other mappings. Never more than `head + tail`
/// bytes are mapped at a time, where [`map_aligned`] of the whole span maps all of it
/// before trimming the gap: under an address-space limit (`RLIMIT_AS`), the smallest
/// arena (128 KiB of descriptors, a 4 MiB gap's start, one 4 MiB block) then fits in
/// 4.1 MiB of room, not 8. The bases tried are the aligned ones at and below where the
/// kernel puts a mapping of `head` bytes, 32 at most, as in [`map_aligned`].
/// `reservation` as there. Null when none takes both.
pub fn map_aligned_pair(
    head: usize,
    tail_at: usize,
    tail: usize,
    align: usize,
    reservation: bool,
) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align > super::PAGE_SIZE && head <= tail_at);
    let noreserve = if reservation { libc::MAP_NORESERVE } else { 0 };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve;
    let Some(probe) = map_at(ptr::null_mut(), head, flags) else {
        return ptr::null_mut();
    };
    unmap(probe, head);
    let mut base = probe as usize & !(align - 1);
    for _ in 0..32 {
        if base == 0 {
            break;
        }
        if map_exact(base, head, flags) {
            let Some(at) = base.checked_add(tail_at) else {
                unmap(base as *mut u8, head);
                break;
            };
            if map_exact(at, tail, flags) {
                return base as *mut u8;
            }
            unmap(base as *mut u8, head);
        }
        base = base.saturating_sub(align);
    }
    ptr::null_mut()
}

/// Maps `len` bytes at exactly `addr` unless something is mapped there
/// (`MAP_FIXED_NOREPLACE`; a kernel older than 4.17 takes the address as a hint, so a
/// mapping elsewhere is undone). Whether it did.
fn map_exact(addr: usize, len: usize, flags: libc::c_int) -> bool {
    match map_at(addr as *mut u8, len, flags | libc::MAP_FIXED_NOREPLACE) {
        Some(p) if p as usize == addr => true,
        Some(p) => {
            unmap(p, len);
            false
        }
        None => false,
    }
}

/// What [`map_exact_at`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapExact {
    /// The range is mapped now.
    Mapped,
    /// Something else is mapped in the range (or, on a kernel older than 4.17, which
    /// takes the address as a hint, the kernel chose another place, undone).
    Taken,
    /// The kernel refused: address space or memory exhausted (`RLIMIT_AS`).
    Refused,
}

/// Maps `len` bytes of anonymous read-write memory at exactly `addr`, unless something
/// is mapped there: the range of a reservation given back earlier, taken again where
/// nothing else took it meanwhile. `reservation` as for [`map_aligned`].
pub fn map_exact_at(addr: *mut u8, len: usize, reservation: bool) -> MapExact {
    let noreserve = if reservation { libc::MAP_NORESERVE } else { 0 };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve;
    match map_at(addr, len, flags | libc::MAP_FIXED_NOREPLACE) {
        Some(p) if p == addr => MapExact::Mapped,
        Some(p) => {
            unmap(p, len);
            MapExact::Taken
        }
        None if super::errno::get() == libc::EEXIST => MapExact::Taken,
        None => MapExact::Refused,
    }
}

/// One anonymous read-write mapping of `len` bytes with `flags`, at `hint` if the
/// kernel takes it (null: where the kernel likes). None when the kernel refuses.
/// With `MAP_FIXED` (from [`map_fixed`] only) it replaces what `hint` held.
fn map_at(hint: *mut u8, len: usize, flags: libc::c_int) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping touches no existing memory: without
    // MAP_FIXED the hint only suggests a place, and MAP_FIXED_NOREPLACE fails rather
    // than replace a mapping; with MAP_FIXED, `map_fixed`'s caller passes a range of
    // its own that nothing uses.
    let p = unsafe {
        libc::mmap(
            hint.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Unmaps `[addr, addr + len)`.
pub fn unmap(addr: *mut u8, len: usize) {
    // SAFETY: callers only pass ranges that they mapped and no longer reference.
    unsafe {
        libc::munmap(addr.cast(), len);
    }
}

/// Pages `mincore(2)` is asked about at a time: 8 MiB, a few calls for a block of tens
/// of MiB.
const MINCORE_SPAN: usize = 2048;

/// Walks `[addr, addr + len)` (page-aligned, inside mappings) in spans of up to
/// [`MINCORE_SPAN`] pages, calling `f(first, vec)` for each with its first page's index
/// and its `mincore(2)` vector (one byte a page, bit 0: resident), or `None` where the
/// kernel refuses; stops when `f` returns false. In the program's own sandbox
/// (`mincore(2)` is no call glibc's malloc makes, and a filter may kill on it) one
/// `None` for the whole range, without asking.
fn walk_residency(addr: *const u8, len: usize, mut f: impl FnMut(usize, Option<&[u8]>) -> bool) {
    if super::process::sandboxed_since_boot() {
        f(0, None);
        return;
    }
    let mut vec = [0u8; MINCORE_SPAN];
    let mut off = 0;
    while off < len {
        let span = (len - off).min(vec.len() * super::PAGE_SIZE);
        let n = span.div_ceil(super::PAGE_SIZE);
        // SAFETY: `vec` has room for one byte per page of the span; mincore only reads
        // the page tables of the range.
        let r = unsafe {
            libc::mincore(
                addr.wrapping_add(off).cast_mut().cast(),
                span,
                vec.as_mut_ptr(),
            )
        };
        if !f(off / super::PAGE_SIZE, (r == 0).then_some(&vec[..n])) {
            return;
        }
        off += span;
    }
}

/// Resident pages in a `mincore(2)` vector.
fn resident_in(vec: &[u8]) -> usize {
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Pages of `[addr, addr + len)` (page-aligned `addr`, inside mappings) that are
/// resident now, by `mincore(2)`; 0 where the kernel refuses. For statistics.
pub fn resident_pages(addr: *const u8, len: usize) -> usize {
    let mut pages = 0;
    walk_residency(addr, len, |_, vec| {
        pages += vec.map_or(0, resident_in);
        true
    });
    pages
}

/// Whether any page of `[addr, addr + len)` (page-aligned `addr`, inside mappings) may
/// hold data: false only when `mincore(2)` says none is resident, as an anonymous page
/// never written (or given back) reads as zero. True where the kernel refuses, the
/// program's own sandbox included.
pub fn may_hold_data(addr: *const u8, len: usize) -> bool {
    let mut any = false;
    walk_residency(addr, len, |_, vec| {
        any = vec.is_none_or(|v| resident_in(v) > 0);
        !any
    });
    any
}

/// Walks `[addr, addr + len)` (page-aligned, inside mappings) in runs of `chunk`
/// pages (a divisor of 2048; the last run may be shorter), calling `f(first, pages,
/// resident)` for each in order: its first page's index, its pages, and how many of
/// them are resident now, by `mincore(2)`. False, with `f` not called again, where the
/// kernel refuses.
pub fn resident_by_chunk(
    addr: *const u8,
    len: usize,
    chunk: usize,
    mut f: impl FnMut(usize, usize, usize),
) -> bool {
    debug_assert!(chunk > 0 && MINCORE_SPAN.is_multiple_of(chunk));
    let mut walked = true;
    walk_residency(addr, len, |first, vec| {
        let Some(vec) = vec else {
            walked = false;
            return false;
        };
        for (i, run) in vec.chunks(chunk).enumerate() {
            f(first + i * chunk, run.len(), resident_in(run));
        }
        true
    });
    walked
}

/// Gives the pages of `[addr, addr + len)` back to the kernel; they read as zero when
/// touched again.
pub fn purge(addr: *mut u8, len: usize) -> bool {
    // SAFETY: callers only pass free page-aligned ranges inside their own mappings;
    // MADV_DONTNEED keeps the mapping and drops its contents.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// Grows or shrinks a mapping, moving it if needed. Returns null on failure, in which
/// case the old mapping is untouched.
pub fn remap(addr: *mut u8, old_len: usize, new_len: usize) -> *mut u8 {
    // SAFETY: `addr`/`old_len` describe a whole mapping of ours; MREMAP_MAYMOVE leaves
    // it intact when the call fails.
    let p = unsafe { libc::mremap(addr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Moves the pages of `[from, from + len)` to `[to, to + len)` without copying them,
/// replacing whatever `to` held; `from` stays mapped and reads as zero
/// (`MREMAP_DONTUNMAP`, Linux 5.7). False when the kernel cannot (older than 5.7), or
/// when the kernel mappings that make up `from` cannot be told: then `from` is
/// intact, but `to` may have been unmapped already (the kernel unmaps the destination
/// first), so the caller maps it again ([`map_fixed`]) and copies.
///
/// The source is moved one kernel mapping at a time, each move whole or not at all.
/// Kernels before 6.17 refuse a move of several mappings without changing anything;
/// from 6.17 they move them one by one, and a failure part way (`ENOMEM` at the limit
/// on mappings, `vm.max_map_count`) leaves the first ones moved and the rest not: a
/// huge block grown by `realloc` to 1 GB in steps of 64 KiB ended so, its header
/// moved away, and the next look at it aborted. Here a move that fails part way moves
/// the pieces already moved back.
pub fn move_pages(from: *mut u8, len: usize, to: *mut u8) -> bool {
    let (from, to) = (from as usize, to as usize);
    let mut pieces = [0usize; MOVE_PIECES];
    let Some(n) = mapping_pieces(from, len, &mut pieces) else {
        return false;
    };
    let mut start = 0;
    for (i, &end) in pieces[..n].iter().enumerate() {
        if !remap_fixed(from + start, end - start, to + start) {
            // Back, newest first: each piece lies in one mapping at `to` (moved as one,
            // perhaps merged with a neighbour there), so each move back is whole too.
            for k in (0..i).rev() {
                let s = if k == 0 { 0 } else { pieces[k - 1] };
                if !remap_fixed(to + s, pieces[k] - s, from + s) {
                    super::super::io::fatal(format_args!(
                        "mremap(): a block moved in part could not be moved back"
                    ));
                }
            }
            return false;
        }
        start = end;
    }
    true
}

/// Most kernel mappings a source of [`move_pages`] may span (a block grown in place
/// after each move gains one; more and it is copied).
const MOVE_PIECES: usize = 32;

/// One whole `MREMAP_DONTUNMAP` move of `[from, from + len)` to `to`.
fn remap_fixed(from: usize, len: usize, to: usize) -> bool {
    // SAFETY: callers pass page-aligned ranges of their own private anonymous mappings:
    // `from` part of a block they own, `to` a free range they reserved for it; a
    // failed move of one mapping changes nothing.
    let p = unsafe {
        libc::mremap(
            from as *mut libc::c_void,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
            to as *mut libc::c_void,
        )
    };
    p as usize == to
}

/// `PROCMAP_QUERY` (Linux 6.11): the `/proc/<pid>/maps` ioctl that describes the
/// mapping holding an address (`struct procmap_query`, of which only the first fields
/// are asked for: no name, no build id).
#[repr(C)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::c_ulong = (3 << 30)
    | ((core::mem::size_of::<ProcmapQuery>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 17;

/// The ends of the kernel mappings that make up `[addr, addr + len)`, as offsets from
/// `addr` in order, the last `len`, into `out`; how many. One piece, the whole range, where the
/// kernel has no `PROCMAP_QUERY` (older than 6.11, so older than 6.17: it refuses a
/// move of several mappings without changing anything). None where the question
/// cannot be asked (procfs not mounted, a sandbox refusing the open), where a page is
/// not mapped, past `out`'s length, or in the program's own sandbox: the caller then
/// copies.
fn mapping_pieces(addr: usize, len: usize, out: &mut [usize]) -> Option<usize> {
    // In the program's own sandbox, no system call glibc's malloc does not make: an
    // `ioctl` may be fatal there.
    if super::process::sandboxed_since_boot() {
        return None;
    }
    let fd = super::nocancel::open_read(c"/proc/self/maps");
    if fd < 0 {
        return None;
    }
    let end = addr.checked_add(len)?;
    let mut n = 0;
    let mut at = addr;
    let mut result = None;
    while n < out.len() {
        let mut q = ProcmapQuery {
            size: core::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: 0,
            query_addr: at as u64,
            vma_start: 0,
            vma_end: 0,
            vma_flags: 0,
            vma_page_size: 0,
            vma_offset: 0,
            inode: 0,
            dev_major: 0,
            dev_minor: 0,
            vma_name_size: 0,
            build_id_size: 0,
            vma_name_addr: 0,
            build_id_addr: 0,
        };
        // SAFETY: the ioctl reads and writes the struct it is given, whose size it is
        // told; no name or build id buffer is given (sizes 0).
        let r = unsafe { libc::ioctl(fd, PROCMAP_QUERY as _, &mut q) };
        if r != 0 {
            let errno = super::errno::get();
            // ENOTTY: no such ioctl, a kernel that moves one mapping only.
            if n == 0 && errno == libc::ENOTTY {
                out[0] = len;
                result = Some(1);
            }
            break;
        }
        let piece_end = (q.vma_end as usize).min(end);
        if q.vma_start as usize > at || piece_end <= at {
            break;
        }
        out[n] = piece_end - addr;
        n += 1;
        if piece_end == end {
            result = Some(n);
            break;
        }
        at = piece_end;
    }
    super::nocancel::close(fd);
    result
}

/// Maps fresh anonymous read-write memory at `[addr, addr + len)`, replacing whatever
/// was there (`MAP_FIXED`). False when the kernel refuses.
pub fn map_fixed(addr: *mut u8, len: usize) -> bool {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    map_at(addr, len, flags) == Some(addr)
}

/// `len` bytes of zeroed, page-aligned read-write memory that is never given back
/// (tables that grow by chunks, such as RCU's reader records). Null when the kernel
/// refuses.
pub fn map_zeroed(len: usize) -> *mut u8 {
    map_aligned(len, super::PAGE_SIZE, false)
}

/// Asks the kernel not to back `[addr, addr + len)` with transparent huge pages, for
/// mappings whose pages are committed and given back one by one. Not in the program's
/// own sandbox, which may kill it for advice glibc's malloc never gives (see
/// `membarrier`): false.
pub fn no_hugepage(addr: *mut u8, len: usize) -> bool {
    if super::process::sandboxed_since_boot() {
        return false;
    }
    // SAFETY: advice on a range of our own mapping; contents are untouched.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_NOHUGEPAGE) == 0 }
}
