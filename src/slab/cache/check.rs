//! The checks a freed pointer passes before the cache takes it back, and the aborts
//! when it fails them.
//!
//! Every free makes a cheap check, from the cache line its fast path loads anyway
//! ([`FreeCheck`]): that the pointer is aligned as the cache's objects are, or, where
//! the caller has the slab's descriptor at hand (`free_in_slab`), that it is exactly
//! an object's start. The slow paths make the full check (`check_obj`: an arena
//! address, in a slab of this cache, at an object's start), but for an object of the
//! slab the object before it in a `free_block` batch proved, whose slot offset alone
//! is checked (`starts_slot`). A pointer that fails is
//! heap corruption and aborts, with a message that says what the pointer is instead
//! (another cache's object, not a cpuslab address) or which double free was caught;
//! the one exception is a foreign block that reaches a cache which never set up, which
//! goes to its own allocator (`set_foreign_free`). The aborts are cold and out of line,
//! so the paths that check stay small.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::slabs::slab_first_slot;
use super::{foreign_free, remote, ArrayCache, RawCache};
use crate::page::arena::ARENA_MASK;
use crate::page::desc::PG_SLAB;
use crate::page::{arena, virt_to_head_page, Page};
use crate::sys;

/// What every free checks of its pointer, always (not only in debug mode): that it can
/// be the start of an object. Kept beside `cpu_cache`, in the cache line the fast
/// paths load anyway, so the checks cost no extra line.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(super) struct FreeCheck {
    /// Address bits that are clear in every object (its alignment less one; for a
    /// power-of-two kmalloc class, the size less one, so the test is exact).
    pub(super) mask: usize,
    /// The slot size's [`Geometry::div_magic`](crate::slab::layout::Geometry::div_magic).
    pub(super) div_magic: u64,
    /// Bytes from a slab's first slot to the end of its last.
    pub(super) span: u32,
    /// Offset of an object in its slot (a debug cache's left red zone; else 0).
    pub(super) lead: u32,
}

impl FreeCheck {
    /// Whether `off`, a byte offset from a slab's first slot, starts a slot: below the
    /// slots' end and a multiple of the slot size. `off < span < 2^32`, where the
    /// multiply test is exact (as `is_obj_offset`).
    #[inline(always)]
    pub(super) fn is_slot(&self, off: u32) -> bool {
        off < self.span && u64::from(off).wrapping_mul(self.div_magic) < self.div_magic
    }

    /// A cache not set up: no pointer passes.
    pub(super) const NONE: Self = Self {
        mask: usize::MAX,
        div_magic: 0,
        span: 0,
        lead: 0,
    };
}

/// What a free found by its page tag (`page::tag`) needs, copied from the tagged
/// cache into its owner's table (kmalloc's, by tag), beside the other tags' entries:
/// the test that the pointer starts a slot of its slab, the cache's array caches, and
/// the CPU that owns the page's objects where the tag names one.
///
/// A tagged cache's slabs have no colour and, as buddy blocks, are aligned to their
/// size in the arena, so the slot's offset in its slab is the low bits of the pointer's
/// offset in its arena: no descriptor is read. A cache with inboxes (`remote`) has a
/// tag for each owner CPU besides its own (see `RawCache::set_owner_tags`): its
/// entries carry that CPU, so a free learns whether the object is its CPU's from the
/// tag byte alone, 64 pages to a cache line, where the page descriptor's owner byte is
/// a line a page. An entry never set (a tag no cache has) passes no pointer.
#[repr(C, align(32))]
pub struct TagCheck {
    /// The index of the CPU that owns the objects of pages with this tag,
    /// [`OWNER_BITS`] where the page descriptor says, 0 where there is no owner (see
    /// [`is_elsewhere`](Self::is_elsewhere)). First, with the mask: the pair
    /// [`owner_test`](Self::owner_test) hands the free's sequence is the entry's
    /// address.
    owner_cpu: AtomicU32,
    /// In its low 16 bits [`OWNER_BITS`] where the pages have an owner
    /// ([`owner_cpu`](Self::owner_cpu)'s, or the descriptor's), 0 where any CPU keeps
    /// their objects; above them the cache's own tag (the class's, for kmalloc: its
    /// index plus one), which every tag of the cache maps to. One word, so that the
    /// owner test reads both of its operands from memory.
    owner_mask: AtomicU32,
    /// A slab's bytes less one.
    slab_mask: AtomicU32,
    /// The bound of the slot test (see [`slot_test`]; 0: no cache).
    slot_limit: AtomicU32,
    /// The multiplier of the slot test (see [`slot_test`]).
    slot_magic: AtomicU64,
    /// The cache's array caches (its `cpu_cache`).
    cpu_cache: AtomicPtr<ArrayCache>,
}

