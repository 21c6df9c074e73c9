//! Readers: one record per thread, registered on its first read lock and released at
//! thread exit, in a table that cpuslab manages itself (1024 records in `.bss`, then
//! chunks mapped as more threads register).
//!
//! A reader's two hot words live in its thread's TLS ([`sys::tls`]): `ctr`, the
//! current `gp_seq` stored by the outermost `read_lock` (0: not reading), and
//! `rcu_special`, the guards alive beyond the first plus the need_qs bit. Each fast
//! path tests one of them in place: `read_lock` `ctr` (0: open a section, a store and
//! a compiler fence, which the grace period's membarrier(2) makes a full one), the
//! guard's drop `rcu_special` (0: end it). Everything rarer goes out of line: a guard
//! inside an open section, a report the grace period asked for, a thread without a
//! record, and a process without membarrier, where the words say [`STAND_IN`] and
//! the sections use the record's own words, with full fences on both sides.
//!
//! The grace-period side reaches the words through the record ([`Ctr`],
//! [`NeedQs`]), which the thread takes back before it exits.

use crate::sys::tls::ThreadWord;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{
    compiler_fence, fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use super::tree::{self, MAX_READERS};
use super::{gp, trace};
use crate::sync::Mutex;
use crate::sys;

/// Bits of `rcu_special` that count the guards alive beyond the first (changed by the
/// owner only, with atomic read-modify-writes: need_qs shares the word).
const NESTING: u64 = u32::MAX as u64;
/// The bit of `rcu_special` the grace period sets: report a quiescent state on leaving.
const NEED_QS: u64 = 1 << 32;
/// Both thread-local words of a thread whose sections do not use them (no record yet,
/// or no membarrier): non-zero, so both fast paths go out of line. Never a `ctr` else.
const STAND_IN: u64 = sys::tls::RCU_WORDS_INIT;

/// A reader's hot words: `ctr` and `rcu_special`.
type Words = [AtomicU64; 2];

/// One of a reader's hot words as other threads reach it: a pointer to it (null: the
/// reader is offline, the word reads as 0) and the count of threads dereferencing it,
/// so that [`retarget`](Remote::retarget) can wait until the old word is unused.
struct Remote {
    word: AtomicPtr<AtomicU64>,
    users: AtomicU32,
}

impl Remote {
    const fn new() -> Self {
        Self {
            word: AtomicPtr::new(ptr::null_mut()),
            users: AtomicU32::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(Option<&AtomicU64>) -> R) -> R {
        // SeqCst pairs with `retarget`: it sees this count, or this sees its pointer.
        self.users.fetch_add(1, Ordering::SeqCst);
        let p = self.word.load(Ordering::SeqCst);
        // SAFETY: a word is valid until `retarget` moves the pointer off it and sees no
        // users; this one is counted.
        let r = f(unsafe { p.as_ref() });
        self.users.fetch_sub(1, Ordering::Release);
        r
    }

    /// Points at `word` (or at nothing) and waits until nobody uses the old one.
    fn retarget(&self, word: *const AtomicU64) {
        self.word.store(word as *mut AtomicU64, Ordering::SeqCst);
        while self.users.load(Ordering::SeqCst) != 0 {
            sys::futex::yield_now();
        }
    }
}

/// A reader's `ctr`, for the grace-period side.
pub struct Ctr(Remote);

impl Ctr {
    /// `gp_seq` when the reader's outermost section began; 0 outside read sections.
    pub fn load(&self, order: Ordering) -> u64 {
        self.0.with(|w| w.map_or(0, |w| w.load(order)))
    }
}

/// A reader's need_qs bit (in its `rcu_special`), for the grace-period side.
pub struct NeedQs(Remote);

impl NeedQs {
    /// Sets (`true`) or clears the bit: the reader reports a quiescent state when its
    /// section ends. A hint only: the grace period keeps polling `ctr`.
    pub fn store(&self, need_qs: bool, order: Ordering) {
        self.0.with(|w| {
            if let Some(w) = w {
                if need_qs {
                    w.fetch_or(NEED_QS, order);
                } else {
                    w.fetch_and(!NEED_QS, order);
                }
            }
        })
    }
}

/// One reader's record (`rcu_data`, per thread instead of per CPU).
#[repr(C, align(64))]
pub struct RcuReader {
    /// The reader's `ctr`.
    pub ctr: Ctr,
    /// The reader's need_qs bit.
    pub need_qs: NeedQs,
    /// Kernel thread id of the owner, for stall reports.
    pub tid: AtomicU32,
    /// The grace period for which a stall of this reader was already reported.
    pub stall_gp: AtomicU64,
    /// The hot words where membarrier is missing (the thread-local ones say
    /// [`STAND_IN`] then).
    own: Words,
}

impl RcuReader {
    const fn new() -> Self {
        Self {
            ctr: Ctr(Remote::new()),
            need_qs: NeedQs(Remote::new()),
            tid: AtomicU32::new(0),
            stall_gp: AtomicU64::new(0),
            own: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

/// Records in each chunk of the reader table (64 KiB of them).
const CHUNK: usize = 1024;
// A chunk is whole pages, and a zero-filled one holds valid records: every field of
// `RcuReader::new()` is an atomic at 0 or null, and must stay so.
const _: () = assert!(core::mem::size_of::<RcuReader>() == 64);
/// Chunks the table may have.
const NR_CHUNKS: usize = MAX_READERS / CHUNK;
const _: () = assert!(MAX_READERS.is_multiple_of(CHUNK));

/// The first chunk of the reader table: the records of the first 1024 reader threads
/// alive at once, which most processes never pass.
static FIRST: [RcuReader; CHUNK] = [const { RcuReader::new() }; CHUNK];

/// The other chunks, each mapped (zeroed: every field of a new record is 0) the first
/// time one of its slots is taken, under the registry lock, and kept for the life of
/// the process. A static table for all 65536 readers was 4 MiB of `.bss`: untouched,
/// but address space that `ulimit -v` counts in every process.
static CHUNKS: [AtomicPtr<RcuReader>; NR_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; NR_CHUNKS];

/// Reader record `slot` (slot `i` sits under leaf `i / 16`), of a slot that was taken
/// at some time: its chunk is mapped. Any other is a bug, reported as fatal.
pub fn record(slot: usize) -> &'static RcuReader {
    if slot < CHUNK {
        return &FIRST[slot];
    }
    // Acquire pairs with `map_chunk`'s release: the chunk's zeroes are seen.
    let chunk = CHUNKS
        .get(slot / CHUNK)
        .map_or(ptr::null_mut(), |c| c.load(Ordering::Acquire));
    if chunk.is_null() {
        sys::io::fatal(format_args!("rcu: reader record {slot} was never taken"));
    }
    // SAFETY: a mapped chunk holds `CHUNK` records and is never unmapped.
    unsafe { &*chunk.add(slot % CHUNK) }
}

/// Maps the chunk of `slot` unless it is the first or already mapped; false when the
/// kernel has no memory for it. Called under the registry lock, which orders the
/// mappings.
fn map_chunk(slot: usize) -> bool {
    if slot < CHUNK {
        return true;
    }
    let c = &CHUNKS[slot / CHUNK];
    if !c.load(Ordering::Relaxed).is_null() {
        return true;
    }
    let chunk = sys::mmap::map_zeroed(CHUNK * core::mem::size_of::<RcuReader>());
    if chunk.is_null() {
        return false;
    }
    c.store(chunk.cast(), Ordering::Release);
    true
}

struct Registry {
    used: [u64; MAX_READERS / 64],
    nr: usize,
    /// 1 + the highest slot ever used.
    high: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    used: [0; MAX_READERS / 64],
    nr: 0,
    high: 0,
});

/// pthread key + 1 whose destructor releases the record; 0 until created.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

/// This thread's slot, if registered.
pub fn my_slot() -> Option<usize> {
    let slot = ThreadWord::RcuSlot.get();
    (slot != 0).then(|| slot - 1)
}

/// The words this thread's sections use; `None` without a record.
fn my_words() -> Option<&'static Words> {
    if sys::tls::rcu_ctr() != STAND_IN {
        return Some(sys::tls::rcu_words());
    }
    my_slot().map(|slot| &record(slot).own)
}

#[cold]
fn register() -> usize {
    let membarrier = sys::membarrier::register();
    super::register_atfork();
    let slot = {
        let mut r = REGISTRY.lock();
        let Some(word) = r.used.iter().position(|&w| w != u64::MAX) else {
            drop(r);
            sys::io::fatal(format_args!("rcu: more than {MAX_READERS} reader threads"));
        };
        let bit = (!r.used[word]).trailing_zeros() as usize;
        let slot = word * 64 + bit;
        if !map_chunk(slot) {
            drop(r);
            sys::io::fatal(format_args!(
                "rcu: no memory for the records of more than {slot} reader threads"
            ));
        }
        r.used[word] |= 1 << bit;
        r.nr += 1;
        r.high = r.high.max(slot + 1);
        slot
    };
    let rec = record(slot);
    rec.tid.store(sys::thread::gettid(), Ordering::Relaxed);
    ThreadWord::RcuSlot.set(slot + 1);
    use_words(slot, membarrier && ThreadWord::RcuExiting.get() == 0, 0, 0);
    tree::reader_online(slot);
    if let Some(key) = exit_key() {
        key.set(slot + 1);
    }
    slot
}

/// Gives the calling thread's record `slot` the words its sections will use, holding
/// `ctr` and `special`: the thread-local ones with membarrier; without, the record's
/// own, the thread-local ones saying [`STAND_IN`] to send every section out of line.
fn use_words(slot: usize, membarrier: bool, ctr: u64, special: u64) {
    let rec = record(slot);
    let tls = sys::tls::rcu_words();
    let (words, tls_value) = if membarrier {
        (tls, [ctr, special])
    } else {
        (&rec.own, [STAND_IN; 2])
    };
    words[0].store(ctr, Ordering::Relaxed);
    words[1].store(special, Ordering::Relaxed);
    tls[0].store(tls_value[0], Ordering::Relaxed);
    tls[1].store(tls_value[1], Ordering::Relaxed);
    rec.ctr.0.retarget(&words[0]);
    rec.need_qs.0.retarget(&words[1]);
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
    ThreadWord::RcuSlot.set(0);
    ThreadWord::RcuExiting.set(1);
    release(slot);
    // A read section after this (a later destructor) registers again.
    let tls = sys::tls::rcu_words();
    tls[0].store(STAND_IN, Ordering::Relaxed);
    tls[1].store(STAND_IN, Ordering::Relaxed);
}

/// Takes reader `slot` out of every grace period and frees its slot. Its words read
/// as 0 (not reading) from here on, and nobody reaches its thread's TLS any more.
fn release(slot: usize) {
    let rec = record(slot);
    rec.ctr.0.retarget(ptr::null());
    rec.need_qs.0.retarget(ptr::null());
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
/// The first guard stores `gp_seq` in the thread's `ctr`; guards taken inside it only
/// count in `rcu_special`. Guards are interchangeable: while a section is open
/// `1 + nesting` of them are alive, and dropping any one ends the section when it is
/// the last, whatever the order of the drops. A section outside any other costs a
/// load and a store here and a load and a store in the drop, all thread-local.
#[inline(always)]
pub fn read_lock() -> RcuReadGuard {
    if sys::tls::rcu_ctr() == 0 {
        // Also a compiler barrier: the section stays after it. The grace period's
        // membarrier(2) does the rest.
        sys::tls::set_rcu_ctr(gp::gp_seq());
    } else {
        lock_slow();
    }
    RcuReadGuard {
        _not_send: PhantomData,
    }
}

/// `read_lock` for a guard inside an open section, a thread without a record, or a
/// process without membarrier.
#[cold]
#[inline(never)]
fn lock_slow() {
    let w = match my_words() {
        Some(w) => w,
        None => {
            let slot = register();
            my_words().unwrap_or(&record(slot).own)
        }
    };
    if w[0].load(Ordering::Relaxed) == 0 {
        w[0].store(gp::gp_seq(), Ordering::Relaxed);
        order_reader();
    } else {
        // Atomic: the grace period may set need_qs in the same word meanwhile.
        w[1].fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the calling thread is inside a read-side critical section.
pub fn in_read_section() -> bool {
    my_words().is_some_and(|w| w[0].load(Ordering::Relaxed) != 0)
}

/// Orders the `ctr` store against the section's accesses: a compiler fence, which the
/// grace period's membarrier(2) makes a full one; a full fence without membarrier.
#[inline(always)]
fn order_reader() {
    if !sys::membarrier::available() {
        fence(Ordering::SeqCst);
    }
    compiler_fence(Ordering::SeqCst);
}

impl Drop for RcuReadGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // One load for all: no other guard alive, no report asked for, the thread's
        // words in use. need_qs is a hint (the grace period polls `ctr` until it
        // reads 0): a request that lands after this load waits for the next poll.
        if sys::tls::rcu_special() == 0 {
            sys::tls::clear_rcu_ctr();
        } else {
            unlock_slow();
        }
    }
}

/// The guard's drop when the thread's `rcu_special` is not 0: another guard is alive,
/// the grace period asked for a report, or the words say [`STAND_IN`].
#[cold]
#[inline(never)]
fn unlock_slow() {
    // No record: released at thread exit with this guard alive, nothing left to end.
    let Some(w) = my_words() else {
        return;
    };
    if w[1].load(Ordering::Relaxed) & NESTING != 0 {
        // Atomic, as in `lock_slow`.
        w[1].fetch_sub(1, Ordering::Relaxed);
        return;
    }
    order_reader();
    w[0].store(0, Ordering::Release);
    if w[1].load(Ordering::Relaxed) & NEED_QS != 0 {
        report_own_qs(w);
    }
}

/// `rcu_read_unlock_special`: the grace period asked this reader to report.
#[cold]
#[inline(never)]
fn report_own_qs(w: &Words) {
    let Some(slot) = my_slot() else {
        return;
    };
    w[1].fetch_and(!NEED_QS, Ordering::Relaxed);
    trace::record(trace::Event::CpuQs, slot as u32);
    if tree::report_qs(slot) {
        gp::wake_gp_driver();
    }
}

/// fork, child: the forking thread is the only reader left.
pub(crate) fn forget_other_readers_after_fork() {
    let mine = my_slot();
    let (used, high) = {
        // SAFETY: the child has one thread; the lock may be held by a thread that is
        // gone, so it is opened first.
        unsafe { REGISTRY.force_unlock_if_locked() };
        let r = REGISTRY.lock();
        (r.used, r.high)
    };
    // Users caught at the fork are threads of the parent: none will leave. Any record
    // ever used may have some (a grace period may look at a slot being released).
    for rec in (0..high).map(record) {
        rec.ctr.0.users.store(0, Ordering::Relaxed);
        rec.need_qs.0.users.store(0, Ordering::Relaxed);
    }
    let slots = used.iter().enumerate().flat_map(|(w, &word)| {
        (0..64)
            .filter(move |b| word & (1 << b) != 0)
            .map(move |b| w * 64 + b)
    });
    for slot in slots {
        if Some(slot) != mine {
            release(slot);
        }
    }
    // membarrier was registered again for the child, maybe with another outcome.
    if let (Some(slot), Some(w)) = (mine, my_words()) {
        let (ctr, special) = (w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed));
        use_words(slot, sys::membarrier::available(), ctr, special);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    /// The grace period's need_qs request reaches a reader through its thread-local
    /// words, and the drop that ends the section reports (and clears it).
    #[test]
    fn a_reader_asked_to_report_reports_when_it_leaves() {
        let g = read_lock();
        // Thread-local, or the record's own without membarrier.
        let special = &my_words().expect("registered")[1];
        let waiter = std::thread::spawn(super::super::synchronize);
        // The grace period scans this reader and asks it to report.
        let mut waited = 0;
        while special.load(Ordering::Relaxed) & NEED_QS == 0 {
            assert!(waited < 10_000, "no need_qs request within 10 s");
            std::thread::sleep(Duration::from_millis(1));
            waited += 1;
        }
        assert!(
            !waiter.is_finished(),
            "grace period ended inside the section"
        );
        drop(g);
        assert_eq!(
            special.load(Ordering::Relaxed),
            0,
            "the drop did not report"
        );
        waiter.join().unwrap();
    }

    /// Threads that read once and exit, while grace periods scan their thread-local
    /// words: each exit takes its words back from the record before the thread's TLS
    /// goes away, and every record is released.
    #[test]
    fn reader_threads_exit_during_grace_periods() {
        drop(read_lock());
        let stop = Arc::new(AtomicBool::new(false));
        let gp = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    super::super::synchronize_expedited();
                    n += 1;
                }
                n
            })
        };
        for _ in 0..100 {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    std::thread::spawn(|| {
                        let _a = read_lock();
                        let _b = read_lock();
                        std::hint::black_box(in_read_section())
                    })
                })
                .collect();
            for h in hs {
                assert!(h.join().unwrap());
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(gp.join().unwrap() > 0);
        assert!(!in_read_section());
    }

    /// A read section in a thread-exit destructor that runs after the record was
    /// released registers the thread again; that record is released in turn.
    #[test]
    fn a_section_after_the_record_was_released_at_exit() {
        /// Bit 0: `late` ran without a record; bit 1: its section was open; bit 2:
        /// it then had a record.
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn late(_: *mut core::ffi::c_void) {
            let mut seen = my_slot().is_none() as usize;
            let g = read_lock();
            seen |= (in_read_section() as usize) << 1 | (my_slot().is_some() as usize) << 2;
            drop(g);
            SEEN.store(seen, Ordering::Relaxed);
        }
        let floor = nr_registered();
        std::thread::spawn(|| {
            // The record's key was created first, so its destructor runs before
            // `late`'s in each round.
            drop(read_lock());
            let key = sys::thread::ExitKey::create(late).expect("pthread key");
            assert!(key.set(1));
        })
        .join()
        .unwrap();
        assert_eq!(SEEN.load(Ordering::Relaxed), 0b111);
        assert!(!in_read_section());
        // Other tests' threads come and go meanwhile: allow for them.
        assert!(nr_registered() <= floor + 16);
    }

    /// A destructor that re-arms itself and reads in every round: glibc gives up after
    /// its last round with the thread registered again. That record must not point
    /// the grace period at the dead thread's TLS.
    #[test]
    fn a_record_left_by_the_last_destructor_round_keeps_its_words() {
        static KEY: AtomicUsize = AtomicUsize::new(0);
        /// Slot + 1 and thread id of the record the last round left.
        static LEFT: AtomicUsize = AtomicUsize::new(0);
        static TID: AtomicU32 = AtomicU32::new(0);
        unsafe extern "C" fn relentless(_: *mut core::ffi::c_void) {
            drop(read_lock());
            LEFT.store(my_slot().map_or(0, |s| s + 1), Ordering::Relaxed);
            let key = sys::thread::ExitKey::from_raw(KEY.load(Ordering::Relaxed) as _);
            key.set(1);
        }
        std::thread::spawn(|| {
            drop(read_lock());
            let key = sys::thread::ExitKey::create(relentless).expect("pthread key");
            KEY.store(key.raw() as usize, Ordering::Relaxed);
            TID.store(sys::thread::gettid(), Ordering::Relaxed);
            assert!(key.set(1));
        })
        .join()
        .unwrap();
        let slot = LEFT.load(Ordering::Relaxed);
        assert!(slot != 0, "the destructor never read");
        let rec = record(slot - 1);
        // The slot may have gone to another test's thread meanwhile; then there is
        // nothing left to check.
        if rec.tid.load(Ordering::Relaxed) == TID.load(Ordering::Relaxed) {
            let own = rec.own.as_ptr_range();
            for word in [&rec.ctr.0.word, &rec.need_qs.0.word] {
                let p = word.load(Ordering::Relaxed) as *const AtomicU64;
                assert!(
                    p.is_null() || own.contains(&p),
                    "a record points at the TLS of a thread that exited"
                );
            }
        }
        // Sections still end grace periods.
        super::super::synchronize();
    }
}
