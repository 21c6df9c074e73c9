//! Restartable sequences (rseq): per-CPU read-modify-writes that commit with one plain
//! store. The kernel restarts a sequence that is preempted, migrated or interrupted by
//! a signal before its commit, so the operation is atomic with respect to every other
//! thread that touches the same CPU's word the same way — without a lock prefix.
//!
//! They run on the rseq area glibc (2.35 and later) registers for every thread. Each
//! sequence stores its descriptor (`struct rseq_cs`) in the area's `rseq_cs` field,
//! reads `cpu_id`, addresses that CPU's word and commits; the abort handler, preceded
//! by glibc's signature as the kernel demands, starts over. The area is found through
//! `sys::cpu`, which holds the crate's one (weak) reference to glibc's `__rseq_offset`.
//! Only x86_64 has them here; elsewhere [`available`] is false and callers use
//! atomics.

/// Whether restartable sequences can run in this process (x86_64, and glibc registered
/// an rseq area for its threads). Fixed for the life of the process.
#[inline]
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && super::cpu::rseq_registered()
}

/// Adds `amount` to the `i64` at `base + cpu * stride`, where `cpu` is the CPU the
/// calling thread runs on, as one restartable sequence. Returns the new value, or
/// `None` (nothing done) when rseq is not [`available`], the thread has no rseq area,
/// or its CPU is not below `nr_cpus`.
///
/// # Safety
/// For every `cpu < nr_cpus`, `base + cpu * stride` is a valid, 8-byte aligned `i64`
/// that other threads write only through the functions of this module (plain stores
/// from elsewhere may be lost against a concurrent sequence).
#[inline(always)]
pub unsafe fn percpu_add(
    base: *mut i64,
    stride: usize,
    nr_cpus: usize,
    amount: i64,
) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !available() {
            return None;
        }
        let new: i64;
        let done: u64;
        // Labels: 2 the descriptor, 3..4 the sequence (commit is the store before 4),
        // 5 the abort handler, 6 where an abort restarts (re-arming the descriptor),
        // 7 the way out without a commit, 8 the end.
        // SAFETY: `available` holds, so `rseq_offset` locates this thread's registered
        // area, whose `rseq_cs` field is ours to arm; the one word written is
        // `base + cpu * stride` for a `cpu < nr_cpus`, a valid, aligned `i64` that other
        // threads write only through sequences (the caller's contract).
        unsafe {
            core::arch::asm!(
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "2:",
                ".long 0, 0",
                ".quad 3f, (4f - 3f), 5f",
                ".popsection",
                "6:",
                "lea {tmp}, [rip + 2b]",
                "mov qword ptr fs:[{area} + 8], {tmp}",
                "3:",
                "mov {cpu:e}, dword ptr fs:[{area} + 4]",
                "cmp {cpu}, {nr}",
                "jae 7f",
                "imul {cpu}, {stride}",
                "mov {new}, qword ptr [{base} + {cpu}]",
                "add {new}, {amount}",
                "mov qword ptr [{base} + {cpu}], {new}",
                "4:",
                "mov {done:e}, 1",
                "jmp 8f",
                "7:",
                "xor {done:e}, {done:e}",
                "8:",
                ".pushsection __rseq_failure, \"ax\"",
                // ud1 carrying the signature glibc registered (RSEQ_SIG), right before the
                // abort handler, where the kernel checks it.
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "5:",
                "jmp 6b",
                ".popsection",
                area = in(reg) super::cpu::rseq_offset(),
                base = in(reg) base,
                stride = in(reg) stride,
                nr = in(reg) nr_cpus,
                amount = in(reg) amount,
                tmp = out(reg) _,
                cpu = out(reg) _,
                new = out(reg) new,
                done = out(reg) done,
                options(nostack),
            );
        }
        (done != 0).then_some(new)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (base, stride, nr_cpus, amount);
        None
    }
}

