//! "This CPU": the `cpu_id` field of the thread's rseq area, which glibc (2.35 and
//! later) registers for every thread, with `sched_getcpu` as the fallback.
//!
//! The value is a hint: the thread may migrate right after reading it. Every per-CPU
//! structure is therefore guarded by a lock that is tried, never waited on.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" {
    /// Offset of the rseq area from the thread pointer (glibc 2.35+).
    static __rseq_offset: isize;
    /// Size of the registered rseq area; 0 when glibc did not register one.
    static __rseq_size: u32;
}

/// The thread pointer (TCB address) of the calling thread.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn thread_pointer() -> *const u8 {
    let tp: *const u8;
    // SAFETY: on x86_64 Linux, %fs:0 holds the TCB's own address.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:0", out(reg) tp, options(nostack, readonly, preserves_flags, pure));
    }
    tp
}

/// The thread pointer (TCB address) of the calling thread.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn thread_pointer() -> *const u8 {
    let tp: *const u8;
    // SAFETY: reading TPIDR_EL0 has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags, pure));
    }
    tp
}

/// Whether glibc registered an rseq area for this process.
pub fn rseq_registered() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: a plain read of a glibc variable that is set before main.
    unsafe {
        __rseq_size > 0
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// Offset of the calling thread's rseq area from its thread pointer
/// (`__rseq_offset`), for restartable sequences (`sys::rseq`). Meaningful only when
/// [`rseq_registered`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn rseq_offset() -> isize {
    // SAFETY: a plain read of a glibc variable that is set before main.
    unsafe { __rseq_offset }
}

/// Whether the kernel keeps the calling thread's rseq `cpu_id` (glibc registered an
/// area and the registration took: under valgrind, for one, it does not).
pub fn rseq_cpu_valid() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if rseq_registered() {
        // SAFETY: as in `current`.
        let cpu = unsafe {
            let area = thread_pointer().offset(__rseq_offset);
            core::ptr::read_volatile(area.add(4).cast::<i32>())
        };
        return cpu >= 0;
    }
    false
}

/// The CPU the calling thread runs on (a hint, see the module docs).
#[inline(always)]
pub fn current() -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        // SAFETY: glibc keeps a `struct rseq` at `tp + __rseq_offset` for every thread
        // (initialised with a negative cpu_id when unregistered); `cpu_id` is the u32 at
        // offset 4, written by the kernel on every return to user space.
        let cpu = unsafe {
            let area = thread_pointer().offset(__rseq_offset);
            core::ptr::read_volatile(area.add(4).cast::<i32>())
        };
        if cpu >= 0 {
            return cpu as usize;
        }
    }
    getcpu_slow()
}

#[cold]
fn getcpu_slow() -> usize {
    // SAFETY: no preconditions; -1 only on kernels without getcpu.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        0
    } else {
        cpu as usize
    }
}

/// An id of the calling thread that is unique among live threads (its TCB address).
#[inline]
pub fn thread_id() -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        thread_pointer() as usize
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: no preconditions.
    unsafe {
        libc::pthread_self() as usize
    }
}
