//! `Backoff`: a costly remedy for a failure tried at most so often, and less often
//! each time it does not help, as a program that keeps asking for what cannot be had
//! would otherwise pay for the remedy on every request.

use core::sync::atomic::{AtomicU64, Ordering};

/// When a remedy last ran and how long to wait before the next, in milliseconds of a
/// clock the caller reads (`sys::time::now_ms`; this module reads none, so that every
/// layer may use it).
pub(crate) struct Backoff {
    /// When the remedy last ran (0: never).
    at: AtomicU64,
    /// The wait now: `min` after a remedy that helped, doubled after each that did
    /// not, up to `max`.
    wait: AtomicU64,
    min: u64,
    max: u64,
}

impl Backoff {
    /// A backoff waiting `min` to `max` milliseconds.
    pub(crate) const fn new(min: u64, max: u64) -> Self {
        Backoff {
            at: AtomicU64::new(0),
            wait: AtomicU64::new(min),
            min,
            max,
        }
    }

    /// Whether the remedy may run at `now_ms`; if so, it counts as run then.
    pub(crate) fn start(&self, now_ms: u64) -> bool {
        let now = now_ms.max(1);
        let at = self.at.load(Ordering::Relaxed);
        if at != 0 && now.wrapping_sub(at) < self.wait.load(Ordering::Relaxed) {
            return false;
        }
        // Relaxed: a hint; racing threads at worst both run the remedy.
        self.at.store(now, Ordering::Relaxed);
        true
    }

    /// Says whether the remedy [`start`](Self::start) allowed served what it was for.
    pub(crate) fn helped(&self, helped: bool) {
        let wait = if helped {
            self.min
        } else {
            (self.wait.load(Ordering::Relaxed) * 2).min(self.max)
        };
        self.wait.store(wait, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait doubles after each remedy that did not help, up to the most, and falls
    /// back to the least after one that did.
    #[test]
    fn waits_longer_after_each_remedy_that_did_not_help() {
        let b = Backoff::new(10, 40);
        assert!(b.start(100));
        assert!(!b.start(109));
        assert!(b.start(110));
        b.helped(false);
        assert!(!b.start(129));
        assert!(b.start(130));
        b.helped(false);
        b.helped(false);
        assert!(!b.start(169));
        assert!(b.start(170));
        b.helped(true);
        assert!(!b.start(179));
        assert!(b.start(180));
    }
}
