//! Huge blocks (more than a max-order block): one mapping each, preceded by a header
//! page that records the mapping, so the block can be resized with mremap and
//! unmapped. Live blocks are also listed in a registry, so any pointer can be asked
//! whether it is one of ours without touching memory that may not be mapped.
//!
//! A freed mapping is not unmapped at once: it goes to a small cache, as jemalloc
//! retains extents, so that the next huge request reuses pages already faulted in
//! instead of faulting every page of a fresh mapping again. A request takes the
//! tightest cached mapping big enough and leaves the rest of it cached, as a mapping
//! of its own, when a huge block could use it, and with the block when it is smaller
//! than that and than a quarter of the request; touching pieces of one mapping merge
//! again in the cache (tcmalloc's page heap splits and coalesces spans the same way).
//! The cache holds at most the larger of 16 × `CPUSLAB_RETAIN` (64 MiB by default: a
//! few blocks of a working set that cycles through them) and a quarter of the bytes
//! of live huge blocks (so a program with many of them keeps up to 25 % more); a
//! mapping left there for `CPUSLAB_DECAY_MS` is unmapped from the next slow path
//! that looks (a huge alloc or free, a page purge check), and [`drain_cache`] (from
//! `trim`) unmaps them all. `CPUSLAB_RETAIN=0` or `CPUSLAB_DECAY_MS=0` turn it off.
//! Cached mappings stay charged to the heap limit (they are resident); a request the
//! limit refuses drains the cache and tries again.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{arena, purge};
use crate::sync::Mutex;
use crate::sys::{self, PAGE_SIZE};
use crate::{cpuset, topology};

/// Slots of the registry: at most 3/4 of them hold live blocks (each is more than
/// 4 MiB, so 48K blocks span more than 192 GiB).
const REGISTRY_SLOTS: usize = 1 << 16;
const EMPTY: usize = 0;

/// Addresses of the last huge blocks freed that are remembered, to tell a double free
/// (whose mapping may be gone) from a pointer glibc's malloc served.
const FREED_RING: usize = 64;

/// Freed mappings the cache holds at most (its budget usually binds first).
const CACHE_SLOTS: usize = 32;
/// The smallest mapping a huge block can have (a block of more than a max-order
/// block, plus its header page): a cached tail shorter than this could never serve one
/// and is unmapped.
const MIN_MAPPING: usize = super::arena::BLOCK_SIZE + 2 * PAGE_SIZE;

/// A set of live huge block addresses: open addressing with linear probing and
/// backward-shift deletion (no tombstones). The lock that guards it also guards the
/// cache of freed mappings.
pub(crate) struct Registry {
    slots: [usize; REGISTRY_SLOTS],
    live: usize,
    /// Bytes of the mappings of live blocks.
    live_bytes: usize,
    cache: Cache,
    /// The last [`FREED_RING`] blocks freed (0: none), the oldest overwritten.
    freed: [usize; FREED_RING],
    /// Where the next freed block goes in `freed`.
    freed_next: usize,
}

pub(crate) static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

impl Registry {
    const fn new() -> Self {
        Self {
            slots: [EMPTY; REGISTRY_SLOTS],
            live: 0,
            live_bytes: 0,
            cache: Cache {
                entries: [Cached::NONE; CACHE_SLOTS],
                n: 0,
                bytes: 0,
            },
            freed: [0; FREED_RING],
            freed_next: 0,
        }
    }

    /// Puts a mapping in the cache when it fits the budget that the live huge blocks
    /// allow; false, with nothing done, when it is larger.
    fn retain(&mut self, c: Cached, out: &mut Victims) -> bool {
        let budget = budget(self.live_bytes);
        let fits = c.len <= budget;
        if fits {
            self.cache.insert(c, budget, out);
        }
        fits
    }

    /// Remembers that `block` was freed.
    fn note_freed(&mut self, block: usize) {
        self.freed[self.freed_next] = block;
        self.freed_next = (self.freed_next + 1) % FREED_RING;
    }

    /// Whether `block`, not live, is among the blocks freed last.
    fn was_freed(&self, block: usize) -> bool {
        block != 0 && self.freed.contains(&block)
    }

