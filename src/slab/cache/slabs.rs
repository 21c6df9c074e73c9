//! Inside a slab, and slabs as a whole: where a slab's first object sits (its colour),
//! which of its objects are free (the free map, and a shuffled cache's freelist of
//! indices), growing a slab from the page pool and giving slabs back to it (after a
//! grace period for a `TYPESAFE_BY_RCU` cache).
//!
//! These are what [`transfer`] moves objects with, through [`SlabCache`] (at the end of
//! this file): they run under the slab's node list lock, or on slabs that no list
//! holds.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::RawCache;
use crate::page::arena::{ARENA_MASK, ARENA_SIZE};
use crate::page::desc::{page_offset, PG_ALLOCATED, PG_SLAB, PG_TAIL};
use crate::page::list::PageList;
use crate::page::{self, page_address, Page};
use crate::rcu::{self, RcuHead};
use crate::slab::array_cache::ArrayCache;
use crate::slab::debug;
use crate::slab::layout::{
    self, FreelistRng, MapPlace, OFF_SLAB_HEAD_OFFSET, OFF_SLAB_TAIL_OFFSET,
};
use crate::slab::node::NodeLists;
use crate::slab::transfer::{self, Held, SlabCache};
use crate::slab::SlabFlags;
use crate::sys;

/// Pages of `TYPESAFE_BY_RCU` slabs waiting for a grace period before they go back to
/// the page pool.
pub(crate) static RCU_PENDING_PAGES: AtomicUsize = AtomicUsize::new(0);

// A slab off every list has free link fields: the RCU head overlays `next` and `prev`.
const _: () = assert!(
    core::mem::offset_of!(Page, prev) == core::mem::offset_of!(Page, next) + 8
        && core::mem::size_of::<RcuHead>() == 16
);

/// The RCU head of a slab being freed, over its descriptor's list links.
unsafe fn slab_rcu_head(slab: *mut Page) -> *mut RcuHead {
    // SAFETY: `slab` is the head descriptor of a slab being destroyed, in the mapped
    // descriptor array; only the address of its links is taken.
    unsafe { ptr::addr_of_mut!((*slab).next).cast() }
}

/// The callback `destroy_slabs` queues: frees the slab's pages after the grace period.
unsafe fn slab_free_rcu(head: *mut RcuHead) {
    // SAFETY: `head` is the one `destroy_slabs` queued, at `next` in a slab's head
    // descriptor: stepping back stays inside that descriptor.
    let slab = unsafe { head.byte_sub(core::mem::offset_of!(Page, next)) }.cast::<Page>();
    // SAFETY: that descriptor; `order` lies outside the links the head overlays, so it
    // still holds the slab's order.
    let order = unsafe { (*slab).order } as usize;
    // Nobody touched the slab during the grace period: its pages go in cold.
    // SAFETY: the slab's block, allocated with this order by `cache_grow_begin`; the
    // grace period has ended, so no reader still looks at its stale objects.
    unsafe { page::free_pages_cold(slab, order) };
    RCU_PENDING_PAGES.fetch_sub(1 << order, Ordering::Relaxed);
}

/// The low half of `slab`'s `info`, where a slab keeps the offset of its first slot
/// in its arena (its first page's offset plus its colour: below 2^32, as an arena is
/// 256 MiB), so that a free's check of its pointer subtracts one word
/// ([`slab_first_slot`]). The high half of a one-page off-slab slab's holds its free
/// map, written under the list lock while frees read this word without it, so the two
/// are separate bytes, never one `u64` access.
///
/// # Safety
/// `slab` is the head page of a slab.
#[inline(always)]
unsafe fn colour_word(slab: *mut Page) -> *mut u32 {
    // SAFETY: `slab` heads a slab (the caller's contract): a mapped descriptor.
    unsafe { ptr::addr_of_mut!((*slab).info).cast::<u32>() }
}

/// The offset in its arena of `slab`'s first slot (see [`colour_word`]).
///
/// # Safety
/// `slab` is the head page of a slab.
#[inline(always)]
pub(super) unsafe fn slab_first_slot(slab: *mut Page) -> usize {
    // SAFETY: `slab` heads a slab (the caller's contract); `cache_grow_end` wrote the
    // word before the slab went on a list, and nothing writes it after.
    unsafe { *colour_word(slab) as usize }
}

