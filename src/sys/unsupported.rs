//! `sys` where cpuslab has no implementation: operating systems other than Linux, and
//! Linux itself when built with `--cfg cpuslab_unsupported` (CI does, so that this
//! path keeps compiling and working).
//!
//! Boot stops at [`SUPPORTED`], before it maps anything, and kmalloc then hands every
//! request to [`glibc`], which here is `std::alloc::System` behind a small header. The
//! rest answers what the layers above ask before they give up, portably and without
//! the global allocator: no mapping, no NUMA policy, no affinity, no restartable
//! sequences (the caches would take their tried locks), futex waits that yield, the
//! clock and the thread id from `std`.

/// Whether cpuslab can run on this platform: no.
pub const SUPPORTED: bool = false;

/// The page size cpuslab assumes (never checked here: boot stops first).
pub fn kernel_page_size() -> usize {
    super::PAGE_SIZE
}

pub mod affinity {
    //! No affinity: every call fails with `ENOSYS`.

    pub use crate::sys::error::SysError;

    use crate::ds::CpuMask;

    /// Fails: no affinity here.
    pub fn set_affinity(_tid: u32, _cpus: &CpuMask) -> Result<(), SysError> {
        Err(SysError::new("sched_setaffinity", super::errno::ENOSYS))
    }

    /// Fails: no affinity here.
    pub fn get_affinity(_tid: u32) -> Result<CpuMask, SysError> {
        Err(SysError::new("sched_getaffinity", super::errno::ENOSYS))
    }

    /// Whether thread `tid` still exists: unknown here, so yes.
    pub fn thread_alive(_tid: u32) -> bool {
        true
    }

    /// Learns nothing: the thread cannot be moved.
    pub fn visit_each_cpu(_nr_cpus: usize) -> bool {
        false
    }
}

pub mod cpu {
    //! One CPU as far as cpuslab knows; the thread id is the address of a
    //! thread-local.

    /// No rseq area.
    pub fn rseq_registered() -> bool {
        false
    }

    /// Meaningless: no rseq area.
    pub fn rseq_offset() -> isize {
        0
    }

    /// No rseq area.
    pub fn rseq_cpu_valid() -> bool {
        false
    }

    /// CPU 0.
    #[inline(always)]
    pub fn current() -> usize {
        0
    }

    std::thread_local! {
        static ID: u8 = const { 0 };
    }

    /// The CPUs `std` sees (at least 1).
    pub fn configured() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// An id of the calling thread unique among live threads: the address of a
    /// thread-local of its own.
    #[inline]
    pub fn thread_id() -> usize {
        ID.with(|b| b as *const u8 as usize)
    }

    /// Nothing (a hint).
    #[inline(always)]
    pub fn prefetch<T>(p: *const T) {
        let _ = p;
    }
}

pub mod dl {
    //! No dynamic loader to ask.

    /// Does nothing.
    pub fn pin_own_object() -> bool {
        false
    }
}

pub mod env {
    //! No options: the environment is read through `std` only by allocating.

    /// Always `None`.
    pub fn get(_name: &core::ffi::CStr) -> Option<&'static [u8]> {
        None
    }
}

pub mod errno {
    //! A thread-local error word of cpuslab's own (the C interface is Linux's).

    use core::cell::Cell;
    use core::ffi::c_int;

    /// Out of memory (Linux's value).
    pub const ENOMEM: c_int = 12;
    /// Invalid argument (Linux's value).
    pub const EINVAL: c_int = 22;
    /// No such thread (Linux's value).
    pub const ESRCH: c_int = 3;
    /// Not implemented (Linux's value).
    pub const ENOSYS: c_int = 38;
    /// Not permitted (Linux's value).
    pub const EPERM: c_int = 1;
    /// Bad address (Linux's value).
    pub const EFAULT: c_int = 14;
    /// I/O error (Linux's value).
    pub const EIO: c_int = 5;
    /// Cross-device (Linux's value).
    pub const EXDEV: c_int = 18;
    /// Busy (Linux's value).
    pub const EBUSY: c_int = 16;
    /// No space (Linux's value).
    pub const ENOSPC: c_int = 28;
    /// Permission denied (Linux's value).
    pub const EACCES: c_int = 13;

