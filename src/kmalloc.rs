//! kmalloc: size classes served by slab caches, larger sizes by the page pool, huge
//! ones by their own mappings.
//!
//! | size                    | served by                                   |
//! |-------------------------|---------------------------------------------|
//! | up to 32 KiB            | `kmalloc-<size>` caches, four classes per doubling |
//! | up to 4 MiB             | `alloc_pages_exact` from the buddy zones (64 KiB, 128 KiB, 256 KiB and other power-of-two page counts from the CPU's page list of their order) |
//! | larger, or align > 4 MiB| a mapping of its own, resized with mremap   |
//!
//! The class is a function of `(size, align)` only, so freeing with the allocation's
//! layout finds the same cache without looking at the page.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::page::arena::BLOCK_SIZE;
use crate::page::desc::{PG_LARGE, PG_SLAB, PG_ZERO};
use crate::page::{self, arena, huge, virt_to_head_page, virt_to_page};
use crate::percpu;
use crate::slab::array_cache::{ArrayCache, AC_HEADER};
use crate::slab::{self, CacheError, RawCache, TagCheck};
use crate::sys::{self, PAGE_SHIFT, PAGE_SIZE};
use crate::topology;

/// Object sizes of the kmalloc caches: 8, 16, 24, 32, then four classes per doubling.
pub const KMALLOC_SIZES: [usize; NR_KMALLOC] = [
    8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896,
    1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
    14336, 16384, 20480, 24576, 28672, 32768,
];
/// Number of kmalloc caches.
pub const NR_KMALLOC: usize = 42;
/// Largest size served by a kmalloc cache.
pub const KMALLOC_MAX_CACHE_SIZE: usize = 32768;
/// Largest size (and alignment) served by the page pool.
pub const KMALLOC_MAX_LARGE: usize = BLOCK_SIZE;

/// Objects below this size share cache lines: their caches return those freed on
/// another CPU to the CPU that took them from their slab (`slab::cache::remote`).
const SMALL_SIZE: usize = 64;
/// The classes below [`SMALL_SIZE`], the first ones: their own tags are 1 to this,
/// and each has a tag per owner CPU besides (see [`Tags`]).
const SMALL_CLASSES: usize = {
    let mut i = 0;
    while KMALLOC_SIZES[i] < SMALL_SIZE {
        i += 1;
    }
    i
};

/// Index of the first class above 1 KiB (1280).
const FIRST_GEOMETRIC: usize = 22;

/// The kmalloc caches and the table that picks one for small sizes, in one static: a
/// program's code reaches each static of this crate through its own GOT entry (in a
/// position-independent executable), so one static costs one such load where two
/// would cost two on every allocation and free.
#[repr(C)]
pub struct Kmalloc {
    /// `size_index` for sizes up to 1 KiB, by `(size + 7) / 8`.
    size_index: [u8; 129],
    /// The array caches (`cpu_cache`) of the class `size_index` picks, by the same
    /// index, set at boot: the fast paths go from the size to the per-CPU stacks in one
    /// load instead of two dependent ones (the class, then its cache's pointer).
    fast: [AtomicPtr<ArrayCache>; 129],
    /// The alignment mask of the class `size_index` picks (see
    /// `RawCache::misaligned`), by the same index, set at boot (a full mask before,
    /// which no pointer passes): the sized free checks a pointer and finds the stacks
    /// from the size alone, two independent loads beside each other, instead of the
    /// class, then its cache's mask and stacks.
    fast_mask: [AtomicUsize; 129],
    /// The array caches of the classes above 1 KiB, by `(size + 255) / 256` for sizes
    /// up to [`KMALLOC_MAX_CACHE_SIZE`] (entries 0 to 4 stay null): those classes are
    /// multiples of 256, so the rounding keeps the class. Set at boot, for the C
    /// interface's fast paths (see [`kmalloc_fast_big`]).
    fast_big: [AtomicPtr<ArrayCache>; 129],
    /// The caches, by class.
    pub caches: [RawCache; NR_KMALLOC],
}

/// The kmalloc caches.
pub static KMALLOC: Kmalloc = Kmalloc {
    size_index: {
        let mut t = [0u8; 129];
        // Size 0 is the 16-byte class's, as C's `malloc(0)` (a unique block of the
        // smallest C size), so that the C fast path indexes by `(size + 15) & !15`
        // alone; every path classifies 0 by this entry, so allocation and free agree.
        let mut class = 0;
        while KMALLOC_SIZES[class] < 16 {
            class += 1;
        }
        t[0] = class as u8;
        let mut i = 1;
        let mut class = 0;
        while i < 129 {
            while KMALLOC_SIZES[class] < i * 8 {
                class += 1;
            }
            t[i] = class as u8;
            i += 1;
        }
        t
    },
    fast: [const { AtomicPtr::new(ptr::null_mut()) }; 129],
    fast_mask: [const { AtomicUsize::new(usize::MAX) }; 129],
    fast_big: [const { AtomicPtr::new(ptr::null_mut()) }; 129],
    caches: [const { RawCache::new() }; NR_KMALLOC],
};

/// What a free without a size needs, by its page's tag (`page::tag`): class `i`'s
/// cache tags its slabs' pages `i + 1`, and where it returns remote frees to their
/// owners (the [`SMALL_CLASSES`]), CPU `c`'s slabs `owner_tag(i, c)`.
#[repr(C)]
struct Tags {
    /// Entry `t` holds the slot test, array caches and owner of the pages whose tag is
    /// `t`. Every tag a byte can hold has an entry, so a tag needs no range check;
    /// those no class has (0 among them: pages of no kmalloc slab) pass no pointer.
    /// First, so that an entry's address is the table's plus the tag times 32: the
    /// free adds no offset.
    checks: [TagCheck; 256],
    /// The caches' per-CPU array cache headers lie side by side in one percpu area,
    /// class `i`'s at `i * AC_HEADER` bytes (CPU 0's; see `RawCache::setup_in`), so
    /// that a CPU's headers of every class share a few pages. Set at boot.
    headers: AtomicPtr<ArrayCache>,
}

// Every class has a tag of its own, class plus one, in a byte.
const _: () = assert!(NR_KMALLOC < 255);

/// How many CPUs have a page tag of their own for each small class: the tags left in
/// a byte past the classes' own, shared among the small classes (42 for 42 classes
/// and 5 small ones). A CPU past them names itself in its pages' descriptors alone.
const OWNER_TAG_CPUS: usize = (255 - NR_KMALLOC) / SMALL_CLASSES;

/// The page tag of small class `class`'s slabs that CPU `cpu` (below
/// [`OWNER_TAG_CPUS`]) claimed: past the classes' own tags, a run per class.
const fn owner_tag(class: usize, cpu: usize) -> usize {
    NR_KMALLOC + 1 + class * OWNER_TAG_CPUS + cpu
}

const _: () = assert!(owner_tag(SMALL_CLASSES - 1, OWNER_TAG_CPUS - 1) <= 255);

/// The tag table: the entry of every tag a page may carry.
static TAGS: Tags = Tags {
    headers: AtomicPtr::new(ptr::null_mut()),
    checks: [const { TagCheck::new() }; 256],
};

/// The entry of the tag table (`TAGS`) for `tag`, which a page's tag byte can hold; for
/// tests and reports, which learn the class (`cache_tag() - 1`) and owner (see
/// `TagCheck::owner`) of a page by it.
pub fn tag_entry(tag: u8) -> &'static TagCheck {
    &TAGS.checks[usize::from(tag)]
}

/// [`KMALLOC`], reached without a GOT load.
#[inline(always)]
fn kmalloc_static() -> &'static Kmalloc {
    crate::sys::local_static!(KMALLOC)
}

/// The cache of class `i` (`i < NR_KMALLOC`, as every class `classify` returns).
#[inline(always)]
fn cache(i: usize) -> &'static RawCache {
    debug_assert!(i < NR_KMALLOC);
    // SAFETY: classes come from `size_index` (table entries and the geometric formula
    // for sizes up to KMALLOC_MAX_CACHE_SIZE are below NR_KMALLOC) or from a bounded
    // scan; the bound check would sit on every allocation's critical path.
    unsafe { kmalloc_static().caches.get_unchecked(i) }
}