/// The colour offset of `slab`'s first object.
///
/// # Safety
/// `slab` is the head page of a slab.
#[inline(always)]
pub(super) unsafe fn slab_colour(slab: *mut Page) -> usize {
    // Wrapping: between `cache_grow_begin` and `cache_grow_end` the word is 0, and a
    // stray pointer's check may look then (it fails either way).
    // SAFETY: as the caller promised.
    unsafe { slab_first_slot(slab).wrapping_sub(page_offset(slab)) }
}

// The first slot's offset in its arena fits the low half of `info`.
const _: () = assert!(ARENA_SIZE <= 1 << 32);

// The colour is the low half of `info` and the map the high half (bytes 4..8) only on
// a little-endian machine.
const _: () = assert!(cfg!(target_endian = "little"));

impl RawCache {
    /// The freelist (index array) of `slab`.
    #[inline]
    unsafe fn freelist(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        if g.off_slab && g.order == 0 {
            // SAFETY: callers pass a slab of this cache; a one-page off-slab slab keeps
            // its freelist in its descriptor's `spare` bytes.
            unsafe { slab.cast::<u8>().add(OFF_SLAB_HEAD_OFFSET) }
        } else if g.off_slab {
            // SAFETY: as above; a larger one, in the links of its last page's
            // descriptor, which follows the head's in the descriptor array.
            unsafe {
                slab.add((1 << g.order) - 1)
                    .cast::<u8>()
                    .add(OFF_SLAB_TAIL_OFFSET)
            }
        } else {
            // SAFETY: as above; an on-slab freelist ends the slab's pages.
            unsafe { page_address(slab).add(g.slab_bytes() - g.freelist_bytes()) }
        }
    }

    #[inline]
    unsafe fn get_free_idx(&self, slab: *mut Page, i: usize) -> usize {
        // SAFETY: callers pass a slab of this cache.
        let fl = unsafe { self.freelist(slab) };
        if self.geom().idx_u8 {
            // SAFETY: a shuffled cache's freelist holds `num` indices and callers pass
            // `i < num`; it is read under the slab's list lock, or before the slab is
            // published.
            unsafe { *fl.add(i) as usize }
        } else {
            // SAFETY: as above, of two bytes each.
            unsafe { *fl.cast::<u16>().add(i) as usize }
        }
    }

    #[inline]
    unsafe fn set_free_idx(&self, slab: *mut Page, i: usize, idx: usize) {
        // SAFETY: callers pass a slab of this cache.
        let fl = unsafe { self.freelist(slab) };
        if self.geom().idx_u8 {
            // SAFETY: as in `get_free_idx`: entry `i < num`, written under the slab's
            // list lock or before the slab is published.
            unsafe { *fl.add(i) = idx as u8 };
        } else {
            // SAFETY: as above, of two bytes each.
            unsafe { *fl.cast::<u16>().add(i) = idx as u16 };
        }
    }

    /// The free map of `slab`: bit `i` is set while object `i` is on its freelist
    /// (see `layout`).
    #[inline]
    unsafe fn free_map(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        match g.map_place() {
            // SAFETY: callers pass a slab of this cache: its descriptor's `spare` bytes.
            MapPlace::HeadSpare => unsafe { slab.cast::<u8>().add(layout::MAP_HEAD_SPARE_OFFSET) },
            // SAFETY: as above: the high half of its descriptor's `info`.
            MapPlace::HeadInfo => unsafe { slab.cast::<u8>().add(layout::MAP_HEAD_INFO_OFFSET) },
            // SAFETY: as above: inside the slab's pages, just before the freelist.
            MapPlace::InSlab => unsafe {
                page_address(slab).add(g.slab_bytes() - g.freelist_bytes() - g.map_bytes())
            },
        }
    }

