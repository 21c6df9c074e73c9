//! Per-CPU page lists, the kernel's `per_cpu_pages`: order-0 pages cached per CPU so
//! that slab growth and shrinkage rarely take the zone lock.
//!
//! A list is an array stack of page descriptors laid out as `sys::rseq::stack` wants
//! it: hot pages (freed last, likely still in cache) on top, cold ones at the bottom.
//! Taking a page pops the top; freeing one pushes it. An empty list is refilled with
//! `batch` pages under the zone lock; a list at `high` gives its `batch` coldest pages
//! back with one bulk free and shifts the rest down.
//!
//! The bottom is the list's cold end, as the kernel's hot/cold lists had it before
//! they became one list with two ends:
//! - `low`: a take that leaves the list at `low` pages or fewer tops it up with
//!   `batch` pages from the zone, slid under the pages already there (pages from the
//!   zone are cold). `CPUSLAB_PCP_LOW`, 0 by default as in the kernel since 2.6.x: a
//!   list is refilled only when a take finds it empty.
//! - cold frees ([`free_cold_pcppage`], the kernel's `free_cold_page`) go in at the
//!   bottom: pages nobody touched lately (a slab the reaper found idle, one freed after
//!   a grace period, RCU's own batch pages) must not be the next page a hot request
//!   gets. They are also the first to go back to the zone.
//! - cold takes ([`rmqueue_pcplist_cold`], `__GFP_COLD`) come off the bottom: pages
//!   the CPU will not read soon (RCU's batch pages, written one word per deferred
//!   free) leave the hot pages to slabs about to be filled.
//!
//! Both ends' slow operations shift the array, so they stop the list first (below).
//!
//! Two ways to change a list, chosen by the slab layer's fast path at boot:
//! - **rseq**: pops and pushes are restartable sequences on the calling CPU's list, with
//!   no atomic operation. Work on a whole list (the bulk free, a drain) first stops it
//!   (takes its lock word, which sequences check and back off from) and then makes sure
//!   no sequence that missed the stop is still in flight on its CPU: either the
//!   stopping thread itself runs on that CPU afterwards, which such a sequence could
//!   only allow by finishing or being preempted (and so restarted), or a
//!   `membarrier(PRIVATE_EXPEDITED_RSEQ)` restarts it.
//! - **tried lock**: every operation takes the list's lock once, and goes to the zone
//!   when it is busy.
//!
//! The lists live in the reserved percpu chunk, one in each CPU's unit, so a CPU's list
//! sits on that CPU's node beside its other per-CPU data.
//!
//! Since Linux 5.14 the kernel also keeps pcp lists for higher orders, so that a
//! multi-page allocation and free need not take the zone lock, split and merge. Here
//! orders [`LARGE_PCP_MIN_ORDER`]`..=`[`LARGE_PCP_MAX_ORDER`] (8 KiB to 256 KiB) have
//! lists too, for `alloc_pages_exact` blocks whose page count is that power of two (a
//! 64 KiB I/O buffer, a doubling `Vec<u8>`). They work as the order-0 list does (same
//! layout, same sequences, same stop word) with two differences: an empty list is not
//! refilled (frees fill it: a program that allocates one buffer never holds a batch it
//! did not ask for), and each list holds at most [`LARGE_PCP_BYTES`] per CPU, less
//! past 16 CPUs ([`LARGE_PCP_TOTAL_BYTES`] shared among them).

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use super::desc::{Page, PG_ZERO};
use super::{page_node, zone};
use crate::percpu::{self, PCPU_UNIT_SIZE};
use crate::sync::TryLock;
use crate::sys;
use crate::topology;

/// Most pages a list holds (`CPUSLAB_PCP_HIGH` is clamped to it); the option's bound,
/// kept with the option.
pub use crate::config::PCP_MAX_HIGH;

/// Pages taken from the zone under one lock on a refill; a refill of a larger batch
/// takes the zone lock again.
const REFILL_CHUNK: usize = 64;

/// Bytes before the entry array: the header, one cache line.
const PCP_HEADER: usize = core::mem::size_of::<PerCpuPages>();

/// Lowest order with a per-CPU list of its own besides order 0.
pub const LARGE_PCP_MIN_ORDER: usize = 1;
/// Highest order with a per-CPU list: 256 KiB blocks. Larger blocks are rare enough,
/// and costly enough to hold idle on every CPU, to take the zone lock.
pub const LARGE_PCP_MAX_ORDER: usize = 6;
const NR_LARGE: usize = LARGE_PCP_MAX_ORDER - LARGE_PCP_MIN_ORDER + 1;
/// Most bytes one CPU caches on each higher order's list: 32 blocks of 8 KiB, 4 of 64
/// KiB, 2 of 256 KiB (a list keeps at least 2). A program cycling a few buffers of one
/// size reuses them from its CPU's list; the worst case is 1.75 MiB a CPU. At 1 MiB an
/// order (16 blocks of 64 KiB) a C program cycling a few 64-256 KiB blocks among
/// smaller ones (`mstress`) peaked 1.7 MiB higher, 2.6 MiB on the lists, and ran no
/// faster.
pub const LARGE_PCP_BYTES: usize = 256 << 10;