/// Where a request is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The kmalloc cache with this index.
    Slab(usize),
    /// Whole pages from the buddy zones.
    Large,
    /// A mapping of its own.
    Huge,
}

/// The class of `size <= KMALLOC_MAX_CACHE_SIZE` (0 is the 16-byte class's, see the table).
#[inline(always)]
fn size_index(size: usize) -> usize {
    if size <= 1024 {
        kmalloc_static().size_index[(size + 7) >> 3] as usize
    } else {
        // Four classes per doubling: (5..=8) * 2^(lg - 2) for sizes in (2^lg, 2^(lg+1)].
        let lg = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
        let quarter = ((size - 1) >> (lg - 2)) - 4;
        FIRST_GEOMETRIC + (lg - 10) * 4 + quarter
    }
}

/// Where `(size, align)` is served. Deterministic: allocation and free agree.
#[inline(always)]
pub fn classify(size: usize, align: usize) -> Kind {
    if align <= 8 && size <= KMALLOC_MAX_CACHE_SIZE {
        return Kind::Slab(size_index(size));
    }
    classify_aligned(size, align)
}

#[inline(never)]
fn classify_aligned(size: usize, align: usize) -> Kind {
    let s = size.max(align).max(1);
    if s <= KMALLOC_MAX_CACHE_SIZE {
        let mut i = size_index(s);
        while i < NR_KMALLOC {
            if KMALLOC_SIZES[i].is_multiple_of(align) {
                return Kind::Slab(i);
            }
            i += 1;
        }
    }
    if size <= KMALLOC_MAX_LARGE && align <= KMALLOC_MAX_LARGE {
        Kind::Large
    } else {
        Kind::Huge
    }
}

/// Sets up every kmalloc cache that is not set up yet. Called at boot.
pub(crate) fn init() -> Result<(), CacheError> {
    // `free_rcu` frees the blocks it defers through kmalloc (RCU sits below it).
    crate::rcu::set_block_free(&RCU_BLOCK_FREE);
    let k = kmalloc_static();
    if TAGS.headers.load(Ordering::Relaxed).is_null() {
        // From cpuslab's reserved per-CPU chunk, as a cache's own headers would be.
        let area = percpu::alloc_reserved_percpu(NR_KMALLOC * AC_HEADER, AC_HEADER)
            .or_else(|_| percpu::alloc_percpu(NR_KMALLOC * AC_HEADER, AC_HEADER))
            .map_err(|_| CacheError::NoMemory)?;
        TAGS.headers.store(area.as_ptr().cast(), Ordering::Relaxed);
    }
    let headers = TAGS.headers.load(Ordering::Relaxed);
    for (i, cache) in KMALLOC.caches.iter().enumerate() {
        if !cache
            .cpu_cache
            .load(core::sync::atomic::Ordering::Acquire)
            .is_null()
        {
            continue;
        }
        let size = KMALLOC_SIZES[i];
        let mut name = sys::io::StackBuf::<32>::new();
        name.push_str("kmalloc-");
        name.push_decimal(size as u64);
        let name = core::str::from_utf8(name.as_bytes()).unwrap_or("kmalloc");
        // Objects are aligned to the largest power of two dividing their size, which
        // `classify` promises: 24576-byte objects are 8 KiB aligned, and debug slots
        // keep the alignment (the tagged caches have no colour; a debug cache's step
        // by the alignment too).
        let align = 1 << size.trailing_zeros();
        // SAFETY: boot runs on one thread; the cache is published by `setup_in`. Its
        // headers are its slot of the area above, which lives as long as the process.
        unsafe {
            cache.set_tag(i as u8 + 1);
            cache.setup_in(name, size, align, 0, Some(headers.byte_add(i * AC_HEADER)))?;
        }
        if cache.tag() != 0 {
            // Before any page has the tags: the cache has no slab yet. A small class
            // with inboxes carries its own tag on the slabs no CPU with a tag of its
            // own claimed: their descriptors say whose they are. Without inboxes no
            // page has an owner.
            let mut own = TagCheck::NO_OWNER;
            if i < SMALL_CLASSES && cache.has_inboxes() {
                let cpus = OWNER_TAG_CPUS.min(topology::nr_cpu_ids());
                for cpu in 0..cpus {
                    TAGS.checks[owner_tag(i, cpu)].set(cache, cpu as u32 + 1);
                }
                // SAFETY: boot, before the cache's first slab; the tags of the run
                // are its alone, each mapped to it and its CPU above.
                unsafe { cache.set_owner_tags(owner_tag(i, 0) as u8, cpus as u8) };
                own = TagCheck::ASK_PAGE;
            }
            TAGS.checks[i + 1].set(cache, own);
        }
        slab::link(cache);
    }
    for ((slot, mask), &class) in k.fast.iter().zip(&k.fast_mask).zip(&k.size_index) {
        slot.store(cache(class as usize).cpu_caches(), Ordering::Release);
        mask.store(cache(class as usize).align_mask(), Ordering::Relaxed);
    }
    for (i, slot) in k.fast_big.iter().enumerate().skip((FAST_MAX >> 8) + 1) {
        slot.store(cache(size_index(i << 8)).cpu_caches(), Ordering::Release);
    }
    // Every entry the fast paths read is set (a cache that set up has array caches).
    debug_assert!(k.fast.iter().all(|s| !s.load(Ordering::Relaxed).is_null()));
    sys::rseq::release(sys::rseq::HOLD_TABLES);
    Ok(())
}

/// The fast path's pop for `size <= FAST_MAX`: the class's array caches from the
/// by-size table, then one restartable sequence. Null when it cannot serve, or while
/// any of the hold bits `also` is held.
#[inline(always)]
fn fast_pop(size: usize, also: usize) -> *mut u8 {
    // SAFETY: `size <= FAST_MAX`, checked by every caller, keeps the index in range.
    let slot = unsafe { kmalloc_static().fast.get_unchecked((size + 7) >> 3) };
    // SAFETY: an entry of kmalloc's table.
    unsafe { RawCache::alloc_fast_table(slot.load(Ordering::Acquire), also) }
}

/// Largest size the fast paths serve: the sizes `size_index` maps by table.
pub const FAST_MAX: usize = 1024;

/// The inline fast path of [`kmalloc`] alone for the C interface's `malloc`: a request
/// rounded up to 16 bytes, 0 included (16-byte alignment, a unique block for 0), for
/// `size <= FAST_MAX`, which the caller must have checked. A table lookup and one
/// restartable sequence; null when it cannot serve (rseq off, an empty cache, not
/// booted), and the caller then takes its own slow path, out of line. Size 0 needs no
/// `max(size, 1)`: the table's entry 0 is the 16-byte class's (see `size_index`).
///
/// # Safety
/// `size <= FAST_MAX`.
#[inline(always)]
pub unsafe fn kmalloc_fast16(size: usize) -> *mut u8 {
    // SAFETY: the caller's bound.
    unsafe { kmalloc_fast16_unless(size, 0) }
}

/// [`kmalloc_fast16`], also null while any of the hold bits `also` is held: a
/// caller's own condition for its fast path (C++'s operators: `HOLD_CXX`), tested
/// with the bits the pop tests already, in one instruction.
///
/// # Safety
/// `size <= FAST_MAX`.
#[inline(always)]
pub unsafe fn kmalloc_fast16_unless(size: usize, also: usize) -> *mut u8 {
    // SAFETY: every caller checks the bound, which keeps the table index in range (the
    // compiler cannot see it through the rounding).
    unsafe { core::hint::assert_unchecked(size <= FAST_MAX) };
    fast_pop((size + 15) & !15, also)
}

