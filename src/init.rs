//! Boot, as `mm_init` does it, lazily on the first allocation: config → topology → page
//! pool → percpu first chunk → per-CPU page lists → the cache of caches → kmalloc
//! caches → ready.
//!
//! One thread boots; others wait for it. A recursive call from the booting thread
//! itself (nothing in boot allocates, but a hook could) gets null instead of deadlock.
//!
//! A boot that fails says why in one line on stderr and leaves every finished step in
//! place. It is retried with backoff (the first retry after 10 ms, doubling to at
//! most 10 s), so that a process that cannot have memory now (an address-space limit,
//! a heap limit below what boot needs) pays one clock read per call meanwhile, not a
//! failed mapping; a kernel page size cpuslab cannot use is never retried.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::config::Config;
use crate::page::pcp;
use crate::slab::{self, RawCache};
use crate::sys;
use crate::{cpuset, kmalloc, page, percpu, topology};

use crate::state::{BOOTING, FAILED, READY, STATE, UNINIT, UNSUPPORTED};

/// First and largest wait before a failed boot is tried again, in milliseconds.
const BACKOFF_MIN_MS: u64 = 10;
const BACKOFF_MAX_MS: u64 = 10_000;

/// When a failed boot may be tried again (`sys::time::now_ms`).
static RETRY_AT: AtomicU64 = AtomicU64::new(0);
/// The wait after the last failure.
static BACKOFF_MS: AtomicU64 = AtomicU64::new(0);
/// The last failure's reason, so that a failure is reported once, not on every retry.
static LAST_FAILURE: AtomicU8 = AtomicU8::new(0);
/// A heap limit is set (`CPUSLAB_HEAP_LIMIT`): requests are never handed to another
/// allocator, which would not respect it.
static LIMITED: AtomicBool = AtomicBool::new(false);
static BOOT_THREAD: AtomicUsize = AtomicUsize::new(0);
static FORK_HELD: AtomicBool = AtomicBool::new(false);
static ATFORK_REGISTERED: AtomicBool = AtomicBool::new(false);

pub use crate::state::{ready, unsupported};

/// Boots the allocator if needed. False when it cannot boot (yet).
#[inline]
pub fn ensure() -> bool {
    ready() || boot_slow()
}

/// `alloc(size, align)` (kmalloc or kzalloc), booting the allocator first when it
/// found it not booted: kmalloc never boots, the entry points do.
#[inline(always)]
pub(crate) fn booted(alloc: fn(usize, usize) -> *mut u8, size: usize, align: usize) -> *mut u8 {
    let p = alloc(size, align);
    if p.is_null() {
        return boot_and_retry(alloc, size, align);
    }
    p
}

#[cold]
#[inline(never)]
fn boot_and_retry(alloc: fn(usize, usize) -> *mut u8, size: usize, align: usize) -> *mut u8 {
    if ready() {
        // Booted already: out of memory.
        return core::ptr::null_mut();
    }
    if ensure() || unsupported() {
        // Up now, or never (kmalloc then hands the request to the system allocator).
        return alloc(size, align);
    }
    // Boot failed for now (it is retried later).
    core::ptr::null_mut()
}

/// Whether a request cpuslab could not serve may go to the system allocator instead
/// (the C interface does that): true while the booting thread allocates, when boot
/// failed, and, once booted, after the kernel refused cpuslab an arena (an
/// address-space or overcommit limit) -- unless a heap limit is set, which only
/// cpuslab would enforce and which is then why it refused. A process that never ran
/// short of address space never forwards after boot, not even a request too large
/// for any allocator (glibc's failed attempt would leave its heap grown by `mmap`
/// instead of `brk`).
///
/// Forwarding after boot matters under `ulimit -v`: cpuslab's arenas come in blocks of
/// 4 MiB aligned in 256 MiB slots, so when no block fits any more, glibc's heap may
/// still grow into what is left: under `ulimit -v 20480` a small C program got 3 MiB
/// of 100-byte blocks from cpuslab alone, 9 with this, 12 from glibc alone.
#[cfg(feature = "capi")]
pub fn may_forward() -> bool {
    match STATE.load(Ordering::Acquire) {
        READY => page::arena::refused_unlimited(),
        BOOTING => true,
        _ => !LIMITED.load(Ordering::Relaxed),
    }
}