    std::thread_local! {
        static ERRNO: Cell<c_int> = const { Cell::new(0) };
    }

    /// The calling thread's error word.
    pub fn location() -> *mut c_int {
        ERRNO.with(|e| e.as_ptr())
    }

    /// Reads the error word.
    #[inline]
    pub fn get() -> c_int {
        ERRNO.with(|e| e.get())
    }

    /// Sets the error word.
    #[inline]
    pub fn set(value: c_int) {
        ERRNO.with(|e| e.set(value));
    }

    /// The error word as it was when [`Saved::new`] ran.
    pub struct Saved {
        value: c_int,
        /// Not `Send`: the value belongs to this thread.
        _thread: core::marker::PhantomData<*mut c_int>,
    }

    impl Saved {
        /// Remembers the current value.
        #[inline(always)]
        pub fn new() -> Self {
            Self {
                value: get(),
                _thread: core::marker::PhantomData,
            }
        }

        /// Puts the remembered value back.
        #[inline(always)]
        pub fn restore(self) {
            set(self.value);
        }

        /// Sets `code` instead.
        #[inline(always)]
        pub fn fail(self, code: c_int) {
            set(code);
        }
    }

    impl Default for Saved {
        fn default() -> Self {
            Self::new()
        }
    }
}

pub mod file {
    //! No /proc or /sys to read.

    /// Always `None`.
    pub fn read(_path: &core::ffi::CStr, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

pub mod fork {
    //! No fork handlers.

    /// Does nothing.
    pub fn register(
        _prepare: extern "C" fn(),
        _parent: extern "C" fn(),
        _child: extern "C" fn(),
    ) -> bool {
        false
    }
}

pub mod futex {
    //! Waits that yield the processor until the word changes.

    use core::sync::atomic::{AtomicU32, Ordering};

    /// Returns once `word` no longer holds `expected` (or at once if it does not).
    pub fn wait(word: &AtomicU32, expected: u32) {
        while word.load(Ordering::Acquire) == expected {
            yield_now();
        }
    }

    /// As [`wait`], giving up after about `timeout_ns`.
    pub fn wait_timeout(word: &AtomicU32, expected: u32, timeout_ns: u64) {
        let deadline = super::time::now_ns().saturating_add(timeout_ns);
        while word.load(Ordering::Acquire) == expected && super::time::now_ns() < deadline {
            yield_now();
        }
    }

    /// Nothing to wake: waiters poll.
    pub fn wake(_word: &AtomicU32, _n: i32) {}

    /// Yields the processor.
    pub fn yield_now() {
        std::thread::yield_now();
    }
}

pub mod glibc {
    //! The system allocator (`std::alloc::System`) under the names kmalloc forwards
    //! to. A block carries its layout in the 16 bytes before it, so that it can be
    //! freed, resized and measured from its address alone.

    use std::alloc::{GlobalAlloc, Layout, System};

    /// Alignment of every block, and the room its header needs.
    const MIN_ALIGN: usize = 16;

    /// The block's layout, as [`memalign`] recorded it: `(whole allocation, alignment)`.
    ///
    /// # Safety
    /// `p` came from this module and is live.
    unsafe fn header(p: *mut u8) -> *mut [usize; 2] {
        // SAFETY: `memalign` put the header in the 16 bytes before the block.
        unsafe { p.sub(MIN_ALIGN).cast() }
    }

    /// `malloc(size)`: 16-byte aligned.
    pub fn malloc(size: usize) -> *mut u8 {
        memalign(MIN_ALIGN, size)
    }

    /// `calloc(n, size)`: zeroed; null when the product overflows.
    pub fn calloc(n: usize, size: usize) -> *mut u8 {
        let Some(bytes) = n.checked_mul(size) else {
            return core::ptr::null_mut();
        };
        let p = malloc(bytes);
        if !p.is_null() {
            // SAFETY: `p` has `bytes` writable bytes.
            unsafe { p.write_bytes(0, bytes) };
        }
        p
    }

    /// `memalign(align, size)` for a power-of-two `align`.
    pub fn memalign(align: usize, size: usize) -> *mut u8 {
        let align = align.max(MIN_ALIGN);
        let Some(total) = size.max(1).checked_add(align) else {
            return core::ptr::null_mut();
        };
        let Ok(layout) = Layout::from_size_align(total, align) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `layout` has a non-zero size.
        let base = unsafe { System.alloc(layout) };
        if base.is_null() {
            return base;
        }
        // SAFETY: the block starts `align` (at least 16) bytes into the allocation and
        // the header fills the 16 bytes before it.
        unsafe {
            let p = base.add(align);
            header(p).write([total, align]);
            p
        }
    }

    /// `realloc(p, size)`: a new block with the old contents; null (and `p` intact)
    /// on failure.
    ///
    /// # Safety
    /// `p` is null or a live block of this module; on success it is freed.
    pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            return malloc(size);
        }
        // SAFETY: a live block (the caller's contract).
        let [_, align] = unsafe { header(p).read() };
        let q = memalign(align, size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct, each at least this long.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, usable_size(p).min(size));
                free(p);
            }
        }
        q
    }

    /// `free(p)`.
    ///
    /// # Safety
    /// `p` is null or a live block of this module, not used again.
    pub unsafe fn free(p: *mut u8) {
        if p.is_null() {
            return;
        }
        // SAFETY: a live block: its header holds the layout it was allocated with,
        // `align` bytes before it.
        unsafe {
            let [total, align] = header(p).read();
            System.dealloc(
                p.sub(align),
                Layout::from_size_align_unchecked(total, align),
            );
        }
    }

    /// The bytes `p` may use.
    ///
    /// # Safety
    /// `p` is a live block of this module.
    pub unsafe fn usable_size(p: *mut u8) -> usize {
        // SAFETY: as in `free`.
        let [total, align] = unsafe { header(p).read() };
        total - align
    }
}