/// The inline fast path of a C allocation above [`FAST_MAX`] and up to
/// [`KMALLOC_MAX_CACHE_SIZE`]: the class's array caches from the second by-size table,
/// then one restartable sequence, as [`kmalloc_fast16`]. Null when it cannot serve.
///
/// # Safety
/// `FAST_MAX < size <= KMALLOC_MAX_CACHE_SIZE`.
#[inline(always)]
pub unsafe fn kmalloc_fast_big(size: usize) -> *mut u8 {
    // SAFETY: the caller's bound keeps the index in 5..=128.
    let slot = unsafe { kmalloc_static().fast_big.get_unchecked((size + 255) >> 8) };
    // SAFETY: an entry of kmalloc's table.
    unsafe { RawCache::alloc_fast_table(slot.load(Ordering::Acquire), 0) }
}

/// The inline fast path for a block aligned to `align` (a power of two), for the C
/// interface's `memalign` family: `size` rounded up to a multiple of `align` goes
/// through [`kmalloc_fast16`]'s table, whose class for a multiple of any power of two
/// up to [`FAST_MAX`] is itself a multiple of it, and a class's objects are aligned to
/// the largest power of two dividing its size (checked by
/// `the_fast_table_serves_aligned_sizes`). Null when it cannot serve, or when the
/// rounded size or `align` is beyond `FAST_MAX`.
#[inline(always)]
pub fn kmalloc_fast_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align > FAST_MAX || size > FAST_MAX {
        return ptr::null_mut();
    }
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    if rounded > FAST_MAX {
        return ptr::null_mut();
    }
    // SAFETY: at most FAST_MAX, checked above.
    unsafe { kmalloc_fast16(rounded) }
}

/// What [`krealloc_fast`] found a C `realloc` of a block to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastRealloc {
    /// The block already is of the class that serves the new size: it stays.
    InPlace,
    /// A slab block of another class, of this many bytes: it moves to a block of the
    /// new size's class (`malloc`'s and `free`'s fast paths and a copy).
    Move(usize),
    /// Anything else (a foreign, large or huge block, an interior pointer): the whole
    /// path, which checks the pointer again.
    Slow,
}

/// The slab cases of [`krealloc_unsized`], inline, for C `realloc` to `size` bytes
/// (rounded to 16, at most [`FAST_MAX`]): after the same pointer check as a free (the
/// arena map, the page's tag, the slot start), whether `p` stays where it is (already a
/// block of the class the fast path serves `size` from) or moves from its class, whose
/// size the tag gives. Nothing is done.
///
/// # Safety
/// `p` is a live block of cpuslab or a foreign one; `size <= FAST_MAX`.
#[inline(always)]
pub unsafe fn krealloc_fast(p: *mut u8, size: usize) -> FastRealloc {
    let Some(off) = arena::offset_in(p) else {
        return FastRealloc::Slow;
    };
    // SAFETY: `off` is `p`'s offset in its arena.
    let tag = unsafe { page::tag::tag_at(p, off) };
    // SAFETY: `size <= FAST_MAX` (the contract), so the rounded index is in range.
    let class = unsafe {
        *kmalloc_static()
            .size_index
            .get_unchecked((((size + 15) & !15) + 7) >> 3)
    } as usize;
    // A page's tag is its class's own (`class + 1`) or an owner's of that class; a tag
    // of no class starts no slot.
    let tags: &Tags = sys::local_static!(TAGS);
    let entry = &tags.checks[tag];
    if !entry.starts_slot(off) {
        return FastRealloc::Slow;
    }
    match entry.cache_tag() {
        t if t == class + 1 => FastRealloc::InPlace,
        // SAFETY: a tag that starts a slot names a class (`t - 1 < NR_KMALLOC`).
        t => FastRealloc::Move(unsafe { *KMALLOC_SIZES.get_unchecked(t - 1) }),
    }
}

/// The inline fast path of [`kfree_unsized`] alone: a block of a slab goes onto this
/// CPU's array cache by one restartable sequence. Its class comes from its page's tag
/// (`page::tag`: one byte per page, at an address that is arithmetic on the block's,
/// in a table a few KiB long where the page descriptors would be a cache line each),
/// after the arena map says the address is cpuslab's; the tag's entry in `TAGS`
/// checks that the pointer starts a slot, holds the class's array caches, and for a
/// small class names the CPU that owns the page's objects. False, with nothing done,
/// for anything else (null, a foreign, large or huge block, an interior pointer, rseq
/// off, a full cache, another CPU's small object, another node's object); the caller
/// then takes the whole path, which looks at the page descriptor.
///
/// # Safety
/// `p` is null, a foreign block, or a live block of cpuslab not used again.
#[inline(always)]
pub unsafe fn kfree_unsized_fast(p: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    unsafe { kfree_unsized_fast_unless(p, 0) }
}

/// [`kfree_unsized_fast`], also false while any of the hold bits `also` is held (see
/// [`kmalloc_fast16_unless`]).
///
/// # Safety
/// As for [`kfree_unsized_fast`].
#[inline(always)]
pub unsafe fn kfree_unsized_fast_unless(p: *mut u8, also: usize) -> bool {
    let Some(off) = arena::offset_in(p) else {
        return false;
    };
    // SAFETY: `off` is `p`'s offset in its arena.
    let tag = unsafe { page::tag::tag_at(p, off) };
    let tags: &Tags = sys::local_static!(TAGS);
    // SAFETY: a tag is a byte, so within the table.
    let entry = unsafe { tags.checks.get_unchecked(tag) };
    // The sequence makes the owner test on every free, without a branch on the class,
    // so the one branch it makes goes the same way on every free that stays on its
    // CPU: which class a block is, small or not, is as random as a program's sizes,
    // and a branch on it would be mispredicted as often (`glibc-thread` lost 9% to
    // one).
    // SAFETY: an entry passes `p` only when its page's tag is that of a kmalloc
    // class. The caller gives `p` up.
    match unsafe { RawCache::free_fast_tagged(entry, p, off, also) } {
        sys::rseq::Pushed::Yes => true,
        sys::rseq::Pushed::No => false,
        // SAFETY: `p` lies in a page with the entry's tag, whose slot test passed;
        // the caller gives `p` up.
        sys::rseq::Pushed::OtherCpu => unsafe { free_elsewhere(entry, p) },
    }
}

/// The fast free of `p` on a CPU that failed `entry`'s owner test: onto the entry's
/// array caches where [`other_owner`] allows it. False for the slow path. Inline: a
/// call here would make the whole free keep `p` in a callee-saved register for the
/// slow path after it, a push and a pop on every free.
///
/// # Safety
/// As for [`other_owner`], and the caller gives `p` up.
#[cold]
#[inline(always)]
unsafe fn free_elsewhere(entry: &TagCheck, p: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    match unsafe { other_owner(entry, p, sys::rseq::stack_cpu()) } {
        // SAFETY: the entry's array caches; the sequences are on (the fast path's
        // hold test passed); `p`, an object given up, is not null.
        Some(base) => unsafe { sys::rseq::stack_push_deep(base.as_ptr().cast(), p) },
        None => false,
    }
}

/// Where the free of `p`, in a page whose tag's `entry` names an owner that is not
/// CPU `cpu`, goes on `cpu`: nowhere (none: the slow path sends it to its owner), or,
/// where the entry leaves the owner to the page's descriptor and that names `cpu` or
/// none, the entry's array caches.
///
/// # Safety
/// `p` lies in an arena page the zones handed out (its descriptor is mapped): a
/// page with `entry`'s tag, for the free, and the entry's slot test passed.
#[cold]
#[inline(always)]
unsafe fn other_owner(entry: &TagCheck, p: *mut u8, cpu: usize) -> Option<NonNull<ArrayCache>> {
    // SAFETY: the caller's contract.
    if entry.owner() != TagCheck::ASK_PAGE || unsafe { entry.owned_elsewhere(p, cpu) } {
        return None;
    }
    // SAFETY: the slot test passed (the caller's contract).
    Some(unsafe { entry.cpu_caches_of_slot() })
}

