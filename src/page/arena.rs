//! Arenas: reservations of address space in 256 MiB slots aligned to their size, one
//! list per NUMA node. The first 4 MiB block of a slot holds the page descriptors of
//! its pages (64 B per 4 KiB page), so `virt_to_page` is arithmetic; the other blocks
//! are handed to the node's buddy zone one max-order block at a time, as needed. Pages
//! are committed by the kernel when first touched (`MAP_NORESERVE`).
//!
//! An arena maps only part of its slot at first and the next one more: 2 blocks (the
//! descriptors and one usable block, 4 MiB of it), then 4, 8, 16, 32 and the whole 64
//! from the sixth on, so a small program holds little address space, and under an
//! address-space limit (`RLIMIT_AS`, which counts every mapping, touched or not) an
//! arena that does not fit is made smaller, down to one usable block, instead of
//! refused, and one whose span does not fit at once is mapped as its two parts (the
//! descriptors, the blocks), so that the smallest needs 4.1 MiB of room, not 8. Of
//! the descriptor block only the descriptors of the mapped blocks are mapped (64 KiB
//! a block); the rest of that block is left to the kernel for other
//! mappings, which the arena map never takes for cpuslab's: it records, per slot, the
//! blocks an arena uses.
//!
//! An arena's address space is given back from its end: when the kernel refuses a
//! mapping under such a limit, the whole free blocks at the end of each arena are
//! unmapped ([`release_last`], the arena map shrinking first), as glibc trims its
//! heap's free top, and mapped again in place when the zone next grows, unless
//! another mapping took their room. The header and the descriptor block stay.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::MAX_ORDER;
use crate::sys::{self, PAGE_SHIFT};

/// log2 of the arena size.
pub const ARENA_SHIFT: u32 = 28;
/// Bytes in an arena.
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// Mask of the offset inside an arena.
pub const ARENA_MASK: usize = ARENA_SIZE - 1;
/// log2 of the page descriptor size.
pub const DESC_SHIFT: u32 = 6;
/// Bytes in one max-order block.
pub const BLOCK_SIZE: usize = 1 << (MAX_ORDER as u32 + PAGE_SHIFT);
/// Max-order blocks per arena; block 0 holds the descriptors.
pub const BLOCKS_PER_ARENA: usize = ARENA_SIZE / BLOCK_SIZE;

const _: () = assert!((ARENA_SIZE >> PAGE_SHIFT) << DESC_SHIFT == BLOCK_SIZE);

/// Bits of the user address space the arena map covers. On x86_64, the lower half
/// with 4-level page tables: with 5-level tables the kernel maps above it only where a
/// hint asks for it, and cpuslab's hints all lie below addresses the kernel chose.
/// Elsewhere (aarch64's 48-bit user space) 48.
const USER_BITS: u32 = if cfg!(target_arch = "x86_64") { 47 } else { 48 };

/// One word per possible arena slot of the user address space: the bytes the slot's
/// arena maps after its descriptor block (0: no arena), so any address can be
/// recognised as ours without a lock, by one subtraction and one comparison with its
/// offset in the slot (see [`contains`]). 2 MiB of zeroes on x86_64, of which only the
/// pages holding used slots are ever written; its address space counts under
/// `RLIMIT_AS` all the same.
static ARENA_MAP: [AtomicU32; 1 << (USER_BITS - ARENA_SHIFT)] =
    [const { AtomicU32::new(0) }; 1 << (USER_BITS - ARENA_SHIFT)];

// An arena's bytes past its descriptor block fit a word.
const _: () = assert!(ARENA_SIZE <= 1 << 32);