pub mod console {
    //! Standard error and abort through `std`, which writes unbuffered.

    use std::io::Write;

    /// Writes all of `bytes` to standard error, ignoring failures.
    pub fn write_stderr(bytes: &[u8]) {
        let _ = std::io::stderr().write_all(bytes);
    }

    /// Ends the process at once.
    pub fn abort() -> ! {
        std::process::abort()
    }
}

pub mod membarrier {
    //! No membarrier: callers take their fallbacks.

    /// Fails.
    pub fn register() -> bool {
        false
    }

    /// No.
    pub fn available() -> bool {
        false
    }

    /// Fails.
    pub fn barrier() -> bool {
        false
    }

    /// Fails.
    pub fn register_rseq() -> bool {
        false
    }

    /// Fails.
    pub fn rseq_fence(_cpu: Option<usize>) -> bool {
        false
    }

    /// Does nothing.
    pub fn reregister_after_fork() {}

    /// Nothing to register.
    pub fn register_rseq_later() {}
}

pub mod mempolicy {
    //! No NUMA policy: every call fails with `ENOSYS`.

    pub use crate::sys::mpol::*;

    use super::affinity::SysError;
    use crate::ds::NodeMask;

    /// Fails.
    pub fn set_mempolicy(_mode: i32, _nodes: &NodeMask) -> Result<(), SysError> {
        Err(SysError::new("set_mempolicy", super::errno::ENOSYS))
    }

    /// Fails.
    pub fn migrate_pages(_from: &NodeMask, _to: &NodeMask) -> Result<usize, SysError> {
        Err(SysError::new("migrate_pages", super::errno::ENOSYS))
    }

    /// Fails.
    pub fn get_mempolicy() -> Result<(i32, NodeMask), SysError> {
        Err(SysError::new("get_mempolicy", super::errno::ENOSYS))
    }

    /// Fails.
    pub fn policy_of(_addr: *const u8) -> Result<(i32, NodeMask), SysError> {
        Err(SysError::new("get_mempolicy", super::errno::ENOSYS))
    }

    /// Fails.
    pub fn node_of(_addr: *const u8) -> Result<usize, SysError> {
        Err(SysError::new("get_mempolicy", super::errno::ENOSYS))
    }

    /// Fails.
    ///
    /// # Safety
    /// None here (the Linux call's contract: a mapped range).
    pub unsafe fn mbind(
        _addr: *mut u8,
        _len: usize,
        _mode: i32,
        _nodes: &NodeMask,
        _flags: u32,
    ) -> Result<(), SysError> {
        Err(SysError::new("mbind", super::errno::ENOSYS))
    }
}

