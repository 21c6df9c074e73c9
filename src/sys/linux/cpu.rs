//! "This CPU": the `cpu_id` field of the thread's rseq area, which glibc (2.35 and
//! later) registers for every thread, with `sched_getcpu` as the fallback.
//!
//! The value is a hint: the thread may migrate right after reading it. Every per-CPU
//! structure is therefore guarded by a lock that is tried, never waited on.

/// The addresses of glibc's `__rseq_offset` (the rseq area's offset from the thread
/// pointer) and `__rseq_size` (0 when glibc did not register an area), or null where
/// the C library has neither (glibc before 2.35, musl).
///
/// Both are weak references read from the GOT: a strong one would make the crate fail
/// to link, and the preload library fail to load, on any C library without them, where
/// the `sched_getcpu` fallback is meant to serve. An undefined weak symbol resolves to
/// address 0.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rseq_symbols() -> (*const isize, *const u32) {
    let (off, size): (*const isize, *const u32);
    // SAFETY: two loads of GOT entries the linker made for these symbols (the
    // `.weak` directives make the references weak).
    unsafe {
        core::arch::asm!(
            ".weak __rseq_offset",
            ".weak __rseq_size",
            "mov {off}, qword ptr [rip + __rseq_offset@GOTPCREL]",
            "mov {size}, qword ptr [rip + __rseq_size@GOTPCREL]",
            off = out(reg) off,
            size = out(reg) size,
            // The GOT is written once, by the dynamic linker, before any of our code.
            options(nostack, nomem, preserves_flags, pure),
        );
    }
    (off, size)
}

/// As on x86_64: weak references read from the GOT.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn rseq_symbols() -> (*const isize, *const u32) {
    let (off, size): (*const isize, *const u32);
    // SAFETY: two loads of GOT entries the linker made for these symbols (the
    // `.weak` directives make the references weak).
    unsafe {
        core::arch::asm!(
            ".weak __rseq_offset",
            ".weak __rseq_size",
            "adrp {off}, :got:__rseq_offset",
            "ldr {off}, [{off}, :got_lo12:__rseq_offset]",
            "adrp {size}, :got:__rseq_size",
            "ldr {size}, [{size}, :got_lo12:__rseq_size]",
            off = out(reg) off,
            size = out(reg) size,
            // The GOT is written once, by the dynamic linker, before any of our code.
            options(nostack, nomem, preserves_flags, pure),
        );
    }
    (off, size)
}

/// The rseq area's offset from the thread pointer, when the C library has one.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn area_offset() -> Option<isize> {
    let (off, _) = rseq_symbols();
    // SAFETY: a non-null GOT entry is the address of glibc's `__rseq_offset`, set
    // before any user code runs and never changed.
    (!off.is_null()).then(|| unsafe { *off })
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
    {
        let (off, size) = rseq_symbols();
        // SAFETY: non-null GOT entries are the addresses of glibc's variables, set
        // before any user code runs.
        !off.is_null() && !size.is_null() && unsafe { *size } > 0
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
    area_offset().unwrap_or(0)
}

/// Whether the kernel keeps the calling thread's rseq `cpu_id` (glibc registered an
/// area and the registration took: under valgrind, for one, it does not).
pub fn rseq_cpu_valid() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if let (true, Some(off)) = (rseq_registered(), area_offset()) {
        // SAFETY: as in `current`.
        let cpu = unsafe {
            let area = thread_pointer().offset(off);
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
    if let Some(off) = area_offset() {
        // SAFETY: glibc keeps a `struct rseq` at `tp + __rseq_offset` for every thread
        // (initialised with a negative cpu_id when unregistered); `cpu_id` is the u32 at
        // offset 4, written by the kernel on every return to user space.
        let cpu = unsafe {
            let area = thread_pointer().offset(off);
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

/// CPUs configured in the system (`sysconf(_SC_NPROCESSORS_CONF)`, at least 1), when
/// /sys does not list the possible ones.
pub fn configured() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    n.max(1) as usize
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

/// Asks the CPU to bring the cache line holding `p` into its caches ahead of use
/// (a hint: it never faults, whatever `p` is, and does nothing where the architecture
/// has no such instruction here).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults, even on an unmapped address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint that never faults, even on an unmapped address.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}
