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
}

#[cfg(not(loom))]
impl KmemCacheNode {
    /// Allocates a node structure with a shared cache of `shared_limit` entries (0: no
    /// shared cache). Returns null when memory ran out.
    pub fn create(free_limit: usize, shared_limit: u32, batchcount: u32) -> *mut KmemCacheNode {
        let header = core::mem::size_of::<KmemCacheNode>().next_multiple_of(64);
        let bytes = header + ac_bytes(shared_limit as usize);
        let npages = bytes.div_ceil(PAGE_SIZE);
        let page = page::alloc_pages_exact(npages, 0);
        if page.is_null() {
            return ptr::null_mut();
        }
        let base = page::page_address(page);
        // Whatever the page block has room for becomes the shared cache's capacity,
        // so retuning can raise the shared limit without reallocating.
        let capacity = ((npages * PAGE_SIZE - header - super::array_cache::AC_HEADER) / 8) as u32;
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
            });
            n
        }
    }

    /// Frees a node structure created by [`create`](Self::create).
    ///
    /// # Safety
    /// Nobody references `n` any more and its lists are empty.
    pub unsafe fn destroy(n: *mut KmemCacheNode) {
        page::free_pages_exact(page::virt_to_page(n.cast()));
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