/// Most bytes all CPUs together cache on each higher order's list: past 16 CPUs a
/// CPU's share shrinks below [`LARGE_PCP_BYTES`], as the kernel sizes `pcp->high`
/// from the zone divided among the CPUs that use it. Blocks freed on one CPU are out
/// of reach of the others until that CPU's list overflows, so on 16 CPUs full 1 MiB
/// shares held 96 MiB that the other CPUs' allocations could not use and had to
/// fault in afresh (C `mstress`, 16 threads).
pub const LARGE_PCP_TOTAL_BYTES: usize = 4 << 20;

/// `high` of an order's list on a machine of `nr_cpus` online CPUs: the CPU's share of
/// [`LARGE_PCP_TOTAL_BYTES`], at most [`LARGE_PCP_BYTES`], in blocks; at least 2 (so a
/// list at `high` still keeps a block after giving its `batch` back).
pub const fn large_high(order: usize, nr_cpus: usize) -> u32 {
    let share = LARGE_PCP_TOTAL_BYTES / if nr_cpus == 0 { 1 } else { nr_cpus };
    let bytes = if share < LARGE_PCP_BYTES {
        share
    } else {
        LARGE_PCP_BYTES
    };
    let n = bytes >> (sys::PAGE_SHIFT as usize + order);
    if n < 2 {
        2
    } else {
        n as u32
    }
}

/// `batch` of an order's list: a quarter of `high` goes back to the zone at once when
/// a free finds the list full, so a list at its bound takes the lock once per
/// `batch` frees rather than on each.
const fn large_batch(high: u32) -> u32 {
    let b = high / 4;
    if b < 1 {
        1
    } else {
        b
    }
}

/// Bytes of one CPU's copy of a list of `high` entries.
const fn list_size(high: u32) -> usize {
    (PCP_HEADER + high as usize * 8 + 63) & !63
}

/// One CPU's page list; its entry array follows the header.
#[repr(C, align(64))]
pub struct PerCpuPages {
    /// The stop word: tried by the tried-lock path, taken for work on the whole list.
    pub lock: TryLock,
    /// Pages on the list: `entry[..count]`. Changed by sequences or under `lock`.
    count: UnsafeCell<u32>,
    /// Most pages on the list; a free beyond it gives `batch` back first.
    pub high: u32,
    /// Pages moved per refill or bulk free.
    pub batch: u32,
    /// Order of the blocks on the list.
    pub order: u32,
    /// `high` page descriptors, right after the header.
    entry: *mut *mut Page,
    /// A take that leaves this many pages or fewer tops the list up (0: only an empty
    /// list is refilled). Order 0 only: higher orders are never refilled.
    pub low: u32,
}

// The sequences address the list by these offsets.
const _: () = {
    use core::mem::offset_of;
    assert!(crate::sys::rseq::stack::laid_out([
        offset_of!(PerCpuPages, lock),
        offset_of!(PerCpuPages, count),
        offset_of!(PerCpuPages, high),
        offset_of!(PerCpuPages, entry),
    ]));
    assert!(core::mem::size_of::<PerCpuPages>() == 64);
};

// SAFETY: `count` and the entries are changed only by restartable sequences
// on the list's own CPU or by the holder of `lock` (see the module comment).
unsafe impl Sync for PerCpuPages {}

/// One list's settings, the same on every CPU, from which `prepare` writes a CPU's
/// copy: set by `init` before it publishes the lists.
struct ListParams {
    high: AtomicU32,
    batch: AtomicU32,
    low: AtomicU32,
    /// Bytes from the start of the area (order 0's list) to this list.
    offset: AtomicUsize,
}

/// The settings of each list: order 0's, then each higher order's.
static PARAMS: [ListParams; NR_LARGE + 1] = [const {
    ListParams {
        high: AtomicU32::new(0),
        batch: AtomicU32::new(0),
        low: AtomicU32::new(0),
        offset: AtomicUsize::new(0),
    }
}; NR_LARGE + 1];

/// Held by the thread preparing a CPU's lists (tried: one that fails goes to the zone).
static PREPARING: TryLock = TryLock::new();

