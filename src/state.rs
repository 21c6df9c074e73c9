//! How far boot got, as the kernel's `slab_state`: written by boot (`init`) alone, read
//! by the layers that must know whether the allocator is up. Reading it never boots:
//! only the entry points (`CpuSlab`, the C interface, the typed caches, the percpu and
//! statistics interfaces) do, through `init::ensure`.

use core::sync::atomic::{AtomicU8, Ordering};

/// Nobody has tried to boot yet.
pub(crate) const UNINIT: u8 = 0;
/// A thread is booting.
pub(crate) const BOOTING: u8 = 1;
/// Booted: every layer is up.
pub(crate) const READY: u8 = 2;
/// The last boot failed; it is tried again later.
pub(crate) const FAILED: u8 = 3;
/// Boot cannot succeed in this process (the platform, or the kernel's page size).
pub(crate) const UNSUPPORTED: u8 = 4;

/// The state; only `init` stores to it.
pub(crate) static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Whether the allocator has booted.
#[inline]
pub fn ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// Whether cpuslab cannot run in this process at all (the platform, or the kernel's
/// page size): then it never boots, and kmalloc hands every request to the system
/// allocator (glibc's on Linux).
#[inline]
pub fn unsupported() -> bool {
    STATE.load(Ordering::Acquire) == UNSUPPORTED
}