/// Allocates `size` bytes aligned to `align` (a power of two). Null on failure, and
/// before the allocator has booted (the entry points boot it: `CpuSlab`, the C
/// interface).
///
/// The fast path is a table lookup and one restartable sequence; everything else
/// (larger or more aligned sizes, an empty array cache, rseq off, not booted) is one
/// call to `kmalloc_slow`.
#[inline(always)]
pub fn kmalloc(size: usize, align: usize) -> *mut u8 {
    kmalloc_or(size, align, kmalloc_slow)
}

/// [`kmalloc`]'s fast path, with `slow` for everything else (called last, so a tail
/// call: the inline path keeps no register for after it). `slow` is [`kmalloc_slow`]
/// or a caller's cold path around it: `CpuSlab` boots the allocator there.
#[inline(always)]
pub fn kmalloc_or(size: usize, align: usize, slow: fn(usize, usize) -> *mut u8) -> *mut u8 {
    if size <= FAST_MAX && align <= 16 {
        // A 16-byte alignment (hashbrown's tables, `u128`) rounds the size to 16: the
        // class of that size is a multiple of 16, as `classify` picks (see
        // `fast_size`).
        let obj = fast_pop(fast_size(size, align), 0);
        if !obj.is_null() {
            return obj;
        }
    }
    slow(size, align)
}

/// The size whose entry of the by-size table holds the class `classify(size, align)`
/// picks, for `size <= FAST_MAX` and `align <= 16`: the size itself up to an
/// alignment of 8, else rounded to 16 (the classes above 16 bytes that are no
/// multiple of 16, 24 alone, are then skipped). Checked for every size by
/// `the_fast_table_agrees_with_classify`.
#[inline(always)]
fn fast_size(size: usize, align: usize) -> usize {
    if align <= 8 {
        size
    } else {
        (size + 15) & !15
    }
}

/// The class-`i` request the fast path did not serve: the cache's whole per-CPU path
/// (a refill, or the tried lock where rseq is off), without classifying again.
#[cold]
#[inline(never)]
fn kmalloc_class(i: usize, size: usize, align: usize) -> *mut u8 {
    let obj = cache(i).alloc();
    if !obj.is_null() {
        return obj;
    }
    kmalloc_boot(size, align)
}

/// What the fast path did not serve or look at: small requests it could not pop (a
/// refill, the tried lock where rseq is off, boot), sizes above 1 KiB or alignments
/// above 8 (slab classes through their cache's whole path), large and huge requests.
#[cold]
#[inline(never)]
pub fn kmalloc_slow(size: usize, align: usize) -> *mut u8 {
    // The classes above 1 KiB: one table load and one restartable sequence, as the
    // inline path does below (out of line, so that every call site stays small).
    // Every class there is a multiple of 256, so an alignment up to 256 changes
    // nothing (`classify` agrees: `the_big_fast_table_agrees_with_classify`).
    if align <= 256 && size > FAST_MAX && size <= KMALLOC_MAX_CACHE_SIZE {
        // SAFETY: within the table's bound, checked above.
        let p = unsafe { kmalloc_fast_big(size) };
        if !p.is_null() {
            return p;
        }
    }
    match classify(size, align) {
        Kind::Slab(i) => kmalloc_class(i, size, align),
        _ => kmalloc_boot(size, align),
    }
}

/// Serves large and huge requests (and retries a slab request that found its cache
/// empty). Null when the allocator has not booted: this layer never boots it; the
/// entry points (`CpuSlab`, the C interface) do, and ask again. Where cpuslab cannot
/// run at all, the system allocator serves.
#[cold]
#[inline(never)]
fn kmalloc_boot(size: usize, align: usize) -> *mut u8 {
    if !crate::state::ready() {
        if crate::state::unsupported() {
            return forward_alloc(size, align);
        }
        return ptr::null_mut();
    }
    let p = match classify(size, align) {
        Kind::Slab(i) => cache(i).alloc(),
        Kind::Large => {
            let npages = size.div_ceil(PAGE_SIZE).max(1);
            let min_order = (align >> PAGE_SHIFT).max(1).trailing_zeros() as usize;
            let page = page::alloc_large(npages, min_order);
            if page.is_null() {
                ptr::null_mut()
            } else {
                page::page_address(page)
            }
        }
        // At least one byte: a zero-byte huge block would start at the end of its own
        // mapping, an address that may belong to the next mapping (an arena).
        Kind::Huge => {
            let p = huge::alloc(size.max(1), align);
            if p.is_null() && size <= arena::reserved() && reclaim_address_space() {
                let p = huge::alloc(size.max(1), align);
                RECLAIM.helped(!p.is_null());
                p
            } else {
                p
            }
        }
    };
    if p.is_null() {
        // A failed allocation is memory pressure on the thread's cpuset.
        crate::cpuset::memory_pressure_bump();
    }
    p
}

/// Spaces out [`reclaim_address_space`]: `arena::REFUSED_RETRY_MS` after one that
/// served its request, up to a second after those that did not (a program that keeps
/// asking for what cannot fit, 4 threads churning blocks of up to 9 MB under `ulimit
/// -v 800000`, ran 1.7 times as long with a reclaim every 10 ms as without any).
static RECLAIM: crate::ds::Backoff = crate::ds::Backoff::new(arena::REFUSED_RETRY_MS, 1000);

/// For a huge block the kernel or the heap limit refused: empties the slab caches and
/// gives back the address space of the arenas' free blocks at their ends
/// (`page::release_address_space`) and of the freed huge blocks kept for reuse, as
/// glibc's freed memory leaves its room to the next mapping. A program that filled
/// `ulimit -v 262144` with 1000-byte blocks and freed them got a block of 3 MiB after
/// where glibc served 125 (`tests/capi/as_reuse.c`). Not as often as [`RECLAIM`]
/// says, so that a program asking again and again for what cannot fit does not empty
/// its caches each time. Whether anything went back.
#[cold]
fn reclaim_address_space() -> bool {
    if !RECLAIM.start(sys::time::now_ms()) {
        return false;
    }
    sys::process::with_one_look(|| {
        slab::shrink_all();
        page::release_address_space() + huge::drain_cache() > 0
    })
}

/// How `rcu::free_rcu` frees the kmalloc blocks it deferred.
static RCU_BLOCK_FREE: crate::rcu::BlockFree = crate::rcu::BlockFree {
    free: kfree,
    slab_bytes: |size, align| match classify(size, align) {
        Kind::Slab(i) => KMALLOC_SIZES[i],
        _ => 0,
    },
};

/// Set once cpuslab cannot run on this machine (a kernel page size other than 4 KiB):
/// every block is then glibc's, allocated, resized and freed through its
/// `__libc_*` functions, and the slab caches hand the blocks they are given to it
/// (`slab::cache::set_foreign_free`). Never set in a process where cpuslab booted, so
/// no block of cpuslab's exists to tell apart.
static FORWARDING: AtomicBool = AtomicBool::new(false);

/// Whether blocks are glibc's (see [`FORWARDING`]).
#[inline]
fn forwarding() -> bool {
    FORWARDING.load(Ordering::Relaxed)
}

/// Set once [`kmalloc_fallback`] handed out a block of glibc's in a process cpuslab
/// serves: the kernel refused cpuslab an arena ([`arena::refused`], an address-space
/// limit) while glibc's heap could still grow. From then on some blocks are glibc's,
/// told apart from cpuslab's by the arena map ([`glibc_block`]); `HOLD_FOREIGN` is
/// held with it, so that the sized frees' inline pushes leave every block to the
/// paths that look.
static MIXED: AtomicBool = AtomicBool::new(false);

/// Whether `p`, a live block from kmalloc, is glibc's: every block while
/// [`FORWARDING`], one outside cpuslab's memory once [`MIXED`].
#[inline]
fn glibc_block(p: *mut u8) -> bool {
    forwarding() || (MIXED.load(Ordering::Relaxed) && !arena::contains(p) && !huge::is_huge(p))
}