/// Replaces the `i64` at `base + cpu * stride` for the calling thread's CPU with
/// `value`, as one restartable sequence, and returns the old value; `None` (nothing
/// done) as for [`percpu_add`].
///
/// # Safety
/// As for [`percpu_add`].
#[inline]
pub unsafe fn percpu_xchg(
    base: *mut i64,
    stride: usize,
    nr_cpus: usize,
    value: i64,
) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !available() {
            return None;
        }
        let old: i64;
        let done: u64;
        // Labels as in `percpu_add`.
        // SAFETY: as in `percpu_add`, under the same contract.
        unsafe {
            core::arch::asm!(
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "2:",
                ".long 0, 0",
                ".quad 3f, (4f - 3f), 5f",
                ".popsection",
                "6:",
                "lea {tmp}, [rip + 2b]",
                "mov qword ptr fs:[{area} + 8], {tmp}",
                "3:",
                "mov {cpu:e}, dword ptr fs:[{area} + 4]",
                "cmp {cpu}, {nr}",
                "jae 7f",
                "imul {cpu}, {stride}",
                "mov {old}, qword ptr [{base} + {cpu}]",
                "mov qword ptr [{base} + {cpu}], {value}",
                "4:",
                "mov {done:e}, 1",
                "jmp 8f",
                "7:",
                "xor {done:e}, {done:e}",
                "8:",
                ".pushsection __rseq_failure, \"ax\"",
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "5:",
                "jmp 6b",
                ".popsection",
                area = in(reg) super::cpu::rseq_offset(),
                base = in(reg) base,
                stride = in(reg) stride,
                nr = in(reg) nr_cpus,
                value = in(reg) value,
                tmp = out(reg) _,
                cpu = out(reg) _,
                old = out(reg) old,
                done = out(reg) done,
                options(nostack),
            );
        }
        (done != 0).then_some(old)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (base, stride, nr_cpus, value);
        None
    }
}

/// Field offsets of a per-CPU stack as [`stack_pop`] and [`stack_push`] address it:
/// a `u32` that is non-zero while someone has the stack stopped (a lock taken from
/// outside any sequence), the `u32` count of entries, the `u32` limit, a `u32` set on
/// every pop ("touched"), and the pointer to the entry array.
pub mod stack {
    /// The stop word: sequences leave a stack alone while it is non-zero.
    pub const LOCK: usize = 0;
    /// Entries on the stack (`u32`).
    pub const COUNT: usize = 4;
    /// Most entries (`u32`).
    pub const LIMIT: usize = 8;
    /// Set to 1 by every pop (`u32`).
    pub const TOUCHED: usize = 16;
    /// The entry array (`*mut *mut u8`).
    pub const ENTRY: usize = 24;

    /// Whether a structure's fields sit at these offsets, for a compile-time check:
    /// the stop word, count, limit, touched word and entry pointer, in that order.
    pub const fn laid_out(offsets: [usize; 5]) -> bool {
        offsets[0] == LOCK
            && offsets[1] == COUNT
            && offsets[2] == LIMIT
            && offsets[3] == TOUCHED
            && offsets[4] == ENTRY
    }
}

// The stack sequences' parameters, read inside the sequences with rip-relative loads
// of a hidden symbol of our own: no GOT entry to chase (a static of this crate reached
// from the program's code goes through the GOT in a position-independent executable),
// and it works the same in the LD_PRELOAD library. Word 0: the rseq area's offset
// from the thread pointer; word 1: the CPU bound, 0 while the stack sequences are off;
// word 2: the hold bits ([`HOLD_POP`], [`HOLD_PUSH`], [`HOLD_OFF`]), which start with
// `HOLD_OFF` set.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .data.cpuslab_rseq_stack,\"aw\",@progbits",
    ".balign 64",
    ".globl cpuslab_rseq_stack",
    ".hidden cpuslab_rseq_stack",
    ".type cpuslab_rseq_stack, @object",
    ".size cpuslab_rseq_stack, 24",
    "cpuslab_rseq_stack:",
    ".quad 0, 0, 4",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    static mut cpuslab_rseq_stack: [usize; 3];
}

/// Hold bit: the callers' inline pop fast paths step aside for their full paths (a
/// placement policy wants to see every allocation).
pub const HOLD_POP: usize = 1;
/// Hold bit: the callers' inline push fast paths step aside (frees may belong to
/// another node).
pub const HOLD_PUSH: usize = 2;

/// Hold bit: the stack sequences are off (set until [`enable_stacks`]). Their area
/// offset is meaningless then: a sequence would write its descriptor into the thread
/// control block, so nothing may run one while this bit is set.
pub const HOLD_OFF: usize = 4;