/// Bytes that may be resident: arena pages handed out by the zones or free but dirty
/// (not purged), plus huge blocks (live, and freed but dirty). See `buddy`'s module comment.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
/// Bytes of address space reserved by arenas.
static RESERVED: AtomicUsize = AtomicUsize::new(0);
/// Refuse to commit past this many bytes (`CPUSLAB_HEAP_LIMIT`); 0 means no limit.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// The header of an arena, kept in the descriptors of the descriptor block itself
/// (those pages are never handed out, so their descriptors are free to reuse).
#[repr(C)]
pub struct Arena {
    /// Node whose zone owns this arena.
    pub node: usize,
    /// Next max-order block not yet handed to the zone.
    pub next_block: usize,
    /// Blocks mapped, the descriptor block included (1 to `BLOCKS_PER_ARENA`): fewer
    /// than `cap` once [`release_last`] gave the free ones at the end back.
    pub nr_blocks: usize,
    /// Blocks the arena mapped when it was made, the most [`take_block`] maps again
    /// in place of those given back; lowered to what is mapped when another mapping
    /// took their room meanwhile.
    pub cap: usize,
    /// Next arena of the same zone (older).
    pub next: *mut Arena,
    /// The group of each block's pages (`buddy::GROUP_*`), set when the zone splits the
    /// block for that group; read and written under the zone's lock.
    pub groups: [u8; BLOCKS_PER_ARENA],
}

/// The group byte of the max-order block holding the page that `desc` describes.
///
/// # Safety
/// `desc` is the descriptor of a page of a block the zones manage.
pub unsafe fn group_of(desc: *const super::desc::Page) -> *mut u8 {
    // Descriptors lie in their arena's first block, in page order: the arena header is
    // at the arena's base, and the page index says which block.
    let d = desc as usize;
    let arena = (d & !ARENA_MASK) as *mut Arena;
    let page = (d & ARENA_MASK) >> DESC_SHIFT;
    let block = page >> MAX_ORDER;
    // SAFETY: `desc` describes a page of a block the zones manage, so its arena is live
    // and the header at the arena's base mapped; no reference is made.
    unsafe { &raw mut (*arena).groups[block] }
}

/// Whether `addr` lies in a block of one of cpuslab's arenas that the zones may hand
/// out (never the descriptor block, parts of which other mappings may occupy).
#[inline]
pub fn contains(addr: *const u8) -> bool {
    offset_in(addr).is_some()
}

/// `addr`'s offset in its arena (what [`ARENA_MASK`] keeps of it) when it lies in a
/// block of one of cpuslab's arenas that the zones may hand out, as [`contains`]: the
/// free fast path compares it with its slab's first object without masking again.
#[inline(always)]
pub fn offset_in(addr: *const u8) -> Option<u32> {
    let slot = addr as usize >> ARENA_SHIFT;
    let map: &[AtomicU32; 1 << (USER_BITS - ARENA_SHIFT)] = crate::sys::local_static!(ARENA_MAP);
    let off = addr as usize as u32 & ARENA_MASK as u32;
    // The offset past the descriptor block: an address in that block wraps to a huge
    // value and fails the test, as does any address of a slot with no arena (0).
    (slot < map.len() && off.wrapping_sub(BLOCK_SIZE as u32) < map[slot].load(Ordering::Acquire))
        .then_some(off)
}

/// log2 of [`BLOCK_SIZE`].
const BLOCK_SHIFT: u32 = MAX_ORDER as u32 + PAGE_SHIFT;
const _: () = assert!(1 << BLOCK_SHIFT == BLOCK_SIZE);

/// Arenas created so far: the next one maps `2 << CREATED` blocks, up to a whole slot.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of descriptors that `nr_blocks` blocks need, rounded to whole pages.
const fn desc_bytes(nr_blocks: usize) -> usize {
    nr_blocks * (BLOCK_SIZE >> PAGE_SHIFT << DESC_SHIFT)
}

/// When the kernel last refused every size of arena (`sys::time::now_ms`; 0: never).
static REFUSED_AT: AtomicU64 = AtomicU64::new(0);

/// How long after the kernel refused an arena no new one is asked for, in
/// milliseconds. Under an address-space limit every allocation that finds no free page
/// would otherwise cost a futile `mmap` per arena size tried, while the C interface
/// serves it from glibc meanwhile (`init::may_forward`); a limit that frees up (a
/// block unmapped, the limit raised) is seen again after this long.
pub const REFUSED_RETRY_MS: u64 = 10;

