//! The Linux implementation of [`sys`](super): system calls through `libc`, restartable
//! sequences and TLS words in inline assembly (x86_64; other architectures take the
//! portable paths these modules offer), glibc's own allocator for forwarding.

use super::PAGE_SIZE;

pub mod affinity;
pub mod console;
pub mod cpu;
#[cfg(target_arch = "x86_64")]
pub mod cxx;
pub mod dl;
pub mod elf;
pub mod env;
pub mod errno;
pub mod file;
pub mod fork;
pub mod futex;
pub mod glibc;
pub mod membarrier;
pub mod mempolicy;
pub mod mmap;
pub mod nocancel;
pub mod numa;
pub mod process;
pub mod rseq;
pub mod thread;
pub mod time;
pub mod vdso;

/// Whether cpuslab can run on this platform (here: yes; the kernel's page size is
/// checked at boot).
pub const SUPPORTED: bool = true;

/// The page size the kernel reports, to check [`PAGE_SIZE`] at boot.
pub fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
