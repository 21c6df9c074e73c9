//! `struct alien_cache`: frees of another node's objects, batched per pair of nodes.
//!
//! A CPU that frees an object of a remote node must not keep it (a local allocation
//! would then hand out remote memory), so it goes back to its home node. One at a time
//! that is a round trip on the home node's list lock per object. As SLAB does, each
//! node of a cache keeps one small array per remote node, shared by the node's CPUs
//! under its own lock: remote frees collect there and go home [`ALIEN_LIMIT`] at a
//! time, into the home node's shared cache as far as it has room, the rest to their
//! slabs (`__drain_alien_cache`). The reaper drains them every
//! [`REAPTIMEOUT_MS`](super::reap::REAPTIMEOUT_MS), and shrinking, trimming and
//! destroying the cache drain them at once, so no object stays away for long.
//!
//! The arrays exist only on machines with more than one node, in a page block of
//! their own per cache node.

use core::mem::size_of;
use core::ptr;

use crate::page;
use crate::sync::{Mutex, MutexGuard};
use crate::sys::PAGE_SIZE;

/// Objects an alien cache collects before they go home: the kernel's limit for alien
/// caches (12), which bounds what a node holds of another's.
pub const ALIEN_LIMIT: usize = 12;

/// The objects one node holds of one remote node, under the alien cache's lock.
pub struct AlienObjects {
    /// Objects held.
    pub avail: usize,
    /// The objects, `avail` of them from the start.
    pub entries: [*mut u8; ALIEN_LIMIT],
}

// SAFETY: the pointers are objects in transit, only touched under the lock.
unsafe impl Send for AlienObjects {}

impl AlienObjects {
    /// Takes every object out into the start of `out` (which holds at least
    /// [`ALIEN_LIMIT`]); returns how many.
    pub fn take_all(&mut self, out: &mut [*mut u8]) -> usize {
        let n = self.avail;
        out[..n].copy_from_slice(&self.entries[..n]);
        self.avail = 0;
        n
    }
}

/// One alien cache (`n->alien[node]`).
#[repr(align(64))]
pub struct AlienCache {
    /// `alien->lock` and what it guards.
    pub lock: Mutex<AlienObjects>,
}

/// The alien caches of one node of a cache, one per node id (the node's own unused):
/// a page block of their own.
pub struct AlienArray {
    caches: *mut AlienCache,
    nr: usize,
}

// SAFETY: the caches are only reached through their locks.
unsafe impl Send for AlienArray {}
// SAFETY: as above.
unsafe impl Sync for AlienArray {}

impl AlienArray {
    /// No alien caches (a machine of one node).
    pub const NONE: Self = Self {
        caches: ptr::null_mut(),
        nr: 0,
    };

    /// Alien caches for `nr_nodes` node ids, or none when there is one node. `None`
    /// when memory ran out.
    pub fn create(nr_nodes: usize) -> Option<Self> {
        if nr_nodes <= 1 {
            return Some(Self::NONE);
        }
        let npages = (nr_nodes * size_of::<AlienCache>()).div_ceil(PAGE_SIZE);
        let block = page::alloc_pages_exact(npages, 0);
        if block.is_null() {
            return None;
        }
        let caches = page::page_address(block).cast::<AlienCache>();
        for i in 0..nr_nodes {
            // SAFETY: the fresh block holds `nr_nodes` caches (its size above), aligned
            // as a page is.
            unsafe {
                caches.add(i).write(AlienCache {
                    lock: Mutex::new(AlienObjects {
                        avail: 0,
                        entries: [ptr::null_mut(); ALIEN_LIMIT],
                    }),
                })
            };
        }
        Some(Self {
            caches,
            nr: nr_nodes,
        })
    }

    /// The alien cache for objects of node `home`, if this node has them.
    pub fn get(&self, home: usize) -> Option<&AlienCache> {
        // SAFETY: `create` wrote `nr` caches, which live until `destroy`.
        (home < self.nr).then(|| unsafe { &*self.caches.add(home) })
    }

    /// The node ids with an alien cache (none on a machine of one node).
    pub fn nodes(&self) -> core::ops::Range<usize> {
        0..self.nr
    }

    /// Locks alien cache `home`, if this node has one.
    pub fn lock(&self, home: usize) -> Option<MutexGuard<'_, AlienObjects>> {
        self.get(home).map(|a| a.lock.lock())
    }

    /// Frees the block.
    ///
    /// # Safety
    /// Nobody uses the caches any more, and they are empty.
    pub unsafe fn destroy(&mut self) {
        if !self.caches.is_null() {
            // SAFETY: `create` took the block from `alloc_pages_exact`; nobody uses it
            // (the contract).
            unsafe { page::free_pages_exact(page::virt_to_page(self.caches.cast())) };
        }
        *self = Self::NONE;
    }
}