/// CPU 0's list; CPU `c`'s is `c * PCPU_UNIT_SIZE` bytes further.
static PCP: AtomicPtr<PerCpuPages> = AtomicPtr::new(ptr::null_mut());
static NR_PCP: AtomicUsize = AtomicUsize::new(0);
/// CPU 0's list of each higher order (index `order - LARGE_PCP_MIN_ORDER`), as `PCP`.
static LARGE: [AtomicPtr<PerCpuPages>; NR_LARGE] =
    [const { AtomicPtr::new(ptr::null_mut()) }; NR_LARGE];

/// Allocates one list per possible CPU (in the reserved percpu chunk when it has room,
/// else a dynamic one), each prepared when a thread first works on its CPU (see
/// `prepare`). Called once at boot, after the percpu allocator's first chunk is set
/// up. `low` is clamped to `high - batch`, so a top-up always has room for a batch.
pub(crate) fn init(nr_cpus: usize, batch: u32, high: u32, low: u32) -> bool {
    let high = high.clamp(1, PCP_MAX_HIGH);
    let batch = batch.clamp(1, high);
    let low = low.min(high - batch);
    // Order 0's list first, then the higher orders' in one area after it.
    let mut lists = [(0usize, high, batch, low, 0usize); NR_LARGE + 1];
    let mut size = list_size(high);
    for (i, l) in lists.iter_mut().enumerate().skip(1) {
        let order = LARGE_PCP_MIN_ORDER + i - 1;
        let high = large_high(order, topology::nr_online_cpus().clamp(1, nr_cpus.max(1)));
        *l = (order, high, large_batch(high), 0, size);
        size += list_size(l.1);
    }
    let area = match percpu::alloc_reserved_percpu(size, 64) {
        Ok(a) => a,
        Err(_) => match percpu::alloc_percpu(size, 64) {
            Ok(a) => a,
            Err(_) => return false,
        },
    };
    for (p, &(_, high, batch, low, offset)) in PARAMS.iter().zip(&lists) {
        p.high.store(high, Ordering::Relaxed);
        p.batch.store(batch, Ordering::Relaxed);
        p.low.store(low, Ordering::Relaxed);
        p.offset.store(offset, Ordering::Relaxed);
    }
    NR_PCP.store(nr_cpus, Ordering::Relaxed);
    for (i, &(_, _, _, _, offset)) in lists.iter().enumerate().skip(1) {
        // SAFETY: inside the area just set up.
        LARGE[i - 1].store(
            unsafe { area.as_ptr().add(offset).cast() },
            Ordering::Release,
        );
    }
    PCP.store(area.as_ptr().cast(), Ordering::Release);
    true
}

/// The list of `cpu`, if it exists.
#[inline]
pub fn pcp(cpu: usize) -> Option<&'static PerCpuPages> {
    list_at(PCP.load(Ordering::Acquire), cpu)
}

/// `cpu`'s list of blocks of `order` (0 or a higher order with a list), if it exists.
#[inline]
pub fn pcp_order(cpu: usize, order: usize) -> Option<&'static PerCpuPages> {
    list_at(base_of(order), cpu)
}

/// CPU 0's list of `order`, or null (no such order, or not set up yet).
#[inline]
fn base_of(order: usize) -> *mut PerCpuPages {
    match order {
        0 => PCP.load(Ordering::Acquire),
        LARGE_PCP_MIN_ORDER..=LARGE_PCP_MAX_ORDER => {
            LARGE[order - LARGE_PCP_MIN_ORDER].load(Ordering::Acquire)
        }
        _ => ptr::null_mut(),
    }
}

/// `cpu`'s copy of the list whose CPU 0 copy is `base`, once prepared (see
/// [`prepare`]): a CPU no thread worked on has none, and is not read.
#[inline]
fn list_at(base: *mut PerCpuPages, cpu: usize) -> Option<&'static PerCpuPages> {
    if base.is_null() || cpu >= NR_PCP.load(Ordering::Relaxed) || !percpu::cpu_used(cpu) {
        return None;
    }
    // SAFETY: lists are never freed once published; every possible CPU has one.
    let pcp = unsafe { &*base.byte_add(cpu * PCPU_UNIT_SIZE) };
    is_prepared(pcp).then_some(pcp)
}

/// fork, prepare: stops the preparing of lists (see [`prepare`]) until
/// [`fork_release_prepare`], so the lists the fork handlers lock and unlock are the same
/// ones, and the child starts with none half prepared (its lock held for good).
pub(crate) fn fork_hold_prepare() {
    PREPARING.lock_wait();
}

/// fork, parent and child: lets lists be prepared again.
pub(crate) fn fork_release_prepare() {
    PREPARING.unlock();
}

