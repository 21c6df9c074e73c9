//! membarrier(2): a memory barrier on every running thread of the process, so that
//! readers can use compiler fences only (the userspace RCU "memb" flavour).

use core::sync::atomic::{AtomicU8, Ordering};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;
const MEMBARRIER_CMD_FLAG_CPU: libc::c_uint = 1;

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Registers the process for private expedited membarrier (once). Returns whether
/// [`barrier`] can be used; when false, callers fall back to full fences on both sides.
pub fn register() -> bool {
    match STATE.load(Ordering::Acquire) {
        AVAILABLE => true,
        UNAVAILABLE => false,
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
/// Returns false if the kernel refused (the caller must not rely on it then).
pub fn barrier() -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`, which restarts
/// the restartable sequences in flight on other CPUs. False when the kernel refuses
/// (before 5.10) or `CPUSLAB_NO_MEMBARRIER` is set.
pub fn register_rseq() -> bool {
    if super::env::get(c"CPUSLAB_NO_MEMBARRIER").is_some() {
        return false;
    }
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
/// [`register_rseq`]; returns false if the kernel refused.
pub fn rseq_fence(cpu: Option<usize>) -> bool {
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

/// fork, child: registration belongs to the parent's address space; register again.
pub fn reregister_after_fork() {
    if STATE.swap(UNKNOWN, Ordering::AcqRel) != UNKNOWN {
        register();
    }
}
