//! `rcu_segcblist`: a callback list cut into four segments, DONE (ready to invoke),
//! WAIT (waiting for the current grace period), NEXT_READY (waiting for the next one)
//! and NEXT (not yet assigned a grace period). WAIT and NEXT_READY carry the `gp_seq`
//! value after which they are done; `accelerate` assigns one to NEXT, `advance` moves
//! finished segments to DONE.

use core::ptr;

use super::head::RcuHead;
use super::seq;

/// DONE segment.
pub const DONE: usize = 0;
/// WAIT segment.
pub const WAIT: usize = 1;
/// NEXT_READY segment.
pub const NEXT_READY: usize = 2;
/// NEXT segment.
pub const NEXT: usize = 3;

#[derive(Clone, Copy)]
struct Seg {
    head: *mut RcuHead,
    tail: *mut RcuHead,
    len: usize,
    gp_seq: u64,
}

const EMPTY: Seg = Seg {
    head: ptr::null_mut(),
    tail: ptr::null_mut(),
    len: 0,
    gp_seq: 0,
};

impl Seg {
    fn append(&mut self, other: Seg) {
        if other.len == 0 {
            return;
        }
        if self.len == 0 {
            self.head = other.head;
        } else {
            // SAFETY: a non-empty segment's tail is a live queued head.
            unsafe { (*self.tail).next = other.head };
        }
        self.tail = other.tail;
        self.len += other.len;
    }
}

/// A segmented callback list.
pub struct SegCbList {
    segs: [Seg; 4],
}

// SAFETY: used under the lock of the structure that holds it.
unsafe impl Send for SegCbList {}

impl SegCbList {
    /// An empty list.
    pub const fn new() -> Self {
        Self { segs: [EMPTY; 4] }
    }

    /// Callbacks on the list.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.len).sum()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Callbacks in one segment.
    pub fn seg_len(&self, seg: usize) -> usize {
        self.segs[seg].len
    }

    /// Queues `head` on NEXT.
    ///
    /// # Safety
    /// `head` is valid and on no list until it is invoked.
    pub unsafe fn enqueue(&mut self, head: *mut RcuHead) {
        // SAFETY: `head` is valid and on no other list (the caller's contract): its link
        // is this list's to set.
        unsafe { (*head).next = ptr::null_mut() };
        self.segs[NEXT].append(Seg {
            head,
            tail: head,
            len: 1,
            gp_seq: 0,
        });
    }

    /// `rcu_segcblist_accelerate`: gives NEXT the grace period `snap` (the snapshot of
    /// `gp_seq` taken now), merging it with later segments already waiting for `snap`.
    /// Returns whether anything waits for `snap`.
    pub fn accelerate(&mut self, snap: u64) -> bool {
        // The highest non-empty waiting segment that needs an earlier grace period.
        let mut i = NEXT_READY;
        while i > DONE {
            if self.segs[i].len > 0 && !seq::done(self.segs[i].gp_seq, snap) {
                break;
            }
            i -= 1;
        }
        let target = i + 1;
        if target >= NEXT {
            return false;
        }
        let mut merged = EMPTY;
        let mut tag = snap;
        for seg in &mut self.segs[target..] {
            if seg.len > 0 && seg.gp_seq != 0 && !seq::done(tag, seg.gp_seq) {
                tag = seg.gp_seq;
            }
            merged.append(*seg);
            *seg = EMPTY;
        }
        merged.gp_seq = tag;
        let any = merged.len > 0;
        self.segs[target] = merged;
        any
    }

    /// `rcu_segcblist_advance`: moves every waiting segment whose grace period has
    /// completed at `gp_seq` to DONE.
    pub fn advance(&mut self, gp_seq: u64) {
        for i in WAIT..NEXT {
            if self.segs[i].len > 0 && seq::done(gp_seq, self.segs[i].gp_seq) {
                let s = self.segs[i];
                self.segs[DONE].append(s);
                self.segs[i] = EMPTY;
            }
        }
        // Keep the waiting segments packed toward WAIT.
        if self.segs[WAIT].len == 0 && self.segs[NEXT_READY].len > 0 {
            self.segs[WAIT] = self.segs[NEXT_READY];
            self.segs[NEXT_READY] = EMPTY;
        }
    }