pub mod mmap {
    //! No mappings: the page pool cannot grow, so boot (which stops earlier) could
    //! not have finished either.

    /// Null.
    pub fn map_aligned(_len: usize, _align: usize, _reservation: bool) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// `len` bytes of zeroed memory, aligned to 4096, that is never given back, from
    /// the system allocator (the platform's own, which this build links). Null when
    /// it has none.
    pub fn map_zeroed(len: usize) -> *mut u8 {
        use std::alloc::{GlobalAlloc, Layout, System};
        match Layout::from_size_align(len.max(1), 4096) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) => unsafe { System.alloc_zeroed(layout) },
            Err(_) => core::ptr::null_mut(),
        }
    }

    /// What `map_exact_at` did.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum MapExact {
        /// The range is mapped now.
        Mapped,
        /// Something else is mapped there.
        Taken,
        /// The kernel refused.
        Refused,
    }

    /// Refused: nothing maps here.
    pub fn map_exact_at(_addr: *mut u8, _len: usize, _reservation: bool) -> MapExact {
        MapExact::Refused
    }

    /// Nothing was mapped.
    pub fn unmap(_addr: *mut u8, _len: usize) {}

    /// True: nothing is known of the pages.
    pub fn may_hold_data(_addr: *const u8, _len: usize) -> bool {
        true
    }

    /// Nothing is resident.
    pub fn resident_pages(_addr: *const u8, _len: usize) -> usize {
        0
    }

    /// Refused.
    pub fn resident_by_chunk(
        _addr: *const u8,
        _len: usize,
        _chunk: usize,
        _f: impl FnMut(usize, usize, usize),
    ) -> bool {
        false
    }

    /// Fails.
    pub fn purge(_addr: *mut u8, _len: usize) -> bool {
        false
    }

    /// Null.
    pub fn remap(_addr: *mut u8, _old_len: usize, _new_len: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// Fails.
    pub fn map_fixed(_addr: *mut u8, _len: usize) -> bool {
        false
    }

    /// Null.
    pub fn map_aligned_pair(
        _head: usize,
        _tail_at: usize,
        _tail: usize,
        _align: usize,
        _reservation: bool,
    ) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// Fails.
    pub fn move_pages(_from: *mut u8, _len: usize, _to: *mut u8) -> bool {
        false
    }

    /// Fails.
    pub fn no_hugepage(_addr: *mut u8, _len: usize) -> bool {
        false
    }
}

pub mod numa {
    //! No NUMA.

    /// Fails.
    pub fn bind_preferred(_addr: *mut u8, _len: usize, _node: usize) -> bool {
        false
    }
}

pub mod process {
    //! The process id from `std`; nothing else to ask.

    use core::ffi::c_int;

    /// The process id.
    pub fn pid() -> u32 {
        std::process::id()
    }

    /// No limit known.
    pub fn address_space_limit() -> Option<usize> {
        None
    }

    /// No command name.
    pub fn comm(buf: &mut [u8; 16]) -> &[u8] {
        &buf[..0]
    }

    /// None.
    pub fn dup_stderr() -> Option<c_int> {
        None
    }

    /// None.
    pub fn file_identity(_fd: c_int) -> Option<(u64, u64)> {
        None
    }

    /// Does nothing.
    pub fn ignore_sigpipe() {}

    /// Writes `bytes` to standard error when `fd` is 2; else nothing.
    pub fn write_all(fd: c_int, bytes: &[u8]) {
        if fd == 2 {
            crate::sys::io::write_stderr(bytes);
        }
    }

    /// Unknown.
    pub fn seccomp_state() -> Option<(u32, u32)> {
        None
    }

    /// Nothing to note.
    pub fn note_boot_seccomp() {}

    /// Nothing to note.
    pub fn boot_done() {}

    /// No seccomp.
    pub fn sandbox_since_boot() -> Option<bool> {
        Some(false)
    }

    /// No seccomp.
    pub fn sandboxed_since_boot() -> bool {
        false
    }

    /// Nothing to forget.
    pub fn after_fork() {}

    /// `f()`: nothing to look at.
    pub fn with_one_look<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

pub mod rseq {
    //! No restartable sequences: the stacks are always held, and the per-CPU
    //! operations fail, so every caller takes its tried lock.

