//! Per-CPU page lists, the kernel's `per_cpu_pages`: order-0 pages cached per CPU so
//! that slab growth and shrinkage rarely take the zone lock. Hot pages (freed last,
//! likely in cache) are taken from the front; cold ones from the back. The list is
//! refilled `batch` pages at a time under the zone lock and gives back `batch` pages
//! with one bulk free when it holds more than `high`.
//!
//! The lists live in the reserved percpu chunk, one in each CPU's unit, so a CPU's
//! list sits on that CPU's node beside its other per-CPU data.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::desc::{Page, PG_ZERO};
use super::list::PageList;
use super::zone;
use crate::percpu::{self, PCPU_UNIT_SIZE};
use crate::sync::TryLock;
use crate::sys;

/// One CPU's page list.
#[repr(C, align(64))]
pub struct PerCpuPages {
    /// Tried, never waited on.
    pub lock: TryLock,
    /// Give back `batch` pages when the list holds more than this.
    pub high: u32,
    /// Pages moved per refill or bulk free.
    pub batch: u32,
    /// Cached pages: hot at the front, cold at the back. Under `lock`.
    pub list: UnsafeCell<PageList>,
}

// SAFETY: `list` is only touched with `lock` held.
unsafe impl Sync for PerCpuPages {}

/// CPU 0's list; CPU `c`'s is `c * PCPU_UNIT_SIZE` bytes further.
static PCP: AtomicPtr<PerCpuPages> = AtomicPtr::new(ptr::null_mut());
static NR_PCP: AtomicUsize = AtomicUsize::new(0);

/// Allocates and initialises one list per possible CPU in the reserved percpu chunk.
/// Called once at boot, after the percpu allocator's first chunk is set up.
pub(crate) fn init(nr_cpus: usize, batch: u32, high: u32) -> bool {
    let size = core::mem::size_of::<PerCpuPages>();
    let Ok(area) = percpu::alloc_reserved_percpu(size, core::mem::align_of::<PerCpuPages>()) else {
        return false;
    };
    for cpu in 0..nr_cpus {
        // SAFETY: each CPU's copy of the area is ours alone and sized for one list.
        unsafe {
            area.per_cpu_ptr(cpu)
                .cast::<PerCpuPages>()
                .write(PerCpuPages {
                    lock: TryLock::new(),
                    high,
                    batch,
                    list: UnsafeCell::new(PageList::new()),
                });
        }
    }
    NR_PCP.store(nr_cpus, Ordering::Relaxed);
    PCP.store(area.as_ptr().cast(), Ordering::Release);
    true
}

/// The list of `cpu`, if it exists.
#[inline]
pub fn pcp(cpu: usize) -> Option<&'static PerCpuPages> {
    let base = PCP.load(Ordering::Acquire);
    if base.is_null() || cpu >= NR_PCP.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: lists are never freed once published; every possible CPU has one.
    Some(unsafe { &*base.byte_add(cpu * PCPU_UNIT_SIZE) })
}

/// Number of per-CPU lists.
pub fn nr_lists() -> usize {
    NR_PCP.load(Ordering::Relaxed)
}

/// Takes one page from `cpu`'s list (refilling it from `node`'s zone), cold or hot.
/// Returns null when the list is busy (the caller goes to the zone) or memory ran out.
pub fn rmqueue_pcplist(cpu: usize, node: usize, cold: bool) -> *mut Page {
    let Some(pcp) = pcp(cpu) else {
        return ptr::null_mut();
    };
    if !pcp.lock.try_lock() {
        return ptr::null_mut();
    }
    // SAFETY: the per-CPU lock is held, so the list is ours.
    let list = unsafe { &mut *pcp.list.get() };
    if list.is_empty() {
        let zone = zone(node);
        let mut z = zone.lock();
        for _ in 0..pcp.batch {
            // SAFETY: under the zone lock.
            let page = unsafe { z.rmqueue(0, node) };
            if page.is_null() {
                break;
            }
            // SAFETY: a fresh page on no list.
            unsafe { list.push_back(page) };
        }
    }
    let page = if cold {
        list.pop_back()
    } else {
        list.pop_front()
    };
    pcp.lock.unlock();
    page
}

/// Caches the order-0 `page` (of `node`) on `cpu`'s list. Returns false when the list
/// is busy, in which case the caller frees it to the zone.
///
/// # Safety
/// `page` is an allocated order-0 page of `node`'s zone that nobody uses any more.
pub unsafe fn free_pcppage(cpu: usize, page: *mut Page) -> bool {
    let Some(pcp) = pcp(cpu) else {
        return false;
    };
    if !pcp.lock.try_lock() {
        return false;
    }
    let list = &mut *pcp.list.get();
    list.push_front(page);
    if list.len() > pcp.high as usize {
        free_pcppages_bulk(list, pcp.batch as usize, cpu);
    }
    pcp.lock.unlock();
    true
}

/// `free_pcppages_bulk`: gives `count` cold pages of `list` back to their zones under
/// one lock.
unsafe fn free_pcppages_bulk(list: &mut PageList, count: usize, cpu: usize) {
    let node = crate::topology::cpu_to_node(cpu);
    let zone = zone(node);
    let now = sys::time::now_ms();
    {
        let mut z = zone.lock();
        for _ in 0..count {
            let page = list.pop_back();
            if page.is_null() {
                break;
            }
            let zero = (*page).flags() & PG_ZERO;
            z.free_one(page, 0, zero, now);
        }
    }
    super::purge::maybe_purge(zone, now);
}

/// `drain_pages`: gives every page cached on `cpu`'s list back to its zone. Waits for
/// the list's lock, so it is only for administrative paths (trim, a CPU leaving).
pub fn drain_pages(cpu: usize) {
    let Some(pcp) = pcp(cpu) else {
        return;
    };
    if !pcp.lock.lock_wait() {
        return;
    }
    // SAFETY: the per-CPU lock is held.
    unsafe {
        let list = &mut *pcp.list.get();
        let n = list.len();
        free_pcppages_bulk(list, n, cpu);
    }
    pcp.lock.unlock();
}

/// Pages cached on `cpu`'s list (racy: for statistics).
pub fn count(cpu: usize) -> usize {
    // SAFETY: a racy read of a length, for statistics only.
    pcp(cpu).map_or(0, |p| unsafe { (*p.list.get()).len() })
}