    /// The header of the live block `block`, checked; aborts with one line naming
    /// `op` when `block` is not live (a double free when it was freed lately) or its
    /// header was overwritten.
    fn live_header(&self, block: *mut u8, op: &str) -> *mut HugeHeader {
        if self.find(block as usize).is_none() {
            if self.was_freed(block as usize) {
                sys::io::fatal(format_args!(
                    "{op}: {} {block:p}: huge block already freed",
                    if op == "free()" {
                        "double free"
                    } else {
                        "invalid pointer"
                    }
                ));
            }
            sys::io::fatal(format_args!(
                "{op}: invalid pointer {block:p}: not a live block of cpuslab"
            ));
        }
        let h = header(block);
        // SAFETY: a live block's header page is mapped and only its owner writes it.
        let (magic, base, len) = unsafe { ((*h).magic, (*h).map_base, (*h).map_len) };
        let (b, start) = (block as usize, base as usize);
        // The mapping must hold its header page and at least one page of the block:
        // anything else would unmap or remap a range that is not the block's.
        if magic != HUGE_MAGIC || start > b - PAGE_SIZE || start.saturating_add(len) <= b {
            sys::io::fatal(format_args!(
                "{op}: corrupted header of huge block {block:p}"
            ));
        }
        h
    }

    fn home(block: usize) -> usize {
        ((block >> 12) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - 16)
    }

    fn find(&self, block: usize) -> Option<usize> {
        let mut i = Self::home(block);
        loop {
            match self.slots[i] {
                EMPTY => return None,
                b if b == block => return Some(i),
                _ => i = (i + 1) % REGISTRY_SLOTS,
            }
        }
    }

    fn insert(&mut self, block: usize) -> bool {
        if self.live >= REGISTRY_SLOTS * 3 / 4 {
            return false;
        }
        let mut i = Self::home(block);
        while self.slots[i] != EMPTY {
            i = (i + 1) % REGISTRY_SLOTS;
        }
        self.slots[i] = block;
        self.live += 1;
        true
    }

