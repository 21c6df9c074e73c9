//! Readers: one record per thread, registered on its first read lock and released at
//! thread exit, in a static table that cpuslab manages itself.
//!
//! `read_lock` stores the current `gp_seq` in the record (0 means "not reading") and
//! issues a compiler fence; the grace-period side pairs it with membarrier(2). Without
//! membarrier both sides use full fences.

use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use super::tree::{self, MAX_READERS};
use super::{gp, trace};
use crate::sync::Mutex;
use crate::sys;

/// One reader's record (`rcu_data`, per thread instead of per CPU).
#[repr(C, align(64))]
pub struct RcuReader {
    /// `gp_seq` when the outermost read section began; 0 outside read sections.
    pub ctr: AtomicU64,
    /// Guards alive beyond the first while a section is open (owner only).
    pub nesting: AtomicU32,
    /// Kernel thread id of the owner, for stall reports.
    pub tid: AtomicU32,
    /// Set by the grace-period side: report a quiescent state when leaving.
    pub need_qs: AtomicBool,
    /// The grace period for which a stall of this reader was already reported.
    pub stall_gp: AtomicU64,
}

impl RcuReader {
    const fn new() -> Self {
        Self {
            ctr: AtomicU64::new(0),
            nesting: AtomicU32::new(0),
            tid: AtomicU32::new(0),
            need_qs: AtomicBool::new(false),
            stall_gp: AtomicU64::new(0),
        }
    }
}

/// Every reader record; slot `i` sits under leaf `i / 16`.
pub static READERS: [RcuReader; MAX_READERS] = [const { RcuReader::new() }; MAX_READERS];

struct Registry {
    used: [u64; MAX_READERS / 64],
    nr: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    used: [0; MAX_READERS / 64],
    nr: 0,
});

/// pthread key + 1 whose destructor releases the record; 0 until created.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot + 1 (0: not registered). Const-initialised without drop, so
    /// it never allocates and stays readable during thread exit.
    static ME: Cell<usize> = const { Cell::new(0) };
}

/// This thread's record, registering it on first use.
#[inline(always)]
pub fn me() -> &'static RcuReader {
    // The record's address sits in a word of TLS read with one instruction.
    let rec = sys::tls::rcu_reader() as *const RcuReader;
    if !rec.is_null() {
        // SAFETY: a record of the static table, this thread's until it exits.
        return unsafe { &*rec };
    }
    &READERS[register()]
}

/// This thread's slot, if registered.
pub fn my_slot() -> Option<usize> {
    let slot = ME.get();
    (slot != 0).then(|| slot - 1)
}

#[cold]
fn register() -> usize {
    sys::membarrier::register();
    super::register_atfork();
    let slot = {
        let mut r = REGISTRY.lock();
        let Some(word) = r.used.iter().position(|&w| w != u64::MAX) else {
            drop(r);
            sys::io::fatal(format_args!("rcu: more than {MAX_READERS} reader threads"));
        };
        let bit = (!r.used[word]).trailing_zeros() as usize;
        r.used[word] |= 1 << bit;
        r.nr += 1;
        word * 64 + bit
    };
    let rec = &READERS[slot];
    rec.ctr.store(0, Ordering::Relaxed);
    rec.nesting.store(0, Ordering::Relaxed);
    rec.need_qs.store(false, Ordering::Relaxed);
    rec.tid.store(sys::thread::gettid(), Ordering::Relaxed);
    tree::reader_online(slot);
    ME.set(slot + 1);
    sys::tls::set_rcu_reader(rec as *const RcuReader as usize);
    if let Some(key) = exit_key() {
        key.set(slot + 1);
    }
    slot
}

fn exit_key() -> Option<sys::thread::ExitKey> {
    let k = EXIT_KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(key_from(k));
    }
    let _guard = REGISTRY.lock();
    let k = EXIT_KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(key_from(k));
    }
    let key = sys::thread::ExitKey::create(reader_exit)?;
    EXIT_KEY.store(key.raw() as usize + 1, Ordering::Release);
    Some(key)
}

fn key_from(k: usize) -> sys::thread::ExitKey {
    sys::thread::ExitKey::from_raw((k - 1) as _)
}

