//! membarrier(2): a memory barrier on every running thread of the process, so that
//! readers can use compiler fences only (the userspace RCU "memb" flavour).
//!
//! Under a seccomp filter the program installed since boot (`process::
//! sandbox_since_boot`) none of these calls is made: such a filter is written for what
//! the program itself does, and one that does not expect membarrier may kill the
//! process for it (OpenSSH's pre-authentication sandbox does) rather than refuse it.
//! The calls then answer as where the kernel refuses them.

use super::process::sandboxed_since_boot;

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;
const MEMBARRIER_CMD_FLAG_CPU: libc::c_uint = 1;

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Set in a forked child, whose address space is not registered: the first
/// [`barrier`] registers it (the parent's registration does not carry over).
static REGISTER_PENDING: AtomicBool = AtomicBool::new(false);
/// As [`REGISTER_PENDING`], for [`rseq_fence`]'s command.
static RSEQ_REGISTER_PENDING: AtomicBool = AtomicBool::new(false);

/// Set once the kernel refused `MEMBARRIER_CMD_PRIVATE_EXPEDITED` after registration
/// (a seccomp filter installed later, a forked child that could not register again):
/// [`barrier`] then goes straight to [`ipi_barrier`].
static DENIED: AtomicBool = AtomicBool::new(false);

/// Registers the process for private expedited membarrier (once). Returns whether
/// [`barrier`] can be used; when false, callers fall back to full fences on both sides.
pub fn register() -> bool {
    match STATE.load(Ordering::Acquire) {
        AVAILABLE => true,
        UNAVAILABLE => false,
        _ if sandboxed_since_boot() => {
            STATE.store(UNAVAILABLE, Ordering::Release);
            false
        }
        _ => {
            // SAFETY: membarrier takes no pointers.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                )
            };
            let ok = rc == 0 && super::env::get(c"CPUSLAB_NO_MEMBARRIER").is_none();
            STATE.store(if ok { AVAILABLE } else { UNAVAILABLE }, Ordering::Release);
            ok
        }
    }
}

/// Whether membarrier was registered.
#[inline]
pub fn available() -> bool {
    STATE.load(Ordering::Relaxed) == AVAILABLE
}

/// Issues a full memory barrier on every thread of the process that is running.
/// Once [`register`] succeeded, readers rely on it for good; if the kernel refuses the
/// command later, the barrier is made with TLB-shootdown interrupts instead
/// (`ipi_barrier`). Returns false when neither works (the caller must not rely on
/// it then).
pub fn barrier() -> bool {
    if !DENIED.load(Ordering::Relaxed) && sandboxed_since_boot() {
        DENIED.store(true, Ordering::Relaxed);
    }
    if REGISTER_PENDING.swap(false, Ordering::Relaxed) && !DENIED.load(Ordering::Relaxed) {
        // SAFETY: membarrier takes no pointers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
        DENIED.store(rc != 0, Ordering::Relaxed);
    }
    if !DENIED.load(Ordering::Relaxed) {
        // SAFETY: membarrier takes no pointers.
        let rc =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if rc == 0 {
            return true;
        }
        DENIED.store(true, Ordering::Relaxed);
    }
    ipi_barrier()
}

/// A full barrier on every CPU running a thread of this process without membarrier:
/// unmapping a page this thread has touched makes the kernel flush it from the TLB of
/// every CPU that runs the process's address space, with an inter-processor interrupt
/// to each, and an interrupt orders the interrupted thread's memory accesses on
/// x86_64 (.NET's `FlushProcessWriteBuffers` relies on the same). Elsewhere TLB
/// flushes may be broadcast without interrupts, so this is x86_64 only.
fn ipi_barrier() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let page = super::mmap::map_aligned(super::PAGE_SIZE, super::PAGE_SIZE, false);
    if page.is_null() {
        return false;
    }
    // SAFETY: the page is ours, mapped and writable; touching it puts it in the TLB.
    unsafe { core::ptr::write_volatile(page, 1) };
    super::mmap::unmap(page, super::PAGE_SIZE);
    true
}

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`, which restarts
/// the restartable sequences in flight on other CPUs. False when the kernel refuses
/// (before 5.10) or `CPUSLAB_NO_MEMBARRIER` is set.
pub fn register_rseq() -> bool {
    if super::env::get(c"CPUSLAB_NO_MEMBARRIER").is_some() || sandboxed_since_boot() {
        return false;
    }
    register_rseq_now()
}

/// [`register_rseq`]'s system call.
fn register_rseq_now() -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
            0,
            0,
        ) == 0
    }
}

/// Restarts every restartable sequence of this process in flight on `cpu` (or on all
/// CPUs, for `None`): when it returns, a sequence that began before the call has either
/// committed or will start over and see whatever the caller stored before. Needs
/// [`register_rseq`]; returns false if the kernel refused (or would be asked from
/// inside the program's own sandbox).
pub fn rseq_fence(cpu: Option<usize>) -> bool {
    if sandboxed_since_boot() {
        return false;
    }
    if RSEQ_REGISTER_PENDING.swap(false, Ordering::Relaxed) && !register_rseq_now() {
        return false;
    }
    let (flags, cpu_id) = match cpu {
        Some(c) => (MEMBARRIER_CMD_FLAG_CPU, c as libc::c_int),
        None => (0, 0),
    };
    // SAFETY: membarrier takes no pointers.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
            flags,
            cpu_id,
        ) == 0
    }
}

/// fork, child: registration belongs to the parent's address space. The child
/// registers again at its first [`barrier`], not here: most children exec at once,
/// and the look for a sandbox that comes with it costs 15-18 µs. The forking thread's
/// RCU words were chosen for the parent's state and stay; if the child cannot
/// register, [`barrier`] keeps its promise with `ipi_barrier`.
pub fn reregister_after_fork() {
    if STATE.load(Ordering::Acquire) == AVAILABLE {
        REGISTER_PENDING.store(true, Ordering::Relaxed);
    }
}

/// fork, child: [`rseq_fence`] registers the child for its command before its first
/// fence (see [`reregister_after_fork`]).
pub fn register_rseq_later() {
    RSEQ_REGISTER_PENDING.store(true, Ordering::Relaxed);
}
