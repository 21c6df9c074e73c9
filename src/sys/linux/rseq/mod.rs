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
//!
//! This module is the architecture-independent part: the interface, the stack layout,
//! the hold bits, and the logic around the sequences (when they may run, turning them
//! on and retiring them). What each architecture does differently lives in a module of
//! its own, as tcmalloc keeps one `percpu_rseq_*.S` per architecture: `x86_64` (the
//! sequences in inline assembly and the parameter block they read), and `generic` for
//! every other architecture (no sequences: they fail, and the stack sequences stay
//! held and off). No function here tests the architecture.

use super::cpu;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

#[cfg(not(target_arch = "x86_64"))]
mod generic;
#[cfg(not(target_arch = "x86_64"))]
use generic as arch;

/// Whether restartable sequences can run in this process (x86_64, and glibc registered
/// an rseq area for its threads). Fixed for the life of the process.
#[inline]
pub fn available() -> bool {
    arch::SEQUENCES && cpu::rseq_registered()
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
    if !available() {
        return None;
    }
    // SAFETY: `available` holds, and the caller's contract is the sequence's.
    unsafe { arch::percpu_add(base, stride, nr_cpus, amount) }
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
    if !available() {
        return None;
    }
    // SAFETY: `available` holds, and the caller's contract is the sequence's.
    unsafe { arch::percpu_xchg(base, stride, nr_cpus, value) }
}

pub use crate::sys::rseq_abi::*;

/// Sets hold bits (never cleared, but for [`HOLD_OFF`] by [`enable_stacks`]: the
/// conditions they stand for last).
pub fn hold(bits: usize) {
    arch::hold(bits);
}

/// Clears hold bits that were set from the start for a condition that has ended
/// ([`HOLD_TABLES`], [`HOLD_CXX`]).
pub fn release(bits: usize) {
    arch::release(bits);
}

/// The hold bits in force (on x86_64 a rip-relative load; elsewhere always
/// [`HOLD_POP`] and [`HOLD_OFF`]).
#[inline(always)]
pub fn held() -> usize {
    arch::held()
}

/// The CPU the calling thread runs on, read from its rseq area the way the stack
/// sequences read it: for a fast path that has seen the sequences on ([`held`]
/// without [`HOLD_STOPPED`]) and decides something per CPU before its sequence. A
/// hint: the thread may move before the sequence runs. Meaningless while the
/// sequences are off.
#[inline(always)]
pub fn stack_cpu() -> usize {
    arch::stack_cpu()
}

/// Turns the stack sequences ([`stack_pop`], [`stack_push`]) on for CPUs below
/// `nr_cpus`. Until then (and where rseq is not [`available`]) they do nothing and
/// fail. Called once, at boot, before any stack is used.
pub fn enable_stacks(nr_cpus: usize) {
    if available() {
        arch::enable_stacks(nr_cpus);
    }
}

/// [`retire_stacks`]: not started, running, done.
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
    let nr_cpus = arch::drop_bound();
    // Not by running on every CPU in the program's own sandbox, which may kill it for
    // sched_setaffinity(2) (see `membarrier`).
    if !single_thread
        && (super::process::sandboxed_since_boot() || !super::affinity::visit_each_cpu(nr_cpus))
    {
        super::time::sleep_ms(20);
    }
    hold(HOLD_GONE);
    RETIRING.store(2, Ordering::Release);
    if super::process::sandboxed_since_boot() {
        crate::sys::io::warn(format_args!(
            "a seccomp filter installed after start may forbid membarrier(2); per-CPU caches use the tried lock"
        ));
    } else {
        crate::sys::io::warn(format_args!(
            "membarrier(2) was refused after start; per-CPU caches use the tried lock"
        ));
    }
}

/// Bytes between two CPUs' copies of a stack: the percpu unit size, a shift in the
/// sequences.
pub const STACK_STRIDE: usize = 1 << STACK_SHIFT;
const STACK_SHIFT: usize = 16;

/// Pops the top entry of the calling CPU's stack (`base + cpu * STACK_STRIDE`, laid
/// out as in [`stack`]) as one restartable sequence: check the stop word, read the
/// count and the entry, and commit by storing the count less one (the one store).
/// Null when nothing was popped: the stack is empty or stopped, or the CPU is at
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
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_pop(base) }
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
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_push(base, obj) }
}

