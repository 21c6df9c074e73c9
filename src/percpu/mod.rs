//! The per-CPU allocator, the kernel's `mm/percpu.c` moved to user space, and the
//! typed per-CPU structures built on it.
//!
//! ```text
//!  PerCpu<T> · PercpuCounter · PercpuRwSem            (typed users)
//!        │
//!  alloc_percpu / free_percpu ── slots of chunks by largest free run   (alloc)
//!        │                    └─ balance: empty pages LOW..HIGH, free empty chunks
//!  chunk: one unit a CPU, 64 KiB each, MAP_NORESERVE, mbind'ed to the CPU's node
//!        └─ bitmap of 8-byte granules + per-page block hints + populated, dirty bitmaps
//! ```
//!
//! A chunk is one reservation holding a unit for every possible CPU; CPU `c`'s copy of
//! the area at offset `off` is at `base + c * PCPU_UNIT_SIZE + off`, so every CPU's
//! copies of all areas sit together in that CPU's unit, on that CPU's node, and no two
//! CPUs' copies ever share a cache line. A unit's copy of a page becomes resident when
//! something writes it, so the units of CPUs that never run a thread of the process
//! cost nothing (see `chunk` and [`cpu_used`]); balance gives back, in every unit, the
//! pages of areas freed when it finds too many empty ones.
//!
//! The first mapping is split: its leading [`PCPU_RESERVED_SIZE`] bytes a unit form the
//! reserved chunk, for cpuslab's own static per-CPU data
//! ([`alloc_reserved_percpu`]); the rest is the first dynamic chunk.
//!
//! Nothing here allocates through the global allocator: chunk headers and maps come
//! from the page pool, chunk memory from `mmap`. The allocator starts on first use,
//! after the page pool. Lock order: `pcpu_lock`, then a zone lock of the page pool.
//!
//! ```
//! use cpuslab::percpu::{self, alloc_percpu, free_percpu};
//!
//! let p = alloc_percpu(64, 8).unwrap();
//! for cpu in 0..cpuslab::topology::nr_cpu_ids() {
//!     // SAFETY: every possible CPU's copy is 64 writable bytes.
//!     unsafe { p.per_cpu_ptr(cpu).cast::<u64>().write(cpu as u64) };
//! }
//! assert!(percpu::stats::percpu_stats().nr_cur_alloc >= 1);
//! // SAFETY: allocated above, freed once, not used after.
//! unsafe { free_percpu(p) };
//! ```

mod alloc;
mod balance;
mod bitmap;
mod chunk;
mod counter;
mod error;
mod rwsem;
pub mod stats;
mod typed;
mod used;

pub use alloc::{
    alloc_percpu, alloc_percpu_lazy, alloc_reserved_percpu, free_percpu, PcpuPtr, PCPU_FREE_SLOT,
    PCPU_NR_SLOTS,
};
pub use balance::{balance, PCPU_EMPTY_POP_PAGES_HIGH, PCPU_EMPTY_POP_PAGES_LOW};
pub use bitmap::PCPU_MIN_ALLOC_SIZE;
pub use chunk::{PCPU_MAX_ALLOC_SIZE, PCPU_RESERVED_SIZE, PCPU_UNIT_PAGES, PCPU_UNIT_SIZE};
pub use counter::PercpuCounter;
pub use error::PercpuError;
pub use rwsem::{PercpuReadGuard, PercpuRwSem, PercpuWriteGuard};
pub use typed::{LocalLock, LocalLockGuard, PerCpu};
pub use used::{cpu_used, mark_cpu_used};

pub(crate) use alloc::{lock_all, setup_first_chunk, unlock_all};

use crate::{sys, topology};

/// The CPU the calling thread runs on (`smp_processor_id`), always a possible CPU id.
/// A hint: the thread may migrate right after, so what it names is used under the
/// per-CPU discipline.
#[inline]
pub fn this_cpu() -> usize {
    let cpu = sys::cpu::current();
    let n = topology::nr_cpu_ids();
    if cpu < n {
        cpu
    } else {
        cpu % n
    }
}