/// Whether `pcp` was prepared: a copy the percpu allocator zeroed has no `high`
/// (every list's is at least 1). Written last, under the list's stop word.
#[inline]
fn is_prepared(pcp: &PerCpuPages) -> bool {
    // SAFETY: a field of a live list, read as the sequences read it.
    unsafe { ptr::read_volatile(ptr::addr_of!(pcp.high)) != 0 }
}

/// Prepares `cpu`'s lists, every order's, the first time a thread works on that CPU
/// (see `percpu::used`): until then they are the zeroed copies the percpu allocator
/// gave, whose `high` of 0 refuses every sequence, so the CPU's first take or free of
/// a page comes to a slow path, which calls this. Writing every CPU's lists at boot
/// committed a page a possible CPU. True when they are prepared.
#[cold]
#[inline(never)]
fn prepare(cpu: usize) -> bool {
    let base = PCP.load(Ordering::Acquire);
    if base.is_null() || cpu >= NR_PCP.load(Ordering::Relaxed) {
        return false;
    }
    if !PREPARING.try_lock() {
        return false;
    }
    percpu::mark_cpu_used(cpu);
    let mut ok = true;
    for (order, p) in orders().zip(&PARAMS) {
        // SAFETY: `cpu`'s copy of this list, inside the area `init` allocated for
        // every possible CPU.
        let l = unsafe { base.byte_add(cpu * PCPU_UNIT_SIZE + p.offset.load(Ordering::Relaxed)) };
        // SAFETY: as above.
        let pcp = unsafe { &*l };
        if is_prepared(pcp) {
            continue;
        }
        if !pcp.lock.lock_wait() {
            // A CPU gone for good (`hotplug`).
            ok = false;
            break;
        }
        if rseq_on() {
            settle_sequences(cpu);
        }
        // SAFETY: the list is stopped, with no sequence in flight on it (every sequence
        // refuses a stopped list); its other fields are zero as the percpu allocator
        // gave them. Field by field, the stop word untouched; `high` last, then the
        // unlock publishes them.
        unsafe {
            (*l).batch = p.batch.load(Ordering::Relaxed);
            (*l).order = order as u32;
            (*l).low = p.low.load(Ordering::Relaxed);
            (*l).entry = l.cast::<u8>().add(PCP_HEADER).cast();
            ptr::write_volatile(ptr::addr_of_mut!((*l).high), p.high.load(Ordering::Relaxed));
        }
        pcp.lock.unlock();
    }
    PREPARING.unlock();
    ok
}

/// The orders with a list: 0, then each higher order's (the order of [`PARAMS`]).
fn orders() -> impl Iterator<Item = usize> {
    core::iter::once(0).chain(LARGE_PCP_MIN_ORDER..=LARGE_PCP_MAX_ORDER)
}

/// Every list of `cpu`: order 0's, then each higher order's.
pub fn lists(cpu: usize) -> impl Iterator<Item = &'static PerCpuPages> {
    orders().filter_map(move |order| pcp_order(cpu, order))
}

/// Number of per-CPU lists.
pub fn nr_lists() -> usize {
    NR_PCP.load(Ordering::Relaxed)
}

/// Whether the lists run on restartable sequences (the slab layer turned them on).
#[inline(always)]
fn rseq_on() -> bool {
    sys::rseq::held() & sys::rseq::HOLD_STOPPED == 0
}

/// Takes a hot page of `node` from the calling CPU's list, refilling the list from the
/// zone when it is empty and topping it up when the take leaves it at `low`. The
/// caller runs on a CPU of `node`. Null when the list is busy or stopped (the caller
/// goes to the zone) or memory ran out.
pub fn rmqueue_pcplist(node: usize) -> *mut Page {
    let base = PCP.load(Ordering::Acquire);
    if base.is_null() {
        return base.cast();
    }
    if rseq_on() {
        // An empty list is refilled (a stopped one turns the refill's pushes away).
        // SAFETY: the sequences are on; every CPU below their bound has a list at its
        // unit's offset, changed only by sequences on its CPU or while stopped.
        let page = unsafe { sys::rseq::stack_pop(base.cast()) };
        let page = if page.is_null() {
            refill_rseq(base, node)
        } else {
            page.cast()
        };
        // Every order-0 list has the same `low`.
        if PARAMS[0].low.load(Ordering::Relaxed) > 0 && !page.is_null() {
            top_up(base, node);
        }
        return own_node(page, node, 0);
    }
    take_locked(base, node, false)
}

/// `__GFP_COLD`: takes the coldest page of `node` (the bottom of the calling CPU's
/// list), refilling the list from the zone when it is empty and topping it up when
/// the take leaves it at `low`. The caller runs on a CPU of `node`. Null when the list
/// is busy (the caller goes to the zone) or memory ran out.
pub fn rmqueue_pcplist_cold(node: usize) -> *mut Page {
    take_locked(PCP.load(Ordering::Acquire), node, true)
}

