//! Boot, as `mm_init` does it, lazily on the first allocation: config → topology → page
//! pool → percpu first chunk → per-CPU page lists → the cache of caches → kmalloc
//! caches → ready.
//!
//! One thread boots; others wait for it. A recursive call from the booting thread
//! itself (nothing in boot allocates, but a hook could) gets null instead of deadlock.
//! A boot that fails (no memory) leaves every finished step in place and is retried by
//! the next allocation.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::config::Config;
use crate::page::{pcp, purge};
use crate::slab::{self, RawCache};
use crate::sys::{self, PAGE_SIZE};
use crate::{cpuset, kmalloc, page, percpu, topology};

const UNINIT: u8 = 0;
const BOOTING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static BOOT_THREAD: AtomicUsize = AtomicUsize::new(0);
static FORK_HELD: AtomicBool = AtomicBool::new(false);
static ATFORK_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Whether the allocator has booted.
#[inline]
pub fn ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// Boots the allocator if needed. False when it cannot boot (yet).
#[inline]
pub fn ensure() -> bool {
    ready() || boot_slow()
}

#[cold]
fn boot_slow() -> bool {
    let me = sys::cpu::thread_id();
    loop {
        match STATE.compare_exchange(UNINIT, BOOTING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                BOOT_THREAD.store(me, Ordering::Relaxed);
                let ok = boot();
                BOOT_THREAD.store(0, Ordering::Relaxed);
                STATE.store(if ok { READY } else { UNINIT }, Ordering::Release);
                if ok && !ATFORK_REGISTERED.swap(true, Ordering::Relaxed) {
                    // After READY: glibc may allocate while registering.
                    sys::fork::register(fork_prepare, fork_parent, fork_child);
                }
                return ok;
            }
            Err(READY) => return true,
            Err(_) => {
                if BOOT_THREAD.load(Ordering::Relaxed) == me {
                    return false;
                }
                sys::futex::yield_now();
            }
        }
    }
}

fn boot() -> bool {
    if sys::kernel_page_size() != PAGE_SIZE {
        sys::io::warn(format_args!(
            "page size {} is not supported (4096 only); every allocation fails",
            sys::kernel_page_size()
        ));
        return false;
    }
    let config = Config::from_env();
    topology::discover();
    page::arena::set_limit(config.heap_limit);
    purge::configure(config.decay_ms, config.retain_bytes);
    // The percpu allocator hosts the per-CPU page lists and array caches.
    if !percpu::setup_first_chunk() {
        return false;
    }
    if pcp::nr_lists() == 0 && !pcp::init(topology::nr_cpu_ids(), config.pcp_batch, config.pcp_high)
    {
        return false;
    }
    if slab::KMEM_CACHE.cpu_cache.load(Ordering::Acquire).is_null() {
        // Before the first cache is set up: no cache is ever used both ways.
        slab::fastpath::init();
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
            return false;
        }
        slab::link(&slab::KMEM_CACHE);
    }
    if kmalloc::init().is_err() {
        return false;
    }
    slab::reap::arm();
    // The CPU-dead path (cpuset rescan, cpuset::cpu_dead) empties these layers' caches.
    cpuset::register_cpu_dead(pcp::drain_pages);
    cpuset::register_cpu_dead(slab::reap::drain_cpu);
    true
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
        slab::fastpath::after_fork();
    }
}