/// Whether the kernel has refused an arena of every size in this process: then a
/// request cpuslab fails may still fit where an allocator that maps less at a time
/// would grow (see `init::may_forward`).
pub fn refused() -> bool {
    REFUSED_AT.load(Ordering::Relaxed) != 0
}

/// Whether the kernel refused an arena, or a block given back mapped again, within
/// [`REFUSED_RETRY_MS`]: then neither is asked for.
fn refused_lately() -> bool {
    let refused = REFUSED_AT.load(Ordering::Relaxed);
    refused != 0 && sys::time::now_ms().wrapping_sub(refused) < REFUSED_RETRY_MS
}

/// Notes that the kernel refused a mapping the arenas asked for.
fn note_refused() {
    // Relaxed: a hint; a racing thread at worst asks the kernel once more.
    REFUSED_AT.store(sys::time::now_ms().max(1), Ordering::Relaxed);
}

/// Whether a request cpuslab failed may go to another allocator: the kernel refused an
/// arena ([`refused`]) and no heap limit is set, which only cpuslab would enforce
/// (`init::may_forward`, `kmalloc::kmalloc_fallback`).
pub fn refused_unlimited() -> bool {
    limit() == 0 && refused()
}

/// Maps a new arena for `node`: the size its turn calls for, or the largest smaller
/// one the kernel grants (down to one usable block). Null when not even that maps, and
/// without asking for [`REFUSED_RETRY_MS`] after the kernel refused.
pub fn create(node: usize) -> *mut Arena {
    if refused_lately() {
        return ptr::null_mut();
    }
    let turn = CREATED.load(Ordering::Relaxed).min(5);
    let mut nr_blocks = (2usize << turn).min(BLOCKS_PER_ARENA);
    loop {
        let arena = create_blocks(node, nr_blocks);
        if !arena.is_null() {
            CREATED.fetch_add(1, Ordering::Relaxed);
            return arena;
        }
        if nr_blocks == 2 {
            note_refused();
            return arena;
        }
        nr_blocks /= 2;
    }
}

/// Maps an arena of `nr_blocks` blocks (the descriptor block's used part included) at
/// the start of a free slot.
fn create_blocks(node: usize, nr_blocks: usize) -> *mut Arena {
    let len = nr_blocks * BLOCK_SIZE;
    let desc = desc_bytes(nr_blocks);
    let mut base = sys::mmap::map_aligned(len, ARENA_SIZE, true);
    if !base.is_null() && desc < BLOCK_SIZE {
        // Only the descriptors of mapped blocks are ever touched: give the rest of the
        // descriptor block's address space back.
        // SAFETY: inside the mapping just made; nothing refers to it.
        sys::mmap::unmap(unsafe { base.add(desc) }, BLOCK_SIZE - desc);
    }
    if base.is_null() {
        // The whole span does not fit (an address-space limit): the two parts alone,
        // never more mapped at a time than the arena keeps.
        base = sys::mmap::map_aligned_pair(desc, BLOCK_SIZE, len - BLOCK_SIZE, ARENA_SIZE, true);
        if base.is_null() {
            return ptr::null_mut();
        }
    }
    let slot = base as usize >> ARENA_SHIFT;
    if slot >= ARENA_MAP.len() {
        // An address beyond the map's bits (5-level tables and a hint): not
        // representable in it.
        sys::mmap::unmap(base, desc);
        sys::mmap::unmap(base.wrapping_add(BLOCK_SIZE), len - BLOCK_SIZE);
        return ptr::null_mut();
    }
    let mapped = len - (BLOCK_SIZE - desc);
    if crate::topology::nr_node_ids() > 1 {
        sys::numa::bind_preferred(base, desc, node);
        // The blocks after the descriptor block: part of the reservation, though the
        // unmapped tail of the descriptor block may lie between (so no `add`).
        sys::numa::bind_preferred(base.wrapping_add(BLOCK_SIZE), len - BLOCK_SIZE, node);
    }
    RESERVED.fetch_add(mapped, Ordering::Relaxed);
    let arena = base.cast::<Arena>();
    // SAFETY: the mapping is fresh, writable and large enough for the header.
    unsafe {
        arena.write(Arena {
            node,
            next_block: 1,
            nr_blocks,
            cap: nr_blocks,
            next: ptr::null_mut(),
            groups: [0; BLOCKS_PER_ARENA],
        });
    }
    publish(arena, nr_blocks);
    arena
}

