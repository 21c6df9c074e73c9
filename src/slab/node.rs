//! `struct kmem_cache_node`: a cache's slabs on one NUMA node, sorted into full,
//! partial and free lists, and the node's shared array cache, all under `list_lock`.
//!
//! A cache whose slabs record the CPU that last refilled from them (small objects,
//! which share cache lines: `slab::cache::remote`) keeps its partial slabs on one list
//! per owner CPU, and a refill takes from its own CPU's first: its free objects lie
//! between objects that CPU still holds, where another CPU's would share their lines.

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
    /// Slabs with some objects in use that no CPU's own partial list holds (see the
    /// module's docs).
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
    /// The partial slabs of each CPU that owns slabs here (see the module's docs).
    owned: OwnedPartials,
}

/// The partial slabs of a node's cache, one list per owner CPU: a block of `len`
/// lists, given to the node of a cache that records owners at its first take.
struct OwnedPartials {
    /// The lists, indexed by CPU; null while `len` is 0.
    lists: *mut PageList,
    /// CPUs with a list: 0 for a cache that records no owners, or whose block could
    /// not be had. Fixed once `decided`.
    len: usize,
    /// Slabs on all the lists together.
    slabs: usize,
    /// Whether `len` is fixed: from the node's first [`NodeLists::pick_slab`] on.
    decided: bool,
}

/// A list a slab with free objects lies on, in its node's [`NodeLists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabList {
    /// The free list: no object in use.
    Free,
    /// The partial list of slabs no CPU owns (or that a CPU without a list owns).
    Partial,
    /// The partial slabs owned by this CPU.
    Owned(usize),
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
                list_lock: Mutex::new(NodeLists::new(free_limit, ptr::null_mut())),
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
        let lists = unsafe { &mut *(*n).list_lock.data_ptr() };
        let shared = lists.shared;
        if !shared.is_null() {
            // SAFETY: the node's shared cache, referenced by nobody now.
            unsafe { Self::free_entries(shared) };
        }
        if !lists.owned.lists.is_null() {
            // SAFETY: `start_owners` took the block from `alloc_pages_exact`; the lists
            // are empty (the contract) and nobody reads them again.
            unsafe { page::free_pages_exact(page::virt_to_page(lists.owned.lists.cast())) };
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
    /// Empty lists, with free slabs beyond `free_limit` free objects going back to the
    /// page pool, and `shared` as the shared cache (null: none).
    pub const fn new(free_limit: usize, shared: *mut ArrayCache) -> Self {
        NodeLists {
            slabs_partial: PageList::new(),
            slabs_full: PageList::new(),
            slabs_free: PageList::new(),
            total_slabs: 0,
            free_objects: 0,
            free_limit,
            colour_next: 0,
            free_touched: false,
            shared,
            owned: OwnedPartials {
                lists: core::ptr::null_mut(),
                len: 0,
                slabs: 0,
                decided: false,
            },
        }
    }

    /// Gives the node one partial list per CPU that may own slabs (`cpus`; 0 for a
    /// cache that records no owner), once: at the first [`pick_slab`], before any slab
    /// of the node was taken from, so before any was partial or claimed, and every
    /// partial slab lies on the list its owner names ([`partial_of`]) from the start.
    /// Without memory for the lists, all partial slabs stay on the one list.
    ///
    /// [`pick_slab`]: Self::pick_slab
    /// [`partial_of`]: Self::partial_of
    fn start_owners(&mut self, cpus: usize) {
        if self.owned.decided {
            return;
        }
        self.owned.decided = true;
        #[cfg(not(loom))]
        if cpus > 0 {
            let bytes = cpus * size_of::<PageList>();
            let page = page::alloc_pages_exact(bytes.div_ceil(PAGE_SIZE).max(1), 0);
            if page.is_null() {
                return;
            }
            let lists = page::page_address(page).cast::<PageList>();
            for i in 0..cpus {
                // SAFETY: the block holds `cpus` lists, and is ours alone.
                unsafe { lists.add(i).write(PageList::new()) };
            }
            self.owned.lists = lists;
            self.owned.len = cpus;
        }
        #[cfg(loom)]
        let _ = cpus;
    }

    /// The partial list of a slab owned by `owner` (None: no owner recorded).
    #[inline]
    pub fn partial_of(&self, owner: Option<usize>) -> SlabList {
        match owner {
            Some(cpu) if cpu < self.owned.len => SlabList::Owned(cpu),
            _ => SlabList::Partial,
        }
    }

    fn list(&mut self, which: SlabList) -> &mut PageList {
        match which {
            SlabList::Free => &mut self.slabs_free,
            SlabList::Partial => &mut self.slabs_partial,
            // SAFETY: `partial_of` and `pick_slab` name an owned list only below `len`,
            // in the block `start_owners` gave, which lives as long as the node.
            SlabList::Owned(cpu) => unsafe { &mut *self.owned.lists.add(cpu) },
        }
    }

    /// Takes `slab` off the list `from`.
    ///
    /// # Safety
    /// `slab` is on that list.
    pub unsafe fn remove_from(&mut self, from: SlabList, slab: *mut Page) {
        if let SlabList::Owned(_) = from {
            self.owned.slabs -= 1;
        }
        // SAFETY: on that list (the contract).
        unsafe { self.list(from).remove(slab) };
    }

    /// Puts `slab` on the list `to`, at its front (`front`: taken from first) or back.
    ///
    /// # Safety
    /// `slab` is on no list.
    pub unsafe fn push_to(&mut self, to: SlabList, slab: *mut Page, front: bool) {
        if let SlabList::Owned(_) = to {
            self.owned.slabs += 1;
        }
        let list = self.list(to);
        // SAFETY: on no list (the contract).
        unsafe {
            if front {
                list.push_front(slab)
            } else {
                list.push_back(slab)
            }
        }
    }

    /// The slab to take free objects from next, and the list it is on, for CPU `me`
    /// (None: a caller that claims no slab) of a cache whose slabs `owner_cpus` CPUs
    /// may own (0: none): a partial one of `me`'s own, else one nobody owns, else a
    /// free one, else a partial one of another CPU. None when the node has no free
    /// object in its slabs.
    ///
    /// A free slab comes before another CPU's partial one: taking the latter puts
    /// this CPU's objects between that CPU's on the same lines (two threads each
    /// churning a map of short strings on their own CPU shared a fifth of their lines
    /// when a refill took whichever partial slab came first). That CPU's next refills
    /// take its own partial slabs, so they do not wait unused while it allocates; those
    /// of a CPU that stopped allocating are taken before the cache grows.
    pub fn pick_slab(
        &mut self,
        me: Option<usize>,
        owner_cpus: usize,
    ) -> Option<(*mut Page, SlabList)> {
        self.start_owners(owner_cpus);
        if let Some(cpu) = me.filter(|&cpu| cpu < self.owned.len) {
            let mine = SlabList::Owned(cpu);
            let p = self.list(mine).first();
            if !p.is_null() {
                return Some((p, mine));
            }
        }
        let p = self.slabs_partial.first();
        if !p.is_null() {
            return Some((p, SlabList::Partial));
        }
        self.free_touched = true;
        let p = self.slabs_free.first();
        if !p.is_null() {
            return Some((p, SlabList::Free));
        }
        if self.owned.slabs == 0 {
            return None;
        }
        (0..self.owned.len).find_map(|cpu| {
            let p = self.list(SlabList::Owned(cpu)).first();
            (!p.is_null()).then_some((p, SlabList::Owned(cpu)))
        })
    }
}
