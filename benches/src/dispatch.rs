//! A global allocator whose target is chosen once per process at runtime.
//!
//! The suite re-executes itself once per (workload, allocator) run; the child
//! installs [`Dispatch`] as its `#[global_allocator]`, so *everything* it
//! allocates — workload blocks, `Vec`s, `BTreeMap` nodes, thread stacks'
//! bookkeeping — goes through the allocator under test, and its peak RSS is
//! that allocator's.
//!
//! The target comes from the environment variable [`ENV_VAR`], read with
//! `libc::getenv` (which does not allocate) on the first allocation or on
//! [`init`], whichever comes first, and never changes afterwards: a block is
//! always freed by the allocator that produced it. Unset means `system`.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU8, Ordering};
use std::alloc::System;

/// Environment variable naming the child's allocator (`cpuslab`, `system`,
/// `mimalloc`, `jemalloc`).
pub const ENV_VAR: &str = "CPUSLAB_SUITE_ALLOC";
const ENV_VAR_C: &[u8] = b"CPUSLAB_SUITE_ALLOC\0";

/// The allocators the suite knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AllocKind {
    /// `cpuslab::CpuSlab`, the allocator under test.
    Cpuslab = 1,
    /// `std::alloc::System` (glibc malloc on Linux).
    System = 2,
    /// `mimalloc::MiMalloc` (feature `competitors`).
    #[cfg(feature = "competitors")]
    Mimalloc = 3,
    /// `tikv_jemallocator::Jemalloc` (feature `competitors`).
    #[cfg(feature = "competitors")]
    Jemalloc = 4,
}

impl AllocKind {
    /// Every allocator compiled in, cpuslab first (the baseline of ratios).
    pub const ALL: &'static [AllocKind] = &[
        AllocKind::Cpuslab,
        AllocKind::System,
        #[cfg(feature = "competitors")]
        AllocKind::Mimalloc,
        #[cfg(feature = "competitors")]
        AllocKind::Jemalloc,
    ];

    /// Lower-case name, as used on the command line and in [`ENV_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            AllocKind::Cpuslab => "cpuslab",
            AllocKind::System => "system",
            #[cfg(feature = "competitors")]
            AllocKind::Mimalloc => "mimalloc",
            #[cfg(feature = "competitors")]
            AllocKind::Jemalloc => "jemalloc",
        }
    }

    /// Parses a name (byte slice so that it works before allocation exists).
    pub fn from_name(name: &[u8]) -> Option<AllocKind> {
        AllocKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().as_bytes() == name)
    }

    #[inline]
    fn from_u8(v: u8) -> AllocKind {
        match v {
            1 => AllocKind::Cpuslab,
            #[cfg(feature = "competitors")]
            3 => AllocKind::Mimalloc,
            #[cfg(feature = "competitors")]
            4 => AllocKind::Jemalloc,
            _ => AllocKind::System,
        }
    }
}

/// 0 = not chosen yet; otherwise an `AllocKind` discriminant.
static TARGET: AtomicU8 = AtomicU8::new(0);

#[cold]
fn choose() -> AllocKind {
    // SAFETY: NUL-terminated name; getenv returns a pointer into the
    // environment or null, and allocates nothing.
    let raw = unsafe { libc::getenv(ENV_VAR_C.as_ptr().cast()) };
    let kind = if raw.is_null() {
        AllocKind::System
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        let name = unsafe { core::ffi::CStr::from_ptr(raw) }.to_bytes();
        match AllocKind::from_name(name) {
            Some(k) => k,
            None => {
                // Cannot panic here (panicking allocates): say so and abort.
                let msg = b"cpuslab-bench: unknown or not compiled-in CPUSLAB_SUITE_ALLOC value\n";
                // SAFETY: writing a static buffer to stderr.
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                std::process::abort();
            }
        }
    };
    // The first chooser wins; a racing one adopts its choice.
    match TARGET.compare_exchange(0, kind as u8, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => kind,
        Err(existing) => AllocKind::from_u8(existing),
    }
}

/// The allocator every [`Dispatch`] call goes to (choosing it if needed).
#[inline]
pub fn current() -> AllocKind {
    match TARGET.load(Ordering::Acquire) {
        0 => choose(),
        v => AllocKind::from_u8(v),
    }
}

/// Fixes the target now. Call it first thing in `main`; it is also done
/// implicitly by the first allocation, so pre-`main` allocations are safe.
pub fn init() -> AllocKind {
    current()
}

/// The runtime-selected global allocator (see the module docs).
pub struct Dispatch;

macro_rules! forward {
    ($method:ident ( $($arg:expr),* )) => {
        match current() {
            AllocKind::Cpuslab => cpuslab::CpuSlab.$method($($arg),*),
            AllocKind::System => System.$method($($arg),*),
            #[cfg(feature = "competitors")]
            AllocKind::Mimalloc => mimalloc::MiMalloc.$method($($arg),*),
            #[cfg(feature = "competitors")]
            AllocKind::Jemalloc => tikv_jemallocator::Jemalloc.$method($($arg),*),
        }
    };
}

// SAFETY: forwards every call to one fixed allocator for the whole process.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        forward!(alloc(layout))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        forward!(dealloc(ptr, layout))
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        forward!(alloc_zeroed(layout))
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        forward!(realloc(ptr, layout, new_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &k in AllocKind::ALL {
            assert_eq!(AllocKind::from_name(k.name().as_bytes()), Some(k));
            assert_eq!(AllocKind::from_u8(k as u8), k);
        }
        assert_eq!(AllocKind::from_name(b"nope"), None);
    }
}