    /// Marks all `num` objects of a new slab free in its map (and no bit beyond).
    unsafe fn init_free_map(&self, slab: *mut Page) {
        let g = self.geom();
        // SAFETY: `cache_grow_begin` passes its new slab of this cache.
        let map = unsafe { self.free_map(slab) };
        let bytes = match g.map_place() {
            MapPlace::HeadSpare => layout::MAP_HEAD_SPARE_BITS / 8,
            MapPlace::HeadInfo => layout::MAP_HEAD_INFO_BITS / 8,
            MapPlace::InSlab => g.map_bytes(),
        };
        // SAFETY: the map is `bytes` long where it lies, and holds the `num` bits; the
        // slab is not published yet, so nobody else reads it.
        unsafe {
            ptr::write_bytes(map, 0, bytes);
            ptr::write_bytes(map, 0xff, g.num / 8);
        }
        if !g.num.is_multiple_of(8) {
            // SAFETY: as above: the byte of the last objects' bits.
            unsafe { *map.add(g.num / 8) = (1u8 << (g.num % 8)) - 1 };
        }
    }

    /// `slab_get_obj`: the next free object of `slab`, which has one.
    #[inline]
    unsafe fn slab_get_obj(&self, slab: *mut Page) -> *mut u8 {
        let g = self.geom();
        if !g.shuffled {
            let mut obj = ptr::null_mut();
            // SAFETY: the caller's contract; `obj` is room for the one object.
            unsafe { self.slab_get_objs(slab, &mut obj, 1) };
            return obj;
        }
        // SAFETY: the caller holds the slab's list lock and the slab has a free object:
        // `active < num` is the freelist's next entry.
        let idx = unsafe { self.get_free_idx(slab, (*slab).active as usize) };
        // SAFETY: the descriptor and the map are ours under the list lock; the freelist
        // holds indices below `num`, each with its bit in the map.
        unsafe {
            (*slab).active += 1;
            *self.free_map(slab).add(idx / 8) &= !(1 << (idx % 8));
        }
        // SAFETY: object `idx < num` lies inside the slab.
        unsafe { page_address(slab).add(slab_colour(slab) + idx * g.size) }
    }

    /// Up to `n` free objects of `slab` into `out`, the lowest last (on top of the
    /// stack it is pushed onto); how many it took. The free map is scanned once for the
    /// whole batch.
    #[inline]
    unsafe fn slab_get_objs(&self, slab: *mut Page, out: *mut *mut u8, n: usize) -> usize {
        let g = self.geom();
        // SAFETY: the caller holds the slab's list lock: its descriptor is ours.
        let n = n.min(g.num - unsafe { (*slab).active } as usize);
        if g.shuffled {
            for k in 0..n {
                // SAFETY: `out` has room for `n` (the caller's contract), and the slab
                // has a free object for each (`n <= num - active`).
                unsafe { *out.add(k) = self.slab_get_obj(slab) };
            }
            return n;
        }
        // SAFETY: `slab` is a slab of this cache (the caller's contract).
        let map = unsafe { self.free_map(slab) };
        // SAFETY: as above: its first object, inside it.
        let first = unsafe { page_address(slab).add(slab_colour(slab)) };
        let bytes = g.num.div_ceil(8);
        let mut got = 0;
        let mut at = 0;
        while got < n && at < bytes {
            // Without a freelist array the map is `HeadSpare` (16 bytes) or whole
            // words at the slab's end (`map_bytes`): no word read here runs past it;
            // bytes beyond the last object's are masked off.
            // SAFETY: as above, the word lies inside the descriptor or the slab.
            let mut word = unsafe { ptr::read_unaligned(map.add(at).cast::<u64>()) };
            if bytes - at < 8 {
                word &= (1u64 << ((bytes - at) * 8)) - 1;
            }
            let mut left = word;
            while left != 0 && got < n {
                let pos = at * 8 + left.trailing_zeros() as usize;
                left &= left - 1;
                let idx = g.position(pos);
                // Highest first in `out`: the per-CPU stack the batch is pushed onto
                // pops the last pushed first, so the program gets the objects in
                // ascending address order, the direction its reads will stream in.
                // SAFETY: `n - 1 - got < n`, which `out` has room for; only objects' bits
                // are ever set, so `idx < num` and the object lies inside the slab.
                unsafe { *out.add(n - 1 - got) = first.add(idx * g.size) };
                got += 1;
            }
            // The bits taken are cleared a byte at a time, each byte written once: a
            // write an object would make each clear wait for the one before it in the
            // same byte (see `slab_put_objs`). Only bytes of the map are written.
            let mut taken = word & !left;
            while taken != 0 {
                let b = taken.trailing_zeros() as usize / 8;
                // SAFETY: byte `at + b < bytes` of the map (a bit of it was set, and
                // bits past the map's bytes are masked off), ours under the list lock.
                unsafe { *map.add(at + b) = (left >> (8 * b)) as u8 };
                taken &= !(0xff << (8 * b));
            }
            at += 8;
        }
        if got < n {
            // SAFETY: a slab of this cache, under its list lock.
            unsafe { self.corrupt_map(slab) };
        }
        // SAFETY: the descriptor is ours under the list lock.
        unsafe { (*slab).active += got as u16 };
        got
    }