/// Hold bit: the stack sequences were retired ([`retire_stacks`]): the kernel stopped
/// letting other threads restart them. The area offset stays valid and the CPU bound
/// is 0, so a sequence that still runs fails before its commit.
pub const HOLD_GONE: usize = 8;

/// The hold bits under which callers must use their locked paths instead of the
/// stack sequences: not enabled yet, or retired.
pub const HOLD_STOPPED: usize = HOLD_OFF | HOLD_GONE;

/// Sets hold bits (never cleared, but for [`HOLD_OFF`] by [`enable_stacks`]: the
/// conditions they stand for last).
pub fn hold(bits: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: word 2 of the block, an aligned usize only ever accessed atomically
    // (plain loads of an aligned word are atomic on x86_64).
    unsafe {
        let w = core::ptr::addr_of_mut!(cpuslab_rseq_stack)
            .cast::<usize>()
            .add(2);
        core::sync::atomic::AtomicUsize::from_ptr(w)
            .fetch_or(bits, core::sync::atomic::Ordering::Release);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bits;
}

/// The hold bits in force (a rip-relative load).
#[inline(always)]
pub fn held() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let v: usize;
        // SAFETY: reads word 2 of the block defined above.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + cpuslab_rseq_stack + 16]",
                v = out(reg) v,
                options(nostack, readonly, preserves_flags)
            );
        }
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        HOLD_POP | HOLD_PUSH | HOLD_OFF
    }
}

/// Turns the stack sequences ([`stack_pop`], [`stack_push`]) on for CPUs below
/// `nr_cpus`. Until then (and where rseq is not [`available`]) they do nothing and
/// fail. Called once, at boot, before any stack is used.
pub fn enable_stacks(nr_cpus: usize) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: boot runs on one thread, before any sequence reads the block; the
        // offset is written before the bound that lets sequences run.
        unsafe {
            let w = core::ptr::addr_of_mut!(cpuslab_rseq_stack).cast::<usize>();
            core::ptr::write_volatile(w, super::cpu::rseq_offset() as usize);
            core::ptr::write_volatile(w.add(1), nr_cpus);
            core::sync::atomic::AtomicUsize::from_ptr(w.add(2))
                .fetch_and(!HOLD_OFF, core::sync::atomic::Ordering::Release);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = nr_cpus;
}

/// [`retire_stacks`]: not started, running, done.
#[cfg(target_arch = "x86_64")]
static RETIRING: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Turns the stack sequences off for good while they run, for when the kernel stops
/// restarting them on request (`membarrier` denied by a seccomp filter installed after
/// boot, or in a forked child). When it returns, no sequence that could commit is in
/// flight on any CPU and [`held`] shows [`HOLD_GONE`]: callers use their locked paths,
/// whose locks the sequences' stop words already are.
///
/// First the CPU bound drops to 0, so a sequence that starts (or restarts) from now on
/// fails before its commit. One that already passed the bound check commits within a
/// few instructions unless it is preempted, which restarts it; the calling thread
/// therefore runs once on every CPU it may use (`sched_setaffinity` to that CPU alone
/// returns there, after whatever ran there was switched out), then gets its mask back.
/// A CPU the thread may not use runs none of the process's threads in a cpuset, and is
/// skipped. If the kernel refuses affinity changes altogether, it sleeps 20 ms
/// instead: a sequence runs for nanoseconds. `single_thread` (a forked child) needs
/// neither. Concurrent callers wait for the first, which says so in one line on
/// stderr.
pub fn retire_stacks(single_thread: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::sync::atomic::Ordering;
        if held() & HOLD_STOPPED != 0 {
            return;
        }
        if RETIRING
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            while RETIRING.load(Ordering::Acquire) != 2 {
                super::futex::yield_now();
            }
            return;
        }
        // SAFETY: word 1 of the block, an aligned usize (see `hold`).
        let bound = unsafe {
            core::sync::atomic::AtomicUsize::from_ptr(
                core::ptr::addr_of_mut!(cpuslab_rseq_stack)
                    .cast::<usize>()
                    .add(1),
            )
        };
        let nr_cpus = bound.swap(0, Ordering::SeqCst);
        if !single_thread && !super::affinity::visit_each_cpu(nr_cpus) {
            super::time::sleep_ms(20);
        }
        hold(HOLD_GONE);
        RETIRING.store(2, Ordering::Release);
        super::io::warn(format_args!(
            "membarrier(2) was refused after start; per-CPU caches use the tried lock"
        ));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = single_thread;
}