/// A take from the calling CPU's order-0 list at `base`, stopped: the top page, or the
/// bottom one when `cold`. An empty list is refilled first and one left at `low` is
/// topped up after. Null when the list is busy or not set up, or memory ran out.
fn take_locked(base: *mut PerCpuPages, node: usize, cold: bool) -> *mut Page {
    let Some(pcp) = lock_local(base, node) else {
        return ptr::null_mut();
    };
    // SAFETY: the list is stopped: `count` and the entries are ours.
    let page = unsafe {
        if *pcp.count.get() == 0 {
            top_up_locked(pcp, node);
        }
        let page = pop_locked(pcp, cold);
        if pcp.low > 0 {
            top_up_locked(pcp, node);
        }
        page
    };
    pcp.lock.unlock();
    own_node(page, node, 0)
}

/// Stops the calling CPU's copy of the list at `base` for work on the whole list: takes
/// its lock and, while the sequences are on, makes sure none is still in flight on it.
/// None when the CPU is not on `node` (the thread migrated) or the list is busy; the
/// caller then goes to the zone. The caller unlocks `lock` when done.
fn lock_local(base: *mut PerCpuPages, node: usize) -> Option<&'static PerCpuPages> {
    let cpu = sys::cpu::current();
    if topology::nr_node_ids() > 1 && topology::cpu_to_node(cpu) != node {
        return None;
    }
    let pcp = match list_at(base, cpu) {
        Some(pcp) => pcp,
        None if prepare(cpu) => list_at(base, cpu)?,
        None => return None,
    };
    if !pcp.lock.try_lock() {
        return None;
    }
    if rseq_on() {
        settle_sequences(cpu);
    }
    Some(pcp)
}

/// The rseq path's top-up after a take, when the list may be at `low`: done stopped,
/// since the pages go under the ones already there. A busy list is left alone (the
/// next take tries again).
#[cold]
fn top_up(base: *mut PerCpuPages, node: usize) {
    if let Some(pcp) = lock_local(base, node) {
        // SAFETY: the list is stopped.
        unsafe { top_up_locked(pcp, node) };
        pcp.lock.unlock();
    }
}

/// While the list holds `low` pages or fewer (an empty list always), slides a `batch`
/// of pages from `node`'s zone under the pages on it: they come from the zone, so
/// they are colder than any page a free put there. Stops early when the zone runs
/// out. The caller holds the list's lock, settled.
unsafe fn top_up_locked(pcp: &PerCpuPages, node: usize) {
    let mut buf = [ptr::null_mut::<Page>(); REFILL_CHUNK];
    loop {
        // SAFETY: the caller holds the list's lock, settled: `count` and the entries
        // are ours.
        let count = unsafe { *pcp.count.get() } as usize;
        // `low` is at least 0, so an empty list always takes a batch.
        if count > pcp.low as usize {
            return;
        }
        let mut need = (pcp.batch as usize).min(pcp.high as usize - count);
        let mut have = count;
        while need > 0 {
            let got = take_from_zone(node, &mut buf[..need.min(REFILL_CHUNK)]);
            if got == 0 {
                return;
            }
            // SAFETY: `have + got <= count + batch.min(high - count) <= high`: both
            // copies stay in the entry array; `ptr::copy` allows the overlap.
            unsafe {
                ptr::copy(pcp.entry, pcp.entry.add(got), have);
                ptr::copy_nonoverlapping(buf.as_ptr(), pcp.entry, got);
            }
            have += got;
            need -= got;
            // SAFETY: as above.
            unsafe { *pcp.count.get() = have as u32 };
        }
    }
}

/// Takes a block of 2^`order` pages (a higher order with a list) of `node` from the
/// calling CPU's list, whose node is `node`. Null when the list is empty, busy or
/// stopped, or has no such order: the caller goes to the zone. An empty list is not
/// refilled (see the module comment). The block's head keeps the flags its last free
/// left (`PG_FREED` for a large block) until the caller sets its own.
#[inline]
pub fn rmqueue_large(order: usize, node: usize) -> *mut Page {
    let base = base_of(order);
    if base.is_null() || order == 0 {
        return ptr::null_mut();
    }
    if rseq_on() {
        // SAFETY: the sequences are on; every CPU below their bound has this order's
        // list at its unit's offset, changed only by sequences on its CPU or while
        // stopped.
        let page = unsafe { sys::rseq::stack_pop(base.cast()) };
        return own_node(page.cast(), node, order);
    }
    let Some(pcp) = list_at(base, sys::cpu::current()) else {
        return ptr::null_mut();
    };
    if !pcp.lock.try_lock() {
        return ptr::null_mut();
    }
    // SAFETY: the list's lock is held.
    let page = unsafe { pop_locked(pcp, false) };
    pcp.lock.unlock();
    own_node(page, node, order)
}

