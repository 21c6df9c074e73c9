//! Memory policy over [`NodeMask`]: `set_mempolicy`, `get_mempolicy` and `mbind`.
//!
//! The kernel's `get_nodes` drops the last bit of `maxnode` (a historical off-by-one
//! that libnuma also works around), so every call passes the mask's bits + 1.

pub use crate::sys::mpol::*;

use super::affinity::SysError;
use crate::ds::NodeMask;

const MAXNODE: usize = NodeMask::BITS + 1;

fn check(rc: libc::c_long, call: &'static str) -> Result<(), SysError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(call))
    }
}

/// Sets the calling thread's policy (`set_mempolicy(mode, nodes)`).
pub fn set_mempolicy(mode: i32, nodes: &NodeMask) -> Result<(), SysError> {
    // SAFETY: the kernel reads `NodeMask::BITS` bits from a live mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            mode,
            nodes.words().as_ptr(),
            MAXNODE as libc::c_ulong,
        )
    };
    check(rc, "set_mempolicy")
}

/// `migrate_pages(0, from, to)`: moves the calling process's pages that sit on the
/// nodes of `from` to the nodes of `to` (each node keeps its position: the first node
/// of `from` to the first of `to`, and so on, as the kernel's `do_migrate_pages`).
/// Returns how many pages could not be moved.
pub fn migrate_pages(from: &NodeMask, to: &NodeMask) -> Result<usize, SysError> {
    // SAFETY: the kernel reads `NodeMask::BITS` bits from each live mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            0 as libc::pid_t,
            MAXNODE as libc::c_ulong,
            from.words().as_ptr(),
            to.words().as_ptr(),
        )
    };
    check(rc, "migrate_pages").map(|()| rc as usize)
}

/// The calling thread's policy: its mode and nodes.
pub fn get_mempolicy() -> Result<(i32, NodeMask), SysError> {
    policy_at(core::ptr::null(), 0)
}

/// The policy of the mapping at `addr` (`MPOL_F_ADDR`): its mode and nodes
/// (`MPOL_DEFAULT` and no nodes where the range has no policy of its own).
pub fn policy_of(addr: *const u8) -> Result<(i32, NodeMask), SysError> {
    policy_at(addr, MPOL_F_ADDR)
}

fn policy_at(addr: *const u8, flags: u32) -> Result<(i32, NodeMask), SysError> {
    let mut mode: libc::c_int = 0;
    let mut nodes = NodeMask::new();
    // SAFETY: the kernel writes one int to `mode` and at most `NodeMask::BITS` bits to
    // `nodes`; with `MPOL_F_ADDR` it only looks the address up.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            nodes.words_mut().as_mut_ptr(),
            MAXNODE as libc::c_ulong,
            addr as usize,
            flags as libc::c_ulong,
        )
    };
    check(rc, "get_mempolicy").map(|()| (mode, nodes))
}

/// The node holding the page at `addr` (`MPOL_F_NODE | MPOL_F_ADDR`); the kernel
/// faults the page in first when it is not present.
pub fn node_of(addr: *const u8) -> Result<usize, SysError> {
    let mut node: libc::c_int = -1;
    // SAFETY: the kernel writes one int; no node mask is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut node as *mut libc::c_int,
            core::ptr::null_mut::<u64>(),
            0 as libc::c_ulong,
            addr as usize,
            (MPOL_F_NODE | MPOL_F_ADDR) as libc::c_ulong,
        )
    };
    check(rc, "get_mempolicy").map(|()| node.max(0) as usize)
}

/// Sets the policy of `[addr, addr + len)` (`mbind`); `flags` may ask to move pages
/// already there ([`MPOL_MF_MOVE`]) or to fail when some are elsewhere
/// ([`MPOL_MF_STRICT`]). On failure the range keeps its old policy.
///
/// # Safety
/// `[addr, addr + len)` is a page-aligned range of mappings the caller owns: with
/// [`MPOL_MF_MOVE`] the kernel may move its pages.
pub unsafe fn mbind(
    addr: *mut u8,
    len: usize,
    mode: i32,
    nodes: &NodeMask,
    flags: u32,
) -> Result<(), SysError> {
    // SAFETY: the kernel reads `NodeMask::BITS` bits from a live mask and changes
    // only the policy (and with MF_MOVE the placement) of a range the caller owns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr as usize,
            len,
            mode as libc::c_ulong,
            nodes.words().as_ptr(),
            MAXNODE as libc::c_ulong,
            flags as libc::c_uint,
        )
    };
    check(rc, "mbind")
}
