//! Every architecture but x86_64: no restartable sequences here. [`available`] is false
//! (so the parent module never runs a sequence through this module), [`held`] reports
//! the stack sequences held and off for good, and the sequences themselves fail
//! without touching memory. Callers take their tried-lock paths and atomics instead.
//! This is what the fallbacks inside `rseq.rs` did before it was split per
//! architecture; an architecture that gains sequences gets its own module beside
//! `x86_64`.
//!
//! [`available`]: super::available
//! [`held`]: super::held

use super::{HOLD_OFF, HOLD_POP};

/// Whether this architecture has the sequences (it does not).
pub(super) const SEQUENCES: bool = false;

/// No sequence: nothing done.
///
/// # Safety
/// None needed; as for [`percpu_add`](super::percpu_add), for symmetry with the
/// architectures that run one.
#[inline(always)]
pub(super) unsafe fn percpu_add(
    base: *mut i64,
    stride: usize,
    nr_cpus: usize,
    amount: i64,
) -> Option<i64> {
    let _ = (base, stride, nr_cpus, amount);
    None
}

/// No sequence: nothing done.
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
    let _ = (base, stride, nr_cpus, value);
    None
}

/// No hold bits to set: they are all in force already (see [`held`]).
#[inline(always)]
pub(super) fn hold(bits: usize) {
    let _ = bits;
}

/// Nothing to release: every hold stays (see [`held`]).
#[inline(always)]
pub(super) fn release(bits: usize) {
    let _ = bits;
}

/// The callers' fast paths step aside and the stack sequences are off, always.
#[inline(always)]
pub(super) fn held() -> usize {
    HOLD_POP | HOLD_OFF
}

/// Nothing to turn on (never called: rseq is not available here).
#[inline(always)]
pub(super) fn enable_stacks(nr_cpus: usize) {
    let _ = nr_cpus;
}

/// No CPU bound to drop (never called: the stack sequences are never on here).
#[inline(always)]
pub(super) fn drop_bound() -> usize {
    0
}

/// No sequence: nothing popped.
///
/// # Safety
/// None needed; as for [`stack_pop`](super::stack_pop), for symmetry with the
/// architectures that run one.
#[inline(always)]
pub(super) unsafe fn stack_pop(base: *mut u8) -> *mut u8 {
    let _ = base;
    core::ptr::null_mut()
}

/// No sequence: nothing pushed.
///
/// # Safety
/// As for [`stack_pop`].
#[inline(always)]
pub(super) unsafe fn stack_push(base: *mut u8, obj: *mut u8) -> bool {
    let _ = (base, obj);
    false
}

/// No sequence: nothing pushed.
///
/// # Safety
/// As for [`stack_pop`].
#[inline(always)]
pub(super) unsafe fn stack_push_nonempty(base: *mut u8, obj: *mut u8) -> bool {
    let _ = (base, obj);
    false
}

/// No sequence: nothing pushed.
///
/// # Safety
/// As for [`stack_pop`].
#[inline(always)]
pub(super) unsafe fn stack_push_deep(base: *mut u8, obj: *mut u8) -> bool {
    let _ = (base, obj);
    false
}

/// No sequence: nothing pushed.
///
/// # Safety
/// As for [`stack_pop`].
#[inline(always)]
pub(super) unsafe fn stack_push_deep_tested(
    base: *mut u8,
    obj: *mut u8,
    test: *const u32,
) -> super::Pushed {
    let _ = (base, obj, test);
    super::Pushed::No
}

/// No sequence: nothing pushed.
///
/// # Safety
/// As for [`stack_pop`].
#[inline(always)]
pub(super) unsafe fn stack_push_many(base: *mut u8, objs: *const *mut u8, n: usize) -> bool {
    let _ = (base, objs, n);
    false
}

/// No sequences, so no caller asks: `usize::MAX`, a CPU no cache has.
#[inline(always)]
pub(super) fn stack_cpu() -> usize {
    usize::MAX
}