/// Caches the block of 2^`order` pages headed by `page` (a higher order with a list)
/// on the calling CPU's list, whose node is the block's. False when the list is busy
/// or stopped or there is no list of that order; the caller then frees it to the
/// zone.
///
/// # Safety
/// `page` heads an allocated block of 2^`order` pages, naturally aligned, that nobody
/// uses any more.
#[inline]
pub unsafe fn free_large_pcppage(page: *mut Page, order: usize) -> bool {
    let base = base_of(order);
    if base.is_null() || order == 0 {
        return false;
    }
    if rseq_on() {
        // SAFETY: as in `rmqueue_large`; the block is free and ours. A full list gives
        // `batch` blocks back first; a stopped one is busy (`free_full` finds its lock
        // taken).
        return unsafe {
            sys::rseq::stack_push(base.cast(), page.cast()) || free_full(base, page, false)
        };
    }
    // SAFETY: `base` is this order's published list; the block is free and ours.
    unsafe { free_full(base, page, false) }
}

/// `page` (heading 2^`order` pages), unless the thread moved to another node's CPU on
/// the way and took one of that node's blocks, which then goes back to its zone (the
/// caller takes `node`'s).
#[inline(always)]
fn own_node(page: *mut Page, node: usize, order: usize) -> *mut Page {
    if topology::nr_node_ids() > 1 && !page.is_null() && page_node(page) != node {
        // SAFETY: a block just taken off a list, used by nobody.
        unsafe { free_to_zone(page, order) };
        return ptr::null_mut();
    }
    page
}

/// The rseq path's refill: takes `batch` pages from the zone, keeps one and pushes the
/// rest in one sequence (one at a time where they do not all fit); what does not fit
/// (the thread migrated, the list was stopped or filled meanwhile) goes back to the
/// zone.
#[cold]
fn refill_rseq(base: *mut PerCpuPages, node: usize) -> *mut Page {
    // A CPU's first take comes here (its list refuses the pops until prepared).
    let cpu = sys::cpu::current();
    if list_at(base, cpu).is_none() {
        prepare(cpu);
    }
    // Every order-0 list has the same batch.
    let batch = PARAMS[0].batch.load(Ordering::Relaxed) as usize;
    let mut buf = [ptr::null_mut::<Page>(); REFILL_CHUNK];
    let n = take_from_zone(node, &mut buf[..batch.min(REFILL_CHUNK)]);
    if n == 0 {
        return ptr::null_mut();
    }
    // The stacks hold pages as entries of their own type: the same pointers.
    // SAFETY: the first `n - 1` entries of `buf`, initialised above.
    let pages = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<*mut u8>(), n - 1) };
    // SAFETY: as in `rmqueue_pcplist`; the pages before the one kept are free and ours.
    let pushed = unsafe { sys::rseq::stack_push_all(base.cast(), pages) };
    for &page in &buf[pushed..n - 1] {
        // SAFETY: taken from the zone above and never published.
        unsafe { free_to_zone(page, 0) };
    }
    buf[n - 1]
}

/// Takes up to `buf.len()` order-0 pages from `node`'s zone under one lock.
fn take_from_zone(node: usize, buf: &mut [*mut Page]) -> usize {
    let zone = zone(node);
    let mut z = zone.lock();
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: under the zone lock.
        let page = unsafe { z.rmqueue(0, node) };
        if page.is_null() {
            break;
        }
        buf[n] = page;
        n += 1;
    }
    super::purge::unlock_after_alloc(zone, z);
    n
}

/// Pops the top page, or with `cold` the bottom one (the rest shifted down over it), or
/// null. The caller holds the list's lock.
unsafe fn pop_locked(pcp: &PerCpuPages, cold: bool) -> *mut Page {
    // SAFETY: the caller holds the list's lock: `count` and the entries are ours.
    let count = unsafe { *pcp.count.get() } as usize;
    if count == 0 {
        return ptr::null_mut();
    }
    // SAFETY: as above; `0 < count <= high`, so the entries `0..count` are in the array
    // and set, and `ptr::copy` allows the overlap.
    unsafe {
        *pcp.count.get() = count as u32 - 1;
        if cold {
            let page = *pcp.entry;
            ptr::copy(pcp.entry.add(1), pcp.entry, count - 1);
            page
        } else {
            *pcp.entry.add(count - 1)
        }
    }
}