/// Takes the next unused max-order block of `arena`, mapping again one that
/// [`release_last`] gave back where nothing else took its room. Returns null when the
/// arena is exhausted, or the kernel refuses that mapping. The block is not charged:
/// its pages are untouched (clean) until the zone hands them out, which charges them.
///
/// # Safety
/// `arena` is live and the caller holds its zone's lock.
pub unsafe fn take_block(arena: *mut Arena) -> *mut u8 {
    // SAFETY: `arena` is live, and `next_block` changes only under its zone's lock,
    // which the caller holds.
    let block = unsafe {
        if (*arena).next_block >= (*arena).nr_blocks && (refused_lately() || !regrow(arena)) {
            return ptr::null_mut();
        }
        (*arena).next_block += 1;
        (*arena).next_block - 1
    };
    // `block < nr_blocks`: one of the blocks the arena mapped, in its slot. The unmapped
    // tail of the descriptor block may lie between it and the header, which are then
    // two mappings: address arithmetic, not `add` within one object.
    arena.cast::<u8>().wrapping_add(block * BLOCK_SIZE)
}

/// The slot's word in [`ARENA_MAP`] for an arena of `nr_blocks` mapped blocks.
fn publish(arena: *mut Arena, nr_blocks: usize) {
    let slot = arena as usize >> ARENA_SHIFT;
    ARENA_MAP[slot].store(((nr_blocks - 1) * BLOCK_SIZE) as u32, Ordering::Release);
}

