//! A mix of cpuslab allocations of every kind (kmalloc slab objects, page-pool blocks,
//! a huge mapping, objects of a `KmemCache`, bare pages), each written page by page,
//! and the node of every page of every block.

use std::fmt::{self, Write as _};

use cpuslab::page::{self, arena};
use cpuslab::{KmemCache, SlabFlags};

use crate::util::{touch, NodeCounts};

/// The pages of one kind of allocation: where the kernel put them, and which zone
/// cpuslab took them from (arena memory only).
pub struct Kind {
    /// What was allocated.
    pub name: &'static str,
    /// Blocks allocated.
    pub blocks: usize,
    /// Node of every page of every block, by `get_mempolicy`.
    pub kernel: NodeCounts,
    /// Node of the zone each block came from, by cpuslab's page descriptors.
    pub zone: NodeCounts,
}

/// Every kind of the mix.
pub struct Mix(pub Vec<Kind>);

impl Mix {
    /// All kinds' pages together.
    pub fn kernel_total(&self) -> NodeCounts {
        let mut all = NodeCounts::default();
        for k in &self.0 {
            all.merge(&k.kernel);
        }
        all
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for k in &self.0 {
            write!(
                f,
                "{sep}{} x{}: pages {} (zones {})",
                k.name, k.blocks, k.kernel, k.zone
            )?;
            sep = "; ";
        }
        Ok(())
    }
}

/// The zone node of the block at `ptr`, when it lies in a cpuslab arena.
fn zone_node(ptr: *const u8) -> Option<usize> {
    arena::contains(ptr).then(|| page::page_node(page::virt_to_head_page(ptr)))
}

/// `n` blocks of `size` bytes through the global allocator (cpuslab's kmalloc).
fn blocks(name: &'static str, n: usize, size: usize) -> Kind {
    let mut v: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(size)).collect();
    let mut kind = Kind {
        name,
        blocks: n,
        kernel: NodeCounts::default(),
        zone: NodeCounts::default(),
    };
    for b in &mut v {
        // SAFETY: the vector's capacity is writable memory it owns; its length stays 0.
        unsafe { touch(b.as_mut_ptr(), b.capacity()) };
    }
    for b in &v {
        kind.kernel.add_range(b.as_ptr(), b.capacity());
        if arena::contains(b.as_ptr()) {
            kind.zone.add(zone_node(b.as_ptr()));
        }
    }
    kind
}

/// `n` objects of a fresh `KmemCache` of 256-byte objects.
fn cache_objects(n: usize) -> Kind {
    let cache = KmemCache::<[u64; 32]>::new("vm_mix", SlabFlags::NONE).expect("KmemCache::new");
    let objs: Vec<_> = (0..n)
        .map(|i| cache.alloc_with([i as u64; 32]).expect("KmemCache::alloc"))
        .collect();
    let mut kind = Kind {
        name: "KmemCache-256",
        blocks: n,
        kernel: NodeCounts::default(),
        zone: NodeCounts::default(),
    };
    for o in &objs {
        let p = o.as_ptr().cast::<u8>();
        kind.kernel.add_range(p, 256);
        kind.zone.add(zone_node(p));
    }
    for o in objs {
        // SAFETY: allocated above from this cache, freed once.
        unsafe { cache.free(o) };
    }
    kind
}

/// `n` order-0 pages from `page::alloc_pages` (placement by the cpuset, spread rotor
/// included).
fn bare_pages(n: usize) -> Kind {
    let mut kind = Kind {
        name: "alloc_pages",
        blocks: n,
        kernel: NodeCounts::default(),
        zone: NodeCounts::default(),
    };
    let pages: Vec<_> = (0..n).map(|_| page::alloc_pages(0)).collect();
    for &p in &pages {
        if p.is_null() {
            kind.kernel.add(None);
            continue;
        }
        let addr = page::page_address(p);
        // SAFETY: a page just allocated for us alone.
        unsafe { touch(addr, crate::util::PAGE) };
        kind.kernel.add_range(addr, crate::util::PAGE);
        kind.zone.add(Some(page::page_node(p)));
    }
    for p in pages.into_iter().filter(|p| !p.is_null()) {
        // SAFETY: allocated above with order 0, freed once.
        unsafe { page::free_pages(p, 0) };
    }
    kind
}

/// Allocates the mix on the calling thread, counts where every page is, frees it all.
pub fn allocate() -> Mix {
    Mix(vec![
        blocks("kmalloc-64", 2000, 64),
        blocks("kmalloc-3072", 200, 3000),
        blocks("large-64K", 16, 64 << 10),
        blocks("huge-8M", 1, 8 << 20),
        cache_objects(2000),
        bare_pages(256),
    ])
}

/// Names the kinds that have a page off `nodes`, for a failure message.
pub fn offenders(mix: &Mix, nodes: &cpuslab::topology::NodeMask) -> String {
    let mut s = String::new();
    for k in &mix.0 {
        let off = k.kernel.total() - k.kernel.within(nodes);
        if off > 0 {
            let _ = write!(
                s,
                "{} ({} of {} pages off), ",
                k.name,
                off,
                k.kernel.total()
            );
        }
    }
    s.trim_end_matches(", ").to_string()
}