    /// `slab_put_obj`: returns `obj` (checked to be an object of `slab`) to `slab`'s
    /// freelist. An object that is on the freelist already is freed twice: that aborts,
    /// in every build, before the freelist would hold it twice.
    #[inline]
    unsafe fn slab_put_obj(&self, slab: *mut Page, obj: *mut u8) {
        // Offsets in the arena, which the slab and its object share (as the free's
        // check): the slab's first slot is one word of its descriptor.
        // SAFETY: `slab` heads a slab of this cache, `obj` one of its objects (the
        // caller's contract).
        let off = (obj as usize & ARENA_MASK) - unsafe { slab_first_slot(slab) };
        let idx = self.geom().obj_to_index(off);
        // The map is by position (`Geometry::position`); the freelist array, by index.
        let pos = self.geom().position(idx);
        // SAFETY: as above; the object's bit lies in the map.
        let byte = unsafe { self.free_map(slab).add(pos / 8) };
        // SAFETY: the map is ours under the slab's list lock, which the caller holds.
        if unsafe { *byte } & (1 << (pos % 8)) != 0 {
            self.double_free_in_slab(obj);
        }
        // SAFETY: as above: so is the descriptor.
        if unsafe { (*slab).active } == 0 {
            // Unreachable while the map is intact: every object's bit is set then.
            sys::io::fatal(format_args!(
                "double free of {obj:p} in cache {}: its slab has no object in use",
                self.name()
            ));
        }
        // SAFETY: the map and the descriptor are ours under the list lock.
        unsafe {
            *byte |= 1 << (pos % 8);
            (*slab).active -= 1;
        }
        if self.geom().shuffled {
            // SAFETY: as above; `active < num` is the freelist entry the object goes to.
            unsafe { self.set_free_idx(slab, (*slab).active as usize, idx) };
        }
    }

    /// [`slab_put_obj`](Self::slab_put_obj) for each of `objs`, a run of objects of
    /// `slab` (each checked to be one of its objects, as `check_in_span` does), with
    /// the slab's count and each byte of its map written once for the run rather
    /// than once an object.
    ///
    /// Each object freed alone reads the count and the map byte the one before it
    /// just wrote: a chain of store-to-load forwards the length of the run (about 5
    /// cycles each), which the batch `free_block` puts back, often a slab's worth in
    /// address order, would otherwise wait through.
    ///
    /// # Safety
    /// The caller holds the slab's list lock; every object of `objs` lies in the span
    /// of `slab`, a slab of this cache.
    #[inline]
    unsafe fn slab_put_objs(&self, slab: *mut Page, objs: &[*mut u8]) {
        let g = self.geom();
        if g.shuffled {
            // Each object takes the freelist entry at the count, in turn.
            // SAFETY: the caller's contract.
            return unsafe { transfer::put_each(self, slab, objs) };
        }
        // The geometry and the slot test in locals: the map's bytes are written through
        // a pointer that could alias the cache's cells, so read through `self` they
        // would be read again for every object.
        let (g, check) = (*g, self.free_check());
        // SAFETY: `slab` heads a slab of this cache (the contract).
        let (first, map) = unsafe { (slab_first_slot(slab), self.free_map(slab)) };
        // SAFETY: the descriptor is ours under the list lock.
        let mut active = unsafe { (*slab).active };
        // The map byte being written: its index (none yet) and its value so far.
        let mut at = usize::MAX;
        let mut byte = 0u8;
        for &obj in objs {
            // Its slot's offset in the slab, checked as `check_in_span` checks it.
            let off = ((obj as usize & ARENA_MASK) as u32).wrapping_sub(first as u32);
            if !check.is_slot(off) {
                // SAFETY: `obj` lies in the slab's span (the contract), so in the arena.
                unsafe { self.bad_free(obj) };
            }
            let pos = g.position(g.obj_to_index(off as usize));
            if pos / 8 != at {
                if at != usize::MAX {
                    // SAFETY: byte `at` of the map, ours under the list lock.
                    unsafe { *map.add(at) = byte };
                }
                at = pos / 8;
                // SAFETY: as above: the object's bit lies in the map.
                byte = unsafe { *map.add(at) };
            }
            let bit = 1u8 << (pos % 8);
            if byte & bit != 0 {
                self.double_free_in_slab(obj);
            }
            if active == 0 {
                // Unreachable while the map is intact: every object's bit is set then.
                sys::io::fatal(format_args!(
                    "double free of {obj:p} in cache {}: its slab has no object in use",
                    self.name()
                ));
            }
            byte |= bit;
            active -= 1;
        }
        if at != usize::MAX {
            // SAFETY: as above.
            unsafe { *map.add(at) = byte };
        }
        // SAFETY: the descriptor is ours under the list lock.
        unsafe { (*slab).active = active };
    }

