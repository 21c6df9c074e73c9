//! The restartable sequences on x86_64: the inline assembly of each sequence (descriptor
//! in `__rseq_cs`, abort handler behind glibc's signature in `__rseq_failure`), the
//! parameter block the stack sequences read with rip-relative loads, and the accesses
//! to that block. Everything here assumes what its caller in the parent module checked
//! first ([`available`](super::available), or the stack sequences enabled), so this
//! module holds only what x86_64 does differently, as tcmalloc keeps one
//! `percpu_rseq_*.S` per architecture.

use super::{stack, HOLD_OFF, STACK_SHIFT};

/// Whether this architecture has the sequences (it does).
pub(super) const SEQUENCES: bool = true;

/// [`percpu_add`](super::percpu_add) once rseq is known to be available.
///
/// # Safety
/// [`available`](super::available) holds, and the contract of `percpu_add`.
#[inline(always)]
pub(super) unsafe fn percpu_add(
    base: *mut i64,
    stride: usize,
    nr_cpus: usize,
    amount: i64,
) -> Option<i64> {
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

/// [`percpu_xchg`](super::percpu_xchg) once rseq is known to be available.
///
/// # Safety
/// As for [`percpu_add`].
#[inline(always)]
pub(super) unsafe fn percpu_xchg(
    base: *mut i64,
    stride: usize,
    nr_cpus: usize,
    value: i64,
) -> Option<i64> {
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

// The stack sequences' parameters, read inside the sequences with rip-relative loads
// of a hidden symbol of our own: no GOT entry to chase (a static of this crate reached
// from the program's code goes through the GOT in a position-independent executable),
// and it works the same in the LD_PRELOAD library. Word 0: the rseq area's offset
// from the thread pointer; word 1: the CPU bound, 0 while the stack sequences are off;
// word 2: the hold bits ([`HOLD_POP`], [`HOLD_NODES`], [`HOLD_OFF`], ...), which start
// with `HOLD_OFF`, `HOLD_TABLES` and `HOLD_CXX` set.
core::arch::global_asm!(
    ".pushsection .data.cpuslab_rseq_stack,\"aw\",@progbits",
    ".balign 64",
    ".globl cpuslab_rseq_stack",
    ".hidden cpuslab_rseq_stack",
    ".type cpuslab_rseq_stack, @object",
    ".size cpuslab_rseq_stack, 24",
    "cpuslab_rseq_stack:",
    ".quad 0, 0, {held}",
    ".popsection",
    held = const super::HOLD_OFF | super::HOLD_TABLES | super::HOLD_CXX,
);

extern "C" {
    static mut cpuslab_rseq_stack: [usize; 3];
}

/// [`hold`](super::hold): sets bits in word 2 of the block.
#[inline(always)]
pub(super) fn hold(bits: usize) {
    // SAFETY: word 2 of the block, an aligned usize only ever accessed atomically
    // (plain loads of an aligned word are atomic on x86_64).
    unsafe {
        let w = core::ptr::addr_of_mut!(cpuslab_rseq_stack)
            .cast::<usize>()
            .add(2);
        core::sync::atomic::AtomicUsize::from_ptr(w)
            .fetch_or(bits, core::sync::atomic::Ordering::Release);
    }
}

/// [`release`](super::release): clears bits in word 2 of the block.
#[inline(always)]
pub(super) fn release(bits: usize) {
    // SAFETY: as in `hold`.
    unsafe {
        let w = core::ptr::addr_of_mut!(cpuslab_rseq_stack)
            .cast::<usize>()
            .add(2);
        core::sync::atomic::AtomicUsize::from_ptr(w)
            .fetch_and(!bits, core::sync::atomic::Ordering::Release);
    }
}

/// [`held`](super::held): word 2 of the block, a rip-relative load.
#[inline(always)]
pub(super) fn held() -> usize {
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

/// [`stack_cpu`](super::stack_cpu): the `cpu_id` of the calling thread's rseq area,
/// found by the offset in word 0 of the block: two loads, no call.
#[inline(always)]
pub(super) fn stack_cpu() -> usize {
    let cpu: u32;
    // SAFETY: word 0 of the block is this thread's rseq area offset once the stack
    // sequences are on (the caller's contract, as for the sequences); `cpu_id` is the
    // u32 at offset 4 of the area, which the kernel keeps for every thread.
    unsafe {
        core::arch::asm!(
            "mov {off}, qword ptr [rip + cpuslab_rseq_stack]",
            "mov {cpu:e}, dword ptr fs:[{off} + 4]",
            off = out(reg) _,
            cpu = out(reg) cpu,
            options(nostack, readonly, preserves_flags)
        );
    }
    cpu as usize
}

/// [`enable_stacks`](super::enable_stacks) once rseq is known to be available: writes
/// the area offset and the CPU bound into the block, then clears [`HOLD_OFF`].
#[inline(always)]
pub(super) fn enable_stacks(nr_cpus: usize) {
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

/// For [`retire_stacks`](super::retire_stacks): drops the CPU bound (word 1 of the
/// block) to 0, so that a sequence that starts (or restarts) from now on fails before
/// its commit, and returns the bound it had.
#[inline(always)]
pub(super) fn drop_bound() -> usize {
    // SAFETY: word 1 of the block, an aligned usize (see `hold`).
    let bound = unsafe {
        core::sync::atomic::AtomicUsize::from_ptr(
            core::ptr::addr_of_mut!(cpuslab_rseq_stack)
                .cast::<usize>()
                .add(1),
        )
    };
    bound.swap(0, core::sync::atomic::Ordering::SeqCst)
}

/// [`stack_pop`](super::stack_pop) as one sequence.
///
/// # Safety
/// As for `stack_pop`.
#[inline(always)]
pub(super) unsafe fn stack_pop(base: *mut u8) -> *mut u8 {
    let ret: usize;
    // Labels as in `percpu_add`. The answer's register is cleared first and holds
    // the entry only from the load just before the commit: every way out but the
    // commit leaves it null, and an abort restarts at 6, which clears it again.
    // SAFETY: `enable_stacks` ran (the caller's contract), so word 0 is this thread's
    // rseq area offset; below the bound the address is one of the caller's stacks,
    // touched only by sequences while its stop word is clear: the entry read is
    // below the count, and only the count is written.
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
            // The entry's address is formed first and then read through a base and a
            // displacement, not an index: `free` stores the entry at an address it
            // knows late (found through the page descriptor), and in a pair loop this
            // load waits for that store. Measured on this build's host (an Intel
            // Xeon), the indexed form made a C malloc(64)/free pair 7.2 ns and this
            // one 4.2; the core forwards the store early only to the simple form.
            // `stack_push` does the same.
            "mov {tmp}, qword ptr [{ac} + {entry}]",
            "lea {tmp}, [{tmp} + {cnt} * 8]",
            "mov {ret}, qword ptr [{tmp} - 8]",
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
            entry = const stack::ENTRY,
            options(nostack),
        );
    }
    ret as *mut u8
}

/// The push sequence of [`stack_push`], [`stack_push_nonempty`],
/// [`stack_push_deep`] and [`stack_push_deep_tested`], which differ in a test
/// of the CPU read before anything else (`$cpu`: none, or [`stack_push_deep_tested`]'s
/// owner test, with its operands in `$extra`), in what an empty stack does (`$empty`:
/// skip the double-free check, or go out to the caller's failure path unless the
/// stack's `INTO_EMPTY` word allows it, with the operand that needs passed in
/// `$extra`) and in how deep the double-free check looks (`$deep`: nothing more than
/// the top, or the entry below it too). Every way out but the commit jumps straight to
/// the failure path, which returns `$fail` (asm goto: no answer to set and test).
macro_rules! push_sequence {
    ($base:expr, $obj:expr, $fail:expr, [$($cpu:literal),*], [$($empty:literal),*], [$($deep:literal),*], $($extra:tt)*) => {
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
            $($cpu,)*
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
            "lea {tmp}, [{tmp} + {cnt} * 8]",
            // glibc tcache's check: the entry on top is the one pushed last; pushing
            // it again is a double free, left to the caller's slow path to report.
            // `$deep` looks at the entry below too.
            "test {cnt:e}, {cnt:e}",
            $($empty,)*
            "cmp {obj}, qword ptr [{tmp} - 8]",
            "je {fail}",
            $($deep,)*
            "7:",
            "mov qword ptr [{tmp}], {obj}",
            "inc {cnt:e}",
            "mov dword ptr [{ac} + {count}], {cnt:e}",
            "4:",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "5:",
            "jmp 6b",
            ".popsection",
            base = in(reg) $base,
            obj = in(reg) $obj,
            area = out(reg) _,
            tmp = out(reg) _,
            ac = out(reg) _,
            cnt = out(reg) _,
            shift = const STACK_SHIFT,
            lock = const stack::LOCK,
            count = const stack::COUNT,
            limit = const stack::LIMIT,
            entry = const stack::ENTRY,
            $($extra)*
            fail = label {
                return $fail;
            },
            options(nostack),
        )
    };
}

/// [`push_sequence`] onto a stack that holds entries ([`stack_push_nonempty`]'s
/// empty case: out to the failure path unless the stack's `INTO_EMPTY` word is set),
/// with the double-free check `$deep` looks further with.
macro_rules! nonempty_push_sequence {
    ($base:expr, $obj:expr, $fail:expr, [$($cpu:literal),*], [$($deep:literal),*] $(, $($extra:tt)*)?) => {
        push_sequence!(
            $base,
            $obj,
            $fail,
            [$($cpu),*],
            [
                "jnz 8f",
                "cmp dword ptr [{ac} + {into_empty}], 0",
                "je {fail}",
                "jmp 7f",
                "8:"
            ],
            [$($deep),*],
            into_empty = const stack::INTO_EMPTY,
            $($($extra)*)?
        )
    };
}

/// [`stack_push`](super::stack_push) as one sequence.
///
/// # Safety
/// As for `stack_push`.
#[inline(always)]
pub(super) unsafe fn stack_push(base: *mut u8, obj: *mut u8) -> bool {
    // SAFETY: as in `stack_pop`; the entry written is at the count, below the limit
    // the entry array holds, and `obj` is not null (the caller's contract).
    unsafe { push_sequence!(base, obj, false, [], ["jz 7f"], [],) };
    true
}

/// [`stack_push_nonempty`](super::stack_push_nonempty) as one sequence: the same
/// instructions, an empty stack taking the failure path unless its `INTO_EMPTY` word
/// is set (a test and a jump more, on that branch only).
///
/// # Safety
/// As for `stack_push`.
#[inline(always)]
pub(super) unsafe fn stack_push_nonempty(base: *mut u8, obj: *mut u8) -> bool {
    // SAFETY: as in `stack_push`.
    unsafe { nonempty_push_sequence!(base, obj, false, [], []) };
    true
}

/// [`stack_push_deep`](super::stack_push_deep) as one sequence: the instructions of
/// [`stack_push_nonempty`], and with more than one entry a compare with the entry
/// below the top (with one, below it may lie an unmapped page).
///
/// # Safety
/// As for `stack_push`.
#[inline(always)]
pub(super) unsafe fn stack_push_deep(base: *mut u8, obj: *mut u8) -> bool {
    // SAFETY: as in `stack_push`; the entry below the top is read only when the count
    // is 2 or more, inside the array.
    unsafe {
        nonempty_push_sequence!(
            base,
            obj,
            false,
            [],
            [
                "cmp {cnt:e}, 1",
                "je 7f",
                "cmp {obj}, qword ptr [{tmp} - 16]",
                "je {fail}"
            ]
        )
    };
    true
}

/// [`stack_push_deep_tested`](super::stack_push_deep_tested) as one sequence: the
/// owner test on the CPU number the sequence reads (a copy, an exclusive or and a test
/// with the pair's two words), then [`stack_push_deep`]'s instructions.
///
/// # Safety
/// As for `stack_push_deep_tested`.
#[inline(always)]
pub(super) unsafe fn stack_push_deep_tested(
    base: *mut u8,
    obj: *mut u8,
    test: *const u32,
) -> super::Pushed {
    // SAFETY: as in `stack_push_deep`; `test` points to two readable words (the
    // contract), read inside the sequence, which writes nothing before its commit.
    unsafe {
        nonempty_push_sequence!(
            base,
            obj,
            super::Pushed::No,
            [
                "mov {tmp:e}, {ac:e}",
                "xor {tmp:e}, dword ptr [{test}]",
                "test {tmp:e}, dword ptr [{test} + 4]",
                "jne {other}"
            ],
            [
                "cmp {cnt:e}, 1",
                "je 7f",
                "cmp {obj}, qword ptr [{tmp} - 16]",
                "je {fail}"
            ],
            test = in(reg) test,
            other = label {
                return super::Pushed::OtherCpu;
            },
        )
    };
    super::Pushed::Yes
}

/// [`stack_push_many`](super::stack_push_many) as one sequence.
///
/// # Safety
/// As for `stack_push_many`.
#[inline(always)]
pub(super) unsafe fn stack_push_many(base: *mut u8, objs: *const *mut u8, n: usize) -> bool {
    // Labels as in `stack_pop`. The copy runs inside the sequence: an abort anywhere
    // in it restarts at 6, which checks the stack again and copies again; only the
    // count, stored last, commits. `area` is free once the CPU number is read, and
    // carries the entries across.
    // SAFETY: as in `stack_pop`; the `n` entries written start at the count and end
    // at most at the limit, which the entry array holds, and come from the caller's
    // `n` readable entries (the contract).
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
            "lea {tmp}, [{cnt} + {n}]",
            "mov {idx:e}, dword ptr [{ac} + {limit}]",
            "cmp {tmp}, {idx}",
            "ja {fail}",
            "mov {tmp}, qword ptr [{ac} + {entry}]",
            "lea {tmp}, [{tmp} + {cnt} * 8]",
            "xor {idx:e}, {idx:e}",
            "7:",
            "mov {area}, qword ptr [{objs} + {idx} * 8]",
            "mov qword ptr [{tmp} + {idx} * 8], {area}",
            "inc {idx}",
            "cmp {idx}, {n}",
            "jb 7b",
            "add {cnt:e}, {n:e}",
            "mov dword ptr [{ac} + {count}], {cnt:e}",
            "4:",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "5:",
            "jmp 6b",
            ".popsection",
            base = in(reg) base,
            objs = in(reg) objs,
            n = in(reg) n,
            area = out(reg) _,
            tmp = out(reg) _,
            ac = out(reg) _,
            cnt = out(reg) _,
            idx = out(reg) _,
            shift = const STACK_SHIFT,
            lock = const stack::LOCK,
            count = const stack::COUNT,
            limit = const stack::LIMIT,
            entry = const stack::ENTRY,
            fail = label {
                return false;
            },
            options(nostack),
        )
    };
    true
}
