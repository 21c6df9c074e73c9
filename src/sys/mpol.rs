//! The kernel's memory-policy numbers (`MPOL_*`), which the cpuset layer speaks on
//! every implementation of `sys`.

/// `MPOL_DEFAULT`: the policy of the thread, or local allocation.
pub const MPOL_DEFAULT: i32 = 0;
/// `MPOL_PREFERRED`: the given node first, others when it has no memory.
pub const MPOL_PREFERRED: i32 = 1;
/// `MPOL_BIND`: only the given nodes.
pub const MPOL_BIND: i32 = 2;
/// `MPOL_INTERLEAVE`: page by page over the given nodes.
pub const MPOL_INTERLEAVE: i32 = 3;
/// `MPOL_LOCAL`: the node of the CPU that faults the page.
pub const MPOL_LOCAL: i32 = 4;

/// `MPOL_F_NODE`: `get_mempolicy` returns a node id in the mode word.
pub const MPOL_F_NODE: u32 = 1;
/// `MPOL_F_ADDR`: `get_mempolicy` looks at the policy (or, with `MPOL_F_NODE`, the
/// page) at an address.
pub const MPOL_F_ADDR: u32 = 2;

/// `MPOL_MF_STRICT`: `mbind` fails when pages already present are not on the nodes.
pub const MPOL_MF_STRICT: u32 = 1 << 0;
/// `MPOL_MF_MOVE`: `mbind` moves this process's pages onto the nodes.
pub const MPOL_MF_MOVE: u32 = 1 << 1;