    /// No.
    pub fn available() -> bool {
        false
    }

    /// Meaningless: no sequences (see the Linux `stack_cpu`).
    #[inline(always)]
    pub fn stack_cpu() -> usize {
        usize::MAX
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn percpu_add(
        _base: *mut i64,
        _stride: usize,
        _nr_cpus: usize,
        _amount: i64,
    ) -> Option<i64> {
        None
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn percpu_xchg(
        _base: *mut i64,
        _stride: usize,
        _nr_cpus: usize,
        _value: i64,
    ) -> Option<i64> {
        None
    }

    pub use crate::sys::rseq_abi::*;

    /// Does nothing: everything is held.
    pub fn hold(_bits: usize) {}

    /// Does nothing: everything stays held.
    pub fn release(_bits: usize) {}

    /// The fast paths step aside, the sequences off.
    #[inline(always)]
    pub fn held() -> usize {
        HOLD_POP | HOLD_OFF
    }

    /// Does nothing: the sequences stay off.
    pub fn enable_stacks(_nr_cpus: usize) {}

    /// Does nothing: the sequences never ran.
    pub fn retire_stacks(_single_thread: bool) {}

    /// The distance between two CPUs' stacks, as on Linux.
    pub const STACK_STRIDE: usize = 1 << 16;

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_pop(_base: *mut u8) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push(_base: *mut u8, _obj: *mut u8) -> bool {
        false
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push_nonempty(_base: *mut u8, _obj: *mut u8) -> bool {
        false
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push_deep(_base: *mut u8, _obj: *mut u8) -> bool {
        false
    }

    /// What `stack_push_deep_tested` did.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Pushed {
        /// The entry is on the stack (never here).
        Yes,
        /// Nothing pushed.
        No,
        /// Nothing pushed: the CPU failed the caller's test (never here).
        OtherCpu,
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push_deep_tested(
        _base: *mut u8,
        _obj: *mut u8,
        _test: *const u32,
    ) -> Pushed {
        Pushed::No
    }

    /// Fails.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push_many(_base: *mut u8, _objs: *const *mut u8, _n: usize) -> bool {
        false
    }

    /// Pushes nothing.
    ///
    /// # Safety
    /// None here.
    pub unsafe fn stack_push_all(_base: *mut u8, _objs: &[*mut u8]) -> usize {
        0
    }
}

pub mod thread {
    //! No helper threads and no exit keys.

    use core::ffi::{c_void, CStr};

    /// Not judged: false.
    pub fn on_own_stack(_p: *const u8) -> bool {
        false
    }

    /// Fails.
    pub fn spawn_raw(_f: extern "C" fn(*mut c_void) -> *mut c_void, _arg: usize) -> bool {
        false
    }

    /// Fails.
    pub fn spawn_helper(_f: extern "C" fn(*mut c_void) -> *mut c_void, _arg: usize) -> bool {
        false
    }

    /// Does nothing.
    pub fn set_name(_name: &CStr) {}

    /// A number for the calling thread (the low bits of [`thread_id`](super::cpu::thread_id)).
    pub fn gettid() -> u32 {
        super::cpu::thread_id() as u32
    }

    /// Unknown.
    pub fn start_time(_tid: u32) -> Option<u64> {
        None
    }

    /// A key whose destructor would run at thread exit: none can be made here.
    #[derive(Clone, Copy)]
    pub struct ExitKey(u32);

    impl ExitKey {
        /// None.
        pub fn create(_dtor: unsafe extern "C" fn(*mut c_void)) -> Option<Self> {
            None
        }

        /// The raw key.
        pub fn raw(self) -> u32 {
            self.0
        }

        /// A key from [`raw`](Self::raw).
        pub fn from_raw(raw: u32) -> Self {
            Self(raw)
        }

        /// Fails.
        pub fn set(self, _value: usize) -> bool {
            false
        }
    }
}

pub mod time {
    //! The monotonic clock and sleeping, from `std`.

    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static START: OnceLock<Instant> = OnceLock::new();

    /// Nanoseconds since the first call (monotonic).
    pub fn now_ns() -> u64 {
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Milliseconds since the first call (monotonic).
    pub fn now_ms() -> u64 {
        now_ns() / 1_000_000
    }

    /// Sleeps `ms` milliseconds.
    pub fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