/// Maps the block after the last one `arena` maps, one that [`release_last`] gave
/// back, at its place in the slot. False when the arena is at its size, or the
/// kernel refuses (an address-space limit), or another mapping holds the room, in
/// which case the arena stays this size.
///
/// # Safety
/// `arena` is live and the caller holds its zone's lock.
unsafe fn regrow(arena: *mut Arena) -> bool {
    // SAFETY: the caller's contract: the counts change only under the zone lock.
    let (n, cap, node) = unsafe { ((*arena).nr_blocks, (*arena).cap, (*arena).node) };
    if n >= cap {
        return false;
    }
    // Inside the arena's slot (`cap` blocks fit it); not part of any mapping now.
    let addr = arena.cast::<u8>().wrapping_add(n * BLOCK_SIZE);
    match sys::mmap::map_exact_at(addr, BLOCK_SIZE, true) {
        sys::mmap::MapExact::Mapped => {}
        sys::mmap::MapExact::Taken => {
            // SAFETY: as above.
            unsafe { (*arena).cap = n };
            return false;
        }
        sys::mmap::MapExact::Refused => {
            note_refused();
            return false;
        }
    }
    if crate::topology::nr_node_ids() > 1 {
        sys::numa::bind_preferred(addr, BLOCK_SIZE, node);
    }
    RESERVED.fetch_add(BLOCK_SIZE, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { (*arena).nr_blocks = n + 1 };
    publish(arena, n + 1);
    true
}

/// The last block `arena` maps past its descriptor block, and whether the zone holds
/// it (it was handed out by [`take_block`]); None when only the descriptor block is
/// left.
///
/// # Safety
/// `arena` is live and the caller holds its zone's lock.
pub unsafe fn last_block(arena: *mut Arena) -> Option<(*mut u8, bool)> {
    // SAFETY: the caller's contract.
    let (n, next) = unsafe { ((*arena).nr_blocks, (*arena).next_block) };
    (n > 1).then(|| {
        (
            arena.cast::<u8>().wrapping_add((n - 1) * BLOCK_SIZE),
            next == n,
        )
    })
}

/// Gives the address space of `arena`'s last block ([`last_block`]) back to the
/// kernel, so that under an address-space limit (`RLIMIT_AS`, `RLIMIT_DATA`, which
/// count every mapping, resident or not) it can serve another mapping, as glibc's
/// heap shrinks when its top is free. The arena map stops covering the block first,
/// so no address there is taken for cpuslab's once the kernel hands the room to
/// someone else; its descriptors are zeroed (dropped), as a fresh arena's are, for
/// [`take_block`] to map it again.
///
/// # Safety
/// `arena` is live and the caller holds its zone's lock; the zone no longer holds the
/// block (taken off its free lists, whole), or never did, and no one refers to it.
pub unsafe fn release_last(arena: *mut Arena) {
    // SAFETY: the caller's contract.
    let (n, next) = unsafe { ((*arena).nr_blocks, (*arena).next_block) };
    debug_assert!(n > 1);
    let block = n - 1;
    // SAFETY: as above.
    unsafe {
        (*arena).nr_blocks = block;
        (*arena).next_block = next.min(block);
        (*arena).groups[block] = 0;
    }
    publish(arena, block);
    let desc = arena.cast::<u8>().wrapping_add(desc_bytes(block));
    sys::mmap::purge(desc, desc_bytes(1));
    sys::mmap::unmap(
        arena.cast::<u8>().wrapping_add(block * BLOCK_SIZE),
        BLOCK_SIZE,
    );
    RESERVED.fetch_sub(BLOCK_SIZE, Ordering::Relaxed);
}

/// Counts `bytes` as committed; false (and nothing counted) past the heap limit.
pub fn charge(bytes: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    let prev = COMMITTED.fetch_add(bytes, Ordering::Relaxed);
    if limit != 0 && prev + bytes > limit {
        COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
        return false;
    }
    note_peak(prev + bytes);
    true
}

/// The most bytes ever committed at once (`malloc_info`'s "max" system memory).
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Raises the peak to `now` (a read-modify-write only when it rises).
#[inline]
fn note_peak(now: usize) {
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// The most bytes committed at once so far.
pub fn peak_committed() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Counts `bytes` as committed even past the heap limit: for pages that become
/// resident where nothing may fail (the clean part of a mixed free block handed out).
pub fn charge_always(bytes: usize) {
    note_peak(COMMITTED.fetch_add(bytes, Ordering::Relaxed) + bytes);
}

/// Returns `bytes` charged by [`charge`] or [`charge_always`].
pub fn uncharge(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes committed: arena pages handed out or free but dirty, plus huge blocks live or dirty.
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

/// Bytes of address space reserved by arenas.
pub fn reserved() -> usize {
    RESERVED.load(Ordering::Relaxed)
}

/// Sets the heap limit in bytes (0: none).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The heap limit in bytes (0: none).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Resident bytes of the page descriptors of `arena` (its mapped part of the
/// descriptor block, the arena header included): descriptors are written only for
/// pages the zone has handed out or split, so most of a new arena's stay untouched.
///
/// # Safety
/// `arena` is live (its zone's lock is held, or arenas are never unmapped).
pub unsafe fn desc_resident_bytes(arena: *const Arena) -> usize {
    // SAFETY: `arena` is live; `nr_blocks` is written only before the arena is
    // published.
    let len = desc_bytes(unsafe { (*arena).nr_blocks });
    sys::mmap::resident_pages(arena.cast(), len) << PAGE_SHIFT
}

/// Resident bytes of the arena map (one word per slot, 2 MiB of which only the pages
/// holding used slots are ever written).
pub fn map_resident_bytes() -> usize {
    let start = ARENA_MAP.as_ptr() as usize;
    let end = start + core::mem::size_of_val(&ARENA_MAP);
    let first = start & !(sys::PAGE_SIZE - 1);
    sys::mmap::resident_pages(first as *const u8, end - first) << PAGE_SHIFT
}