    /// `cache_grow_begin`: pages for a new slab on `node`, with its descriptors and
    /// freelist initialised. Null when memory ran out.
    pub(super) unsafe fn cache_grow_begin(&self, node: usize) -> *mut Page {
        let g = self.geom();
        let slab = page::alloc_pages_node(node, g.order);
        if slab.is_null() {
            return slab;
        }
        // A slab grown where frees of this cache gave slabs back lately is the cache
        // cycling through the same memory (a program building and dropping more
        // objects than its caches keep, round after round): no growth of the
        // program's footprint, and no reason to drain the other caches for it.
        let pages = 1u32 << g.order;
        let cycling = self
            .regrow_credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_sub(pages)
            })
            .is_ok();
        if !cycling {
            crate::slab::reap::note_growth(crate::sys::PAGE_SIZE << g.order);
        }
        // SAFETY: the head descriptor of a fresh block, ours until `cache_grow_end`
        // puts the slab on a list.
        unsafe {
            (*slab).set_flags(PG_SLAB | PG_ALLOCATED);
            (*slab).order = g.order as u8;
            (*slab).active = 0;
            (*slab).cache = (self as *const RawCache).cast_mut().cast();
            // Colour 0 until `cache_grow_end` sets it; the high half may hold the map.
            (*slab).info = 0;
        }
        for i in 1..(1usize << g.order) {
            // SAFETY: the descriptor of the block's page `i`, after the head's in the
            // descriptor array; ours as well.
            unsafe {
                let tail = slab.add(i);
                (*tail).head = slab;
                (*tail).set_flags(PG_TAIL);
            }
        }
        if self.tag() != 0 {
            // SAFETY: the block's pages are ours, as above.
            unsafe { page::tag::set_tags(slab, 1 << g.order, self.tag()) };
        }
        if g.shuffled {
            // shuffle_freelist: a permutation of its own for every slab.
            let seed = self.random.fetch_add(layout::SEED_STEP, Ordering::Relaxed);
            let mut rng = FreelistRng::new(seed);
            layout::shuffle_freelist(
                g.num,
                &mut rng,
                // SAFETY: `i < num`, in the new slab's freelist, which nobody else sees
                // yet.
                |i| unsafe { self.get_free_idx(slab, i) },
                // SAFETY: as above.
                |i, idx| unsafe { self.set_free_idx(slab, i, idx) },
            );
        }
        // SAFETY: the new slab of this cache, not published yet.
        unsafe { self.init_free_map(slab) };
        slab
    }

    /// `cache_grow_end`: colours the new slab and puts it on the node's free list.
    pub(super) unsafe fn cache_grow_end(&self, l: &mut NodeLists, slab: *mut Page) {
        let g = self.geom();
        // The low half of `info` (a one-page off-slab slab keeps its map in the high):
        // the first slot's offset in the arena, below 2^32.
        // SAFETY: a slab from `cache_grow_begin` (the caller's contract), on no list
        // yet: nobody else reads its colour.
        unsafe { *colour_word(slab) = (page_offset(slab) + l.colour_next * g.colour_off) as u32 };
        l.colour_next += 1;
        if l.colour_next > g.colour {
            l.colour_next = 0;
        }
        if self.debug() {
            // Now that the colour places the slots: mark them free and poisoned.
            // SAFETY: as above: its first slot, inside it.
            let first = unsafe { page_address(slab).add(slab_colour(slab)) };
            for i in 0..g.num {
                // SAFETY: slot `i < num` of a new slab of this debug cache, not handed
                // out yet.
                unsafe { debug::init_slot(self.debug_layout(), first.add(i * g.size)) };
            }
        }
        // SAFETY: the slab's head descriptor, on no list yet; `l` is its node's lists,
        // locked (the caller's contract).
        unsafe { l.slabs_free.push_back(slab) };
        l.total_slabs += 1;
        l.free_objects += g.num;
    }

    /// `slab_destroy` for every slab on `list`: their pages go back to the page pool,
    /// after a grace period for a `TYPESAFE_BY_RCU` cache. `cold`: the slabs sat unused
    /// (the reaper found them idle), so their pages go to the cold end of the CPU's
    /// page list; slabs just emptied by frees go to its hot end.
    pub(crate) unsafe fn destroy_slabs(&self, list: &mut PageList, cold: bool) -> usize {
        let order = self.geom().order;
        let by_rcu = self.flags.load(Ordering::Relaxed) & SlabFlags::TYPESAFE_BY_RCU.0 != 0;
        let mut pages = 0;
        loop {
            let slab = list.pop_front();
            if slab.is_null() {
                if !cold && pages > 0 {
                    // Frees emptied these slabs: growing them back soon is cycling,
                    // not growth (see `cache_grow_begin`).
                    let add = u32::try_from(pages).unwrap_or(u32::MAX);
                    let _ = self.regrow_credit.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |c| Some(c.saturating_add(add)),
                    );
                }
                return pages;
            }
            for i in 1..(1usize << order) {
                // SAFETY: `list` holds empty slabs of this cache, taken off every node
                // list (by `free_block` or the reaper): their descriptors are ours.
                unsafe { (*slab.add(i)).set_flags(0) };
            }
            if self.tag() != 0 {
                // SAFETY: as above: so are their pages.
                unsafe { page::tag::set_tags(slab, 1 << order, 0) };
            }
            // SAFETY: as above.
            unsafe { (*slab).cache = ptr::null_mut() };
            if by_rcu {
                // No longer a slab to anyone looking up a pointer, but its pages stay
                // allocated, holding stale objects, until the grace period ends.
                // SAFETY: as above.
                unsafe { (*slab).set_flags(PG_ALLOCATED) };
                RCU_PENDING_PAGES.fetch_add(1 << order, Ordering::Relaxed);
                // SAFETY: on no list, the slab's links (the head) stay untouched until
                // `slab_free_rcu` frees its pages.
                unsafe { rcu::call_rcu(slab_rcu_head(slab), slab_free_rcu) };
            } else {
                // SAFETY: the slab's block, of the cache's order; empty and off every
                // list, so unused.
                unsafe {
                    if cold {
                        page::free_pages_cold(slab, order)
                    } else {
                        page::free_pages(slab, order)
                    }
                };
            }
            pages += 1 << order;
        }
    }

    /// Returns `nr` objects from the bottom of `ac` to their slabs.
    ///
    /// # Safety
    /// The caller holds `ac`'s lock; for the shared cache of node `shared_of`, the
    /// caller passes that node's lock in `held`, and it is retaken before every chunk
    /// (`free_block` may switch to another node's lock for remote objects).
    pub(crate) unsafe fn drain_array<'a>(
        &'a self,
        ac: *mut ArrayCache,
        nr: u32,
        shared_of: Option<usize>,
        held: Held<'a>,
        to_destroy: &mut PageList,
    ) -> Held<'a> {
        // SAFETY: the caller's contract, which is `transfer::drain_array`'s.
        unsafe { transfer::drain_array(self, ac, nr, shared_of, held, to_destroy) }
    }
}

