//! The only code that calls the kernel.
//!
//! Everything cpuslab needs from the operating system goes through this module: memory
//! mappings, the current CPU, futexes, files under /sys and /proc, the environment,
//! clocks, fork hooks and NUMA policy. Nothing here allocates through the global
//! allocator.
//!
//! Two implementations, one interface (the same modules, functions and types):
//! - `linux` on Linux: the allocator runs;
//! - `unsupported` everywhere else, and on Linux when built with `--cfg
//!   cpuslab_unsupported` (CI builds and tests it so, so that it cannot rot). Boot
//!   fails at once ([`SUPPORTED`] is false), and kmalloc hands every request to the
//!   system allocator (`std::alloc::System`) through its `glibc` module; the calls the
//!   layers above make before they give up (futexes, clocks, the environment) are
//!   served portably, and the rest report failure.

/// A reference to a static of this crate, reached PC-relative (`lea` on x86_64) rather
/// than through a GOT entry: position-independent code reaches a public static through
/// the GOT, an extra load on the fast paths of the preload library, where the linker
/// cannot relax it (rustc emits `R_X86_64_GOTPCREL`, not the relaxable `...X`). The
/// static's symbol is never exported from a shared object (a cdylib exports only its
/// C interface), so the PC-relative reference links. Elsewhere, a plain reference.
macro_rules! local_static {
    ($s:path) => {{
        #[cfg(target_arch = "x86_64")]
        {
            let p: *const u8;
            // SAFETY: computes the static's address; reads no memory.
            unsafe {
                core::arch::asm!(
                    "lea {p}, [rip + {s}]",
                    p = out(reg) p,
                    s = sym $s,
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
            // SAFETY: `p` is the address of `$s`, a static that lives forever.
            unsafe { &*p.cast() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            &$s
        }
    }};
}
pub(crate) use local_static;

pub mod error;
pub mod io;
pub mod mpol;
pub mod rseq_abi;
pub mod tls;

#[cfg(all(target_os = "linux", not(cpuslab_unsupported)))]
mod linux;
#[cfg(all(target_os = "linux", not(cpuslab_unsupported)))]
pub use linux::*;

#[cfg(not(all(target_os = "linux", not(cpuslab_unsupported))))]
mod unsupported;
#[cfg(not(all(target_os = "linux", not(cpuslab_unsupported))))]
pub use unsupported::*;

/// The size of a base page. cpuslab refuses to start on a kernel with another page size.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