/// [`stack_push`] onto a stack that holds entries: the same sequence, also false when
/// the stack is empty, unless its `stack::INTO_EMPTY` word is set. The slab layer's
/// frees use it, so that a free of a small object into an empty array cache, likely of
/// an object another CPU allocated, takes the slow path (which keeps it under a batch
/// of the CPU's own: see `RawCache::free_into_empty`); caches of objects of a cache
/// line or more set the word, since sharing a line is no concern of theirs.
///
/// # Safety
/// As for [`stack_push`].
#[inline(always)]
pub unsafe fn stack_push_nonempty(base: *mut u8, obj: *mut u8) -> bool {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_push_nonempty(base, obj) }
}

/// [`stack_push_nonempty`] that also turns away `obj` when it is the entry below the
/// top: a free of one of the last two objects freed (`free(a); free(b); free(a)`, which
/// glibc's tcache key catches). The C interface's free uses it; Rust's sized `dealloc`,
/// which safe code cannot call twice for one block, keeps the shorter sequence (4
/// instructions fewer: the 64 B pair's loop measured 3-10% slower with them).
///
/// # Safety
/// As for [`stack_push`].
#[inline(always)]
pub unsafe fn stack_push_deep(base: *mut u8, obj: *mut u8) -> bool {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_push_deep(base, obj) }
}

/// What [`stack_push_deep_tested`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The entry is on the stack.
    Yes,
    /// Nothing pushed, as [`stack_push_deep`] answers false.
    No,
    /// Nothing pushed: the CPU the sequence ran on failed the caller's test.
    OtherCpu,
}

/// [`stack_push_deep`] that first tests the CPU it runs on, as the sequence reads it:
/// with `test` pointing to two words `[value, mask]`, a CPU `cpu` for which
/// `(cpu ^ value) & mask != 0` pushes nothing and answers [`Pushed::OtherCpu`]. The C
/// free's owner test (the objects of one CPU's slabs go home): in the sequence, it
/// reads no CPU number of its own and tests the CPU that the push then uses. A thread
/// without rseq registration reads `u32::MAX`, which fails the test or the CPU bound.
///
/// # Safety
/// As for [`stack_push`], and `test` points to two readable `u32`s.
#[inline(always)]
pub unsafe fn stack_push_deep_tested(base: *mut u8, obj: *mut u8, test: *const u32) -> Pushed {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_push_deep_tested(base, obj, test) }
}

/// Pushes the `n` entries at `objs` on the calling CPU's stack (see [`stack_pop`]),
/// `objs[n - 1]` on top, as one restartable sequence: check the stop word and that
/// all `n` fit below the limit, copy them, and commit by storing the count plus `n`.
/// False when nothing was pushed: they do not all fit, the stack is stopped, or the
/// CPU is at or past the bound. A refill pushes its batch with it, one sequence
/// instead of one for each object.
///
/// # Safety
/// As for [`stack_pop`]; `objs` points to `n` readable entries, none of them null.
#[inline(always)]
pub unsafe fn stack_push_many(base: *mut u8, objs: *const *mut u8, n: usize) -> bool {
    debug_assert!(held() & HOLD_OFF == 0, "stack sequence while they are off");
    // The sequence copies at least one entry.
    if n == 0 {
        return true;
    }
    // SAFETY: the caller's contract is the sequence's.
    unsafe { arch::stack_push_many(base, objs, n) }
}

