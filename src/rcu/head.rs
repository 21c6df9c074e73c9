//! `struct rcu_head`: the intrusive callback record.

/// A callback invoked after a grace period with the head it was queued with.
pub type RcuCallback = unsafe fn(*mut RcuHead);

/// Embedded in an object to queue it with [`call_rcu`](super::call_rcu) without
/// allocating.
#[repr(C)]
#[derive(Debug)]
pub struct RcuHead {
    /// Next callback on a list.
    pub next: *mut RcuHead,
    /// The callback.
    pub func: Option<RcuCallback>,
}

impl RcuHead {
    /// An unqueued head.
    pub const fn new() -> Self {
        Self {
            next: core::ptr::null_mut(),
            func: None,
        }
    }
}

impl Default for RcuHead {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: a head is handed between threads only through the callback lists' locks.
unsafe impl Send for RcuHead {}
