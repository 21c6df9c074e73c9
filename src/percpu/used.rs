//! The CPUs a thread of the process has worked on: those whose per-CPU structures
//! (array caches, page lists) have been prepared for use.
//!
//! The kernel prepares a CPU's per-CPU data when the CPU comes online. A process has
//! no such moment: every possible CPU has units in every chunk, and most of them (a
//! VM's hot-plug slots, the cores of a big machine a small program never reaches) never
//! run one of its threads. So the structures built on the units are prepared when a
//! thread first works on their CPU, and until then their copies stay as the percpu
//! allocator gave them: zero, on no page of their own. Work that walks every CPU (the
//! reaper, draining, statistics) asks here first and passes over the CPUs never used
//! without reading their copies, which would map pages for them.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::topology::NR_CPUS;

/// Bit `c % 64` of word `c / 64`: CPU `c` was used.
static USED: [AtomicU64; NR_CPUS / 64] = [const { AtomicU64::new(0) }; NR_CPUS / 64];

/// Marks `cpu` used, before its structures are prepared. Ids past [`NR_CPUS`] are
/// ignored (no structure has a copy for them).
#[inline]
pub fn mark_cpu_used(cpu: usize) {
    if cpu < NR_CPUS && !cpu_used(cpu) {
        USED[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::Release);
    }
}

/// Whether a thread has worked on `cpu`: only then may its copies hold anything.
#[inline]
pub fn cpu_used(cpu: usize) -> bool {
    cpu < NR_CPUS && USED[cpu / 64].load(Ordering::Acquire) & (1 << (cpu % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_is_used_once_marked_and_ids_past_the_limit_never() {
        // The last possible id: no thread of the test binary runs there.
        let cpu = NR_CPUS - 1;
        assert!(!cpu_used(cpu));
        mark_cpu_used(cpu);
        assert!(cpu_used(cpu));
        mark_cpu_used(NR_CPUS);
        assert!(!cpu_used(NR_CPUS));
    }
}
