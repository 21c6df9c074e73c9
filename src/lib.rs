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

//! # Layers
//!
//! From the bottom up; a module uses only the ones above it in this list (CI's
//! `tests/layers.rs` checks every `crate::` path against it):
//!
//! 0. `ds` — CPU and node bitmaps and the cpulist parser: plain data, no dependency.
//! 1. `sys` — everything that calls the kernel or names the architecture: mappings,
//!    rseq sequences, membarrier, futexes, affinity, TLS words, the dynamic loader;
//!    `sys/linux` on Linux, `sys/unsupported` elsewhere.
//! 2. `sync` — the futex mutex, the tried lock, loom's or core's atomics.
//! 3. `state` — how far boot got (`slab_state`): read by every layer, written by boot.
//! 4. `topology` — possible CPUs and nodes, the CPU-to-node map, zonelists.
//! 5. `config` — the `CPUSLAB_*` options.
//! 6. `cpuset` — the process's cpuset tree and the placement hooks the page pool reads.
//! 7. `page` — arenas, buddy zones, purging, the huge heap; `page::pcp`, the per-CPU
//!    page lists, lives in percpu units and comes after (8).
//! 8. `percpu` — chunks and units for every per-CPU structure.
//! 9. `rcu` — the Tree RCU the slab layer frees `TYPESAFE_BY_RCU` slabs through.
//! 10. `slab` — `kmem_cache`, array caches, node lists, reaping, tuning.
//! 11. `kmalloc` — size classes over the slab caches, large and huge blocks.
//! 12. `init` (boot and the fork handlers), `background` (the reclaim thread), and the
//!     interfaces on top: `global` (`CpuSlab`), `kmem_cache` (`KmemCache`), `capi`,
//!     `stats`, `options` (run-time options set from code).
//!
//! Only the interfaces boot the allocator (`init::ensure`); the layers below read
//! `state` and never call up: kmalloc returns null before boot (`CpuSlab` and the C
//! interface then boot and ask again), and percpu and RCU, which a program may use
//! without `CpuSlab`, set up what they stand on themselves: the page pool's part of
//! boot (`page::setup`, which boot runs first), then the first percpu chunk or the
//! callback lists.
//!
//! Where a lower layer must reach an upper one, the upper one registers a function at
//! boot: kmalloc gives `rcu::free_rcu` its free (`rcu::set_block_free`) and the slab
//! caches glibc's free when it forwards (`slab::cache::set_foreign_free`); boot gives
//! the slab slow paths the background thread's wake-up.
//!
//! # Lock order
//!
//! Every path that holds two of these takes them in this order, and the fork handlers
//! (`init`'s, registered first so they run after the program's `prepare` handlers)
//! take them all in it before `fork`:
//!
//! | order | lock | taken by |
//! |---|---|---|
//! | 1 | the cpuset tree (`cpuset::process`) | attach, rescan, cpuset changes |
//! | 2 | the cache chain (`slab::CHAIN`) | cache create and destroy, reap, shrink, tune |
//! | 3 | each cache's per-CPU array caches' stop words, cache by cache, CPU by CPU | cross-CPU work on the caches (reap, drain, tune) |
//! | 4 | each CPU's page lists' stop words (order 0, then orders 1–6) | drains, full lists |
//! | 5 | each cache's node list locks, node by node (each node's alien cache locks just before its list lock; their holders take no other lock) | refills, flushes, `free_block`; remote frees |
//! | 6 | `pcpu_lock` (`percpu`) | chunk allocation (a chunk's header comes from a zone) |
//! | 7 | the zone locks, in node order | the buddy allocator, purging |
//! | 8 | the huge heap and registry (`page::huge`) | huge allocations, frees, purges |
//!
//! RCU's callback list locks are taken by RCU's own fork handlers; the background
//! thread keeps its state in atomics.

// No `std` where the allocator is whole (x86_64 Linux): what it needs of the
// library is `core` and `alloc`, so the C library built from it (capi/) links
// neither std's runtime nor its unwinder. Unit tests and the fallback platforms
// keep std.
#![cfg_attr(
    all(
        target_arch = "x86_64",
        target_os = "linux",
        not(loom),
        not(test),
        not(cpuslab_unsupported)
    ),
    no_std
)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

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
pub mod ds;
#[cfg(not(loom))]
mod global;
#[cfg(not(loom))]
mod init;
#[cfg(not(loom))]
pub mod kmalloc;
#[cfg(not(loom))]
mod kmem_cache;
#[cfg(not(loom))]
pub mod options;
#[cfg(not(loom))]
pub mod page;
#[cfg(not(loom))]
pub mod percpu;
#[cfg(not(loom))]
pub mod rcu;
#[cfg(not(loom))]
pub mod slab;
#[cfg(not(loom))]
mod state;
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
pub use kmem_cache::KmemCache;
#[cfg(not(loom))]
pub use slab::{CacheError, SlabFlags};

/// Whether cpuslab serves this process's allocations. False on a kernel whose page size
/// is not 4 KiB, where `CpuSlab` and the C interface hand every request to glibc's
/// malloc (after one `cpuslab:` line on stderr saying so), and on every operating
/// system but Linux, where `CpuSlab` hands them to `std::alloc::System` (the crate
/// compiles there; [`KmemCache::new`] returns [`CacheError::Unsupported`], percpu
/// allocations fail, RCU works). Boots the allocator if it has not booted; a boot that
/// failed for want of memory is retried later and counts as supported.
#[cfg(not(loom))]
pub fn supported() -> bool {
    init::ensure() || !init::unsupported()
}

/// Gives every cached object and free page that can go back to the OS: empties the
/// per-CPU and shared array caches, frees empty slabs, drains the per-CPU page lists,
/// purges all free pages and the freed huge blocks kept for reuse (as
/// `malloc_trim(0)`). Returns the bytes purged.
#[cfg(not(loom))]
pub fn trim() -> usize {
    if !init::ready() {
        return 0;
    }
    // One look for a sandbox before the fences of every cache and page list.
    sys::process::with_one_look(|| {
        slab::shrink_all();
        page::purge_all() + page::huge::drain_cache()
    })
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