/// Bytes between two CPUs' copies of a stack: the percpu unit size, a shift in the
/// sequences.
pub const STACK_STRIDE: usize = 1 << STACK_SHIFT;
const STACK_SHIFT: usize = 16;

/// Pops the top entry of the calling CPU's stack (`base + cpu * STACK_STRIDE`, laid
/// out as in [`stack`]) as one restartable sequence: check the stop word, read the
/// count and the entry, mark the stack touched, and commit by storing the count less
/// one. Null when nothing was popped: the stack is empty or stopped, or the CPU is at
/// or past the bound (the callers' slow paths sort these out).
///
/// # Safety
/// [`enable_stacks`] ran ([`held`] has no [`HOLD_OFF`]). For every CPU below the bound
/// it was given, `base + cpu * STACK_STRIDE` is such a stack whose entries are not
/// null, and other threads change it only through these sequences or after setting
/// its stop word and making sure no sequence that missed it is still in flight on its
/// CPU (`membarrier::rseq_fence`).
#[inline(always)]
pub unsafe fn stack_pop(base: *mut u8) -> *mut u8 {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    #[cfg(target_arch = "x86_64")]
    {
        let ret: usize;
        // Labels as in `percpu_add`. The answer's register is cleared first and holds
        // the entry only from the load just before the commit: every way out but the
        // commit leaves it null, and an abort restarts at 6, which clears it again.
        // SAFETY: `enable_stacks` ran (the caller's contract), so word 0 is this thread's
        // rseq area offset; below the bound the address is one of the caller's stacks,
        // touched only by sequences while its stop word is clear: the entry read is
        // below the count, and only the count and the touched word are written.
        unsafe {
            core::arch::asm!(
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "2:",
                ".long 0, 0",
                ".quad 3f, (4f - 3f), 5f",
                ".popsection",
                "6:",
                "mov {area}, qword ptr [rip + cpuslab_rseq_stack]",
                "lea {tmp}, [rip + 2b]",
                "mov qword ptr fs:[{area} + 8], {tmp}",
                "xor {ret:e}, {ret:e}",
                "3:",
                "mov {ac:e}, dword ptr fs:[{area} + 4]",
                "cmp {ac}, qword ptr [rip + cpuslab_rseq_stack + 8]",
                "jae 4f",
                "shl {ac}, {shift}",
                "add {ac}, {base}",
                "cmp dword ptr [{ac} + {lock}], 0",
                "jne 4f",
                "mov {cnt:e}, dword ptr [{ac} + {count}]",
                "test {cnt:e}, {cnt:e}",
                "jz 4f",
                "mov {tmp}, qword ptr [{ac} + {entry}]",
                "mov {ret}, qword ptr [{tmp} + {cnt} * 8 - 8]",
                "mov dword ptr [{ac} + {touched}], 1",
                "dec {cnt:e}",
                "mov dword ptr [{ac} + {count}], {cnt:e}",
                "4:",
                ".pushsection __rseq_failure, \"ax\"",
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "5:",
                "jmp 6b",
                ".popsection",
                base = in(reg) base,
                area = out(reg) _,
                tmp = out(reg) _,
                ac = out(reg) _,
                cnt = out(reg) _,
                ret = out(reg) ret,
                shift = const STACK_SHIFT,
                lock = const stack::LOCK,
                count = const stack::COUNT,
                touched = const stack::TOUCHED,
                entry = const stack::ENTRY,
                options(nostack),
            );
        }
        ret as *mut u8
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = base;
        core::ptr::null_mut()
    }
}