// The owner test's pair (`TagCheck::owner_test`): the owner, then the mask, at the
// entry's start.
const _: () = assert!(
    core::mem::offset_of!(TagCheck, owner_cpu) == 0
        && core::mem::offset_of!(TagCheck, owner_mask) == 4
);

/// The bits of a CPU index the owner test compares (`NR_CPUS` is below 2^16).
const OWNER_BITS: u32 = 0xffff;
const _: () = assert!(crate::topology::NR_CPUS <= OWNER_BITS as usize);
// An entry is half a cache line, so that two share one, aligned.
const _: () = assert!(core::mem::size_of::<TagCheck>() == 32);

/// The entry's `(owner_cpu, low bits of owner_mask)` for an owner as
/// [`TagCheck::owner`] gives it.
const fn owner_fields(owner: u32) -> (u32, u32) {
    match owner {
        TagCheck::NO_OWNER => (0, 0),
        TagCheck::ASK_PAGE => (OWNER_BITS, OWNER_BITS),
        // A CPU index, below `NR_CPUS`, so below `OWNER_BITS`.
        o => (o - 1, OWNER_BITS),
    }
}

/// The multiplier and bound of a test that an offset `off < 2^32` in a slab starts one
/// of its `span / size` slots, in one multiply and one compare:
/// `u64::from(off) * magic (mod 2^64) < limit`, where the usual test (a divisibility
/// test by multiply, then a range check) takes two of each.
///
/// - A size that is not a power of two: `magic = ceil(2^64 / size)`, and
///   `e = size * magic - 2^64` lies in `1..size`. A slot's start `k * size` maps to
///   `k * e`, below `limit = (span / size) * e` exactly for the `k` of the slab's
///   slots; any other offset maps to `magic` or more (its remainder `r` contributes
///   `r * magic`, which does not wrap for sizes up to 2^31), and `magic >= 2^33 > limit`.
/// - A power of two `2^s`: `magic = 2^(64-s) + 1` maps an offset to itself plus its
///   low `s` bits shifted to the top, so a slot's start (low bits clear) maps to
///   itself, below `limit = span` exactly within the slab, and any other offset to
///   `2^(64-s)` or more, above every span.
///
/// Sizes from 2 to 2^31 and spans below 2^32 that are a multiple of the size; tested
/// against the plain test for every size up to 4 KiB (`slot_test_is_exact`) and every
/// offset of every kmalloc class's slab (`tag_entries_pass_exactly_the_slot_starts`).
pub(crate) const fn slot_test(size: u64, span: u64) -> (u64, u32) {
    assert!(size >= 2 && size <= 1 << 31 && span < 1 << 32 && span.is_multiple_of(size));
    if size.is_power_of_two() {
        let magic = (1u64 << (64 - size.trailing_zeros())) + 1;
        (magic, span as u32)
    } else {
        let magic = u64::MAX / size + 1;
        let e = size.wrapping_mul(magic);
        (magic, ((span / size) * e) as u32)
    }
}

