//! NUMA memory policy for cpuslab's mappings.

/// Binds `[addr, addr + len)` to `node` with `MPOL_PREFERRED`, so its pages come from
/// that node while it has memory. Returns false when the kernel refused (no NUMA
/// support, a node outside the process's cpuset), or without asking inside the
/// program's own seccomp sandbox, which may kill it for mbind(2) (see `membarrier`):
/// the pages then come from where they are first touched.
pub fn bind_preferred(addr: *mut u8, len: usize, node: usize) -> bool {
    if super::process::sandboxed_since_boot() {
        return false;
    }
    const MPOL_PREFERRED: libc::c_long = 1;
    let mut mask = [0u64; 16];
    if node >= mask.len() * 64 {
        return false;
    }
    mask[node / 64] |= 1 << (node % 64);
    // SAFETY: mbind reads `mask` (maxnode bits) and changes only the policy of a range
    // we mapped.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr as usize,
            len,
            MPOL_PREFERRED,
            mask.as_ptr(),
            (mask.len() * 64) as libc::c_ulong,
            0 as libc::c_uint,
        )
    };
    rc == 0
}