/// Why a boot failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BootError {
    /// cpuslab has no implementation for this operating system or architecture (see
    /// `sys`).
    Platform,
    /// The kernel's page size is not `PAGE_SIZE`.
    PageSize,
    /// The heap limit refused the memory boot needs.
    HeapLimit,
    /// The kernel refused a mapping (address space or memory exhausted).
    NoMemory,
}

#[cold]
fn boot_slow() -> bool {
    let me = sys::cpu::thread_id();
    loop {
        match STATE.load(Ordering::Acquire) {
            READY => return true,
            UNSUPPORTED => return false,
            FAILED if sys::time::now_ms() < RETRY_AT.load(Ordering::Relaxed) => return false,
            _ => {}
        }
        let state = STATE.load(Ordering::Acquire);
        if state == UNINIT || state == FAILED {
            if STATE
                .compare_exchange(state, BOOTING, Ordering::Acquire, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            BOOT_THREAD.store(me, Ordering::Relaxed);
            let result = boot();
            sys::process::boot_done();
            BOOT_THREAD.store(0, Ordering::Relaxed);
            let next = match result {
                Ok(()) => READY,
                Err(e) => failed(e),
            };
            STATE.store(next, Ordering::Release);
            if next == READY && !ATFORK_REGISTERED.swap(true, Ordering::Relaxed) {
                // After READY: glibc may allocate while registering.
                sys::fork::register(fork_prepare, fork_parent, fork_child);
                // A library that may be unloaded stays mapped from now on (also after
                // READY: the loader may allocate). The preload library never is.
                #[cfg(not(feature = "capi"))]
                sys::dl::pin_own_object();
            }
            return next == READY;
        }
        if state == BOOTING && BOOT_THREAD.load(Ordering::Relaxed) == me {
            return false;
        }
        sys::futex::yield_now();
    }
}

/// Records a failed boot: reports it (once a reason) and sets when to try again.
/// Returns the state to enter.
#[cold]
fn failed(e: BootError) -> u8 {
    let first = LAST_FAILURE.swap(e as u8 + 1, Ordering::Relaxed) != e as u8 + 1;
    if e == BootError::Platform {
        // Silent: a program built for Linux and developed elsewhere runs there on the
        // system allocator, and `cpuslab::supported()` says so.
        return UNSUPPORTED;
    }
    if e == BootError::PageSize {
        if first {
            sys::io::warn(format_args!(
                "page size {} is not supported (4096 only); glibc's malloc serves instead",
                sys::kernel_page_size()
            ));
        }
        return UNSUPPORTED;
    }
    let wait = (BACKOFF_MS.load(Ordering::Relaxed) * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    BACKOFF_MS.store(wait, Ordering::Relaxed);
    RETRY_AT.store(sys::time::now_ms() + wait, Ordering::Relaxed);
    if first {
        let then = if LIMITED.load(Ordering::Relaxed) {
            "allocations fail until it can"
        } else {
            "the C interface hands allocations to the system allocator until it can"
        };
        match e {
            BootError::HeapLimit => sys::io::warn(format_args!(
                "cannot boot: CPUSLAB_HEAP_LIMIT={} is below what boot needs; {then}",
                page::arena::limit()
            )),
            _ => sys::io::warn(format_args!(
                "cannot boot: the kernel refused memory (address space or memory limit); {then}"
            )),
        }
    }
    FAILED
}

/// Why the step that just failed failed: the heap limit when it is set and the next
/// block would pass it, else the kernel.
fn memory_error() -> BootError {
    let limit = page::arena::limit();
    if limit != 0 && page::arena::committed() + page::arena::BLOCK_SIZE > limit {
        BootError::HeapLimit
    } else {
        BootError::NoMemory
    }
}

fn boot() -> Result<(), BootError> {
    // What a sandbox the program installs later is told from (`sys::process`).
    crate::sys::process::note_boot_seccomp();
    // The platform and page-size checks, topology and the page pool's options.
    match page::setup::ensure_up() {
        Err(page::setup::Unsupported::Platform) => return Err(BootError::Platform),
        Err(page::setup::Unsupported::PageSize) => return Err(BootError::PageSize),
        Ok(()) => {}
    }
    let config = Config::from_env();
    LIMITED.store(config.heap_limit != 0, Ordering::Relaxed);
    slab::layout::set_freelist_random(config.freelist_random);
    // The percpu allocator hosts the per-CPU page lists and array caches.
    if !percpu::setup_first_chunk() {
        return Err(memory_error());
    }
    if pcp::nr_lists() == 0
        && !pcp::init(
            topology::nr_cpu_ids(),
            config.pcp_batch,
            config.pcp_high,
            config.pcp_low,
        )
    {
        return Err(memory_error());
    }
    if slab::KMEM_CACHE.cpu_cache.load(Ordering::Acquire).is_null() {
        // Before the first cache is set up: no cache is ever used both ways.
        slab::fastpath::init();
        // The node cache first: every other cache's node structures are its objects.
        if !slab::KMEM_CACHE_NODE.is_set_up() {
            // SAFETY: only the booting thread runs this.
            let r = unsafe {
                slab::KMEM_CACHE_NODE.setup(
                    "kmem_cache_node",
                    core::mem::size_of::<slab::node::KmemCacheNode>(),
                    core::mem::align_of::<slab::node::KmemCacheNode>(),
                    slab::SlabFlags::HWCACHE_ALIGN.0,
                )
            };
            if r.is_err() {
                return Err(memory_error());
            }
            slab::link(&slab::KMEM_CACHE_NODE);
        }
        // SAFETY: only the booting thread runs this.
        let r = unsafe {
            slab::KMEM_CACHE.setup(
                "kmem_cache",
                core::mem::size_of::<RawCache>(),
                core::mem::align_of::<RawCache>(),
                0,
            )
        };
        if r.is_err() {
            return Err(memory_error());
        }
        slab::link(&slab::KMEM_CACHE);
    }
    if kmalloc::init().is_err() {
        return Err(memory_error());
    }
    slab::reap::arm();
    if config.background {
        // Enabled now, started later by the first slow path that needs it.
        crate::background::enable();
        slab::reap::set_slow_path_hook(crate::background::kick_from_slab);
    }
    // The CPU-dead path (cpuset rescan, cpuset::cpu_dead) empties these layers' caches.
    cpuset::register_cpu_dead(pcp::drain_pages);
    cpuset::register_cpu_dead(slab::reap::drain_cpu);
    Ok(())
}

extern "C" fn fork_prepare() {
    if ready() {
        // The cpuset tree's lock first: attach and rescan take page and slab locks
        // under it, never the other way round.
        cpuset::fork_prepare();
        slab::fork_prepare();
        FORK_HELD.store(true, Ordering::Relaxed);
    }
}

extern "C" fn fork_parent() {
    if FORK_HELD.swap(false, Ordering::Relaxed) {
        // SAFETY: `fork_prepare` took the locks on this thread.
        unsafe { slab::fork_release() };
        cpuset::fork_parent();
    }
}

extern "C" fn fork_child() {
    if FORK_HELD.swap(false, Ordering::Relaxed) {
        // SAFETY: the child's only thread is the one that took the locks.
        unsafe { slab::fork_release() };
        cpuset::fork_child();
        sys::process::after_fork();
        slab::fastpath::after_fork();
        // The reclaim thread did not come along: the child's first slow path starts one.
        crate::background::after_fork();
    }
}
