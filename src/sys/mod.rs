//! The only code that calls the kernel.
//!
//! Everything cpuslab needs from the operating system goes through this module: memory
//! mappings, the current CPU, futexes, files under /sys and /proc, the environment,
//! clocks, fork hooks and NUMA policy. Nothing here allocates through the global
//! allocator.

pub mod affinity;
pub mod cpu;
pub mod dl;
pub mod env;
pub mod errno;
pub mod file;
pub mod fork;
pub mod futex;
pub mod glibc;
pub mod io;
pub mod membarrier;
pub mod mempolicy;
pub mod mmap;
pub mod numa;
pub mod process;
pub mod rseq;
pub mod thread;
pub mod time;
pub mod tls;

/// The size of a base page. cpuslab refuses to start on a kernel with another page size.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The page size the kernel reports, to check [`PAGE_SIZE`] at boot.
pub fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
