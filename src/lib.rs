//! cpuslab: a concurrent memory allocator built the way the Linux kernel builds its
//! memory subsystem, moved to user space.
//!
//! ```text
//!  GlobalAlloc (CpuSlab)
//!        │
//!  kmalloc: size classes ──────────── large → page pool, huge → own mapping
//!        │
//!  slab: KmemCache ── per-CPU array_cache ── per-node shared array_cache
//!                  └─ per-node slab lists (full / partial / free), freelist arrays
//!        │
//!  page pool: per-CPU page lists (hot/cold, high/batch) ── buddy zone per node
//!                  └─ arenas: 256 MiB reservations, page descriptors, purging
//! ```
//!
//! Use it for the whole program:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! or make a typed cache, as `kmem_cache_create` does:
//!
//! ```
//! use cpuslab::{KmemCache, SlabFlags};
//!
//! struct Inode { ino: u64, size: u64 }
//! let cache = KmemCache::<Inode>::new("inode_cache", SlabFlags::HWCACHE_ALIGN).unwrap();
//! let obj = cache.alloc_with(Inode { ino: 7, size: 0 }).unwrap();
//! unsafe { assert_eq!(obj.as_ref().ino, 7); cache.free(obj) };
//! ```

#![warn(missing_docs)]
#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::missing_safety_doc)]

// Under `cfg(loom)` (the models in `loom-tests/`) only the parts that loom checks are
// built: their atomics are loom's, which no static can hold.
#[cfg(not(loom))]
pub mod background;
#[cfg(all(feature = "capi", not(loom)))]
pub mod capi;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod cpuset;
#[cfg(not(loom))]
mod global;
#[cfg(not(loom))]
mod init;
#[cfg(not(loom))]
pub mod kmalloc;
#[cfg(not(loom))]
pub mod page;
#[cfg(not(loom))]
pub mod percpu;
#[cfg(not(loom))]
pub mod rcu;
#[cfg(not(loom))]
pub mod slab;
#[cfg(not(loom))]
pub mod stats;
pub mod sync;
#[cfg(not(loom))]
pub mod sys;
#[cfg(not(loom))]
pub mod topology;

/// The parts of RCU a loom model checks: the `rcu_node` tree, `gp_seq` and the
/// callback segments.
#[cfg(loom)]
pub mod rcu {
    mod head;
    pub mod segcblist;
    pub mod seq;
    pub mod tree;

    pub use head::{RcuCallback, RcuHead};
}

/// The parts of percpu a loom model checks: the counter's fold and the semaphore's
/// protocol, over counts the model keeps.
#[cfg(loom)]
pub mod percpu {
    mod counter;
    mod rwsem;

    pub use counter::CounterFold;
    pub use rwsem::RwSemCore;
}

/// The page descriptor and its lists, which the slab lists are made of.
#[cfg(loom)]
pub mod page {
    pub mod desc;
    pub mod list;

    pub use desc::Page;
}

/// The parts of the SLAB layer a loom model checks: array caches, the node's lists and
/// the batch moves between them, over slabs the model keeps.
#[cfg(loom)]
pub mod slab {
    pub mod array_cache;
    pub mod node;
    pub mod transfer;
}

#[cfg(not(loom))]
pub use global::CpuSlab;
#[cfg(not(loom))]
pub use slab::{CacheError, KmemCache, SlabFlags};

/// Gives every cached object and free page that can go back to the OS: empties the
/// per-CPU and shared array caches, frees empty slabs, drains the per-CPU page lists,
/// purges all free pages and unmaps the freed huge mappings kept for reuse (as
/// `malloc_trim(0)`). Returns the bytes purged or unmapped.
#[cfg(not(loom))]
pub fn trim() -> usize {
    if !init::ready() {
        return 0;
    }
    slab::shrink_all();
    page::purge_all() + page::huge::drain_cache()
}

/// Usable bytes of a live block returned by cpuslab (`malloc_usable_size`).
///
/// # Safety
/// `ptr` was returned by `CpuSlab` and not freed.
#[cfg(not(loom))]
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: as the caller promised.
    unsafe { kmalloc::ksize(ptr.cast_mut()) }
}

#[cfg(all(test, not(loom)))]
#[global_allocator]
static TEST_GLOBAL: CpuSlab = CpuSlab;
