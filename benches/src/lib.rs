//! Workloads and helpers shared by the `cpuslab` benchmark suite (`suite/`)
//! and the criterion micro-benchmarks (`micro.rs`).
//!
//! Every workload verifies what it computes: each block is filled with a
//! pattern derived from a per-block tag and checked before it is freed, and
//! the digests of everything allocated and everything freed must agree at the
//! end. A broken allocator therefore panics instead of looking fast.
//!
//! Workloads come in two shapes:
//! * generic ones take `&A where A: GlobalAlloc + Sync` and call
//!   `alloc`/`dealloc`/`realloc` on it explicitly;
//! * Rust-shaped ones (`vec-growth`, `btree-churn`, ...) allocate through the
//!   process-wide `#[global_allocator]`; the suite runs each in a child
//!   process whose global allocator is a [`dispatch::Dispatch`] pointed at the
//!   allocator under test;
//! * real programs ([`programs`]) on serde_json, rayon and regex, also through the
//!   global allocator.

pub mod block;
pub mod c;
pub mod dispatch;
pub mod programs;
pub mod rng;
pub mod workloads;

pub use block::Block;
pub use dispatch::AllocKind;
pub use rng::Rng;
pub use workloads::{
    bare_pairs, bare_pairs_on, find, run, Outcome, Params, WorkloadInfo, WORKLOADS,
};
