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

#[cfg(feature = "capi")]
pub mod capi;
pub mod config;
pub mod cpuset;
mod global;
mod init;
pub mod kmalloc;
pub mod page;
pub mod percpu;
pub mod rcu;
pub mod slab;
pub mod stats;
pub mod sync;
pub mod sys;
pub mod topology;

pub use global::CpuSlab;
pub use slab::{CacheError, KmemCache, SlabFlags};

/// Gives every cached object and free page that can go back to the OS: empties the
/// per-CPU and shared array caches, frees empty slabs, drains the per-CPU page lists
/// and purges all free pages (as `malloc_trim(0)`). Returns the bytes purged.
pub fn trim() -> usize {
    if !init::ready() {
        return 0;
    }
    slab::shrink_all();
    page::purge_all()
}

/// Usable bytes of a live block returned by cpuslab (`malloc_usable_size`).
///
/// # Safety
/// `ptr` was returned by `CpuSlab` and not freed.
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: as the caller promised.
    unsafe { kmalloc::ksize(ptr.cast_mut()) }
}

#[cfg(test)]
#[global_allocator]
static TEST_GLOBAL: CpuSlab = CpuSlab;