    fn remove(&mut self, block: usize) -> bool {
        let Some(mut hole) = self.find(block) else {
            return false;
        };
        self.live -= 1;
        // Shift later members of the probe run back into the hole when their home
        // position does not lie between the hole and themselves.
        let mut j = hole;
        loop {
            j = (j + 1) % REGISTRY_SLOTS;
            let b = self.slots[j];
            if b == EMPTY {
                break;
            }
            let home = Self::home(b);
            let dist_home = (j + REGISTRY_SLOTS - home) % REGISTRY_SLOTS;
            let dist_hole = (j + REGISTRY_SLOTS - hole) % REGISTRY_SLOTS;
            if dist_home >= dist_hole {
                self.slots[hole] = b;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        true
    }
}

/// A freed mapping kept for reuse.
#[derive(Clone, Copy)]
struct Cached {
    /// Start of the mapping (where its header page was).
    base: usize,
    /// Length of the mapping.
    len: usize,
    /// Node of the thread that mapped it, whose policy placed its pages.
    node: usize,
    /// When it was freed (ms).
    freed_ms: u64,
    /// The start of the kernel mapping it is a piece of (see [`HugeHeader::origin`]).
    origin: usize,
}

impl Cached {
    const NONE: Self = Self {
        base: 0,
        len: 0,
        node: 0,
        freed_ms: 0,
        origin: 0,
    };
}

/// Freed mappings, oldest first, so decay and eviction take from the front.
struct Cache {
    entries: [Cached; CACHE_SLOTS],
    n: usize,
    bytes: usize,
}

/// When the oldest cached mapping was freed (`u64::MAX`: none), so that decay checks
/// from the page allocator's slow paths cost one load while nothing is due.
static OLDEST_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// How a cached mapping serves a request.
enum Fit {
    /// It is big enough: unmap `lead` bytes before the aligned block and the tail
    /// beyond the request.
    Trim { lead: usize },
    /// It is smaller: grow it with mremap (page alignment only, as it may move).
    Grow,
}

impl Cache {
    fn remove(&mut self, i: usize) -> Cached {
        let c = self.entries[i];
        self.entries.copy_within(i + 1..self.n, i);
        self.n -= 1;
        self.bytes -= c.len;
        c
    }

    fn publish_oldest(&self) {
        let oldest = if self.n == 0 {
            u64::MAX
        } else {
            self.entries[0].freed_ms
        };
        OLDEST_MS.store(oldest, Ordering::Relaxed);
    }

    /// Moves mappings freed `decay_ms` or more before `now_ms` to `out`.
    fn expire(&mut self, now_ms: u64, decay_ms: u64, out: &mut Victims) {
        while self.n > 0 && self.entries[0].freed_ms.saturating_add(decay_ms) <= now_ms {
            let c = self.remove(0);
            out.push(c.base, c.len);
        }
        self.publish_oldest();
    }

    /// Adds a freed mapping, evicting the oldest to `out` until it fits `budget`; one
    /// larger than the budget goes to `out` itself. A cached piece of the same kernel
    /// mapping right before or after it is merged with it first, as tcmalloc's page
    /// heap coalesces spans: the tail a smaller request left joins its block again when
    /// that block is freed, so the cache keeps mappings big enough for the largest
    /// requests instead of splitting them ever smaller (and growing them by mremap,
    /// which faults fresh pages). Only pieces of one mapping are merged: they are in one
    /// kernel VMA, which mremap needs.
    fn insert(&mut self, mut c: Cached, budget: usize, out: &mut Victims) {
        while let Some(i) = self.entries[..self.n].iter().position(|e| {
            e.origin == c.origin && (e.base + e.len == c.base || c.base + c.len == e.base)
        }) {
            let e = self.remove(i);
            c.base = c.base.min(e.base);
            c.len += e.len;
        }
        if c.len > budget {
            self.publish_oldest();
            out.push(c.base, c.len);
            return;
        }
        while self.n > 0 && (self.n == CACHE_SLOTS || self.bytes + c.len > budget) {
            let old = self.remove(0);
            out.push(old.base, old.len);
        }
        self.entries[self.n] = c;
        self.n += 1;
        self.bytes += c.len;
        self.publish_oldest();
    }

    /// Takes the cached mapping that best serves a mapping of `len` bytes whose block
    /// (a page past its start) is aligned to `align`, for a thread on `node`: the
    /// tightest one big enough (what it has beyond the request stays cached, see
    /// [`reuse`]), else the largest one at least half the size to grow.
    fn take_fit(&mut self, len: usize, align: usize, node: usize) -> Option<(Cached, Fit)> {
        let mut trim: Option<(usize, usize, usize)> = None;
        let mut grow: Option<usize> = None;
        for (i, c) in self.entries[..self.n].iter().enumerate() {
            if c.node != node {
                continue;
            }
            let block = (c.base + PAGE_SIZE + align - 1) & !(align - 1);
            let lead = block - PAGE_SIZE - c.base;
            if lead + len <= c.len {
                let surplus = c.len - lead - len;
                if trim.is_none_or(|(_, s, _)| surplus <= s) {
                    trim = Some((i, surplus, lead));
                }
            } else if align == PAGE_SIZE
                && c.len >= len / 2
                && grow.is_none_or(|g| c.len >= self.entries[g].len)
            {
                grow = Some(i);
            }
        }
        let taken = if let Some((i, _, lead)) = trim {
            (self.remove(i), Fit::Trim { lead })
        } else {
            (self.remove(grow?), Fit::Grow)
        };
        self.publish_oldest();
        Some(taken)
    }
}

/// Mappings to unmap once the lock is dropped.
struct Victims {
    list: [(usize, usize); CACHE_SLOTS + 1],
    n: usize,
}

impl Victims {
    const fn new() -> Self {
        Self {
            list: [(0, 0); CACHE_SLOTS + 1],
            n: 0,
        }
    }

    fn push(&mut self, base: usize, len: usize) {
        self.list[self.n] = (base, len);
        self.n += 1;
    }

    /// Unmaps them all and uncharges them. Returns the bytes unmapped.
    fn unmap(&self) -> usize {
        let mut bytes = 0;
        for &(base, len) in &self.list[..self.n] {
            sys::mmap::unmap(base as *mut u8, len);
            bytes += len;
        }
        arena::uncharge(bytes);
        bytes
    }
}

/// The most bytes the cache may hold while `live_bytes` of huge blocks are live (0:
/// the cache is off).
fn budget(live_bytes: usize) -> usize {
    let retain = purge::retain_bytes();
    if retain == 0 || purge::decay_ms() == 0 {
        return 0;
    }
    retain.saturating_mul(16).max(live_bytes / 4)
}

/// The node whose memory the calling thread's new pages come from.
fn current_node() -> usize {
    if topology::nr_node_ids() == 1 {
        return 0;
    }
    cpuset::mem_node_for(topology::cpu_to_node(sys::cpu::current()))
}

/// Number of live huge blocks.
pub fn live_blocks() -> usize {
    REGISTRY.lock().live
}

/// Bytes of the mappings of live huge blocks (headers included).
pub fn live_bytes() -> usize {
    REGISTRY.lock().live_bytes
}

/// Bytes of freed huge mappings kept for reuse (resident, and part of the committed
/// bytes).
pub fn cached_bytes() -> usize {
    REGISTRY.lock().cache.bytes
}

/// Unmaps every cached mapping whose decay time has passed. Called from the page
/// allocator's slow paths with the time already read; one load while nothing is due.
pub fn decay(now_ms: u64) {
    let decay_ms = purge::decay_ms();
    if now_ms < OLDEST_MS.load(Ordering::Relaxed).saturating_add(decay_ms) {
        return;
    }
    let mut victims = Victims::new();
    REGISTRY.lock().cache.expire(now_ms, decay_ms, &mut victims);
    victims.unmap();
}

/// Unmaps every cached mapping. Returns the bytes unmapped.
pub fn drain_cache() -> usize {
    let mut victims = Victims::new();
    {
        let mut r = REGISTRY.lock();
        while r.cache.n > 0 {
            let c = r.cache.remove(0);
            victims.push(c.base, c.len);
        }
        r.cache.publish_oldest();
    }
    victims.unmap()
}

const HUGE_MAGIC: u64 = 0x6370_7573_6c61_6268; // "cpuslabh"

#[repr(C)]
struct HugeHeader {
    magic: u64,
    /// Start of the whole mapping (may precede the header when the block was aligned).
    map_base: *mut u8,
    /// Length of the whole mapping.
    map_len: usize,
    /// Usable bytes from the block's start to the end of the mapping.
    usable: usize,
    /// Node of the thread that mapped it (see [`Cached::node`]).
    node: usize,
    /// Whether the block read as zero when it was handed out (a fresh mapping).
    zero: bool,
    /// The start of the kernel mapping (the VMA) this block's mapping is a piece of:
    /// the mmap it came from, or where mremap moved it. Pieces of one origin that
    /// touch are in one VMA (only munmap and mremap split it, and both leave holes).
    origin: usize,
}

fn header(block: *mut u8) -> *mut HugeHeader {
    // SAFETY: the header page precedes every huge block.
    unsafe { block.sub(PAGE_SIZE).cast() }
}

/// A huge block of at least `size` bytes aligned to `align`: a cached mapping that
/// fits, else a fresh one. Null on failure.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    let Some(len) = size
        .checked_add(PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
        .and_then(|s| s.checked_add(PAGE_SIZE))
    else {
        return ptr::null_mut();
    };
    // The header page sits right before the aligned block: map align extra bytes and
    // trim what precedes the header.
    let Some(span) = len.checked_add(align - PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if span > isize::MAX as usize {
        return ptr::null_mut();
    }
    let node = current_node();
    if let Some((base, len, origin)) = reuse(len, align, node) {
        return register(base, len, node, false, origin);
    }
    // Only the header page and the block are charged: the slack mapped to find an
    // aligned address is unmapped below before anything touches it.
    if !arena::charge(len) && (drain_cache() == 0 || !arena::charge(len)) {
        return ptr::null_mut();
    }
    let raw = sys::mmap::map_aligned(span, PAGE_SIZE, false);
    if raw.is_null() {
        arena::uncharge(len);
        return ptr::null_mut();
    }
    let block = ((raw as usize + PAGE_SIZE + align - 1) & !(align - 1)) as *mut u8;
    let map_base = (block as usize - PAGE_SIZE) as *mut u8;
    let lead = map_base as usize - raw as usize;
    if lead > 0 {
        sys::mmap::unmap(raw, lead);
    }
    // The tail beyond the block: up to a whole alignment, which a 64 MiB alignment
    // would otherwise keep mapped (and count) for a block of a few bytes.
    let tail = span - lead - len;
    if tail > 0 {
        // SAFETY: `map_base + len` lies inside the mapping (`lead + len <= span`).
        sys::mmap::unmap(unsafe { map_base.add(len) }, tail);
    }
    register(map_base, len, node, true, map_base as usize)
}

/// Takes a cached mapping for a block of `len` bytes with its header, aligned to
/// `align`, and cuts or grows it to exactly `len` bytes; first unmaps the mappings
/// whose decay time passed. Returns the mapping's start, its length and its origin.
fn reuse(len: usize, align: usize, node: usize) -> Option<(*mut u8, usize, usize)> {
    let now = sys::time::now_ms();
    let mut victims = Victims::new();
    let taken = {
        let mut r = REGISTRY.lock();
        r.cache.expire(now, purge::decay_ms(), &mut victims);
        r.cache.take_fit(len, align, node)
    };
    victims.unmap();
    let (c, fit) = taken?;
    match fit {
        Fit::Trim { lead } => {
            if lead > 0 {
                sys::mmap::unmap(c.base as *mut u8, lead);
            }
            let base = c.base + lead;
            let tail = c.len - lead - len;
            arena::uncharge(lead);
            if tail < MIN_MAPPING && tail <= len / 4 {
                // A surplus no huge block could use alone, and at most a quarter of
                // the request, stays with the block: unmapped, its pages would be
                // faulted again as soon as a larger request grew this mapping (C
                // malloc-large, 5-25 MiB blocks: 111k faults -> 89k, peak RSS 123 ->
                // 121 MiB).
                return Some((base as *mut u8, c.len - lead, c.origin));
            }
            if tail >= MIN_MAPPING && keep(base + len, tail, c.node, now, c.origin) {
                // The tail stays mapped and resident for the next request: a mapping
                // a smaller request took is not faulted in again piece by piece (what
                // tcmalloc's page heap gets by splitting spans).
            } else if tail > 0 {
                sys::mmap::unmap((base + len) as *mut u8, tail);
                arena::uncharge(tail);
            }
            Some((base as *mut u8, len, c.origin))
        }
        Fit::Grow => {
            let moved = if arena::charge(len - c.len) {
                let moved = sys::mmap::remap(c.base as *mut u8, c.len, len);
                if moved.is_null() {
                    arena::uncharge(len - c.len);
                }
                moved
            } else {
                ptr::null_mut()
            };
            if moved.is_null() {
                sys::mmap::unmap(c.base as *mut u8, c.len);
                arena::uncharge(c.len);
                return None;
            }
            // Grown in place, it is still the same mapping; moved, a new one.
            let origin = if moved as usize == c.base {
                c.origin
            } else {
                moved as usize
            };
            Some((moved, len, origin))
        }
    }
}

/// Puts the unused tail `[base, base + len)` of a cached mapping that a request took
/// back into the cache, as a mapping of its own. False, with nothing done, when the
/// cache's budget is smaller than it.
fn keep(base: usize, len: usize, node: usize, now_ms: u64, origin: usize) -> bool {
    let mut victims = Victims::new();
    let kept = {
        let c = Cached {
            base,
            len,
            node,
            freed_ms: now_ms,
            origin,
        };
        REGISTRY.lock().retain(c, &mut victims)
    };
    victims.unmap();
    kept
}

/// Lists the mapping `[map_base, map_base + map_len)` as a live block and writes its
/// header; unmaps it and returns null when the registry is full.
fn register(map_base: *mut u8, map_len: usize, node: usize, zero: bool, origin: usize) -> *mut u8 {
    // SAFETY: the header page lies inside the mapping.
    let block = unsafe { map_base.add(PAGE_SIZE) };
    {
        let mut r = REGISTRY.lock();
        if !r.insert(block as usize) {
            drop(r);
            sys::mmap::unmap(map_base, map_len);
            arena::uncharge(map_len);
            return ptr::null_mut();
        }
        r.live_bytes += map_len;
    }
    // SAFETY: the header page is mapped and ours.
    unsafe {
        header(block).write(HugeHeader {
            magic: HUGE_MAGIC,
            map_base,
            map_len,
            usable: map_len - PAGE_SIZE,
            node,
            zero,
            origin,
        });
    }
    block
}

/// Whether `block` heads a live huge block. Safe for any address.
pub fn is_huge(block: *const u8) -> bool {
    REGISTRY.lock().find(block as usize).is_some()
}

/// Usable bytes of a huge block; aborts with one line when `block` is not a live huge
/// block with an intact header.
///
/// # Safety
/// None beyond the block being live, which is checked; unsafe as the caller's
/// promise that it is.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    let r = REGISTRY.lock();
    let h = r.live_header(block, "malloc_usable_size()");
    // SAFETY: `block` is live (checked), so its header page is mapped; only the block's
    // owner, the caller, rewrites it.
    unsafe { (*h).usable }
}

/// Aborts with one line naming `op` unless `block` is a live huge block with an
/// intact header.
pub fn check_live(block: *mut u8, op: &str) {
    REGISTRY.lock().live_header(block, op);
}

/// For `p`, which is neither an arena address nor a live huge block and is about to
/// go to glibc (`op` on a block glibc's malloc served): aborts with one line when it
/// is a huge block freed lately (a double free, whose mapping may be cached or gone)
/// or points into the header page or the first page of a live huge block (a stray
/// pointer that glibc would take for its own).
pub fn check_foreign(p: *const u8, op: &str) {
    let a = p as usize;
    let r = REGISTRY.lock();
    if r.was_freed(a) {
        drop(r);
        let what = if op == "free()" {
            "double free"
        } else {
            "invalid pointer"
        };
        sys::io::fatal(format_args!("{op}: {what} {p:p}: huge block already freed"));
    }
    let down = a & !(PAGE_SIZE - 1);
    let up = down.wrapping_add(PAGE_SIZE);
    if r.find(down).is_some() || r.find(up).is_some() {
        drop(r);
        sys::io::fatal(format_args!(
            "{op}: invalid pointer {p:p}: inside a huge block of cpuslab"
        ));
    }
}

/// Whether a block just returned by [`alloc`] reads as zero (a fresh mapping; a
/// reused one holds what its last user left).
///
/// # Safety
/// `block` was returned by [`alloc`] and not freed.
pub unsafe fn is_zero(block: *mut u8) -> bool {
    // SAFETY: `block` is live, from `alloc`: its header page is mapped, and `zero` is
    // written only when the block is registered.
    unsafe { (*header(block)).zero }
}

/// Frees a huge block: its mapping goes to the cache, or is unmapped when the cache
/// is off or its budget is smaller than the mapping.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and is not used any more.
pub unsafe fn free(block: *mut u8) {
    let now = sys::time::now_ms();
    let mut victims = Victims::new();
    {
        let mut r = REGISTRY.lock();
        let h = r.live_header(block, "free()");
        r.remove(block as usize);
        r.note_freed(block as usize);
        // SAFETY: `block` was live (checked), so its header page is mapped; the caller
        // no longer uses the block, and it is unmapped or cached only below.
        let (base, len, node, origin) =
            unsafe { ((*h).map_base as usize, (*h).map_len, (*h).node, (*h).origin) };
        // SAFETY: as above.
        unsafe { (*h).magic = 0 };
        r.live_bytes -= len;
        r.cache.expire(now, purge::decay_ms(), &mut victims);
        let c = Cached {
            base,
            len,
            node,
            freed_ms: now,
            origin,
        };
        if !r.retain(c, &mut victims) {
            victims.push(base, len);
        }
    }
    victims.unmap();
}

/// Resizes a page-aligned huge block with mremap. Returns null, leaving the block
/// intact, when that cannot be done (the caller copies instead).
///
/// # Safety
/// `block` was returned by [`alloc`] with an alignment of at most a page.
pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
    let h = REGISTRY.lock().live_header(block, "realloc()");
    // SAFETY: `block` is live (checked), so its header page is mapped; the caller owns
    // the block, and only the owner rewrites its header.
    let (base, old_len) = unsafe { ((*h).map_base, (*h).map_len) };
    // SAFETY: `live_header` checked that the mapping holds the header page before
    // `block`.
    if base != unsafe { block.sub(PAGE_SIZE) } {
        return ptr::null_mut();
    }
    let Some(new_len) = new_size
        .checked_add(2 * PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
    else {
        return ptr::null_mut();
    };
    if new_len > old_len
        && !arena::charge(new_len - old_len)
        && (drain_cache() == 0 || !arena::charge(new_len - old_len))
    {
        return ptr::null_mut();
    }
    let mut registry = REGISTRY.lock();
    let moved = sys::mmap::remap(base, old_len, new_len);
    if moved.is_null() {
        if new_len > old_len {
            arena::uncharge(new_len - old_len);
        }
        return ptr::null_mut();
    }
    if new_len < old_len {
        arena::uncharge(old_len - new_len);
    }
    registry.remove(block as usize);
    if moved != base {
        // The old address is gone as if freed: a later use of it is a double free.
        registry.note_freed(block as usize);
    }
    // Cannot fail: the entry just removed frees a slot.
    registry.insert(moved as usize + PAGE_SIZE);
    registry.live_bytes = registry.live_bytes - old_len + new_len;
    drop(registry);
    let h = moved.cast::<HugeHeader>();
    // SAFETY: `base` was the header page, so the remapped mapping starts with it, and
    // the block is still the caller's: nobody else reads or writes its header.
    unsafe {
        if moved != base {
            (*h).origin = moved as usize;
        }
        (*h).map_base = moved;
        (*h).map_len = new_len;
        (*h).usable = new_len - PAGE_SIZE;
    }
    // SAFETY: the block starts a page into the mapping, after its header page.
    unsafe { moved.add(PAGE_SIZE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_against_a_model() {
        let mut r = Registry::new();
        let mut model = std::collections::HashSet::new();
        let mut x = 0x9E37_79B9u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct pages so probe runs collide and wrap.
            let block = ((x % 5000) as usize + 1) << 12;
            if x & 1 == 0 && model.len() < 4000 {
                if model.insert(block) {
                    assert!(r.insert(block));
                }
            } else {
                assert_eq!(r.remove(block), model.remove(&block));
            }
            assert_eq!(r.live, model.len());
        }
        for b in 1..5001usize {
            assert_eq!(r.find(b << 12).is_some(), model.contains(&(b << 12)));
        }
    }

    fn cache_of(entries: &[(usize, usize, usize)]) -> Cache {
        let mut c = Registry::new().cache;
        let mut out = Victims::new();
        for (t, &(base, len, node)) in entries.iter().enumerate() {
            let e = Cached {
                base,
                len,
                node,
                freed_ms: t as u64,
                origin: base,
            };
            c.insert(e, usize::MAX, &mut out);
        }
        assert_eq!(out.n, 0);
        c
    }

    const M: usize = 1 << 20;

    #[test]
    fn fit_takes_the_tightest_mapping_of_the_node() {
        let base = 1 << 40;
        let mut c = cache_of(&[
            (base, 30 * M, 0),
            (base + 100 * M, 21 * M, 1),
            (base + 200 * M, 22 * M, 0),
            (base + 300 * M, 40 * M, 0),
        ]);
        // Node 0: 22 MiB beats 30 MiB; the 21 MiB mapping is another node's.
        let (got, fit) = c.take_fit(20 * M, PAGE_SIZE, 0).unwrap();
        assert_eq!((got.base, got.len), (base + 200 * M, 22 * M));
        assert!(matches!(fit, Fit::Trim { lead: 0 }));
        assert_eq!(c.n, 3);
        assert_eq!(c.bytes, 91 * M);
        // Nothing on node 2.
        assert!(c.take_fit(20 * M, PAGE_SIZE, 2).is_none());
        let (got, _) = c.take_fit(20 * M, PAGE_SIZE, 1).unwrap();
        assert_eq!(got.len, 21 * M);
        // Larger requests grow the largest mapping of at least half their size...
        let (got, fit) = c.take_fit(50 * M, PAGE_SIZE, 0).unwrap();
        assert_eq!(got.len, 40 * M);
        assert!(matches!(fit, Fit::Grow));
        // ...but not for an alignment above a page (mremap may move it).
        assert!(c.take_fit(50 * M, 2 * M, 0).is_none());
        assert!(c.take_fit(70 * M, PAGE_SIZE, 0).is_none());
        // Any mapping big enough serves a smaller request (its tail is kept).
        let (got, fit) = c.take_fit(5 * M, PAGE_SIZE, 0).unwrap();
        assert_eq!(got.len, 30 * M);
        assert!(matches!(fit, Fit::Trim { lead: 0 }));
    }

    /// Pieces of one mapping that touch merge; a neighbour from another mapping (in
    /// another VMA, which mremap could not grow across) stays apart; a merged mapping
    /// past the budget is unmapped.
    #[test]
    fn insert_merges_touching_pieces_of_one_mapping() {
        let a = 1usize << 40;
        let piece = |base: usize, len: usize, origin: usize| Cached {
            base,
            len,
            node: 0,
            freed_ms: 0,
            origin,
        };
        let mut c = Registry::new().cache;
        let mut out = Victims::new();
        c.insert(piece(a + 10 * M, 20 * M, a), usize::MAX, &mut out);
        c.insert(piece(a, 10 * M, a), usize::MAX, &mut out);
        assert_eq!((c.n, c.bytes), (1, 30 * M));
        assert_eq!((c.entries[0].base, c.entries[0].len), (a, 30 * M));
        c.insert(piece(a + 30 * M, 5 * M, a + 30 * M), usize::MAX, &mut out);
        assert_eq!((c.n, c.bytes, out.n), (2, 35 * M, 0));
        c.insert(piece(a - 8 * M, 8 * M, a), 36 * M, &mut out);
        assert_eq!((c.n, c.bytes, out.n), (1, 5 * M, 1));
        assert_eq!(out.list[0], (a - 8 * M, 38 * M));
    }

    #[test]
    fn fit_respects_alignment() {
        let base = (1 << 40) + 3 * PAGE_SIZE;
        let mut c = cache_of(&[(base, 12 * M, 0)]);
        let (got, fit) = c.take_fit(8 * M + PAGE_SIZE, 2 * M, 0).unwrap();
        let Fit::Trim { lead } = fit else {
            panic!("expected a trim")
        };
        assert_eq!((got.base + lead + PAGE_SIZE) % (2 * M), 0);
        assert!(lead < 2 * M);
        // Not enough room after the lead.
        let mut c = cache_of(&[(base, 9 * M, 0)]);
        assert!(c.take_fit(9 * M - PAGE_SIZE, 2 * M, 0).is_none());
    }

    #[test]
    fn insert_evicts_the_oldest_past_the_budget_and_expire_by_age() {
        let mut c = Registry::new().cache;
        let mut out = Victims::new();
        for t in 0..5u64 {
            let e = Cached {
                base: (t as usize + 1) << 30,
                len: 10 * M,
                node: 0,
                freed_ms: t * 100,
                origin: (t as usize + 1) << 30,
            };
            c.insert(e, 30 * M, &mut out);
        }
        assert_eq!((c.n, c.bytes, out.n), (3, 30 * M, 2));
        assert_eq!(out.list[0].0, 1 << 30);
        assert_eq!(c.entries[0].freed_ms, 200);
        let mut out = Victims::new();
        // Decay 150 ms at 400 ms: freed at 200 expires, 300 and 400 stay.
        c.expire(400, 150, &mut out);
        assert_eq!((c.n, out.n), (2, 1));
        c.expire(u64::MAX, 150, &mut out);
        assert_eq!((c.n, c.bytes, out.n), (0, 0, 3));
    }
}
