//! `RcuCell<T>`: a pointer published with `rcu_assign_pointer` and read with
//! `rcu_dereference`, with a safe API: a read borrows from a read guard, and replacing
//! the value frees the old one after a grace period.

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::head::RcuHead;
use super::reader::RcuReadGuard;

#[repr(C)]
struct Node<T> {
    head: RcuHead,
    value: T,
}

/// A value that readers see without locks while writers replace it.
pub struct RcuCell<T: Send + Sync + 'static> {
    ptr: AtomicPtr<Node<T>>,
    _owns: PhantomData<Box<T>>,
}

// SAFETY: readers share `&T` across threads (T: Sync) and old values are dropped on the
// grace-period thread (T: Send).
unsafe impl<T: Send + Sync + 'static> Sync for RcuCell<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync + 'static> Send for RcuCell<T> {}

unsafe fn drop_node<T>(head: *mut RcuHead) {
    // SAFETY: `head` is the first field of a boxed `Node<T>` (`repr(C)`) that `replace`
    // queued once; after its grace period no reader holds it.
    drop(unsafe { Box::from_raw(head.cast::<Node<T>>()) });
}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(Node {
                head: RcuHead::new(),
                value,
            }))),
            _owns: PhantomData,
        }
    }

    /// The current value, valid while `guard`'s read section lasts
    /// (`rcu_dereference`).
    pub fn read<'g>(&'g self, _guard: &'g RcuReadGuard) -> &'g T {
        // SAFETY: the node was published with Release; it is freed only after a grace
        // period that begins after it was replaced, which waits for `_guard`'s section.
        unsafe { &(*self.ptr.load(Ordering::Acquire)).value }
    }

    /// Publishes `value` (`rcu_assign_pointer`); the old value is dropped after a grace
    /// period, on the grace-period thread.
    pub fn replace(&self, value: T) {
        let old = self.swap(value);
        // SAFETY: `old` is unreachable for new readers; its head is unused.
        unsafe { super::call_rcu(&mut (*old).head, drop_node::<T>) };
    }

    /// Publishes `value`, waits for a grace period and returns the old value.
    pub fn replace_sync(&self, value: T) -> T {
        let old = self.swap(value);
        super::synchronize();
        // SAFETY: after the grace period no reader holds `old`.
        unsafe { Box::from_raw(old).value }
    }

    fn swap(&self, value: T) -> *mut Node<T> {
        let new = Box::into_raw(Box::new(Node {
            head: RcuHead::new(),
            value,
        }));
        self.ptr.swap(new, Ordering::AcqRel)
    }
}

impl<T: Send + Sync + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no read borrows this cell any more.
        unsafe { drop(Box::from_raw(*self.ptr.get_mut())) };
    }
}