/// The batch moves of [`transfer`] over this cache's real slabs: page descriptors,
/// freelist index arrays, slabs grown from the page pool.
impl SlabCache for RawCache {
    #[inline(always)]
    fn num(&self) -> usize {
        self.geom().num
    }

    #[inline(always)]
    fn keeps_order(&self) -> bool {
        let g = self.geom();
        g.shuffled || g.per_line != 0
    }

    #[inline(always)]
    fn list_lock(&self, node: usize) -> &crate::sync::Mutex<NodeLists> {
        &self.node(node).list_lock
    }

    #[inline(always)]
    unsafe fn claim(&self, slab: *mut Page) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.claim_slab(slab) }
    }

    #[inline]
    fn owner_cpus(&self) -> usize {
        RawCache::owner_cpus(self)
    }

    #[inline]
    fn claimer(&self) -> Option<usize> {
        RawCache::claimer(self)
    }

    #[inline]
    unsafe fn slab_owner(&self, slab: *mut Page) -> Option<usize> {
        // SAFETY: the caller's contract, passed on.
        unsafe { RawCache::slab_owner(self, slab) }
    }

    #[inline(always)]
    unsafe fn obj_to_slab(&self, obj: *mut u8) -> *mut Page {
        // SAFETY: it checks `obj` itself; it needs nothing of the caller.
        unsafe { RawCache::obj_to_slab(self, obj) }
    }

    #[inline(always)]
    unsafe fn slab_span(&self, slab: *mut Page) -> (usize, usize) {
        // SAFETY: written before the cache was published (it owns slabs, so it was).
        let span = unsafe { (*self.check.get()).span } as usize;
        // SAFETY: `slab` heads a slab of this cache (the contract): its first slot's
        // offset is in its descriptor, in the arena whose base its address carries.
        let first = (slab as usize & !ARENA_MASK) + unsafe { slab_first_slot(slab) };
        (first, span)
    }

    #[inline(always)]
    unsafe fn check_in_span(&self, slab: *mut Page, obj: *mut u8) {
        // The offsets of the slots, not of the objects: the objects `free_block` puts
        // back are what the array caches hold, which are slots.
        // SAFETY: `slab` is a slab of this cache and `obj` lies in its span (the
        // contract), so in its arena.
        if !unsafe { self.starts_slot(slab, (obj as usize & ARENA_MASK) as u32) } {
            // SAFETY: as above, an arena address.
            unsafe { self.bad_free(obj) };
        }
    }

    #[inline(always)]
    unsafe fn slab_node(&self, slab: *mut Page) -> usize {
        page::page_node(slab)
    }

    #[inline(always)]
    unsafe fn slab_get_obj(&self, slab: *mut Page) -> *mut u8 {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_get_obj(self, slab) }
    }

    #[inline(always)]
    unsafe fn slab_put_obj(&self, slab: *mut Page, obj: *mut u8) {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_put_obj(self, slab, obj) }
    }

    #[inline(always)]
    unsafe fn slab_put_objs(&self, slab: *mut Page, objs: &[*mut u8]) {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_put_objs(self, slab, objs) }
    }

    #[inline(always)]
    unsafe fn slab_get_objs(&self, slab: *mut Page, out: *mut *mut u8, n: usize) -> usize {
        // SAFETY: the same contract.
        unsafe { RawCache::slab_get_objs(self, slab, out, n) }
    }

    #[inline(always)]
    fn prefetch_obj(&self, obj: *mut u8) {
        // The page descriptor: arithmetic on the address, no load.
        sys::cpu::prefetch(crate::page::virt_to_page(obj));
    }

    unsafe fn cache_grow_begin(&self, node: usize) -> *mut Page {
        // SAFETY: the same contract.
        unsafe { RawCache::cache_grow_begin(self, node) }
    }

    unsafe fn cache_grow_end(&self, l: &mut NodeLists, slab: *mut Page) {
        // SAFETY: the same contract.
        unsafe { RawCache::cache_grow_end(self, l, slab) }
    }
}
