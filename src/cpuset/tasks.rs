//! The table of threads attached to a tree's cpusets: a first segment of
//! [`SEGMENT`] slots in the tree itself, then segments mapped as more threads attach
//! (up to [`MAX_THREADS`] slots), so a server with thousands of threads never runs out
//! while a small program pays for one segment. Segments are never given back while
//! their tree lives: a slot's index stays valid for the thread-local cache of it.

use core::ops::{Index, IndexMut};
use core::ptr;

use super::tree::Task;
use crate::sys::{self, PAGE_SIZE};

/// Slots a segment holds.
pub const SEGMENT: usize = 1024;
/// Segments a table holds at most.
pub const MAX_SEGMENTS: usize = 64;
/// How many threads can be attached to the cpusets of a tree at once.
pub const MAX_THREADS: usize = SEGMENT * MAX_SEGMENTS;

/// Bytes a mapped segment takes, in whole pages.
const SEGMENT_BYTES: usize = (core::mem::size_of::<[Task; SEGMENT]>()).next_multiple_of(PAGE_SIZE);

/// The slots, segment by segment.
pub(super) struct TaskTable {
    first: [Task; SEGMENT],
    /// Segments 1.. (null past `segments`), each a mapping of [`SEGMENT_BYTES`].
    more: [*mut [Task; SEGMENT]; MAX_SEGMENTS - 1],
    /// Segments in use, the first included.
    segments: usize,
}

// SAFETY: the mapped segments belong to the table alone, which is used under its
// tree's lock like the first segment.
unsafe impl Send for TaskTable {}

impl TaskTable {
    /// One segment of free slots.
    pub const fn new() -> Self {
        Self {
            first: [Task::FREE; SEGMENT],
            more: [ptr::null_mut(); MAX_SEGMENTS - 1],
            segments: 1,
        }
    }

    /// Writes [`new`](Self::new)'s table at `p` slot by slot, without a whole table on
    /// the stack.
    ///
    /// # Safety
    /// `p` is valid for writes of a table; what it held is overwritten, not dropped.
    pub unsafe fn init_in_place(p: *mut Self) {
        // SAFETY: every field of `*p` is written once through raw pointers (the
        // caller's contract), none read.
        unsafe {
            for i in 0..SEGMENT {
                ptr::addr_of_mut!((*p).first[i]).write(Task::FREE);
            }
            ptr::addr_of_mut!((*p).more).write([ptr::null_mut(); MAX_SEGMENTS - 1]);
            ptr::addr_of_mut!((*p).segments).write(1);
        }
    }

    /// Slots in the segments in use.
    pub fn len(&self) -> usize {
        self.segments * SEGMENT
    }

    /// Slot `i`, if it is in a segment in use.
    pub fn get(&self, i: usize) -> Option<&Task> {
        (i < self.len()).then(|| &self[i])
    }

    /// Slot `i`, if it is in a segment in use.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Task> {
        (i < self.len()).then(|| &mut self[i])
    }

    /// Every slot in use, free ones included, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Task> + '_ {
        (0..self.len()).map(|i| &self[i])
    }

    /// [`iter`](Self::iter), mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Task> + '_ {
        let (first, more) = (&mut self.first, &self.more[..self.segments - 1]);
        // SAFETY: each segment pointer in use names a mapping this table alone owns,
        // distinct from the others and from `first`.
        let rest = more.iter().flat_map(|&s| unsafe { (*s).iter_mut() });
        first.iter_mut().chain(rest)
    }

    /// Maps one more segment of free slots. False when the table is at
    /// [`MAX_THREADS`] or the kernel refuses the mapping.
    pub fn grow(&mut self) -> bool {
        if self.segments == MAX_SEGMENTS {
            return false;
        }
        let p = sys::mmap::map_aligned(SEGMENT_BYTES, PAGE_SIZE, false).cast::<[Task; SEGMENT]>();
        if p.is_null() {
            return false;
        }
        // SAFETY: a fresh mapping of at least one segment, page aligned.
        unsafe { p.write([Task::FREE; SEGMENT]) };
        self.more[self.segments - 1] = p;
        self.segments += 1;
        true
    }
}

impl Default for TaskTable {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TaskTable {
    fn drop(&mut self) {
        for &s in &self.more[..self.segments - 1] {
            sys::mmap::unmap(s.cast(), SEGMENT_BYTES);
        }
    }
}

impl Index<usize> for TaskTable {
    type Output = Task;

    fn index(&self, i: usize) -> &Task {
        assert!(i < self.len(), "task slot {i} past the table");
        if i < SEGMENT {
            return &self.first[i];
        }
        // SAFETY: segment `i / SEGMENT` is in use (checked above), so mapped.
        unsafe { &(*self.more[i / SEGMENT - 1])[i % SEGMENT] }
    }
}

impl IndexMut<usize> for TaskTable {
    fn index_mut(&mut self, i: usize) -> &mut Task {
        assert!(i < self.len(), "task slot {i} past the table");
        if i < SEGMENT {
            return &mut self.first[i];
        }
        // SAFETY: as in `index`, and `&mut self` makes the access unique.
        unsafe { &mut (*self.more[i / SEGMENT - 1])[i % SEGMENT] }
    }
}
