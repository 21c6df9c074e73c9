//! glibc's introspection and tuning calls, answered with cpuslab's own figures:
//! `mallinfo`, `mallinfo2`, `mallopt` and `malloc_info`.
//!
//! glibc's fields describe its arenas, bins and mmapped chunks; cpuslab's structures
//! map onto them as follows (also in the README):
//!
//! | field | cpuslab |
//! |---|---|
//! | `arena` | bytes of arena pages cpuslab holds resident (committed, less huge blocks) |
//! | `ordblks` | free blocks on the buddy free lists |
//! | `smblks`, `fsmblks` | objects (and bytes) in the nodes' shared caches, the nearest thing to fastbins |
//! | `hblks`, `hblkhd` | live huge blocks and the bytes of their ranges |
//! | `usmblks` | 0, as glibc |
//! | `uordblks` | bytes of `arena` in use: `arena - fordblks` |
//! | `fordblks` | free bytes inside `arena`: dirty free pages, per-CPU page lists, free objects in slabs and caches |
//! | `keepcost` | dirty free pages, which `malloc_trim` gives back |

use core::ffi::{c_int, c_void};
use core::fmt::{self, Write};

use crate::page::{arena, huge};
use crate::stats;
use crate::sys::{self, errno};

/// glibc's `struct mallinfo2` (2.33 and later): the same fields as [`Mallinfo`] as
/// `size_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Resident arena bytes.
    pub arena: usize,
    /// Free buddy blocks.
    pub ordblks: usize,
    /// Objects in shared caches.
    pub smblks: usize,
    /// Live huge blocks.
    pub hblks: usize,
    /// Bytes mapped for live huge blocks.
    pub hblkhd: usize,
    /// Always 0.
    pub usmblks: usize,
    /// Bytes of objects in shared caches.
    pub fsmblks: usize,
    /// Bytes in use in the arenas.
    pub uordblks: usize,
    /// Free bytes in the arenas.
    pub fordblks: usize,
    /// Bytes `malloc_trim` would give back.
    pub keepcost: usize,
}

/// glibc's `struct mallinfo`: [`Mallinfo2`]'s fields as `int`, wrapped modulo 2^32 as
/// glibc's own (the reason `mallinfo2` exists).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    /// See [`Mallinfo2::arena`].
    pub arena: c_int,
    /// See [`Mallinfo2::ordblks`].
    pub ordblks: c_int,
    /// See [`Mallinfo2::smblks`].
    pub smblks: c_int,
    /// See [`Mallinfo2::hblks`].
    pub hblks: c_int,
    /// See [`Mallinfo2::hblkhd`].
    pub hblkhd: c_int,
    /// See [`Mallinfo2::usmblks`].
    pub usmblks: c_int,
    /// See [`Mallinfo2::fsmblks`].
    pub fsmblks: c_int,
    /// See [`Mallinfo2::uordblks`].
    pub uordblks: c_int,
    /// See [`Mallinfo2::fordblks`].
    pub fordblks: c_int,
    /// See [`Mallinfo2::keepcost`].
    pub keepcost: c_int,
}

/// Free objects and their bytes in one slab cache, and its object size.
struct CacheFree {
    size: usize,
    shared: usize,
    free: usize,
    /// In the CPUs' array caches and the remote-free caches.
    cached: usize,
}

/// Calls `f` with the free objects of every slab cache.
fn for_each_cache_free(mut f: impl FnMut(CacheFree)) {
    crate::slab::for_each_cache(|cache| {
        let c = crate::slab::cache_counts(cache);
        let in_slabs = c.active_objs - c.shared_avail.min(c.active_objs);
        f(CacheFree {
            size: cache.geom().size,
            shared: c.shared_avail,
            free: c.num_objs - c.active_objs + c.shared_avail,
            cached: (c.cpu_avail + c.alien_avail).min(in_slabs),
        })
    });
}

