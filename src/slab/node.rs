//! `struct kmem_cache_node`: a cache's slabs on one NUMA node, sorted into full,
//! partial and free lists, and the node's shared array cache, all under `list_lock`.

#[cfg(not(loom))]
use core::ptr;

#[cfg(not(loom))]
use super::array_cache::ac_bytes;
use super::array_cache::ArrayCache;
use crate::page::list::PageList;
use crate::page::Page;
use crate::sync::Mutex;
#[cfg(not(loom))]
use crate::{page, sys::PAGE_SIZE};

/// The per-node lists, under the node's `list_lock`.
pub struct NodeLists {
    /// Slabs with some objects in use.
    pub slabs_partial: PageList,
    /// Slabs with every object in use.
    pub slabs_full: PageList,
    /// Slabs with no object in use.
    pub slabs_free: PageList,
    /// Slabs on all three lists.
    pub total_slabs: usize,
    /// Free objects in this node's slabs (not counting array caches).
    pub free_objects: usize,
    /// Free objects above which empty slabs go back to the page pool.
    pub free_limit: usize,
    /// Colour of the next slab.
    pub colour_next: usize,
    /// Set when the free list was used since the last reap.
    pub free_touched: bool,
    /// The node's shared array cache (null when the cache has none).
    pub shared: *mut ArrayCache,
}

// SAFETY: only touched under the list lock.
unsafe impl Send for NodeLists {}

/// One node's part of a cache. Lives at the start of its own page block, followed by
/// the shared array cache.
pub struct KmemCacheNode {
    /// `n->list_lock`.
    pub list_lock: Mutex<NodeLists>,
    /// Pages of the block holding this structure.
    pub npages: usize,
    /// `n->alien`: this node's CPUs' frees of other nodes' objects, per home node
    /// (none on a machine of one node).
    #[cfg(not(loom))]
    pub aliens: super::alien::AlienArray,
}

#[cfg(not(loom))]
impl KmemCacheNode {
    /// Allocates a node structure with a shared cache of `shared_limit` entries (0: no
    /// shared cache). Returns null when memory ran out.
    pub fn create(free_limit: usize, shared_limit: u32, batchcount: u32) -> *mut KmemCacheNode {
        let bytes = Self::HEADER + ac_bytes(shared_limit as usize);
        let npages = bytes.div_ceil(PAGE_SIZE);
        let page = page::alloc_pages_exact(npages, 0);
        if page.is_null() {
            return ptr::null_mut();
        }
        let Some(aliens) = super::alien::AlienArray::create(crate::topology::nr_node_ids()) else {
            // SAFETY: the block just taken, used by nobody.
            unsafe { page::free_pages_exact(page) };
            return ptr::null_mut();
        };
        let base = page::page_address(page);
        // Whatever the page block has room for becomes the shared cache's capacity,
        // so retuning can raise the shared limit without reallocating.
        let capacity = Self::shared_room(npages);
        let header = Self::HEADER;
        // SAFETY: the block is fresh and large enough for both structures.
        unsafe {
            let shared = if shared_limit > 0 {
                let ac = base.add(header).cast::<ArrayCache>();
                ArrayCache::init(ac, shared_limit, batchcount, capacity);
                ac
            } else {
                ptr::null_mut()
            };
            let n = base.cast::<KmemCacheNode>();
            n.write(KmemCacheNode {
                list_lock: Mutex::new(NodeLists {
                    slabs_partial: PageList::new(),
                    slabs_full: PageList::new(),
                    slabs_free: PageList::new(),
                    total_slabs: 0,
                    free_objects: 0,
                    free_limit,
                    colour_next: 0,
                    free_touched: false,
                    shared,
                }),
                npages,
                aliens,
            });
            n
        }
    }

    /// Bytes before the shared cache in the node's page block.
    const HEADER: usize = core::mem::size_of::<KmemCacheNode>().next_multiple_of(64);

    /// Entries a shared cache in a node block of `npages` pages can hold.
    fn shared_room(npages: usize) -> u32 {
        ((npages * PAGE_SIZE - Self::HEADER - super::array_cache::AC_HEADER) / 8) as u32
    }

    /// Entries the room in this node's own block holds (a shared cache needs no block
    /// of its own up to this).
    fn shared_capacity(&self) -> u32 {
        Self::shared_room(self.npages)
    }

    /// Most entries a shared cache may be given by retuning (a 512 KiB block).
    pub const MAX_SHARED: u32 = 65536;

