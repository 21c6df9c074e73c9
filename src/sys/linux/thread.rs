//! Raw threads and thread-exit hooks, without the global allocator.

use core::ffi::{c_void, CStr};

/// How deep below its top a thread's stack pointer may be for [`on_own_stack`] to
/// take the span between them for the stack: a thread created by glibc has its control
/// block (the thread pointer) at the top of its stack mapping, 8 MiB by default.
const STACK_SPAN: usize = 16 << 20;

/// How far below the main thread's stack top the stack pointer may be for
/// [`on_own_stack`] to take the calling thread for the main one: the kernel leaves at
/// least 128 MiB between the main stack and the mappings below it, where every other
/// thread's stack lies.
const MAIN_SPAN: usize = 128 << 20;

/// Whether `p` lies in the calling thread's live stack, between its stack pointer and
/// the top: no allocator's block, and one that glibc's `free` reads a size from the
/// caller's own frames for (it aborted or crashed by what they held). The top is the
/// thread pointer for a thread glibc created (its control block sits at the top of its
/// stack mapping), or on the main thread the program's file name the kernel put at the
/// top of its stack (`AT_EXECFN`); a thread made otherwise (its thread pointer
/// elsewhere), or one more than 16 MiB deep, is not judged: false.
#[inline(never)]
pub fn on_own_stack(p: *const u8) -> bool {
    let here = 0u8;
    // An address in this frame: at or above the stack pointer, below every caller's.
    let sp = core::hint::black_box(&here) as *const u8 as usize;
    let p = p as usize;
    if p < sp {
        return false;
    }
    let tp = super::cpu::thread_id();
    if tp > sp && tp - sp <= STACK_SPAN {
        return p < tp;
    }
    // SAFETY: getauxval reads the auxiliary vector the kernel passed at start.
    let end = unsafe { libc::getauxval(libc::AT_EXECFN) } as usize;
    end >= sp && end - sp <= MAIN_SPAN && p < end
}

/// Starts a detached thread running `f(arg)`. Returns false when the kernel refused,
/// or without asking inside the program's own seccomp sandbox, which may kill it for
/// clone(2) (see `membarrier`): the callers then do the thread's work themselves.
pub fn spawn_raw(f: extern "C" fn(*mut c_void) -> *mut c_void, arg: usize) -> bool {
    if super::process::sandboxed_since_boot() {
        return false;
    }
    // SAFETY: attr is initialised before use and destroyed after; `f` and `arg` are
    // valid for the thread's life as the caller promises by passing them.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, f, arg as *mut c_void);
        libc::pthread_attr_destroy(&mut attr);
        rc == 0
    }
}

/// Starts a detached helper thread running `f(arg)` with every signal blocked (a
/// process-directed signal must go to one of the program's threads, whose handlers and
/// `sigwait` loops expect it, never to the helper). Returns false when the kernel
/// refused.
pub fn spawn_helper(f: extern "C" fn(*mut c_void) -> *mut c_void, arg: usize) -> bool {
    // SAFETY: the sets are initialised before use; the caller's mask is put back
    // before returning, and the new thread inherits the full one it was created under.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        let masked = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0;
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut ok = libc::pthread_attr_init(&mut attr) == 0;
        if ok {
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
            let mut tid: libc::pthread_t = 0;
            ok = libc::pthread_create(&mut tid, &attr, f, arg as *mut c_void) == 0;
            libc::pthread_attr_destroy(&mut attr);
        }
        if masked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        }
        ok
    }
}

/// Names the calling thread `name` (at most 15 bytes are kept), as
/// `/proc/PID/task/TID/comm` shows it.
pub fn set_name(name: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string; a failure changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

/// The kernel's id of the calling thread.
pub fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// When thread `tid` of this process started (`starttime` of
/// `/proc/self/task/<tid>/stat`, in clock ticks since boot); `None` when there is no
/// such thread. With the id it names one thread for good: an id the kernel hands to a
/// later thread comes with a later start.
pub fn start_time(tid: u32) -> Option<u64> {
    let mut path = crate::sys::io::StackBuf::<48>::new();
    let _ = core::fmt::write(&mut path, format_args!("/proc/self/task/{tid}/stat\0"));
    let path = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = super::file::read(path, &mut buf)?;
    // Fields after the command name, which may hold spaces and parentheses: state is
    // field 3, starttime field 22.
    let rest = &buf[buf[..n].iter().rposition(|&b| b == b')')? + 1..n];
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    core::str::from_utf8(field).ok()?.parse().ok()
}

/// A pthread key whose destructor runs at thread exit for threads that set a value.
#[derive(Clone, Copy)]
pub struct ExitKey(libc::pthread_key_t);

impl ExitKey {
    /// Creates a key (glibc keeps the first 32 in the thread descriptor: no allocation).
    pub fn create(dtor: unsafe extern "C" fn(*mut c_void)) -> Option<Self> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-parameter.
        (unsafe { libc::pthread_key_create(&mut key, Some(dtor)) } == 0).then_some(Self(key))
    }

    /// The raw key, for storing it.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// A key from [`raw`](Self::raw).
    pub fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// Sets the calling thread's value (non-null: the destructor will run).
    pub fn set(self, value: usize) -> bool {
        // SAFETY: the key was created by `create`.
        unsafe { libc::pthread_setspecific(self.0, value as *const c_void) == 0 }
    }
}
