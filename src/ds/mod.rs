//! Plain data structures that depend on nothing else in the crate, so that every layer,
//! `sys` included, may use them: CPU and node bitmaps ([`CpuMask`], [`NodeMask`], the
//! kernel's `cpumask_t` and `nodemask_t`) with the kernel's list and mask formats, and
//! a parser of the list format that needs no bitmap, and (inside the crate) a sort for
//! short batches of addresses that come in a few ordered runs (`runsort`) and
//! `Deferred`, a large value built on first use so that its static costs no resident
//! memory before, and `Backoff`, which spaces out a costly remedy that keeps failing.

pub(crate) mod backoff;
pub mod cpulist;
pub(crate) mod deferred;
pub mod mask;
pub(crate) mod runsort;

pub(crate) use backoff::Backoff;
pub use cpulist::parse_cpulist;
pub(crate) use deferred::Deferred;
pub use mask::{Bitmap, CpuMask, MaskError, NodeMask};
