//! `struct kmem_cache_node`: a cache's slabs on one NUMA node, sorted into full,
//! partial and free lists, and the node's shared array cache, all under `list_lock`.

#[cfg(not(loom))]
use core::ptr;

use super::array_cache::ArrayCache;
use crate::page::list::PageList;
use crate::page::Page;
use crate::sync::Mutex;
#[cfg(not(loom))]
use core::mem::size_of;

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

/// One node's part of a cache: an object of the node cache ([`super::KMEM_CACHE_NODE`],
/// SLUB's `kmem_cache_node`), or, for the node cache's own nodes, which exist before
/// it can serve, a page block of its own. The shared cache's header lives here and its
/// entries in a page block of their own, which becomes resident only as the shared
/// cache fills: a cache that never shares objects costs a few hundred bytes a node, not
/// a page.
pub struct KmemCacheNode {
    /// `n->list_lock`.
    pub list_lock: Mutex<NodeLists>,
    /// The shared cache's header, which `NodeLists::shared` points at while the node
    /// has one; guarded by the list lock.
    #[cfg(not(loom))]
    shared_ac: core::cell::UnsafeCell<ArrayCache>,
    /// Whether this structure is a page block of its own rather than a node cache
    /// object.
    own_block: bool,
    /// `n->alien`: this node's CPUs' frees of other nodes' objects, per home node
    /// (none on a machine of one node).
    #[cfg(not(loom))]
    pub aliens: super::alien::AlienArray,
}

// SAFETY: the shared cache header is only touched under the list lock; everything else
// is immutable or synchronised itself.
#[cfg(not(loom))]
unsafe impl Sync for KmemCacheNode {}