/// C `mallinfo2`: cpuslab's figures in glibc's fields (see the module docs).
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    let saved = errno::Saved::new();
    crate::init::ensure();
    // The counters, not `stats::memory`'s breakdown, whose `mincore(2)` of the
    // metadata made a call 20-25 µs (glibc's 0.2).
    let m = stats::memory_counters();
    let huge_live = huge::live_bytes();
    let mut info = Mallinfo2 {
        arena: m
            .committed_bytes
            .saturating_sub(huge_live + m.huge_cached_bytes),
        hblks: huge::live_blocks(),
        hblkhd: huge_live,
        keepcost: m.dirty_free_bytes,
        ..Mallinfo2::default()
    };
    for node in 0..crate::topology::nr_node_ids() {
        info.ordblks += crate::page::zone(node)
            .lock()
            .nr_free()
            .iter()
            .sum::<usize>();
    }
    // The CPUs' array caches and the alien caches count as free, as the shared caches
    // do: a CPU may hold a couple of thousand objects of a class, and a program that
    // freed that many would see its `uordblks` stay where it was.
    let (mut slab_free, mut cached) = (0, 0);
    for_each_cache_free(|c| {
        info.smblks += c.shared;
        info.fsmblks += c.shared * c.size;
        slab_free += c.free * c.size;
        cached += c.cached * c.size;
    });
    info.fordblks = (m.dirty_free_bytes + m.pcp_bytes + slab_free + cached).min(info.arena);
    info.uordblks = info.arena - info.fordblks;
    saved.restore();
    info
}

/// C `mallinfo`: [`mallinfo2`] with each field wrapped to `int`, as glibc does.
pub extern "C" fn mallinfo() -> Mallinfo {
    let m = mallinfo2();
    let int = |v: usize| v as c_int;
    Mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// `M_MXFAST`: the fastbin size limit.
pub const M_MXFAST: c_int = 1;
/// `M_TRIM_THRESHOLD`: free memory kept before trimming.
pub const M_TRIM_THRESHOLD: c_int = -1;
/// `M_TOP_PAD`: extra memory asked of the system each time.
pub const M_TOP_PAD: c_int = -2;
/// `M_MMAP_THRESHOLD`: requests served by mmap from this size.
pub const M_MMAP_THRESHOLD: c_int = -3;
/// `M_MMAP_MAX`: most mmapped chunks.
pub const M_MMAP_MAX: c_int = -4;
/// `M_ARENA_MAX`: most arenas.
pub const M_ARENA_MAX: c_int = -8;

/// glibc's bound on `M_MXFAST`: `MAX_FAST_SIZE` on 64-bit targets.
const MAX_FAST_SIZE: usize = 80 * core::mem::size_of::<usize>() / 4;

/// C `mallopt`: returns what glibc (2.36) returns for the same arguments: 1, but 0 for
/// an `M_MXFAST` above 160 bytes (taken as `size_t`, so negative values too); 1 also
/// for parameters glibc does not know. What cpuslab acts on:
/// `M_TRIM_THRESHOLD` sets the dirty free memory each node keeps without purging
/// (`CPUSLAB_RETAIN`); the others have no counterpart (no fastbins, a fixed 4 MiB huge
/// threshold, per-CPU caches instead of arenas) and are accepted without effect.
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    // glibc converts to size_t: a negative value wraps to a huge one.
    let as_size = value as isize as usize;
    match param {
        M_MXFAST => c_int::from(as_size <= MAX_FAST_SIZE),
        M_TRIM_THRESHOLD => {
            let saved = errno::Saved::new();
            if crate::init::ensure() {
                crate::page::purge::configure(crate::page::purge::decay_ms(), as_size);
            }
            saved.restore();
            1
        }
        _ => 1,
    }
}

