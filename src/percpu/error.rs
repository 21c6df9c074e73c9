//! Why an area could not be allocated.

use core::fmt;

use super::chunk::PCPU_MAX_ALLOC_SIZE;
use crate::sys::PAGE_SIZE;

/// Why [`alloc_percpu`](super::alloc_percpu) (or a typed constructor) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PercpuError {
    /// A zero-byte area was asked for.
    ZeroSize,
    /// The size exceeds the per-area limit, [`PCPU_MAX_ALLOC_SIZE`].
    TooLarge(usize),
    /// The alignment is not a power of two, or exceeds a page.
    Alignment(usize),
    /// The reserved chunk has no free run for the area.
    ReservedFull(usize),
    /// No chunk could be created or populated: the address space or memory ran out.
    NoMemory,
    /// cpuslab cannot run here (the platform or the kernel's page size): see
    /// [`crate::supported`].
    NotReady,
}

impl fmt::Display for PercpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroSize => f.write_str("a per-CPU area of 0 bytes was asked for"),
            Self::TooLarge(size) => write!(
                f,
                "a per-CPU area of {size} bytes exceeds the limit of {PCPU_MAX_ALLOC_SIZE} bytes"
            ),
            Self::Alignment(align) => write!(
                f,
                "per-CPU alignment {align} is not a power of two up to {PAGE_SIZE}"
            ),
            Self::ReservedFull(size) => {
                write!(f, "the reserved per-CPU chunk has no room for {size} bytes")
            }
            Self::NoMemory => f.write_str("out of memory for per-CPU chunks"),
            Self::NotReady => f.write_str("cpuslab cannot run on this platform"),
        }
    }
}

impl core::error::Error for PercpuError {}
