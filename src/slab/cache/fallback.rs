//! The paths that go to a node's lists instead of the CPU's array cache: an allocation
//! or a free whose CPU cache is busy (its lock holder was preempted), every allocation
//! and free of a debug cache (checked one object at a time), an allocation that a
//! cpuset places on another node (`alternate_node_alloc`), and the free of another
//! node's object, which goes home through the local node's alien cache
//! (`cache_free_alien`) so that a local allocation never hands it out.
//!
//! The per-CPU paths in `fast` reach these out of line, so they cost those paths only
//! a call where taken.

use core::ptr;

use super::RawCache;
use crate::cpuset::{self, MemKind};
use crate::page::list::PageList;
use crate::page::{self, arena};
use crate::slab::alien::ALIEN_LIMIT;
use crate::slab::array_cache::ArrayCache;
use crate::slab::debug;
use crate::slab::node;
use crate::slab::transfer;
use crate::sys;
use crate::topology;

impl RawCache {
    /// Allocation when the CPU's array cache is busy (for a debug cache, every
    /// allocation): one object straight from the node, checked if debugging.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_fallback(&self) -> *mut u8 {
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        self.alloc_on(cpuset::mem_node_for_kind(cpu_node, MemKind::Slab))
    }

    /// `alternate_node_alloc`: a thread whose cpuset places slab memory off its CPU's
    /// node (no longer allowed there, or spreading) must not take the CPU's cached
    /// objects, which are that node's; it allocates from its node's lists instead.
    /// `None`: the CPU's node is the right one, take the fast path.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_alternate(&self) -> Option<*mut u8> {
        let cpu_node = topology::cpu_to_node(sys::cpu::current());
        cpuset::alternate_slab_node(cpu_node).map(|node| self.alloc_on(node))
    }

    /// One object from `node`, checked on a debug cache.
    fn alloc_on(&self, node: usize) -> *mut u8 {
        let obj = self.alloc_from_node(node);
        if self.debug() && !obj.is_null() {
            // SAFETY: a free slot of this debug cache, now ours.
            return unsafe { debug::check_alloc(self, obj) };
        }
        obj
    }

    /// One object from `node`'s shared cache or slabs, growing a slab there.
    fn alloc_from_node(&self, node: usize) -> *mut u8 {
        let n = self.node(node);
        // SAFETY: lists and slabs are touched under the list lock.
        unsafe {
            {
                let mut l = n.list_lock.lock();
                if let Some(obj) = transfer::take_one(self, &mut l) {
                    return obj;
                }
            }
            match transfer::grow_locked(self, node) {
                Some(mut l) => transfer::take_one(self, &mut l).unwrap_or(ptr::null_mut()),
                None => ptr::null_mut(),
            }
        }
    }

    /// `cache_free_alien`: an object of another node than the calling CPU's goes back
    /// to its own node, so a remote free never hands the object to a local allocation:
    /// through the local node's alien cache for that node, [`ALIEN_LIMIT`] at a time
    /// (see `slab::alien`; a debug cache, whose frees are checked one by one, goes
    /// straight home). Returns false for a local object.
    #[inline(never)]
    pub(super) unsafe fn free_alien(&self, obj: *mut u8) -> bool {
        if !arena::contains(obj) {
            return false; // obj_to_slab reports it
        }
        let home = page::addr_node(obj);
        let local = topology::cpu_to_node(sys::cpu::current());
        if home == local {
            return false;
        }
        let alien = if self.debug() {
            None
        } else {
            self.node(local).aliens.get(home)
        };
        let Some(alien) = alien else {
            // SAFETY: `obj` is the cache's and no longer used (as for `free`); a free
            // holds no list lock.
            unsafe { self.free_to_node(obj, home) };
            return true;
        };
        let mut batch = [ptr::null_mut(); ALIEN_LIMIT + 1];
        let n = {
            let mut a = alien.lock.lock();
            if a.avail > 0 && a.entries[a.avail - 1] == obj {
                drop(a);
                self.double_free_cached(obj);
            }
            if a.avail < ALIEN_LIMIT {
                let i = a.avail;
                a.entries[i] = obj;
                a.avail = i + 1;
                return true;
            }
            a.take_all(&mut batch)
        };
        batch[n] = obj;
        // SAFETY: objects of node `home` of this cache, freed by their callers and now
        // held by nobody; no lock held.
        unsafe { self.free_alien_batch(home, &batch[..=n]) };
        true
    }

    /// `__drain_alien_cache`: objects of node `home` go into its shared cache as far as
    /// it has room, the rest back to their slabs, under one hold of its list lock.
    ///
    /// # Safety
    /// `objs` are objects of this cache on node `home` that nobody holds; the caller
    /// holds no list lock.
    unsafe fn free_alien_batch(&self, home: usize, objs: &[*mut u8]) {
        let mut to_destroy = PageList::new();
        let l = self.node(home).list_lock.lock();
        let sh = l.shared;
        let mut rest = objs;
        // SAFETY: the shared cache (if any) is guarded by the list lock held.
        let room = unsafe { node::shared_room(sh) } as usize;
        if room > 0 {
            // SAFETY: as above; the copy stays below its limit and capacity, inside
            // its array.
            unsafe {
                let avail = (*sh).avail as usize;
                let n = room.min(objs.len());
                ptr::copy_nonoverlapping(objs.as_ptr(), ArrayCache::entries(sh).add(avail), n);
                (*sh).avail += n as u32;
                rest = &objs[n..];
            }
        }
        if rest.is_empty() {
            drop(l);
        } else {
            // SAFETY: the caller's contract; the lock handed over is `home`'s.
            drop(unsafe { transfer::free_block(self, rest, Some((home, l)), &mut to_destroy) });
        }
        // SAFETY: as in `give_back`.
        unsafe { self.destroy_slabs(&mut to_destroy, false) };
    }

    /// Sends every object in this cache's alien caches home (the reaper, shrinking,
    /// trimming, destroying). Returns how many moved.
    pub(crate) fn drain_aliens(&self) -> usize {
        let mut moved = 0;
        for local in 0..topology::nr_node_ids() {
            let aliens = &self.node(local).aliens;
            for home in aliens.nodes() {
                let mut out = [ptr::null_mut(); ALIEN_LIMIT];
                let n = aliens.lock(home).map_or(0, |mut a| a.take_all(&mut out));
                if n > 0 {
                    // SAFETY: objects of node `home` taken out of its alien cache, where
                    // their frees left them; no lock held.
                    unsafe { self.free_alien_batch(home, &out[..n]) };
                    moved += n;
                }
            }
        }
        moved
    }

    /// Objects in this cache's alien caches, for the statistics.
    pub(crate) fn alien_objects(&self) -> usize {
        (0..topology::nr_node_ids())
            .map(|local| {
                let aliens = &self.node(local).aliens;
                aliens
                    .nodes()
                    .map(|h| aliens.lock(h).map_or(0, |a| a.avail))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Free when the CPU's array cache is busy: straight to the object's node.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_fallback(&self, obj: *mut u8) {
        let node = if arena::contains(obj) {
            page::addr_node(obj)
        } else {
            0 // obj_to_slab (in free_block) reports it
        };
        // SAFETY: as in `free_alien`.
        unsafe { self.free_to_node(obj, node) };
    }

    /// Frees `obj` into `node`'s shared cache while it has room, else to its slab. A
    /// debug cache checks it first and frees its slot.
    #[cold]
    unsafe fn free_to_node(&self, obj: *mut u8, node: usize) {
        let obj = if self.debug() {
            let slot = obj.wrapping_sub(self.debug_layout().offset);
            // SAFETY: `check_obj` finds both in an arena before it reads a descriptor.
            unsafe { self.check_obj(slot, obj) };
            // SAFETY: `check_obj` returned: `slot` is at an object's place in a slab of
            // this cache, a debug one, and `obj` is its object.
            unsafe { debug::check_free(self, slot, obj) }
        } else {
            obj
        };
        let mut to_destroy = PageList::new();
        // SAFETY: `obj` (a debug cache's slot now) is the cache's and held by nobody
        // else, as for `free`; the caller holds no list lock.
        unsafe { transfer::free_to_node(self, node, obj, &mut to_destroy) };
        // SAFETY: as in `give_back`.
        unsafe { self.destroy_slabs(&mut to_destroy, false) };
    }
}