/// C `malloc_info`: writes cpuslab's state to `fp` in glibc's XML layout — one
/// `<heap>` per NUMA node (its free pages by order as `<size>` entries), then the
/// totals, with the free objects of each slab cache among them — and returns 0;
/// `EINVAL` for `options` other than 0, as glibc.
///
/// # Safety
/// `fp` is a `FILE *` open for writing.
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut c_void) -> c_int {
    if options != 0 {
        return errno::EINVAL;
    }
    let saved = errno::Saved::new();
    crate::init::ensure();
    let mut w = FileWriter {
        fp,
        buf: [0; 512],
        len: 0,
    };
    let _ = write_info(&mut w);
    w.flush();
    saved.restore();
    0
}

/// The XML of [`malloc_info`].
fn write_info(w: &mut dyn Write) -> fmt::Result {
    let m = stats::memory();
    let peak = arena::peak_committed().max(m.committed_bytes);
    let page = sys::PAGE_SIZE;
    w.write_str("<malloc version=\"1\">\n")?;
    let (mut rest_count, mut rest_bytes) = (0usize, 0usize);
    for node in 0..crate::topology::nr_node_ids() {
        let counts = crate::page::zone(node).lock().nr_free();
        writeln!(w, "<heap nr=\"{node}\">\n<sizes>")?;
        let (mut count, mut bytes) = (0, 0);
        for (order, &n) in counts.iter().enumerate() {
            if n > 0 {
                let size = page << order;
                writeln!(
                    w,
                    "  <size from=\"{size}\" to=\"{size}\" total=\"{}\" count=\"{n}\"/>",
                    size * n
                )?;
                count += n;
                bytes += size * n;
            }
        }
        rest_count += count;
        rest_bytes += bytes;
        writeln!(w, "</sizes>\n<total type=\"fast\" count=\"0\" size=\"0\"/>")?;
        writeln!(
            w,
            "<total type=\"rest\" count=\"{count}\" size=\"{bytes}\"/>"
        )?;
        writeln!(
            w,
            "<system type=\"current\" size=\"{}\"/>",
            m.committed_bytes
        )?;
        writeln!(w, "<system type=\"max\" size=\"{peak}\"/>")?;
        writeln!(w, "<aspace type=\"total\" size=\"{}\"/>", m.reserved_bytes)?;
        writeln!(
            w,
            "<aspace type=\"mprotect\" size=\"{}\"/>",
            m.committed_bytes
        )?;
        w.write_str("</heap>\n")?;
    }
    let (mut fast_count, mut fast_bytes) = (0, 0);
    for_each_cache_free(|c| {
        fast_count += c.free;
        fast_bytes += c.free * c.size;
    });
    writeln!(
        w,
        "<total type=\"fast\" count=\"{fast_count}\" size=\"{fast_bytes}\"/>"
    )?;
    writeln!(
        w,
        "<total type=\"rest\" count=\"{rest_count}\" size=\"{rest_bytes}\"/>"
    )?;
    writeln!(
        w,
        "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>",
        huge::live_blocks(),
        huge::live_bytes()
    )?;
    writeln!(
        w,
        "<system type=\"current\" size=\"{}\"/>",
        m.committed_bytes
    )?;
    writeln!(w, "<system type=\"max\" size=\"{peak}\"/>")?;
    writeln!(w, "<aspace type=\"total\" size=\"{}\"/>", m.reserved_bytes)?;
    writeln!(
        w,
        "<aspace type=\"mprotect\" size=\"{}\"/>",
        m.committed_bytes
    )?;
    w.write_str("</malloc>\n")
}

/// Formats into a stack buffer and hands it to stdio's `fwrite` whenever it fills:
/// nothing is allocated while the caches' locks are held (stdio may allocate its own
/// buffer, through cpuslab, between lock sections).
struct FileWriter {
    fp: *mut c_void,
    buf: [u8; 512],
    len: usize,
}

impl FileWriter {
    fn flush(&mut self) {
        if self.len > 0 {
            // SAFETY: `fp` is the caller's open FILE; the buffer holds `len` bytes.
            unsafe { libc::fwrite(self.buf.as_ptr().cast(), 1, self.len, self.fp.cast()) };
            self.len = 0;
        }
    }
}

impl Write for FileWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}