    /// Gives this node a shared cache of `limit` entries moved `batchcount` at a time
    /// (`do_tune_cpucache`): in the room the node's own block keeps for one when it
    /// fits there, else in a page block of its own, into which the objects the old
    /// one holds move. A `limit` of 0 with no shared cache leaves none. False, with
    /// nothing changed, when memory for a larger block ran out.
    ///
    /// # Safety
    /// The caller holds this node's list lock (`lists`); `limit <= MAX_SHARED`, and the
    /// old shared cache holds at most `limit` objects (the caller drained the excess).
    pub unsafe fn set_shared(&self, lists: &mut NodeLists, limit: u32, batchcount: u32) -> bool {
        let old = lists.shared;
        if old.is_null() && limit == 0 {
            return true;
        }
        // SAFETY: `old`, when not null, is the node's live shared cache, guarded by the
        // list lock the caller holds (`lists`).
        if !old.is_null() && limit <= unsafe { (*old).capacity } {
            // SAFETY: as above.
            unsafe {
                (*old).limit = limit;
                (*old).batchcount = batchcount;
            }
            return true;
        }
        let ac = if old.is_null() && limit <= self.shared_capacity() {
            // SAFETY: the block holds the node structure and then room for a shared
            // cache (`create` sized it so), unused while the node has none.
            let ac = unsafe { (self as *const Self as *mut u8).add(Self::HEADER) };
            // SAFETY: as above: the room holds `shared_capacity` entries.
            unsafe { ArrayCache::init(ac.cast(), limit, batchcount, self.shared_capacity()) };
            ac.cast::<ArrayCache>()
        } else {
            let npages = ac_bytes(limit as usize).div_ceil(PAGE_SIZE);
            let page = page::alloc_pages_exact(npages, 0);
            if page.is_null() {
                return false;
            }
            let ac = page::page_address(page).cast::<ArrayCache>();
            let capacity = ((npages * PAGE_SIZE - super::array_cache::AC_HEADER) / 8) as u32;
            // SAFETY: a fresh block of `npages` pages, room for `capacity` entries.
            unsafe { ArrayCache::init(ac, limit, batchcount, capacity) };
            ac
        };
        if !old.is_null() {
            // SAFETY: both are array caches guarded by the lock held; the new one has
            // room for everything the old one holds.
            unsafe {
                let n = (*old).avail;
                ptr::copy_nonoverlapping(
                    ArrayCache::entries(old),
                    ArrayCache::entries(ac),
                    n as usize,
                );
                (*ac).avail = n;
                (*old).avail = 0;
                self.free_shared_block(old);
            }
        }
        lists.shared = ac;
        true
    }

    /// Frees `ac`'s page block when it is a shared cache outside the node's own block.
    ///
    /// # Safety
    /// `ac` is this node's shared cache, no longer referenced.
    unsafe fn free_shared_block(&self, ac: *mut ArrayCache) {
        if ac as usize != self as *const Self as usize + Self::HEADER {
            // SAFETY: `set_shared` allocated it with `alloc_pages_exact`.
            unsafe { page::free_pages_exact(page::virt_to_page(ac.cast())) };
        }
    }

    /// Frees a node structure created by [`create`](Self::create).
    ///
    /// # Safety
    /// Nobody references `n` any more and its lists are empty.
    pub unsafe fn destroy(n: *mut KmemCacheNode) {
        // SAFETY: nobody references `n`: its lists may be read without the lock.
        let shared = unsafe { (*(*n).list_lock.data_ptr()).shared };
        if !shared.is_null() {
            // SAFETY: the node's shared cache, referenced by nobody now.
            unsafe { (*n).free_shared_block(shared) };
        }
        // SAFETY: nobody references the node, so nobody its alien caches, which the
        // cache drained before its teardown.
        unsafe { (*n).aliens.destroy() };
        // SAFETY: `create` took the block from `alloc_pages_exact`, and nobody
        // references it any more (the contract).
        unsafe { page::free_pages_exact(page::virt_to_page(n.cast())) };
    }
}

impl NodeLists {
    /// The slab to allocate from next: a partial one, else a free one.
    pub fn get_first_slab(&mut self) -> *mut Page {
        let p = self.slabs_partial.first();
        if !p.is_null() {
            return p;
        }
        self.free_touched = true;
        self.slabs_free.first()
    }
}
