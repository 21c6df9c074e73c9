//! The page pool's part of boot, done once: the platform and page-size checks, the
//! machine's CPUs and nodes, and the options the pool reads (heap limit, decay,
//! retained memory). Boot (`init`) runs it first; the percpu allocator runs it when a
//! per-CPU allocation comes before boot (a program whose global allocator is not
//! `CpuSlab`), so that percpu, which sits below the slab layer, never has to boot the
//! layers above it.

use core::sync::atomic::{AtomicU8, Ordering};

use super::{arena, purge};
use crate::config::Config;
use crate::sync::Mutex;
use crate::sys::{self, PAGE_SIZE};
use crate::topology;

/// Why the page pool cannot run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// cpuslab has no implementation for this operating system (see `sys`).
    Platform,
    /// The kernel's page size is not [`PAGE_SIZE`].
    PageSize,
}

const NOT_YET: u8 = 0;
const UP: u8 = 1;
const PLATFORM: u8 = 2;
const PAGE_SIZE_WRONG: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(NOT_YET);
static LOCK: Mutex<()> = Mutex::new(());

/// Sets the page pool up if that has not happened yet; the answer never changes
/// after the first call.
pub(crate) fn ensure_up() -> Result<(), Unsupported> {
    let answer = |s| match s {
        UP => Some(Ok(())),
        PLATFORM => Some(Err(Unsupported::Platform)),
        PAGE_SIZE_WRONG => Some(Err(Unsupported::PageSize)),
        _ => None,
    };
    if let Some(a) = answer(STATE.load(Ordering::Acquire)) {
        return a;
    }
    let _g = LOCK.lock();
    if let Some(a) = answer(STATE.load(Ordering::Acquire)) {
        return a;
    }
    let (state, result) = if !sys::SUPPORTED {
        (PLATFORM, Err(Unsupported::Platform))
    } else if sys::kernel_page_size() != PAGE_SIZE {
        (PAGE_SIZE_WRONG, Err(Unsupported::PageSize))
    } else {
        let config = Config::from_env();
        topology::discover();
        arena::set_limit(config.heap_limit);
        purge::configure(config.decay_ms, config.retain_bytes);
        (UP, Ok(()))
    };
    STATE.store(state, Ordering::Release);
    result
}