/// Thread exit: releases the record (the value is its slot + 1).
unsafe extern "C" fn reader_exit(value: *mut core::ffi::c_void) {
    let slot = value as usize - 1;
    ME.set(0);
    sys::tls::set_rcu_reader(0);
    release(slot);
}

/// Takes reader `slot` out of every grace period and frees its slot.
fn release(slot: usize) {
    let rec = &READERS[slot];
    rec.ctr.store(0, Ordering::Release);
    rec.nesting.store(0, Ordering::Relaxed);
    if tree::reader_offline(slot) {
        gp::wake_gp_driver();
    }
    let mut r = REGISTRY.lock();
    r.used[slot / 64] &= !(1 << (slot % 64));
    r.nr -= 1;
}

/// Registered readers.
pub fn nr_registered() -> usize {
    REGISTRY.lock().nr
}

/// A read-side critical section; the section ends when the guard drops. Guards nest.
/// Not `Send`: the section belongs to the thread that opened it.
#[must_use = "the read-side critical section ends when the guard is dropped"]
pub struct RcuReadGuard {
    _not_send: PhantomData<*const ()>,
}

/// Enters a read-side critical section (`rcu_read_lock`).
///
/// The first guard stores `gp_seq` in the record; guards taken inside it only count in
/// `nesting`. Guards are interchangeable: while a section is open `1 + nesting` of them
/// are alive, and dropping any one ends the section when it is the last, whatever the
/// order of the drops. A section outside any other costs two plain stores.
#[inline(always)]
pub fn read_lock() -> RcuReadGuard {
    let r = me();
    if r.ctr.load(Ordering::Relaxed) == 0 {
        r.ctr.store(gp::gp_seq(), Ordering::Relaxed);
        order_reader();
    } else {
        lock_nested(r);
    }
    RcuReadGuard {
        _not_send: PhantomData,
    }
}

/// Counts a guard taken inside an open section (out of line: the outermost section is
/// the one to keep short).
#[cold]
#[inline(never)]
fn lock_nested(r: &RcuReader) {
    r.nesting
        .store(r.nesting.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Whether the calling thread is inside a read-side critical section.
pub fn in_read_section() -> bool {
    my_slot().is_some_and(|s| READERS[s].ctr.load(Ordering::Relaxed) != 0)
}

/// Orders the record's store against the section's accesses: a compiler fence, which
/// the grace period's membarrier(2) makes a full one; a full fence without membarrier.
#[inline(always)]
fn order_reader() {
    if !sys::membarrier::available() {
        full_fence();
    }
    compiler_fence(Ordering::SeqCst);
}

/// Out of line so that the membarrier case falls through without a taken branch.
#[cold]
#[inline(never)]
fn full_fence() {
    fence(Ordering::SeqCst);
}

impl Drop for RcuReadGuard {
    #[inline(always)]
    fn drop(&mut self) {
        let r = me();
        let n = r.nesting.load(Ordering::Relaxed);
        if n == 0 {
            order_reader();
            r.ctr.store(0, Ordering::Release);
            if r.need_qs.load(Ordering::Relaxed) {
                report_own_qs();
            }
        } else {
            r.nesting.store(n - 1, Ordering::Relaxed);
        }
    }
}

/// `rcu_read_unlock_special`: the grace period asked this reader to report.
#[cold]
#[inline(never)]
fn report_own_qs() {
    let Some(slot) = my_slot() else {
        return;
    };
    READERS[slot].need_qs.store(false, Ordering::Relaxed);
    trace::record(trace::Event::CpuQs, slot as u32);
    if tree::report_qs(slot) {
        gp::wake_gp_driver();
    }
}

/// fork, child: the forking thread is the only reader left.
pub(crate) fn forget_other_readers_after_fork() {
    let mine = my_slot();
    let used = {
        // SAFETY: the child has one thread; the lock may be held by a thread that is
        // gone, so it is opened first.
        unsafe { REGISTRY.force_unlock_if_locked() };
        REGISTRY.lock().used
    };
    for (w, &word) in used.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let slot = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if Some(slot) != mine {
                release(slot);
            }
        }
    }
}