/// Pushes the entries of `objs` on the calling CPU's stack, `objs[0]` first: all of
/// them in one sequence ([`stack_push_many`]) where they fit, else one sequence each
/// ([`stack_push`]) until one is refused. Returns how many were pushed, a prefix of
/// `objs`; the caller keeps the rest. The refills of the slab caches and the page
/// lists push their batches with it.
///
/// # Safety
/// As for [`stack_push_many`], for every entry of `objs`.
#[inline]
pub unsafe fn stack_push_all(base: *mut u8, objs: &[*mut u8]) -> usize {
    // SAFETY: the caller's contract, for all of `objs`.
    if unsafe { stack_push_many(base, objs.as_ptr(), objs.len()) } {
        return objs.len();
    }
    // SAFETY: as above, one entry at a time.
    objs.iter()
        .take_while(|&&o| unsafe { stack_push(base, o) })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zeroed area of one stack header per possible CPU at its stride (kept alive by
    /// the caller with the area returned), and the first header: CPU `c`'s stack has
    /// limit `per` and the entries `entries[c * per..][..per]`.
    fn stack_headers(entries: &mut [*mut u8], per: usize) -> (Vec<u8>, *mut u8) {
        let nr = crate::topology::nr_cpu_ids();
        assert!(entries.len() >= nr * per);
        let mut area = vec![0u8; nr * STACK_STRIDE + 64];
        let base = area
            .as_mut_ptr()
            .wrapping_add(area.as_ptr().align_offset(64));
        for cpu in 0..nr {
            let h = base.wrapping_add(cpu * STACK_STRIDE);
            // SAFETY: inside `area`, aligned to 64; nothing else uses it yet, and the
            // entry pointer stays within `entries`.
            unsafe {
                h.add(stack::LIMIT).cast::<u32>().write(per as u32);
                h.add(stack::ENTRY)
                    .cast::<*mut *mut u8>()
                    .write(entries.as_mut_ptr().add(cpu * per));
            }
        }
        (area, base)
    }

    /// CPU `cpu`'s stack count in an area from [`stack_headers`].
    fn count_at(base: *mut u8, cpu: usize) -> u32 {
        // SAFETY: the count of a header inside the caller's area (`stack_headers`),
        // written only by the calling test's thread (its sequences and resets).
        unsafe {
            core::ptr::read_volatile(base.add(cpu * STACK_STRIDE + stack::COUNT).cast::<u32>())
        }
    }

    /// Sets every CPU's stack count in an area from [`stack_headers`] to `n`.
    fn set_counts(base: *mut u8, n: u32) {
        for cpu in 0..crate::topology::nr_cpu_ids() {
            // SAFETY: as in `count_at`.
            unsafe {
                base.add(cpu * STACK_STRIDE + stack::COUNT)
                    .cast::<u32>()
                    .write_volatile(n)
            };
        }
    }

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

    /// The push that tests its CPU first: the CPU as the sequence reads it passes the
    /// test `[value, mask]` when `(cpu ^ value) & mask == 0` and the entry is pushed
    /// (no mask, or the CPU's own index); any other value answers `OtherCpu` and
    /// leaves the stack as it was; a passing push still turns away the entry on top
    /// or the one below it (a double free) with `No`.
    #[test]
    fn a_tested_push_goes_only_to_the_cpu_that_passes() {
        if !crate::init::ensure() || held() & (HOLD_OFF | HOLD_STOPPED) != 0 {
            eprintln!("the stack sequences are off here; skipped");
            return;
        }
        let nr = crate::topology::nr_cpu_ids();
        let mut entries = vec![core::ptr::null_mut::<u8>(); nr * 8];
        // Every stack holds one entry, so that the pushes below are not into an empty
        // stack (which `INTO_EMPTY`, 0 here, refuses).
        for c in 0..nr {
            entries[c * 8] = 8 as *mut u8;
        }
        let (_area, base) = stack_headers(&mut entries, 8);
        set_counts(base, 1);
        let count = |c: usize| count_at(base, c);
        let (a, b) = (16 as *mut u8, 24 as *mut u8);
        let mut decided = false;
        for _ in 0..1000 {
            let cpu = crate::sys::cpu::current();
            let before = count(cpu);
            let other = [cpu as u32 + 1, 0xffff];
            // SAFETY: `base` strides over `nr` headers whose entry arrays hold 8, used
            // by this thread only; the tests are two words each.
            let refused = unsafe { stack_push_deep_tested(base, a, other.as_ptr()) };
            let after_refused = count(cpu);
            let own = [cpu as u32, 0xffff];
            // SAFETY: as above.
            let mine = unsafe { stack_push_deep_tested(base, a, own.as_ptr()) };
            let none = [12345, 0];
            // SAFETY: as above.
            let anyone = unsafe { stack_push_deep_tested(base, b, none.as_ptr()) };
            // SAFETY: as above: `a` lies below the top now, `b` on it.
            let again_below = unsafe { stack_push_deep_tested(base, a, own.as_ptr()) };
            // SAFETY: as above.
            let again_top = unsafe { stack_push_deep_tested(base, b, own.as_ptr()) };
            let after = count(cpu);
            // SAFETY: as above; the two entries pushed come back off.
            let back = unsafe { [stack_pop(base), stack_pop(base)] };
            if crate::sys::cpu::current() != cpu || count(cpu) != before {
                set_counts(base, 1);
                continue;
            }
            assert_eq!(refused, Pushed::OtherCpu, "another CPU's object was pushed");
            assert_eq!(after_refused, before, "a refused push changed the stack");
            assert_eq!(mine, Pushed::Yes, "the CPU's own object was refused");
            assert_eq!(anyone, Pushed::Yes, "an object of no owner was refused");
            assert_eq!(
                again_below,
                Pushed::No,
                "the entry below the top went on again"
            );
            assert_eq!(again_top, Pushed::No, "the entry on top went on again");
            assert_eq!(after, before + 2);
            assert_eq!(back, [b, a]);
            decided = true;
            break;
        }
        assert!(decided, "migrated in every round");
    }

    /// A batch pushed in one sequence lands whole, in order, or not at all: on top of
    /// what the stack held, its last entry on top; refused when it would pass the
    /// limit or the stack is stopped, leaving the stack as it was. Four threads
    /// pushing batches and popping them back on every CPU's stack lose no entry.
    #[test]
    fn a_batch_is_pushed_whole_or_not_at_all() {
        if !crate::init::ensure() || held() & (HOLD_OFF | HOLD_STOPPED) != 0 {
            eprintln!("the stack sequences are off here; skipped");
            return;
        }
        let nr = crate::topology::nr_cpu_ids();
        // Every CPU's stack header at its stride, each with room for 64 entries.
        let mut entries = vec![core::ptr::null_mut::<u8>(); nr * 64];
        let (_area, base) = stack_headers(&mut entries, 64);
        let objs: Vec<*mut u8> = (1..=64).map(|i| (i * 8) as *mut u8).collect();
        let count = |c: usize| count_at(base, c);
        let reset = || set_counts(base, 0);
        // What one thread sees holds for the CPU it stays on: a round it migrated in
        // says nothing, and runs again.
        let mut decided = false;
        for _ in 0..1000 {
            let cpu = crate::sys::cpu::current();
            // SAFETY: `base` strides over `nr` headers laid out as `stack`, whose
            // entry arrays hold 64 each, used by this thread only (and so for every
            // sequence below).
            let first = unsafe { stack_push_many(base, objs.as_ptr(), 40) };
            let after_first = count(cpu);
            // 40 + 30 > 64.
            // SAFETY: as above.
            let past_limit = unsafe { stack_push_many(base, objs.as_ptr(), 30) };
            let after_refused = count(cpu);
            let stop = base.wrapping_add(cpu * STACK_STRIDE).cast::<u32>();
            // SAFETY: the stop word of a header inside `area`.
            unsafe { stop.write_volatile(1) };
            // SAFETY: as above.
            let stopped = unsafe { stack_push_many(base, objs.as_ptr(), 1) };
            // SAFETY: as above.
            unsafe { stop.write_volatile(0) };
            let mut back = Vec::new();
            loop {
                // SAFETY: as above.
                let o = unsafe { stack_pop(base) };
                if o.is_null() {
                    break;
                }
                back.push(o as usize);
            }
            if crate::sys::cpu::current() != cpu {
                reset();
                continue;
            }
            assert!(first, "40 entries did not fit an empty stack of 64");
            assert_eq!(after_first, 40);
            assert!(!past_limit, "a batch past the limit was pushed");
            assert_eq!(after_refused, 40, "a refused batch changed the count");
            assert!(!stopped, "a batch was pushed on a stopped stack");
            let want: Vec<usize> = (1..=40).rev().map(|i| i * 8).collect();
            assert_eq!(back, want, "the batch came back out of order");
            decided = true;
            break;
        }
        assert!(decided, "migrated in every round");
        // Threads pushing batches and popping them back, on whatever CPU they are:
        // every entry pushed is popped exactly once.
        let base_addr = base as usize;
        let unpopped: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    s.spawn(move || {
                        let base = base_addr as *mut u8;
                        let objs: Vec<*mut u8> =
                            (1..=8).map(|i| ((t * 8 + i) * 8) as *mut u8).collect();
                        let (mut pushed, mut popped) = (0usize, 0usize);
                        for _ in 0..50_000 {
                            // SAFETY: as above.
                            if unsafe { stack_push_many(base, objs.as_ptr(), 8) } {
                                pushed += 8;
                            }
                            for _ in 0..8 {
                                // SAFETY: as above.
                                if !unsafe { stack_pop(base) }.is_null() {
                                    popped += 1;
                                }
                            }
                        }
                        (pushed, popped)
                    })
                })
                .collect();
            let (pushed, popped) = hs
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            assert!(pushed > 0, "no batch was ever pushed");
            pushed - popped
        });
        let left: usize = (0..nr).map(|c| count(c) as usize).sum();
        assert_eq!(left, unpopped, "entries pushed and neither popped nor left");
        drop(entries);
    }

    /// A pop takes the top entry and writes nothing but the count that commits it:
    /// the limit and every other word of the header keep their values (the kernel's
    /// `touched` word among them, which the reaper replaces by the count), a second
    /// pop takes the entry under the first, and an empty stack gives null.
    #[test]
    fn a_pop_writes_nothing_but_the_count() {
        if !crate::init::ensure() || held() & (HOLD_OFF | HOLD_STOPPED) != 0 {
            eprintln!("the stack sequences are off here; skipped");
            return;
        }
        let nr = crate::topology::nr_cpu_ids();
        let mut entries: Vec<*mut u8> = (1..=nr * 4).map(|i| (i * 16) as *mut u8).collect();
        let (_area, base) = stack_headers(&mut entries, 4);
        let word = |c: usize, at: usize| base.wrapping_add(c * STACK_STRIDE + at).cast::<u32>();
        // The header's words that are neither the stop word, the count, the limit
        // nor the entry pointer.
        let others = [12, 16, 20, 32, 36, 40, 44, 48, 52, 56, 60];
        // Each CPU's stack: 3 entries, a limit of 4, a marker in every other word.
        let set_up = || {
            for c in 0..nr {
                // SAFETY: words of a header inside `area`, aligned; this thread's alone.
                unsafe {
                    word(c, stack::LIMIT).write_volatile(4);
                    word(c, stack::COUNT).write_volatile(3);
                    for at in others {
                        word(c, at).write_volatile(0x5a5a_5a5a);
                    }
                }
            }
        };
        // SAFETY: as above.
        let read = |c: usize, at: usize| unsafe { word(c, at).read_volatile() };
        for _ in 0..1000 {
            set_up();
            let cpu = crate::sys::cpu::current();
            // SAFETY: `base` strides over `nr` headers laid out as `stack`, each with
            // 4 entries, used by this thread only.
            let (first, second) = unsafe { (stack_pop(base), stack_pop(base)) };
            if crate::sys::cpu::current() != cpu {
                continue;
            }
            assert_eq!(first as usize, (cpu * 4 + 3) * 16, "not the top entry");
            assert_eq!(
                second as usize,
                (cpu * 4 + 2) * 16,
                "not the entry under it"
            );
            assert_eq!(read(cpu, stack::COUNT), 1);
            assert_eq!(read(cpu, stack::LIMIT), 4, "a pop wrote the limit");
            for at in others {
                assert_eq!(read(cpu, at), 0x5a5a_5a5a, "a pop wrote the word at {at}");
            }
            for c in 0..nr {
                // SAFETY: as above.
                unsafe { word(c, stack::COUNT).write_volatile(0) };
            }
            // SAFETY: as above.
            let none = unsafe { stack_pop(base) };
            assert!(none.is_null(), "an empty stack gave an entry");
            drop(entries);
            return;
        }
        panic!("migrated in every round");
    }
}