/// Caches the order-0 `page` on the calling CPU's list, whose node is the page's.
/// Returns false when the list is busy or stopped; the caller then frees it to the
/// zone.
///
/// # Safety
/// `page` is an allocated order-0 page that nobody uses any more.
pub unsafe fn free_pcppage(page: *mut Page) -> bool {
    let base = PCP.load(Ordering::Acquire);
    if base.is_null() {
        return false;
    }
    if rseq_on() {
        // A full list gives pages back first; a stopped one is busy (`free_full` finds
        // its lock taken).
        // SAFETY: as in `rmqueue_pcplist`; the page is free and ours, and not null.
        return unsafe {
            sys::rseq::stack_push(base.cast(), page.cast()) || free_full(base, page, false)
        };
    }
    // SAFETY: `base` is the published order-0 list; the page is free and ours.
    unsafe { free_full(base, page, false) }
}

/// `free_cold_page`: caches the order-0 `page`, whose contents nobody touched lately,
/// at the bottom of the calling CPU's list (whose node is the page's), under the hot
/// pages. False when the list is busy; the caller then frees it to the zone.
///
/// # Safety
/// `page` is an allocated order-0 page that nobody uses any more.
pub unsafe fn free_cold_pcppage(page: *mut Page) -> bool {
    let base = PCP.load(Ordering::Acquire);
    if base.is_null() {
        return false;
    }
    // SAFETY: `base` is the published order-0 list; the page is free and ours.
    unsafe { free_full(base, page, true) }
}

/// A free into the calling CPU's copy of the list at `base`, stopped: the tried-lock
/// path's every free, the rseq path's free into a full list, and every cold free
/// (`cold`: at the bottom). Gives `batch` cold blocks back first when the list is at
/// `high`.
#[cold]
unsafe fn free_full(base: *mut PerCpuPages, page: *mut Page, cold: bool) -> bool {
    let Some(pcp) = lock_local(base, page_node(page)) else {
        return false;
    };
    // SAFETY: the list is stopped: `count` and the entries are ours.
    if unsafe { *pcp.count.get() } >= pcp.high {
        // SAFETY: as above.
        unsafe { free_pcppages_bulk(pcp, pcp.batch as usize) };
    }
    // SAFETY: as above.
    let count = unsafe { *pcp.count.get() } as usize;
    let done = count < pcp.high as usize;
    if done {
        // SAFETY: as above; `count < high`, so the slot `count` lies in the entry
        // array, and `ptr::copy` allows the overlap.
        unsafe {
            if cold {
                ptr::copy(pcp.entry, pcp.entry.add(1), count);
                *pcp.entry = page;
            } else {
                *pcp.entry.add(count) = page;
            }
            *pcp.count.get() = count as u32 + 1;
        }
    }
    pcp.lock.unlock();
    done
}

/// After stopping `cpu`'s list: makes sure no sequence that read the stop word before
/// it was set still runs on that CPU. Running there now means any such sequence has
/// finished or been preempted (and will restart and see the stop); otherwise they are
/// restarted with a membarrier. If the kernel refuses that (a sandbox installed after
/// boot), the sequences are retired for good, which leaves none in flight either, and
/// the lists use their tried locks from then on.
fn settle_sequences(cpu: usize) {
    if sys::cpu::current() != cpu && !sys::membarrier::rseq_fence(Some(cpu)) {
        sys::rseq::retire_stacks(false);
    }
}

/// `free_pcppages_bulk`: gives the `count` coldest blocks (the bottom of the stack)
/// back to their zones, one lock a run of blocks of the same node, and shifts the rest
/// down. The caller holds the list's lock, settled.
unsafe fn free_pcppages_bulk(pcp: &PerCpuPages, count: usize) {
    // SAFETY: the caller holds the list's lock, settled: `count` and the entries are
    // ours.
    let have = unsafe { *pcp.count.get() } as usize;
    let n = count.min(have);
    if n == 0 {
        return;
    }
    let now = sys::time::now_ms();
    let order = pcp.order as usize;
    // SAFETY: as above; `n <= have <= high`: the bottom `n` entries are set.
    let pages = unsafe { core::slice::from_raw_parts(pcp.entry, n) };
    let mut i = 0;
    while i < n {
        let node = page_node(pages[i]);
        let zone = zone(node);
        {
            let mut z = zone.lock();
            while i < n && page_node(pages[i]) == node {
                // A cached large block's head reads `PG_FREED`: dirty.
                // SAFETY: a cached block's head is a mapped descriptor; `flags` is atomic.
                let zero = unsafe { (*pages[i]).flags() } & PG_ZERO != 0;
                // SAFETY: under the lock of the block's zone (`page_node`); a cached
                // block of `order` is handed out and used by nobody.
                unsafe { z.free_one(pages[i], order, usize::from(zero) << order, now) };
                if order > 0 {
                    // Lists above order 0 hold large kmalloc blocks only, still
                    // counted as such until they are back in the zone.
                    z.large_pages -= 1 << order;
                }
                i += 1;
            }
        }
        super::purge::maybe_purge(zone, now);
    }
    // SAFETY: the list's lock is held; entries `n..have` lie in the array, and
    // `ptr::copy` allows the overlap.
    unsafe {
        ptr::copy(pcp.entry.add(n), pcp.entry, have - n);
        *pcp.count.get() = (have - n) as u32;
    }
}