impl Default for TagCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl TagCheck {
    /// An entry no cache has: every test fails.
    pub const fn new() -> Self {
        Self {
            owner_cpu: AtomicU32::new(0),
            owner_mask: AtomicU32::new(0),
            slab_mask: AtomicU32::new(0),
            slot_limit: AtomicU32::new(0),
            slot_magic: AtomicU64::new(0),
            cpu_cache: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// [`owner`](Self::owner) of a tag whose pages any CPU keeps the objects of.
    pub const NO_OWNER: u32 = 0;
    /// [`owner`](Self::owner) of a tag whose pages name their owner in their page
    /// descriptors (`Page::owner`) alone.
    pub const ASK_PAGE: u32 = u32::MAX;

    /// Fills the entry from `cache`, a set-up cache with this tag: its own, or with
    /// `owner` a CPU's index plus one, the tag of its slabs that CPU claimed (see
    /// `RawCache::set_owner_tags`). Done at boot, before any page has the tag: a
    /// reader reaches the entry only through a tag read from a page, which the cache
    /// sets when it grows or claims a slab, after this, and which the reader's block
    /// was allocated from; so relaxed stores suffice.
    pub(crate) fn set(&self, cache: &RawCache, owner: u32) {
        // SAFETY: written before the cache was published (the caller's is set up).
        let c = unsafe { &*cache.check.get() };
        let slab_mask = (crate::sys::PAGE_SIZE << cache.geom().order) - 1;
        self.slab_mask.store(slab_mask as u32, Ordering::Relaxed);
        let (magic, limit) = slot_test(cache.geom().size as u64, u64::from(c.span));
        let cpu_caches = cache.cpu_caches();
        self.slot_magic.store(magic, Ordering::Relaxed);
        // Without array caches the entry passes no pointer (bound 0), so that an entry
        // whose slot test passes always has them: the free's fast path leaves out the
        // null test on its common path (`cpu_caches_of_slot`).
        self.slot_limit.store(
            if cpu_caches.is_null() { 0 } else { limit },
            Ordering::Relaxed,
        );
        self.cpu_cache.store(cpu_caches, Ordering::Relaxed);
        let (cpu, mask) = owner_fields(owner);
        self.owner_cpu.store(cpu, Ordering::Relaxed);
        self.owner_mask
            .store(u32::from(cache.tag()) << 16 | mask, Ordering::Relaxed);
    }

    /// Whether the address at offset `off` in its arena (`arena::offset_in`) starts a
    /// slot of the slab holding it, given that its page's tag is this entry's. No
    /// debug cache is tagged, so no red zone is allowed for.
    #[inline(always)]
    pub fn starts_slot(&self, off: u32) -> bool {
        let off = off & self.slab_mask.load(Ordering::Relaxed);
        // One multiply and one compare (see `slot_test`); an entry never set has
        // bound 0, which nothing is below.
        u64::from(off).wrapping_mul(self.slot_magic.load(Ordering::Relaxed))
            < u64::from(self.slot_limit.load(Ordering::Relaxed))
    }

    /// The array caches of the entry's cache (null for an entry never set).
    #[inline(always)]
    pub fn cpu_caches(&self) -> *mut ArrayCache {
        self.cpu_cache.load(Ordering::Relaxed)
    }

    /// [`cpu_caches`](Self::cpu_caches) of an entry whose [`starts_slot`](Self::starts_slot)
    /// passed, which is never null: `set` gives an entry without array
    /// caches the bound that passes nothing, and a kmalloc cache's array caches stay
    /// for the life of the process.
    ///
    /// # Safety
    /// `starts_slot` passed for this entry.
    #[inline(always)]
    pub unsafe fn cpu_caches_of_slot(&self) -> NonNull<ArrayCache> {
        let base = self.cpu_caches();
        debug_assert!(
            !base.is_null(),
            "a tag entry passed a slot without array caches"
        );
        // SAFETY: the caller's contract, and `set`'s bound.
        unsafe { NonNull::new_unchecked(base) }
    }

    /// The tag of the entry's cache (0 for an entry never set): the same for every
    /// owner's tag of the cache.
    #[inline(always)]
    pub fn cache_tag(&self) -> usize {
        (self.owner_mask.load(Ordering::Relaxed) >> 16) as usize
    }

    /// The owner of the objects of pages with this tag: [`NO_OWNER`](Self::NO_OWNER),
    /// a CPU's index plus one, or [`ASK_PAGE`](Self::ASK_PAGE).
    #[inline(always)]
    pub fn owner(&self) -> u32 {
        match (
            self.owner_cpu.load(Ordering::Relaxed),
            self.owner_mask.load(Ordering::Relaxed) & OWNER_BITS,
        ) {
            (_, 0) => Self::NO_OWNER,
            (OWNER_BITS, _) => Self::ASK_PAGE,
            (cpu, _) => cpu + 1,
        }
    }

    /// Whether the entry sends the free of its pages' objects on CPU `cpu` elsewhere:
    /// to another CPU's inbox, or to the page descriptor's answer
    /// ([`ASK_PAGE`](Self::ASK_PAGE)). False for no owner and for `cpu`'s own. Without
    /// a branch: an exclusive or with the owner's index and an and with the mask,
    /// both from the entry, so the caller's one branch goes the same way on every free
    /// that stays on its CPU, whatever the class.
    #[inline(always)]
    pub fn is_elsewhere(&self, cpu: usize) -> bool {
        // A CPU index is below 2^16, so the cache tag above the mask's low bits meets
        // zeroes. A CPU read as more (a thread without rseq registration reads
        // `u32::MAX`) may pass, but fails the sequence's bound on CPUs, so its free
        // takes the slow path all the same.
        (cpu as u32 ^ self.owner_cpu.load(Ordering::Relaxed))
            & self.owner_mask.load(Ordering::Relaxed)
            != 0
    }

    /// The owner test's two words, `[owner_cpu, owner_mask]`, for a sequence that makes
    /// it on the CPU it runs on (`sys::rseq::stack_push_deep_tested`): the test of
    /// [`is_elsewhere`](Self::is_elsewhere).
    #[inline(always)]
    pub fn owner_test(&self) -> *const u32 {
        self.owner_cpu.as_ptr().cast_const()
    }

    /// Whether `obj`, in a page with this entry's tag, belongs to another CPU than
    /// `cpu` (`sys::rseq::stack_cpu`), so that its free goes to that CPU's inbox by
    /// the slow path. [`is_elsewhere`](Self::is_elsewhere)'s test for the caches
    /// without owners and a CPU's own objects, laid out of line past it for the rest.
    ///
    /// # Safety
    /// `obj` lies in an arena page the zones handed out (its descriptor is mapped),
    /// for the answer to mean anything one whose tag is this entry's.
    #[inline(always)]
    pub unsafe fn owned_elsewhere(&self, obj: *const u8, cpu: usize) -> bool {
        if !self.is_elsewhere(cpu) {
            return false;
        }
        // Laid out of line: the free of every larger class, and of a small one on its
        // owner, pays the test alone (a jump around this block cost the 64-byte pair
        // 2%).
        remote::unlikely();
        if self.owner_cpu.load(Ordering::Relaxed) == OWNER_BITS {
            // SAFETY: an arena page the zones handed out (the contract).
            return unsafe { remote::owned_elsewhere(obj, cpu) };
        }
        true
    }
}

impl RawCache {
    /// Aborts unless `obj` is exactly the start of an object of `slab`, a slab of this
    /// cache.
    ///
    /// # Safety
    /// `slab` is `virt_to_head_page(obj)`, a slab of this cache.
    #[inline(always)]
    pub(super) unsafe fn check_in_slab(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: as the caller promised.
        if !unsafe { self.starts_object(slab, obj) } {
            // SAFETY: `obj` lies in `slab`'s pages, so in an arena.
            unsafe { self.bad_free(obj) };
        }
    }

    /// Whether `obj` is exactly the start of an object of `slab`, a slab of this cache:
    /// [`check_in_slab`](Self::check_in_slab)'s test, for a fast path that leaves the
    /// abort to its slow path (so that it makes no call, and needs no stack frame).
    ///
    /// # Safety
    /// As for [`check_in_slab`](Self::check_in_slab).
    #[inline(always)]
    pub(crate) unsafe fn starts_object(&self, slab: *mut Page, obj: *mut u8) -> bool {
        // SAFETY: written before the cache was published (it owns slabs, so it was).
        let lead = unsafe { (*self.check.get()).lead };
        // Offsets in the arena, which `obj` and its slab share: no base to form. The
        // object's slot starts `lead` bytes before it.
        let off = (obj as usize & ARENA_MASK) as u32;
        // SAFETY: the caller's contract.
        unsafe { self.starts_slot(slab, off.wrapping_sub(lead)) }
    }

    /// Whether the address at offset `off` in its arena (`arena::offset_in`) starts a
    /// slot of `slab`, a slab of this cache: [`starts_object`](Self::starts_object)
    /// without a debug cache's lead. For the free fast path, which no debug cache's
    /// free completes (its per-CPU caches have limit 0, so the push fails and the slow
    /// path checks again with the lead), and for `free_block`'s objects of a run, which
    /// are slots (what the array caches and the node paths hold).
    ///
    /// # Safety
    /// As for [`check_in_slab`](Self::check_in_slab), at the address of `off`.
    #[inline(always)]
    pub(crate) unsafe fn starts_slot(&self, slab: *mut Page, off: u32) -> bool {
        // SAFETY: written before the cache was published (it owns slabs, so it was).
        let c = unsafe { *self.check.get() };
        // SAFETY: `slab` heads a slab of this cache (the caller's contract).
        c.is_slot(off.wrapping_sub(unsafe { slab_first_slot(slab) } as u32))
    }

    /// The cache's free check, copied: what [`FreeCheck::is_slot`] tests offsets with,
    /// for a loop over many objects to keep in registers.
    #[inline(always)]
    pub(super) fn free_check(&self) -> FreeCheck {
        // SAFETY: written before the cache was published; callers hold a slab of it.
        unsafe { *self.check.get() }
    }

    /// The mask of the address bits every object of this cache has clear (full until
    /// the cache is set up): what [`misaligned`](Self::misaligned) tests, for tables
    /// that test it without the cache (kmalloc's sized free).
    #[inline]
    pub(crate) fn align_mask(&self) -> usize {
        // SAFETY: written before the cache was published, as in `misaligned`.
        unsafe { (*self.check.get()).mask }
    }

    /// Whether `obj` lacks the alignment every object of this cache has.
    #[inline(always)]
    pub(super) fn misaligned(&self, obj: *mut u8) -> bool {
        // SAFETY: written before the cache was published; a cache not set up has a
        // full mask, and owns no object to free.
        obj as usize & unsafe { (*self.check.get()).mask } != 0
    }

    /// Aborts for a free of `obj`, which [`misaligned`](Self::misaligned) found is
    /// not an object of this cache, saying what it is instead; or hands a foreign block
    /// to its allocator (see [`set_foreign_free`](super::set_foreign_free)) and returns.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn misaligned_free(&self, obj: *mut u8) {
        // A cache that never set up (a mask that no pointer passes) in a process whose
        // blocks another allocator serves (see `set_foreign_free`): the block is its.
        if let Some(free) = foreign_free() {
            if !arena::contains(obj) {
                // SAFETY: a block of the allocator `free` belongs to, given up by the
                // caller.
                unsafe { free(obj) };
                return;
            }
        }
        // Reports a foreign address, or an object of another cache, by name.
        // SAFETY: `check_obj` finds `obj` in an arena before it reads a descriptor.
        unsafe { self.check_obj(obj, obj) };
        // SAFETY: `check_obj` returned, so `obj` is an arena address.
        unsafe { self.bad_free(obj) }
    }

    /// Aborts for a second free of `obj` that a cheap check caught before it reached
    /// its slab: it is still among the last objects freed to this CPU's array cache.
    #[cold]
    #[inline(never)]
    pub(super) fn double_free_cached(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it is still in this CPU's array cache",
            self.name()
        ))
    }

    /// The slab holding `obj`, after checking that `obj` is an object of this cache;
    /// anything else is heap corruption and aborts with a message.
    #[inline]
    pub(super) unsafe fn obj_to_slab(&self, obj: *mut u8) -> *mut Page {
        // SAFETY: `check_obj` finds `obj` in an arena before it reads a descriptor.
        unsafe { self.check_obj(obj, obj) }
    }

    /// [`obj_to_slab`](Self::obj_to_slab) for the slot `slot`, naming `shown` (the
    /// pointer the caller freed) if it is not one.
    #[inline]
    pub(super) unsafe fn check_obj(&self, slot: *mut u8, shown: *mut u8) -> *mut Page {
        if !arena::contains(slot) || !arena::contains(shown) {
            sys::io::fatal(format_args!(
                "invalid free of {shown:p} to cache {}: not a cpuslab address",
                self.name()
            ));
        }
        let slab = virt_to_head_page(slot);
        let g = self.geom();
        // SAFETY: `slot` is an arena address (checked above): its head descriptor is
        // mapped.
        let is_slab = unsafe { (*slab).flags() } & PG_SLAB != 0;
        // SAFETY: as above; `cache` is written only when a slab is made or destroyed,
        // and a slab holding an object in use is neither.
        let owner = unsafe { (*slab).cache }.cast::<RawCache>();
        let ok = is_slab && ptr::eq(owner, self) && {
            // Offsets in the arena, as `starts_object`: a slab between its growth and
            // its colouring (first slot 0) reads as the pointer's own arena offset,
            // past the descriptor block and so past any slab's span; never overflows.
            // SAFETY: `slab` heads a slab (`PG_SLAB`) of this cache.
            let off = (slot as usize & ARENA_MASK).wrapping_sub(unsafe { slab_first_slot(slab) });
            g.is_obj_offset(off)
        };
        if !ok {
            // SAFETY: `shown` is an arena address (checked above).
            unsafe { self.bad_free(shown) };
        }
        slab
    }

    /// Aborts for a free of `obj`, an arena address that is not an object of this
    /// cache, saying what it is instead.
    #[cold]
    pub(super) unsafe fn bad_free(&self, obj: *mut u8) -> ! {
        let head = virt_to_head_page(obj);
        // SAFETY: callers pass an arena address, whose head descriptor is mapped.
        let owner = unsafe { (*head).cache }.cast::<RawCache>();
        // SAFETY: as above.
        if unsafe { (*head).flags() } & PG_SLAB != 0 && !owner.is_null() && !ptr::eq(owner, self) {
            // SAFETY: the cache of a slab, which outlives its slabs.
            let other = unsafe { (*owner).name() };
            sys::io::fatal(format_args!(
                "invalid free of {obj:p} to cache {}: it is in a slab of cache {} \
                 (freed with a layout of another size class?)",
                self.name(),
                other
            ));
        }
        sys::io::fatal(format_args!(
            "invalid free of {obj:p} to cache {}: not an object of this cache",
            self.name()
        ));
    }

    /// Aborts for a slab whose free map holds fewer free objects than its count says.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn corrupt_map(&self, slab: *mut Page) -> ! {
        // SAFETY: callers pass a slab of this cache, under its list lock.
        let active = unsafe { (*slab).active };
        sys::io::fatal(format_args!(
            "slab {slab:p} of cache {} has {} of {} objects in use but fewer free in its map: heap corruption",
            self.name(),
            active,
            self.geom().num
        ))
    }

    /// Aborts for a free of `obj` found among the node's free objects (its shared cache
    /// or its slab) while it was being freed.
    #[cold]
    #[inline(never)]
    pub(super) fn double_free_at_node(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it is already free (in its slab or its node's shared cache)",
            self.name()
        ))
    }

    /// Aborts for a free of `obj` that its slab's free map says is free already.
    #[cold]
    #[inline(never)]
    pub(super) fn double_free_in_slab(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it is already free in its slab",
            self.name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{owner_fields, slot_test, TagCheck, OWNER_BITS};
    use core::sync::atomic::Ordering;

    /// The plain test `slot_test` replaces: below the span, at a multiple of the size.
    fn plain(size: u64, span: u64, off: u64) -> bool {
        off < span && off.is_multiple_of(size)
    }

    /// `slot_test`'s one multiply and compare against the plain test, for every size
    /// up to 4 KiB and a few larger ones, spans of whole slabs of 1 to 1000 slots, the
    /// offsets of the first 64 KiB and of two slots either side of the span's end, and
    /// offsets spread up to 2^32.
    #[test]
    fn slot_test_is_exact() {
        let large = [6144, 8192, 12288, 16384, 24576, 32768, 1 << 20, 1 << 31];
        for size in (2..=4096u64).chain(large) {
            for slots in [1u64, 2, 3, 7, 64, 1000] {
                let span = size * slots;
                if span >= 1 << 32 {
                    continue;
                }
                let (magic, limit) = slot_test(size, span);
                let test = |off: u64| off.wrapping_mul(magic) < u64::from(limit);
                let near = (0..(span + 2 * size).min(1 << 16))
                    .chain(span.saturating_sub(2 * size)..span + 2 * size);
                let far = (0..64u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32);
                for off in near.chain(far) {
                    assert_eq!(
                        test(off),
                        plain(size, span, off),
                        "size {size} span {span} offset {off}"
                    );
                }
            }
        }
    }

    /// The owner test without a branch agrees with the one it replaced,
    /// `min(owner ^ (cpu + 1), owner) != 0`, for no owner, `ASK_PAGE` and every owner
    /// CPU below 64, on CPUs 0 to 99; and `owner()` gives back what was set.
    #[test]
    fn owner_test_matches_the_owner() {
        let owners = [TagCheck::NO_OWNER, TagCheck::ASK_PAGE]
            .into_iter()
            .chain(1..=64);
        for owner in owners {
            let e = TagCheck::new();
            let (cpu, mask) = owner_fields(owner);
            e.owner_cpu.store(cpu, Ordering::Relaxed);
            e.owner_mask.store(42 << 16 | mask, Ordering::Relaxed);
            assert_eq!(e.owner(), owner);
            assert_eq!(e.cache_tag(), 42);
            for cpu in 0..100usize {
                let mine = cpu as u32 + 1;
                let old = (owner ^ mine).min(owner) != 0;
                assert_eq!(e.is_elsewhere(cpu), old, "owner {owner} cpu {cpu}");
            }
        }
        assert_eq!(owner_fields(TagCheck::ASK_PAGE), (OWNER_BITS, OWNER_BITS));
    }
}