#[cfg(not(loom))]
impl KmemCacheNode {
    /// Allocates a node structure with a shared cache of `shared_limit` entries (0: no
    /// shared cache). Returns null when memory ran out.
    pub fn create(free_limit: usize, shared_limit: u32, batchcount: u32) -> *mut KmemCacheNode {
        let node_cache = &super::KMEM_CACHE_NODE;
        let own_block = !node_cache.is_set_up();
        let n = if own_block {
            let page = page::alloc_pages_exact(size_of::<Self>().div_ceil(PAGE_SIZE), 0);
            if page.is_null() {
                return ptr::null_mut();
            }
            page::page_address(page).cast::<KmemCacheNode>()
        } else {
            node_cache.alloc().cast::<KmemCacheNode>()
        };
        if n.is_null() {
            return n;
        }
        let Some(aliens) = super::alien::AlienArray::create(crate::topology::nr_node_ids()) else {
            // SAFETY: the memory just taken, used by nobody.
            unsafe { Self::free_memory(n, own_block) };
            return ptr::null_mut();
        };
        // SAFETY: the memory is fresh, sized and aligned for a node structure (a page
        // block, or an object of the node cache, whose objects are node structures).
        unsafe {
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
                    shared: ptr::null_mut(),
                }),
                shared_ac: core::cell::UnsafeCell::new(ArrayCache::empty()),
                own_block,
                aliens,
            })
        };
        // SAFETY: the node is ours alone until the cache publishes it. A first shared
        // cache takes no memory, so this cannot fail.
        unsafe {
            let mut lists = (*n).list_lock.lock();
            (*n).set_shared(&mut lists, shared_limit, batchcount);
        }
        n
    }

    /// Gives back the memory of a node structure made by `create`.
    ///
    /// # Safety
    /// `n` is that memory, with `own_block` as `create` chose it, used by nobody.
    unsafe fn free_memory(n: *mut KmemCacheNode, own_block: bool) {
        if own_block {
            // SAFETY: a page block from `alloc_pages_exact` (the contract).
            unsafe { page::free_pages_exact(page::virt_to_page(n.cast())) };
        } else {
            // SAFETY: an object of the node cache (the contract).
            unsafe { super::KMEM_CACHE_NODE.free(n.cast()) };
        }
    }

    /// Most entries a shared cache may be given by retuning (a 512 KiB block).
    pub const MAX_SHARED: u32 = 65536;

    /// Gives this node a shared cache of `limit` entries moved `batchcount` at a time
    /// (`do_tune_cpucache`). Its entries get a page block of their own when a CPU's
    /// cache first overflows into it ([`shared_room`]), or here when it has one already
    /// and it is too small: the objects the old one holds move into the new one. A
    /// `limit` of 0 with no shared cache leaves none. False, with nothing changed,
    /// when memory for a larger block ran out.
    ///
    /// # Safety
    /// The caller holds this node's list lock (`lists`); `limit <= MAX_SHARED`, and the
    /// old shared cache holds at most `limit` objects (the caller drained the excess).
    pub unsafe fn set_shared(&self, lists: &mut NodeLists, limit: u32, batchcount: u32) -> bool {
        let old = lists.shared;
        if old.is_null() && limit == 0 {
            return true;
        }
        let ac = self.shared_ac.get();
        if old.is_null() {
            // SAFETY: the header is guarded by the list lock the caller holds
            // (`lists`); no entries until the first overflow.
            unsafe { ArrayCache::init_with(ac, limit, batchcount, 0, ptr::null_mut()) };
            lists.shared = ac;
            return true;
        }
        // SAFETY: as above.
        let capacity = unsafe { (*ac).capacity };
        if capacity == 0 || limit <= capacity {
            // SAFETY: as above.
            unsafe {
                (*ac).limit = limit;
                (*ac).batchcount = batchcount;
            }
            return true;
        }
        let Some((entries, capacity)) = entries_block(limit) else {
            return false;
        };
        // SAFETY: the header is ours under the list lock; the old entries are its live
        // ones, and the new block has room for the `avail <= limit` objects they hold
        // (the contract).
        unsafe {
            let avail = (*ac).avail;
            ptr::copy_nonoverlapping((*ac).entry, entries, avail as usize);
            Self::free_entries(ac);
            ArrayCache::init_with(ac, limit, batchcount, capacity, entries);
            (*ac).avail = avail;
        }
        true
    }

    /// Frees the page block of the shared cache `ac`'s entries, if it has one.
    ///
    /// # Safety
    /// `ac` is this node's shared cache header; its entries are not used again.
    unsafe fn free_entries(ac: *mut ArrayCache) {
        // SAFETY: the header is the caller's (the contract).
        let entry = unsafe { (*ac).entry };
        if !entry.is_null() {
            // SAFETY: `entries_block` took the block from `alloc_pages_exact`, and it
            // is not used again (the contract).
            unsafe { page::free_pages_exact(page::virt_to_page(entry.cast())) };
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
            unsafe { Self::free_entries(shared) };
        }
        // SAFETY: nobody references the node, so nobody its alien caches, which the
        // cache drained before its teardown.
        unsafe { (*n).aliens.destroy() };
        // SAFETY: `create` chose where the memory came from, and nobody references it
        // any more (the contract).
        unsafe { Self::free_memory(n, (*n).own_block) };
    }
}

/// A page block for the entries of a shared cache of `limit` entries: the entries and
/// the capacity the block has. None when memory ran out.
#[cfg(not(loom))]
fn entries_block(limit: u32) -> Option<(*mut *mut u8, u32)> {
    let npages = (limit as usize * 8).div_ceil(PAGE_SIZE).max(1);
    let page = page::alloc_pages_exact(npages, 0);
    if page.is_null() {
        return None;
    }
    Some((
        page::page_address(page).cast(),
        (npages * PAGE_SIZE / 8) as u32,
    ))
}

/// Room for objects in the node's shared cache `ac`: `limit - avail`, once its entries
/// have a page block; 0 for a node with none (`ac` null). The first call that needs
/// room gives it one, so a node whose CPUs never overflow their caches into it commits
/// no memory for it; with no memory for the block, there is no room (the objects go
/// to their slabs).
///
/// # Safety
/// `ac` is null or a node's shared cache; the caller holds that node's list lock.
pub unsafe fn shared_room(ac: *mut ArrayCache) -> u32 {
    if ac.is_null() {
        return 0;
    }
    // SAFETY: the header is guarded by the list lock the caller holds.
    unsafe {
        #[cfg(not(loom))]
        if (*ac).capacity == 0 && (*ac).limit > 0 {
            if let Some((entries, capacity)) = entries_block((*ac).limit) {
                (*ac).entry = entries;
                (*ac).capacity = capacity;
            }
        }
        (*ac).limit.min((*ac).capacity).saturating_sub((*ac).avail)
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
