//! The registry of live huge blocks: a set of their addresses, so that any pointer can
//! be asked whether it is one of them without touching memory that may not be mapped,
//! and a ring of the last ones freed, to tell a double free from a foreign pointer.

/// Slots of the set: at most 3/4 of them hold live blocks (each is more than 4 MiB, so
/// 48K blocks span more than 192 GiB).
const REGISTRY_SLOTS: usize = 1 << 16;
const EMPTY: usize = 0;

/// Addresses of the last huge blocks freed that are remembered, to tell a double free
/// (whose range may be reused or gone) from a pointer glibc's malloc served.
const FREED_RING: usize = 64;

/// A set of live huge block addresses: open addressing with linear probing and
/// backward-shift deletion (no tombstones).
pub(super) struct Registry {
    slots: [usize; REGISTRY_SLOTS],
    pub(super) live: usize,
    /// Bytes of the ranges of live blocks.
    pub(super) live_bytes: usize,
    /// The most `live_bytes` since `recent_peak_ms`, restarted from the current value
    /// once a decay period has passed: how much the program recently held.
    pub(super) recent_peak: usize,
    recent_peak_ms: u64,
    /// The last [`FREED_RING`] blocks freed (0: none), the oldest overwritten.
    freed: [usize; FREED_RING],
    /// Where the next freed block goes in `freed`.
    freed_next: usize,
}

impl Registry {
    pub(super) const fn new() -> Self {
        Self {
            slots: [EMPTY; REGISTRY_SLOTS],
            live: 0,
            live_bytes: 0,
            recent_peak: 0,
            recent_peak_ms: 0,
            freed: [0; FREED_RING],
            freed_next: 0,
        }
    }

    /// Updates the recent peak of `live_bytes` after it grew, at `now_ms`, with
    /// `decay_ms` as the period it covers.
    pub(super) fn note_peak(&mut self, now_ms: u64, decay_ms: u64) {
        if self.live_bytes > self.recent_peak
            || self.recent_peak_ms.saturating_add(decay_ms) <= now_ms
        {
            self.recent_peak = self.live_bytes;
            self.recent_peak_ms = now_ms;
        }
    }

    /// Restarts the recent peak from the current `live_bytes`, at `now_ms`.
    pub(super) fn reset_peak(&mut self, now_ms: u64) {
        self.recent_peak = self.live_bytes;
        self.recent_peak_ms = now_ms;
    }

    /// Remembers that `block` was freed.
    pub(super) fn note_freed(&mut self, block: usize) {
        self.freed[self.freed_next] = block;
        self.freed_next = (self.freed_next + 1) % FREED_RING;
    }

    /// Whether `block`, not live, is among the blocks freed last.
    pub(super) fn was_freed(&self, block: usize) -> bool {
        block != 0 && self.freed.contains(&block)
    }

    fn home(block: usize) -> usize {
        ((block >> 12) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - 16)
    }

    /// The slot of `block`, when it is live.
    pub(super) fn find(&self, block: usize) -> Option<usize> {
        let mut i = Self::home(block);
        loop {
            match self.slots[i] {
                EMPTY => return None,
                b if b == block => return Some(i),
                _ => i = (i + 1) % REGISTRY_SLOTS,
            }
        }
    }

    /// Whether there is room for one more block.
    pub(super) fn has_room(&self) -> bool {
        self.live < REGISTRY_SLOTS * 3 / 4
    }

    /// Adds `block`; false when the set is full.
    pub(super) fn insert(&mut self, block: usize) -> bool {
        if !self.has_room() {
            return false;
        }
        let mut i = Self::home(block);
        while self.slots[i] != EMPTY {
            i = (i + 1) % REGISTRY_SLOTS;
        }
        self.slots[i] = block;
        self.live += 1;
        true
    }

    /// `block` moved to `to`: the old address is gone as if freed (a later use of it is
    /// a double free), the new one live.
    pub(super) fn moved(&mut self, block: usize, to: usize) {
        self.remove(block);
        self.note_freed(block);
        // Cannot fail: the entry just removed frees a slot.
        self.insert(to);
    }

    /// Removes `block`; false when it was not there.
    pub(super) fn remove(&mut self, block: usize) -> bool {
        let Some(mut hole) = self.find(block) else {
            return false;
        };
        self.live -= 1;
        // Shift later members of the probe run back into the hole when their home
        // position does not lie between the hole and themselves.
        let mut j = hole;
        loop {
            j = (j + 1) % REGISTRY_SLOTS;
            let b = self.slots[j];
            if b == EMPTY {
                break;
            }
            let home = Self::home(b);
            let dist_home = (j + REGISTRY_SLOTS - home) % REGISTRY_SLOTS;
            let dist_hole = (j + REGISTRY_SLOTS - hole) % REGISTRY_SLOTS;
            if dist_home >= dist_hole {
                self.slots[hole] = b;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_against_a_model() {
        let mut r = Box::new(Registry::new());
        let mut model = std::collections::HashSet::new();
        let mut x = 0x9E37_79B9u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct pages so probe runs collide and wrap.
            let block = ((x % 5000) as usize + 1) << 12;
            if x & 1 == 0 && model.len() < 4000 {
                if model.insert(block) {
                    assert!(r.insert(block));
                }
            } else {
                assert_eq!(r.remove(block), model.remove(&block));
            }
            assert_eq!(r.live, model.len());
        }
        for b in 1..5001usize {
            assert_eq!(r.find(b << 12).is_some(), model.contains(&(b << 12)));
        }
    }
}
