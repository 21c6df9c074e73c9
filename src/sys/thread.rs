//! Raw threads and thread-exit hooks, without the global allocator.

use core::ffi::c_void;

/// Starts a detached thread running `f(arg)`. Returns false when the kernel refused.
pub fn spawn_raw(f: extern "C" fn(*mut c_void) -> *mut c_void, arg: usize) -> bool {
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

/// The kernel's id of the calling thread.
pub fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
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
