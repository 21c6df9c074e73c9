//! `sched_setaffinity` / `sched_getaffinity` over [`CpuMask`], and [`SysError`], the
//! errno-carrying error of the cpuset system calls.

pub use crate::sys::error::SysError;

use crate::ds::CpuMask;

/// Restricts thread `tid` (0: the calling thread) to `cpus`.
pub fn set_affinity(tid: u32, cpus: &CpuMask) -> Result<(), SysError> {
    // SAFETY: the kernel reads `size_of::<CpuMask>()` bytes from a live mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid as libc::pid_t,
            core::mem::size_of::<CpuMask>(),
            cpus.words().as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last("sched_setaffinity"))
    }
}

/// The CPUs thread `tid` (0: the calling thread) may run on.
pub fn get_affinity(tid: u32) -> Result<CpuMask, SysError> {
    let mut cpus = CpuMask::new();
    // SAFETY: the kernel writes at most `size_of::<CpuMask>()` bytes into the mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid as libc::pid_t,
            core::mem::size_of::<CpuMask>(),
            cpus.words_mut().as_mut_ptr(),
        )
    };
    if rc >= 0 {
        Ok(cpus)
    } else {
        Err(SysError::last("sched_getaffinity"))
    }
}

/// Whether thread `tid` still exists (any process's: attach takes any thread id).
pub fn thread_alive(tid: u32) -> bool {
    !matches!(get_affinity(tid), Err(e) if e.errno == libc::ESRCH)
}

/// Runs the calling thread once on each CPU below `nr_cpus` that it may be moved to,
/// then restores its mask: when `sched_setaffinity` to one CPU returns, the thread
/// runs there, so whatever ran there before was switched out at least once since the
/// call began (the old `synchronize_sched` by migration). CPUs it may not use (offline,
/// outside its cpuset) are skipped. False when the kernel refuses affinity changes
/// altogether (a sandbox), so nothing was learned.
pub fn visit_each_cpu(nr_cpus: usize) -> bool {
    let Ok(saved) = get_affinity(0) else {
        return false;
    };
    let mut visited = false;
    for cpu in 0..nr_cpus.min(CpuMask::BITS) {
        let mut one = CpuMask::new();
        one.set(cpu);
        match set_affinity(0, &one) {
            Ok(()) => visited = true,
            Err(e) if e.errno == libc::EINVAL => {}
            Err(_) => break,
        }
    }
    let _ = set_affinity(0, &saved);
    visited
}