/// Pushes `obj` on the calling CPU's stack (see [`stack_pop`]) as one restartable
/// sequence: check the stop word and the limit, store the entry, and commit by storing
/// the count plus one. False when nothing was pushed: the stack is full or stopped, the
/// CPU is at or past the bound, or `obj` is already the top entry (a double free,
/// which the caller's slow path finds and reports).
///
/// # Safety
/// As for [`stack_pop`], and `obj` is not null.
#[inline(always)]
pub unsafe fn stack_push(base: *mut u8, obj: *mut u8) -> bool {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    #[cfg(target_arch = "x86_64")]
    {
        // Every way out but the commit jumps straight to the caller's failure path
        // (asm goto: no answer to set and test).
        // SAFETY: as in `stack_pop`; the entry written is at the count, below the limit
        // the entry array holds, and `obj` is not null (the caller's contract).
        unsafe {
            core::arch::asm!(
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "2:",
                ".long 0, 0",
                ".quad 3f, (4f - 3f), 5f",
                ".popsection",
                "6:",
                "mov {area}, qword ptr [rip + cpuslab_rseq_stack]",
                "lea {tmp}, [rip + 2b]",
                "mov qword ptr fs:[{area} + 8], {tmp}",
                "3:",
                "mov {ac:e}, dword ptr fs:[{area} + 4]",
                "cmp {ac}, qword ptr [rip + cpuslab_rseq_stack + 8]",
                "jae {fail}",
                "shl {ac}, {shift}",
                "add {ac}, {base}",
                "cmp dword ptr [{ac} + {lock}], 0",
                "jne {fail}",
                "mov {cnt:e}, dword ptr [{ac} + {count}]",
                "cmp {cnt:e}, dword ptr [{ac} + {limit}]",
                "jae {fail}",
                "mov {tmp}, qword ptr [{ac} + {entry}]",
                // glibc tcache's check: the entry on top is the one pushed last; pushing
                // it again is a double free, left to the caller's slow path to report.
                "test {cnt:e}, {cnt:e}",
                "jz 7f",
                "cmp {obj}, qword ptr [{tmp} + {cnt} * 8 - 8]",
                "je {fail}",
                "7:",
                "mov qword ptr [{tmp} + {cnt} * 8], {obj}",
                "inc {cnt:e}",
                "mov dword ptr [{ac} + {count}], {cnt:e}",
                "4:",
                ".pushsection __rseq_failure, \"ax\"",
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "5:",
                "jmp 6b",
                ".popsection",
                base = in(reg) base,
                obj = in(reg) obj,
                area = out(reg) _,
                tmp = out(reg) _,
                ac = out(reg) _,
                cnt = out(reg) _,
                shift = const STACK_SHIFT,
                lock = const stack::LOCK,
                count = const stack::COUNT,
                limit = const stack::LIMIT,
                entry = const stack::ENTRY,
                fail = label {
                    return false;
                },
                options(nostack),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (base, obj);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads hammering four words through restartable sequences (with preemption and
    /// migration between the test's two CPUs) lose no add; an exchange moves a word
    /// out whole.
    #[test]
    fn sequences_lose_nothing() {
        if !available() {
            return;
        }
        const STRIDE: usize = 64;
        const NR: usize = 1024;
        let words: Vec<core::sync::atomic::AtomicI64> = (0..NR * STRIDE / 8)
            .map(|_| core::sync::atomic::AtomicI64::new(0))
            .collect();
        let base = words.as_ptr() as usize;
        let moved = core::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let moved = &moved;
                s.spawn(move || {
                    for i in 0..200_000 {
                        // SAFETY: NR words STRIDE bytes apart, touched only here.
                        unsafe {
                            let p = base as *mut i64;
                            assert!(percpu_add(p, STRIDE, NR, 3).is_some());
                            if (i + t) % 1000 == 0 {
                                let v = percpu_xchg(p, STRIDE, NR, 0).unwrap();
                                moved.fetch_add(v, core::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let left: i64 = words
            .iter()
            .step_by(STRIDE / 8)
            .map(|w| w.load(core::sync::atomic::Ordering::Relaxed))
            .sum();
        assert_eq!(left + moved.into_inner(), 4 * 200_000 * 3);
        // A CPU past `nr_cpus` is refused, not written.
        // SAFETY: with nr_cpus 0 nothing is addressed.
        assert_eq!(unsafe { percpu_add(core::ptr::null_mut(), 8, 0, 1) }, None);
    }
}