/// What `CpuSlab` hands out when kmalloc returned null for `(size, align)` (zeroed
/// for `zero`): a block of glibc's where the kernel refused cpuslab an arena and no
/// heap limit is set (which only cpuslab would enforce), else null. Under an
/// address-space limit cpuslab's arenas, 4 MiB blocks in 256 MiB slots, stop fitting
/// while glibc's heap still grows, above all in the room glibc's thread arenas have
/// reserved already; the C interface hands such requests to glibc itself
/// (`init::may_forward`). A test process 24 MiB under its limit
/// (`tests/bad_input.rs`) got 219,132 blocks of 100 B before null without this and
/// 820,293 with it; a one-thread program under `ulimit -v 65536` 21-23 MiB without,
/// 21-24 with, the system allocator 26-29.
#[cold]
pub fn kmalloc_fallback(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !arena::refused_unlimited() {
        return ptr::null_mut();
    }
    // Held before any block of glibc's is handed out, by every thread that hands one
    // out (an idempotent `or`), so that no free of it can find the bit clear.
    sys::rseq::hold(sys::rseq::HOLD_FOREIGN);
    MIXED.store(true, Ordering::Release);
    let size = size.max(1);
    if align <= 16 {
        if zero {
            sys::glibc::calloc(1, size)
        } else {
            sys::glibc::malloc(size)
        }
    } else {
        let p = sys::glibc::memalign(align, size);
        if zero && !p.is_null() {
            // SAFETY: a fresh block of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    }
}

/// `kmalloc(size, align)` from glibc, for a process cpuslab cannot serve.
#[cold]
fn forward_alloc(size: usize, align: usize) -> *mut u8 {
    if !FORWARDING.swap(true, Ordering::AcqRel) {
        crate::slab::cache::set_foreign_free(forward_free);
    }
    // glibc's malloc aligns to 16 bytes.
    if align <= 16 {
        sys::glibc::malloc(size.max(1))
    } else {
        sys::glibc::memalign(align, size.max(1))
    }
}

/// Frees a block [`forward_alloc`] made.
///
/// # Safety
/// `p` is a live block of glibc's, given up.
unsafe fn forward_free(p: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { sys::glibc::free(p) }
}

/// Allocates zeroed memory, skipping the memset where the pages are known to be zero.
pub fn kzalloc(size: usize, align: usize) -> *mut u8 {
    let p = kmalloc(size, align);
    if p.is_null() {
        return p;
    }
    let zero = match classify(size, align) {
        _ if forwarding() => false,
        Kind::Slab(_) => false,
        // SAFETY: `p` heads a large block just allocated.
        Kind::Large => unsafe { (*virt_to_page(p)).flags() & PG_ZERO != 0 },
        // SAFETY: `p` heads a huge block just allocated, of at least `size` bytes,
        // which nobody else uses yet.
        Kind::Huge => unsafe {
            if !huge::is_zero(p) {
                // Given back to the kernel rather than written (see `huge::zero`).
                huge::zero(p, size);
            }
            true
        },
    };
    if !zero {
        // SAFETY: `p` has at least `size` writable bytes.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

/// Frees memory from [`kmalloc`] with the same `(size, align)`.
///
/// # Safety
/// `p` came from `kmalloc(size, align)` (or `krealloc` to `size`) and is not used again.
#[inline(always)]
pub unsafe fn kfree(p: *mut u8, size: usize, align: usize) {
    if size <= FAST_MAX && align <= 16 {
        let i = (fast_size(size, align) + 7) >> 3;
        let k = kmalloc_static();
        // SAFETY: `size <= FAST_MAX` keeps the index within both tables.
        let (slot, mask) = unsafe { (k.fast.get_unchecked(i), k.fast_mask.get_unchecked(i)) };
        let small = fast_size(size, align) < SMALL_SIZE;
        // SAFETY: `p` is an object of a kmalloc slab (the layout is a slab class's),
        // in an arena; the test runs once the tables are filled, so not for a block of
        // glibc's while cpuslab forwards.
        let elsewhere = |cpu| small && unsafe { owned_elsewhere(p, cpu) };
        if p as usize & mask.load(Ordering::Relaxed) == 0
            // SAFETY: `(size, align)` is the block's layout, so the table entry is the
            // array caches of the cache `kmalloc` took `p` from, and `p`, aligned as
            // its objects are, passed that cache's pointer check; the caller gives
            // `p` up.
            && unsafe {
                RawCache::free_fast_table(slot.load(Ordering::Acquire), p, elsewhere)
            }
        {
            return;
        }
        // SAFETY: as above; the fast path left `p` live.
        unsafe { kfree_class(cache(k.size_index[i] as usize), p) };
        return;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { kfree_slow(p, size, align) }
}

/// Whether `p`, an object of a small class's slab, belongs to another CPU than `cpu`
/// (`slab::cache::remote`), by its page's tag (see [`Tags`]).
///
/// # Safety
/// `p` is an object of a kmalloc slab, so in a page the zones handed out.
#[inline(always)]
unsafe fn owned_elsewhere(p: *mut u8, cpu: usize) -> bool {
    let off = (p as usize & arena::ARENA_MASK) as u32;
    // SAFETY: `off` is `p`'s offset in its arena, which `offset_in` would return for
    // an address in a block the zones hand out (the contract).
    let tag = unsafe { page::tag::tag_at(p, off) };
    let tags: &Tags = sys::local_static!(TAGS);
    // SAFETY: a byte indexes the table; `p` lies in a page with that tag.
    unsafe { tags.checks.get_unchecked(tag).owned_elsewhere(p, cpu) }
}

/// A free of a small class the fast path did not take: the cache's whole free path,
/// its pointer check included (the fast path's may have read the mask of a table not
/// yet filled).
#[cold]
#[inline(never)]
unsafe fn kfree_class(c: &RawCache, p: *mut u8) {
    if glibc_block(p) {
        // SAFETY: a live block of glibc's ([`kmalloc_fallback`]), given up.
        return unsafe { sys::glibc::free(p) };
    }
    // SAFETY: `p` is an object of `c` given up by `kfree`'s caller.
    unsafe { c.free(p) }
}

/// What the free fast path did not do, by the block's class.
#[cold]
#[inline(never)]
unsafe fn kfree_slow(p: *mut u8, size: usize, align: usize) {
    if glibc_block(p) {
        // SAFETY: glibc's block (`FORWARDING` or `MIXED`), given up by the caller.
        return unsafe { forward_free(p) };
    }
    if align <= 256 && size > FAST_MAX && size <= KMALLOC_MAX_CACHE_SIZE {
        // A class above 1 KiB (smaller ones took the inline path): its fast free, as
        // `kfree`'s; any alignment up to 256 is the same class, as in `kmalloc_slow`.
        let c = cache(size_index(size));
        // SAFETY: `(size, align)` is the block's layout, so `c` is the cache `kmalloc`
        // took `p` from; the caller gives `p` up.
        if !unsafe { c.free_fast(p) } {
            // SAFETY: as above; `free_fast` checked the pointer and left `p` live.
            unsafe { kfree_class(c, p) };
        }
        return;
    }
    // `classify` is deterministic: `p`, from `kmalloc(size, align)` and given up by the
    // caller, goes back where that call served it (or, shrunk in place by `krealloc`,
    // to the huge blocks: `kind_of`).
    match kind_of(p, size, align) {
        // SAFETY: an object of cache `i`, as above.
        Kind::Slab(i) => unsafe { cache(i).free(p) },
        // SAFETY: a large block, as above.
        Kind::Large => unsafe { free_large(p) },
        // SAFETY: a huge block from `huge::alloc` or `huge::realloc`, as above.
        Kind::Huge => unsafe { huge::free(p) },
    }
}

#[cold]
unsafe fn free_large(p: *mut u8) {
    if !arena::contains(p) {
        sys::io::fatal(format_args!(
            "free(): invalid pointer {p:p}: not a large block of cpuslab"
        ));
    }
    // Checks that `p` starts a live large block (aborting otherwise) and frees it.
    // SAFETY: `p` lies in an arena (checked above); a live block is the caller's to
    // give up.
    unsafe { page::free_large(p) };
}

/// The kind of the live block `p` of layout `(size, align)`: [`classify`]'s, except that
/// a block outside the arenas with a large layout is huge. `krealloc` shrinks a huge
/// block to a large size in place (as glibc's `mremap` shrinks its mapped chunks), so
/// the paths that take a layout tell the two apart by the address: a huge block is in
/// no arena. One load of the arena map, on the large paths only; a pointer that is
/// neither goes to the huge paths, which abort with one line.
#[inline]
fn kind_of(p: *mut u8, size: usize, align: usize) -> Kind {
    match classify(size, align) {
        Kind::Large if !arena::contains(p) => Kind::Huge,
        kind => kind,
    }
}

/// The head of the live large block at `p` for `op`; aborts with one line otherwise.
#[cold]
unsafe fn large_head(p: *mut u8, op: &str) -> *mut page::Page {
    if !arena::contains(p) {
        sys::io::fatal(format_args!(
            "{op}: invalid pointer {p:p}: not a large block of cpuslab"
        ));
    }
    // SAFETY: `p` lies in an arena, checked above.
    unsafe { page::large_block(p, op) }
}

/// Resizes a block from [`kmalloc`], in place when its class or pages allow (a large
/// block shrinks in place, and grows in place when the pages after it are free).
///
/// # Safety
/// As [`kfree`] for `(p, old_size, align)`; on success the old block must not be used.
pub unsafe fn krealloc(p: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    if glibc_block(p) {
        // SAFETY: `p` is glibc's live block of `old_size` bytes (`FORWARDING` or
        // `MIXED`), given up on success.
        return unsafe { forward_realloc(p, old_size, align, new_size) };
    }
    match (kind_of(p, old_size, align), classify(new_size, align)) {
        (Kind::Slab(a), Kind::Slab(b)) if a == b => return p,
        (Kind::Large, Kind::Large) => {
            // SAFETY: `large_head` checks the arena bound `large_block` needs.
            let page = unsafe { large_head(p, "realloc()") };
            // SAFETY: the head descriptor of the caller's live large block (checked
            // above); nobody else changes its page count.
            let old_pages = unsafe { (*page).info } as usize;
            let new_pages = new_size.div_ceil(PAGE_SIZE).max(1);
            if new_pages == old_pages {
                return p;
            }
            if new_pages < old_pages {
                // SAFETY: `page` heads the caller's block of more pages than
                // `new_pages`; the tail past `new_size` is dropped by this realloc.
                unsafe { page::shrink_pages_exact(page, new_pages) };
                return p;
            }
            // SAFETY: `page` heads the caller's block of fewer pages than `new_pages`.
            if unsafe { page::grow_pages_exact(page, new_pages) } {
                return p;
            }
        }
        // A huge block shrunk to a large size stays huge, in place, rather than being
        // copied into a block of the zones (`Vec::shrink_to_fit` of a buffer of a few
        // MiB); the sized paths find it by its address (`kind_of`).
        (Kind::Huge, Kind::Huge | Kind::Large) if align <= PAGE_SIZE => {
            // SAFETY: `kind_of` made `p` a huge block (from `huge::alloc`, or moved or
            // shrunk by `huge::realloc`), aligned to at most a page (the guard);
            // liveness is checked.
            let moved = unsafe { huge::realloc(p, new_size) };
            if !moved.is_null() {
                return moved;
            }
        }
        // Checked before the copy below reads the block.
        (Kind::Large, _) => {
            // SAFETY: `large_head` checks the arena bound `large_block` needs.
            unsafe { large_head(p, "realloc()") };
        }
        (Kind::Huge, _) => huge::check_live(p, "realloc()"),
        _ => {}
    }
    let mut q = kmalloc(new_size, align);
    if q.is_null() {
        q = kmalloc_fallback(new_size, align, false);
    }
    if !q.is_null() {
        // SAFETY: `p` is live with `old_size` bytes (checked above for large and huge
        // blocks), `q` a fresh block of `new_size`; two live blocks do not overlap.
        unsafe { ptr::copy_nonoverlapping(p, q, old_size.min(new_size)) };
        // SAFETY: the caller's block with its layout; on success it is not used again.
        unsafe { kfree(p, old_size, align) };
    }
    q
}

/// [`krealloc`] of a block of glibc's: its `realloc` where that keeps the alignment,
/// else a new block, the copy and a free.
///
/// # Safety
/// `p` is glibc's live block of `old_size` bytes aligned to `align`; on success (non-
/// null) it must not be used again.
#[cold]
unsafe fn forward_realloc(p: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    if align <= 16 {
        // SAFETY: the caller's contract.
        return unsafe { sys::glibc::realloc(p, new_size.max(1)) };
    }
    // Not `forward_alloc`, which would mark every block glibc's (`FORWARDING`).
    let q = sys::glibc::memalign(align, new_size.max(1));
    if !q.is_null() {
        // SAFETY: both blocks hold the bytes copied; they are distinct live blocks.
        unsafe { ptr::copy_nonoverlapping(p, q, old_size.min(new_size)) };
        // SAFETY: the caller gives `p` up now that the copy is made.
        unsafe { forward_free(p) };
    }
    q
}

/// Bytes usable in a block allocated with `(size, align)`.
///
/// # Safety
/// `p` came from `kmalloc(size, align)` and is live.
pub unsafe fn usable_size_layout(p: *mut u8, size: usize, align: usize) -> usize {
    if glibc_block(p) {
        // glibc's block may hold no more than was asked for it.
        return size;
    }
    match kind_of(p, size, align) {
        Kind::Slab(i) => KMALLOC_SIZES[i],
        Kind::Large => {
            // SAFETY: `large_head` checks the arena bound and returns the mapped head
            // descriptor of the caller's live block, whose page count nobody else
            // changes.
            (unsafe { (*large_head(p, "malloc_usable_size()")).info } as usize) << PAGE_SHIFT
        }
        // SAFETY: a huge block by its layout or its address, live as the caller promised
        // (and checked).
        Kind::Huge => unsafe { huge::usable_size(p) },
    }
}

/// Bytes usable in the live block at `p` (`ksize`), found from the page descriptor.
/// Aborts with one line when `p` is in no slab and starts no live large or huge block.
///
/// # Safety
/// `p` is a live block returned by cpuslab.
pub unsafe fn ksize(p: *mut u8) -> usize {
    if (forwarding() || MIXED.load(Ordering::Relaxed)) && !arena::contains(p) && !huge::is_huge(p) {
        // SAFETY: a live block of the process, not cpuslab's: the system allocator's
        // (`FORWARDING` or `MIXED`), which measures it.
        return unsafe { sys::glibc::usable_size(p) };
    }
    if arena::contains(p) {
        let head = virt_to_head_page(p);
        // SAFETY: descriptors of arena pages are always mapped.
        let flags = unsafe { (*head).flags() };
        if flags & PG_SLAB != 0 {
            // SAFETY: a slab page's descriptor names its cache while the slab holds a
            // live object such as `p`.
            return unsafe { (*(*head).cache.cast::<RawCache>()).object_size() };
        }
        // Aborts unless `p` starts a live large block.
        // SAFETY: `p` lies in an arena, checked above.
        let page = unsafe { page::large_block(p, "malloc_usable_size()") };
        // SAFETY: the head descriptor of the caller's live block (checked), whose page
        // count nobody else changes.
        return (unsafe { (*page).info } as usize) << PAGE_SHIFT;
    }
    // Aborts unless `p` is a live huge block.
    // SAFETY: outside the arenas the caller's live block is a huge one (and checked).
    unsafe { huge::usable_size(p) }
}

/// Whether `p` is a live block of cpuslab (an object or block start in an arena, or a
/// huge block). Safe for any address; used to recognise foreign pointers.
pub fn owns(p: *const u8) -> bool {
    if arena::contains(p) {
        let head = virt_to_head_page(p);
        // SAFETY: descriptors of arena pages are always mapped.
        let flags = unsafe { (*head).flags() };
        let large_start = flags & PG_LARGE != 0 && p as usize & (PAGE_SIZE - 1) == 0;
        return flags & PG_SLAB != 0 || large_start;
    }
    huge::is_huge(p)
}

/// Frees a block without its size (C `free`), finding its kind from the page
/// descriptor or the huge registry.
///
/// # Safety
/// `p` is a live block of cpuslab (see [`owns`]) not used again.
pub unsafe fn kfree_unsized(p: *mut u8) {
    if arena::contains(p) {
        let head = virt_to_head_page(p);
        // SAFETY: descriptors of arena pages are always mapped.
        let flags = unsafe { (*head).flags() };
        if flags & PG_SLAB != 0 {
            // The descriptor is loaded already: check exactly that `p` starts an object
            // (C's free(p + 16) aborts here, as glibc's "free(): invalid pointer").
            // SAFETY: `head` is `p`'s slab, whose descriptor names its cache while it
            // holds a live object such as `p`; the caller gives `p` up.
            unsafe { (*(*head).cache.cast::<RawCache>()).free_in_slab(head, p) };
            return;
        }
        // Aborts unless `p` starts a live large block (an interior pointer, a double
        // free, a free page).
        // SAFETY: `p` lies in an arena (checked above); the caller gives it up.
        unsafe { page::free_large(p) };
        return;
    }
    // SAFETY: outside the arenas the caller's live block is a huge one, given up.
    unsafe { huge::free(p) };
}

/// Resizes a block without its old size (C `realloc`): in place when the new size
/// keeps its cache, shrinks its pages, or resizes or moves a huge block; otherwise
/// allocate-copy-free. Null (the old block intact) on failure.
///
/// # Safety
/// `p` is a live block of cpuslab (see [`owns`]) allocated with alignment `align`; on
/// success (non-null) it must not be used again.
pub unsafe fn krealloc_unsized(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    let new_kind = classify(new_size, align);
    if arena::contains(p) {
        let head = virt_to_head_page(p);
        // SAFETY: descriptors of arena pages are always mapped.
        let flags = unsafe { (*head).flags() };
        if flags & PG_SLAB != 0 {
            // SAFETY: as above; the field names the slab's cache while `p` is live.
            let own = unsafe { (*head).cache }.cast::<RawCache>();
            // A pointer into a slab that starts no object aborts here, whatever the new
            // size (glibc's "realloc(): invalid pointer"): the in-place case would hand
            // it back as if it were a block.
            // SAFETY: `head` heads `p`'s slab, of cache `own`.
            if !unsafe { (*own).starts_object(head, p) } {
                sys::io::fatal(format_args!("realloc(): invalid pointer {p:p}"));
            }
            if let Kind::Slab(i) = new_kind {
                if ptr::eq(cache(i), own) {
                    return p;
                }
            }
        } else {
            // Aborts unless `p` starts a live large block.
            // SAFETY: `p` lies in an arena, checked above.
            let head = unsafe { page::large_block(p, "realloc()") };
            if new_kind == Kind::Large {
                // SAFETY: the head descriptor of the caller's live block (checked),
                // whose page count nobody else changes.
                let old_pages = unsafe { (*head).info } as usize;
                let new_pages = new_size.div_ceil(PAGE_SIZE).max(1);
                if new_pages == old_pages {
                    return p;
                }
                if new_pages < old_pages {
                    // SAFETY: `head` heads the caller's block of more pages than
                    // `new_pages`; the tail past `new_size` is dropped by this realloc.
                    unsafe { page::shrink_pages_exact(head, new_pages) };
                    return p;
                }
                // SAFETY: `head` heads the caller's block of fewer pages than
                // `new_pages`.
                if unsafe { page::grow_pages_exact(head, new_pages) } {
                    return p;
                }
            }
        }
    } else if !matches!(new_kind, Kind::Slab(_)) && align <= PAGE_SIZE {
        // A huge block resized to a large size stays huge, shrunk in place rather than
        // copied into a block of the zones, as glibc's `mremap` shrinks its mapped
        // chunks: a `realloc` back and forth across the 4 MiB line copied 4 MiB each
        // time (130 µs a call; glibc, jemalloc and tcmalloc 2.6-3.6). The unsized
        // paths (`free`, `realloc`, `malloc_usable_size`) find it by its address, as
        // the sized ones do (`kind_of`).
        // Checks that `p` is a live huge block.
        // SAFETY: outside the arenas the caller's block is a huge one, allocated with
        // `align`, at most a page (checked).
        let moved = unsafe { huge::realloc(p, new_size) };
        if !moved.is_null() {
            return moved;
        }
    } else {
        huge::check_live(p, "realloc()");
    }
    // SAFETY: a live block of cpuslab, as the caller promised.
    let old = unsafe { ksize(p) };
    let q = kmalloc(new_size, align);
    if !q.is_null() {
        // SAFETY: `p` is live with `old` usable bytes, `q` a fresh block of `new_size`;
        // two live blocks do not overlap.
        unsafe { ptr::copy_nonoverlapping(p, q, old.min(new_size)) };
        // SAFETY: the caller's live block, moved to `q`: as realloc, the caller uses `q`
        // from here on, never `p`.
        unsafe { kfree_unsized(p) };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_index_picks_the_smallest_fitting_class() {
        for size in 1..=KMALLOC_MAX_CACHE_SIZE {
            let i = size_index(size);
            assert!(KMALLOC_SIZES[i] >= size, "size {size}");
            assert!(
                i == 0 || KMALLOC_SIZES[i - 1] < size,
                "size {size} not tight"
            );
        }
    }

    #[test]
    fn alignment_classes_are_multiples() {
        for shift in 3..=22 {
            let align = 1usize << shift;
            for size in [1, 7, 24, 100, 1000, 5000, 40000, 1 << 20] {
                match classify(size, align) {
                    Kind::Slab(i) => {
                        assert_eq!(KMALLOC_SIZES[i] % align, 0);
                        assert!(KMALLOC_SIZES[i] >= size);
                    }
                    Kind::Large => assert!(size <= KMALLOC_MAX_LARGE && align <= KMALLOC_MAX_LARGE),
                    Kind::Huge => panic!("size {size} align {align} should not be huge"),
                }
            }
        }
        assert_eq!(classify(KMALLOC_MAX_LARGE + 1, 8), Kind::Huge);
        assert_eq!(classify(64, 1 << 23), Kind::Huge);
    }

    /// The second by-size table names, for every size above 1 KiB up to the largest
    /// class, the array caches of the class `classify` picks, and what
    /// `kmalloc_fast_big` serves is of that class.
    #[test]
    fn the_big_fast_table_agrees_with_classify() {
        assert!(crate::init::ensure());
        for size in FAST_MAX + 1..=KMALLOC_MAX_CACHE_SIZE {
            let Kind::Slab(i) = classify(size, 8) else {
                panic!("size {size} not a slab class");
            };
            let slot = kmalloc_static().fast_big[(size + 255) >> 8].load(Ordering::Acquire);
            assert_eq!(slot, cache(i).cpu_caches(), "size {size}");
            let mut align = 16;
            while align <= 256 {
                assert_eq!(
                    classify(size, align),
                    Kind::Slab(i),
                    "size {size} align {align}"
                );
                align *= 2;
            }
            if size.is_multiple_of(509) {
                let p = kmalloc(size, 256);
                assert!(
                    !p.is_null() && (p as usize).is_multiple_of(256),
                    "size {size}"
                );
                // SAFETY: a live block of that layout, freed once.
                unsafe { kfree(p, size, 256) };
            }
        }
        for size in [1025, 1280, 1281, 4096, 5000, 32768] {
            // SAFETY: within the table's bound.
            let p = unsafe { kmalloc_fast_big(size) };
            if !p.is_null() {
                // SAFETY: a live block, freed once.
                unsafe {
                    assert!(ksize(p) >= size, "size {size}");
                    kfree_unsized(p);
                }
            }
        }
    }

    /// Every request `kmalloc_fast_aligned` serves lands in a class whose size is a
    /// multiple of the alignment, and comes back aligned.
    #[test]
    fn the_fast_table_serves_aligned_sizes() {
        assert!(crate::init::ensure());
        let mut align = 16;
        while align <= FAST_MAX {
            for size in 0..=FAST_MAX {
                let rounded = (size.max(1) + align - 1) & !(align - 1);
                if rounded > FAST_MAX {
                    assert!(kmalloc_fast_aligned(size, align).is_null());
                    continue;
                }
                let class = KMALLOC_SIZES[size_index((rounded + 15) & !15)];
                assert_eq!(class % align, 0, "size {size} align {align}: class {class}");
                let p = kmalloc_fast_aligned(size, align);
                if !p.is_null() {
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    // SAFETY: a live block of that class, freed once.
                    unsafe {
                        assert_eq!(ksize(p), class);
                        kfree_unsized(p);
                    }
                }
            }
            align *= 2;
        }
    }

    /// The fast paths' by-size table names the array caches of the class `classify`
    /// picks, for every size it serves, 0 included, and what it serves is of that
    /// class. (Entry 0 once named the 16-byte class while `classify(0)` said 8 bytes:
    /// a `kmalloc(0)` block freed with its layout went onto the 8-byte class's cache,
    /// and the next reap aborted on it; fuzz/regressions/global_alloc has the input.)
    #[test]
    fn the_fast_table_agrees_with_classify() {
        assert!(crate::init::ensure());
        // C's malloc(0) is a block of the smallest C size, through the same entry.
        assert_eq!(classify(0, 8), classify(16, 8));
        for size in 1..=FAST_MAX {
            // A 16-byte alignment takes the table's entry for the size rounded to 16.
            let Kind::Slab(i) = classify(size, 16) else {
                panic!("size {size} not a slab class");
            };
            assert_eq!(
                kmalloc_static().size_index[(fast_size(size, 16) + 7) >> 3] as usize,
                i,
                "size {size} align 16"
            );
            let p = kmalloc(size, 16);
            assert!(
                !p.is_null() && (p as usize).is_multiple_of(16),
                "size {size}"
            );
            // SAFETY: a live block of that layout, freed once.
            unsafe {
                assert_eq!(ksize(p), KMALLOC_SIZES[i], "size {size} align 16");
                kfree(p, size, 16);
            }
        }
        for size in 0..=FAST_MAX {
            let Kind::Slab(i) = classify(size, 8) else {
                panic!("size {size} not a slab class");
            };
            let slot = kmalloc_static().fast[(size + 7) >> 3].load(Ordering::Acquire);
            assert!(!slot.is_null(), "size {size}");
            assert_eq!(slot, cache(i).cpu_caches(), "size {size}");
            // The sized free checks pointers against the same class's mask.
            let mask = kmalloc_static().fast_mask[(size + 7) >> 3].load(Ordering::Relaxed);
            assert_eq!(mask, cache(i).align_mask(), "size {size}");
            assert_ne!(
                mask,
                usize::MAX,
                "size {size}: the mask of a cache not set up"
            );
            let p = kmalloc(size, 8);
            assert!(!p.is_null());
            // SAFETY: a live block of `size` bytes, freed once with its layout.
            unsafe {
                assert_eq!(ksize(p), KMALLOC_SIZES[i], "size {size}");
                kfree(p, size, 8);
            }
        }
    }

    /// Every class's tag entry passes exactly the offsets that start one of its slab's
    /// slots, in any slab of an arena (the slab's offset in the arena is masked off),
    /// and no other: the one-multiply test of `TagCheck::starts_slot` against the plain
    /// one, for every offset of a slab at three places in the arena.
    #[test]
    fn tag_entries_pass_exactly_the_slot_starts() {
        assert!(crate::init::ensure());
        for i in 0..NR_KMALLOC {
            let c = cache(i);
            if c.tag() == 0 {
                continue; // untagged (a debug cache)
            }
            let entry = &TAGS.checks[i + 1];
            let g = c.geom();
            let slab = crate::sys::PAGE_SIZE << g.order;
            let span = g.num * g.size;
            for base in [
                arena::BLOCK_SIZE,
                arena::BLOCK_SIZE + 5 * slab,
                arena::ARENA_SIZE - slab,
            ] {
                for off in 0..slab {
                    let want = off < span && off.is_multiple_of(g.size);
                    assert_eq!(
                        entry.starts_slot((base + off) as u32),
                        want,
                        "class {i} ({} B) offset {off} in a slab at {base:#x}",
                        g.size
                    );
                }
            }
        }
    }

    /// The free's fast path takes an entry's array caches without a null test once the
    /// entry's slot test passed (`TagCheck::cpu_caches_of_slot`): every entry of the
    /// table that passes some offset has array caches, and the others pass none.
    #[test]
    fn every_tag_entry_that_passes_a_slot_has_array_caches() {
        assert!(crate::init::ensure());
        let mut set = 0;
        for (tag, entry) in TAGS.checks.iter().enumerate() {
            let passes = (0..1u32 << 16).step_by(8).any(|off| entry.starts_slot(off));
            if entry.cpu_caches().is_null() {
                assert!(!passes, "tag {tag} passes a slot without array caches");
            } else if passes {
                set += 1;
            }
        }
        // Every tagged class's own entry at least.
        let tagged = (0..NR_KMALLOC).filter(|&i| cache(i).tag() != 0).count();
        assert!(
            set >= tagged,
            "{set} entries pass slots, {tagged} classes are tagged"
        );
    }

    /// The small classes' tags: CPU `c`'s owner tag of each names `c` and the class;
    /// the class's own tag asks the page descriptor (the slabs of CPUs past
    /// `OWNER_TAG_CPUS`, and those no CPU claimed), and a free found by it takes a
    /// block of its CPU's or of no CPU's onto the class's array caches and turns
    /// another CPU's away.
    #[test]
    fn a_tag_that_asks_the_page_follows_its_descriptor() {
        assert!(crate::init::ensure());
        if !cache(0).has_inboxes() {
            // Debug caches (untagged), or past 254 CPUs: no owners.
            return;
        }
        for class in 0..SMALL_CLASSES {
            let own = &TAGS.checks[class + 1];
            assert_eq!(own.owner(), TagCheck::ASK_PAGE, "class {class}");
            for cpu in 0..OWNER_TAG_CPUS.min(topology::nr_cpu_ids()) {
                let e = &TAGS.checks[owner_tag(class, cpu)];
                assert_eq!(e.owner(), cpu as u32 + 1, "class {class} cpu {cpu}");
                assert_eq!(e.cache_tag(), class + 1, "class {class} cpu {cpu}");
                assert_eq!(e.cpu_caches(), cache(class).cpu_caches());
            }
        }
        // The page whose descriptor the entry asks: a large block's, which no other
        // test's slab shares (`other_owner` reads only the owner byte, which large
        // blocks leave alone).
        let p = kmalloc(64 << 10, 8);
        assert!(!p.is_null());
        assert_eq!(classify(64 << 10, 8), Kind::Large);
        let c = cache(size_index(16));
        let entry = &TAGS.checks[size_index(16) + 1];
        // SAFETY: the descriptor of an arena page, always mapped; the block is ours.
        let byte = unsafe { &(*virt_to_page(p)).owner };
        let saved = byte.load(Ordering::Relaxed);
        for (owner, cpu, takes) in [(0u8, 3usize, true), (4, 3, true), (5, 3, false)] {
            byte.store(owner, Ordering::Relaxed);
            // SAFETY: `p` lies in an arena page the zones handed out; the entry is a
            // class's own, which passes its slots.
            let got = unsafe { other_owner(entry, p, cpu) }.map(NonNull::as_ptr);
            let want = takes.then(|| c.cpu_caches());
            assert_eq!(got, want, "owner byte {owner}, CPU {cpu}");
        }
        byte.store(saved, Ordering::Relaxed);
        // SAFETY: a live block of that layout, freed once.
        unsafe { kfree(p, 64 << 10, 8) };
    }
}