    /// The earliest `gp_seq` any waiting segment needs, if any waits. (Call after
    /// [`accelerate`](Self::accelerate), which leaves NEXT empty when it can.)
    pub fn needed(&self) -> Option<u64> {
        (WAIT..NEXT)
            .find(|&i| self.segs[i].len > 0)
            .map(|i| self.segs[i].gp_seq)
    }

    /// Detaches up to `max` callbacks from the front of DONE, in queue order. Returns
    /// the first of a null-terminated chain and its length.
    pub fn extract_done(&mut self, max: usize) -> (*mut RcuHead, usize) {
        let done = &mut self.segs[DONE];
        let n = max.min(done.len);
        if n == 0 {
            return (ptr::null_mut(), 0);
        }
        let first = done.head;
        let mut last = first;
        // SAFETY: the first `n` heads of DONE are live queued heads.
        unsafe {
            for _ in 1..n {
                last = (*last).next;
            }
            done.head = (*last).next;
            (*last).next = ptr::null_mut();
        }
        done.len -= n;
        if done.len == 0 {
            done.tail = ptr::null_mut();
        }
        (first, n)
    }
}

impl Default for SegCbList {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(n: usize) -> Vec<RcuHead> {
        (0..n).map(|_| RcuHead::new()).collect()
    }

    #[test]
    fn callbacks_wait_for_their_grace_period_in_order() {
        let mut hs = heads(6);
        let mut l = SegCbList::new();
        // Three callbacks queued while idle at gp_seq 4: they need gp_seq 8.
        for h in &mut hs[..3] {
            // SAFETY: each head lives in `hs` until the test ends and is queued once.
            unsafe { l.enqueue(h) };
        }
        assert!(l.accelerate(seq::snap(4)));
        // A grace period starts (5); three more need the one after it (12).
        for h in &mut hs[3..] {
            // SAFETY: each head lives in `hs` until the test ends and is queued once.
            unsafe { l.enqueue(h) };
        }
        assert!(l.accelerate(seq::snap(5)));
        assert_eq!((l.seg_len(WAIT), l.seg_len(NEXT_READY)), (3, 3));
        l.advance(5);
        assert_eq!(
            l.seg_len(DONE),
            0,
            "nothing is done before its grace period ends"
        );
        l.advance(8);
        assert_eq!(l.seg_len(DONE), 3);
        assert_eq!(l.needed(), Some(12));
        let (first, n) = l.extract_done(10);
        assert_eq!(n, 3);
        let mut p = first;
        for h in &mut hs[..3] {
            assert_eq!(p, h as *mut RcuHead);
            // SAFETY: `p` is one of the heads in `hs`, linked by `extract_done`.
            p = unsafe { (*p).next };
        }
        assert!(p.is_null());
        l.advance(12);
        assert_eq!(l.extract_done(2).1, 2);
        assert_eq!(l.extract_done(2).1, 1);
        assert!(l.is_empty());
    }

    #[test]
    fn next_waits_for_room_then_gets_a_grace_period() {
        let mut hs = heads(3);
        let mut l = SegCbList::new();
        // SAFETY: the head lives in `hs` until the test ends and is queued once.
        unsafe { l.enqueue(&mut hs[0]) };
        l.accelerate(8);
        // SAFETY: the head lives in `hs` until the test ends and is queued once.
        unsafe { l.enqueue(&mut hs[1]) };
        l.accelerate(12);
        assert_eq!((l.seg_len(WAIT), l.seg_len(NEXT_READY)), (1, 1));
        // Both waiting segments are taken by earlier grace periods.
        // SAFETY: the head lives in `hs` until the test ends and is queued once.
        unsafe { l.enqueue(&mut hs[2]) };
        assert!(!l.accelerate(16));
        assert_eq!(l.seg_len(NEXT), 1);
        l.advance(8);
        assert!(l.accelerate(16), "room again after WAIT finished");
        assert_eq!(l.seg_len(NEXT), 0);
        l.advance(16);
        assert_eq!(l.extract_done(10).1, 3);
    }
}