/// Frees one block of 2^`order` pages to its node's zone, keeping what it knows of its
/// contents.
unsafe fn free_to_zone(page: *mut Page, order: usize) {
    // SAFETY: callers pass a block's head, a mapped descriptor; `flags` is atomic.
    let zero = unsafe { (*page).flags() } & PG_ZERO != 0;
    let mut z = zone(page_node(page)).lock();
    // SAFETY: under the lock of the block's zone; callers pass a block of `order`
    // handed out and used by nobody.
    unsafe { z.free_one(page, order, usize::from(zero) << order, sys::time::now_ms()) };
    if order > 0 {
        // As in `free_pcppages_bulk`: a large kmalloc block leaves the large count.
        z.large_pages -= 1 << order;
    }
}

/// `drain_pages`: gives every page cached on `cpu`'s lists (order 0 and the higher
/// orders) back to its zone. Waits for each list's lock, so it is only for
/// administrative paths (trim, a CPU leaving).
pub fn drain_pages(cpu: usize) {
    // An empty list is left alone (its drain costs a fence): a push in flight meanwhile
    // stays where it lands, as it would after the drain.
    for pcp in lists(cpu).filter(|p| count_of(p) > 0) {
        if pcp.lock.lock_wait() {
            drain_locked(pcp, cpu);
        }
    }
}

/// [`drain_pages`] with tried locks, for the background reclaim thread, which must
/// never wait for a CPU's list: false when some list was busy (left as it was).
pub(crate) fn try_drain_pages(cpu: usize) -> bool {
    let mut all = true;
    // As in `drain_pages`: not the empty lists.
    for pcp in lists(cpu).filter(|p| count_of(p) > 0) {
        if pcp.lock.try_lock() {
            drain_locked(pcp, cpu);
        } else {
            all = false;
        }
    }
    all
}

/// Empties `cpu`'s list `pcp`, whose lock the caller took, and unlocks it.
fn drain_locked(pcp: &PerCpuPages, cpu: usize) {
    // A sequence still in flight on `cpu` could commit into the list being emptied:
    // it is restarted first (or the sequences retired).
    if rseq_on() {
        settle_sequences(cpu);
    }
    // SAFETY: the list's lock is held and no sequence runs on it.
    unsafe { free_pcppages_bulk(pcp, *pcp.count.get() as usize) };
    pcp.lock.unlock();
}

/// Pages cached on `cpu`'s lists, every order (racy: for statistics).
pub fn count(cpu: usize) -> usize {
    lists(cpu).map(|p| count_of(p) << p.order).sum()
}

/// Blocks on the list `pcp` (racy: for statistics, tests, and the drains that pass
/// over empty lists).
pub fn count_of(pcp: &PerCpuPages) -> usize {
    // SAFETY: a racy read of an aligned u32, for statistics and as a hint.
    unsafe { ptr::read_volatile(pcp.count.get()) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each CPU keeps [`LARGE_PCP_BYTES`] of every higher order while its share of
    /// [`LARGE_PCP_TOTAL_BYTES`] is as large (up to 16 CPUs), less past that, so the
    /// CPUs together keep the total; and always 2 blocks at least.
    #[test]
    fn larger_machines_share_one_bound() {
        for order in LARGE_PCP_MIN_ORDER..=LARGE_PCP_MAX_ORDER {
            let block = sys::PAGE_SIZE << order;
            for nr in [1, 2, 3, 4, 8, 16, 17, 64, 256, 4096] {
                let high = large_high(order, nr) as usize;
                let share = (LARGE_PCP_TOTAL_BYTES / nr).min(LARGE_PCP_BYTES);
                assert_eq!(high, (share / block).max(2), "order {order}, {nr} CPUs");
                assert!(high * block <= LARGE_PCP_BYTES.max(2 * block));
                assert!(
                    nr * high * block <= LARGE_PCP_TOTAL_BYTES.max(nr * 2 * block),
                    "order {order}, {nr} CPUs: {} bytes in all",
                    nr * high * block
                );
                assert!(large_batch(large_high(order, nr)) >= 1);
            }
            assert_eq!(
                large_high(order, 16) as usize * block,
                LARGE_PCP_BYTES.max(2 * block)
            );
            assert!(large_high(order, 64) < large_high(order, 16) || large_high(order, 16) == 2);
        }
    }
}
