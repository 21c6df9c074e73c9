//! Intrusive doubly linked lists of page descriptors (`struct list_head` over
//! `page->lru`), with O(1) removal from the middle and both ends.

use core::ptr;

use super::desc::Page;

/// A list of pages linked through `Page::next` / `Page::prev`.
pub struct PageList {
    first: *mut Page,
    last: *mut Page,
    len: usize,
}

// SAFETY: a list is only touched under the lock of the structure that holds it.
unsafe impl Send for PageList {}

impl PageList {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            len: 0,
        }
    }

    /// Number of pages on the list.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first page (the hot end).
    #[inline]
    pub fn first(&self) -> *mut Page {
        self.first
    }

    /// The last page (the cold end).
    #[inline]
    pub fn last(&self) -> *mut Page {
        self.last
    }

    /// Adds `page` at the front.
    ///
    /// # Safety
    /// `page` is a valid descriptor on no list.
    #[inline]
    pub unsafe fn push_front(&mut self, page: *mut Page) {
        // SAFETY: `page` is valid and on no list, so its links are ours to set.
        unsafe {
            (*page).prev = ptr::null_mut();
            (*page).next = self.first;
        }
        if self.first.is_null() {
            self.last = page;
        } else {
            // SAFETY: a non-null `first` is an element of this list, valid while on it.
            unsafe { (*self.first).prev = page };
        }
        self.first = page;
        self.len += 1;
    }

    /// Adds `page` at the back.
    ///
    /// # Safety
    /// `page` is a valid descriptor on no list.
    #[inline]
    pub unsafe fn push_back(&mut self, page: *mut Page) {
        // SAFETY: `page` is valid and on no list, so its links are ours to set.
        unsafe {
            (*page).next = ptr::null_mut();
            (*page).prev = self.last;
        }
        if self.last.is_null() {
            self.first = page;
        } else {
            // SAFETY: a non-null `last` is an element of this list, valid while on it.
            unsafe { (*self.last).next = page };
        }
        self.last = page;
        self.len += 1;
    }

    /// Unlinks `page`.
    ///
    /// # Safety
    /// `page` is on this list.
    #[inline]
    pub unsafe fn remove(&mut self, page: *mut Page) {
        // SAFETY: `page` is on this list, so a valid descriptor.
        let (prev, next) = unsafe { ((*page).prev, (*page).next) };
        if prev.is_null() {
            self.first = next;
        } else {
            // SAFETY: `prev` is `page`'s neighbour on this list, so an element too.
            unsafe { (*prev).next = next };
        }
        if next.is_null() {
            self.last = prev;
        } else {
            // SAFETY: as for `prev`.
            unsafe { (*next).prev = prev };
        }
        // SAFETY: `page` is valid (on this list until now); its links are the list's.
        unsafe {
            (*page).next = ptr::null_mut();
            (*page).prev = ptr::null_mut();
        }
        self.len -= 1;
    }

    /// Removes and returns the first page, or null.
    #[inline]
    pub fn pop_front(&mut self) -> *mut Page {
        let page = self.first;
        if !page.is_null() {
            // SAFETY: `page` is this list's first element.
            unsafe { self.remove(page) };
        }
        page
    }

    /// Removes and returns the last page, or null.
    #[inline]
    pub fn pop_back(&mut self) -> *mut Page {
        let page = self.last;
        if !page.is_null() {
            // SAFETY: `page` is this list's last element.
            unsafe { self.remove(page) };
        }
        page
    }

    /// Forgets every element (after fork, or when the elements were moved elsewhere).
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

impl Default for PageList {
    fn default() -> Self {
        Self::new()
    }
}
