//! [`Deferred`]: a value built in place the first time it is needed, for large statics
//! whose initial value is not all zero bytes.
//!
//! A static with any nonzero byte goes to `.data`, which the loader maps from the file:
//! its pages count in every process's resident memory as soon as anything near them is
//! touched (the kernel maps a read fault's neighbouring file pages with it). A static
//! of zero bytes goes to `.bss`, whose pages stay unmapped until written. Wrapping a
//! large table in `Deferred` moves it to `.bss`, so a program that never uses it never
//! pays for it.

use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};

/// A `T` built on first use; zero bytes until then (`.bss` in a static).
///
/// Not synchronised: it lives behind a lock (or in one thread), and whoever holds it
/// calls [`build`](Self::build) before reading it. Dereferencing it unbuilt panics.
pub struct Deferred<T> {
    built: bool,
    value: MaybeUninit<T>,
}

impl<T> Deferred<T> {
    /// An unbuilt value.
    pub const fn new() -> Self {
        Self {
            built: false,
            value: MaybeUninit::uninit(),
        }
    }

    /// Whether [`build`](Self::build) has run.
    pub fn is_built(&self) -> bool {
        self.built
    }

    /// Builds the value in place with `init` unless it is built already: for a value
    /// too large to pass through the stack of whichever thread comes first.
    ///
    /// # Safety
    /// `init` leaves a valid `T` at the address it is given, which holds zero bytes
    /// the first time (a static's) or the bytes a previous value left.
    pub unsafe fn build_in_place(&mut self, init: unsafe fn(*mut T)) -> &mut T {
        if !self.built {
            // SAFETY: `init` writes a valid `T` there (the caller's contract).
            unsafe { init(self.value.as_mut_ptr()) };
            self.built = true;
        }
        // SAFETY: built, just now or before.
        unsafe { self.value.assume_init_mut() }
    }
}

impl<T> Deref for Deferred<T> {
    type Target = T;

    fn deref(&self) -> &T {
        assert!(
            self.built,
            "cpuslab: a deferred value read before it was built"
        );
        // SAFETY: built (checked).
        unsafe { self.value.assume_init_ref() }
    }
}

impl<T> DerefMut for Deferred<T> {
    fn deref_mut(&mut self) -> &mut T {
        assert!(
            self.built,
            "cpuslab: a deferred value read before it was built"
        );
        // SAFETY: built (checked).
        unsafe { self.value.assume_init_mut() }
    }
}

impl<T> Drop for Deferred<T> {
    fn drop(&mut self) {
        if self.built {
            // SAFETY: built, and dropped once, here.
            unsafe { self.value.assume_init_drop() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Deferred;

    #[test]
    fn builds_once_and_drops_what_it_built() {
        use std::rc::Rc;
        thread_local!(static COUNTED: Rc<()> = Rc::new(()));
        unsafe fn init(p: *mut Rc<()>) {
            // SAFETY: `p` is valid for a write (the contract of `build_in_place`).
            unsafe { p.write(COUNTED.with(Rc::clone)) };
        }
        unsafe fn twice(_: *mut Rc<()>) {
            panic!("built twice");
        }
        let counted = COUNTED.with(Rc::clone);
        let mut d: Deferred<Rc<()>> = Deferred::new();
        assert!(!d.is_built());
        // SAFETY: `init` writes a whole value.
        unsafe { d.build_in_place(init) };
        assert_eq!(Rc::strong_count(&counted), 3);
        // A second build keeps the first value.
        // SAFETY: `twice` is never called: the value is built.
        unsafe { d.build_in_place(twice) };
        assert!(d.is_built());
        assert!(Rc::ptr_eq(&d, &counted));
        drop(d);
        assert_eq!(Rc::strong_count(&counted), 2);
    }

    #[test]
    fn builds_in_place() {
        unsafe fn init(p: *mut [u64; 4]) {
            for i in 0..4 {
                // SAFETY: `p` points to room for the array.
                unsafe { (*p)[i] = i as u64 * 3 };
            }
        }
        let mut d: Deferred<[u64; 4]> = Deferred::new();
        // SAFETY: `init` writes every element.
        let v = unsafe { d.build_in_place(init) };
        assert_eq!(*v, [0, 3, 6, 9]);
        assert_eq!(d[3], 9);
    }

    #[test]
    #[should_panic(expected = "before it was built")]
    fn reading_it_unbuilt_panics() {
        let d: Deferred<u32> = Deferred::new();
        let _ = *d;
    }
}
