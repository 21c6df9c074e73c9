//! The percpu rw-semaphore: readers count themselves on their CPU, the writer blocks
//! new readers and waits for the counts to drain. No reader's section overlaps a
//! writer's, nor two writers' (loom checks every access to the data they share), and
//! every count is back to zero at the end.
#![cfg(loom)]

use cpuslab::percpu::RwSemCore;
use cpuslab::sync::atomic::{AtomicIsize, Ordering};
use cpuslab_loom_tests::{model, seq_cst_isize};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// A semaphore as `PercpuRwSem` keeps one, with an array of two CPUs' reader counts
/// in place of its percpu area, and the data it guards.
struct Sem {
    core: RwSemCore,
    counts: [AtomicIsize; 2],
    data: UnsafeCell<u32>,
}

// SAFETY: `data` is written only under the write hold and read only under a read
// hold, which is what the model checks.
unsafe impl Sync for Sem {}

impl Sem {
    fn readers(&self) -> isize {
        self.counts
            .iter()
            .fold(0isize, |n, c| n.wrapping_add(c.load(Ordering::SeqCst)))
    }

    /// `percpu_down_write`, a write, `percpu_up_write`.
    fn write(&self) {
        let hold = self.core.down_write(|| self.readers());
        self.data.with_mut(|p| {
            // SAFETY: the write hold is held (what the model checks).
            unsafe { *p += 1 }
        });
        self.core.unblock_readers();
        drop(hold);
    }

    fn read(&self) -> u32 {
        // SAFETY: a read hold is held (what the model checks).
        self.data.with(|p| unsafe { *p })
    }
}

#[test]
fn no_reader_overlaps_the_writer() {
    model(|| {
        let s = Arc::new(Sem {
            core: RwSemCore::new(),
            counts: [seq_cst_isize(0), seq_cst_isize(0)],
            data: UnsafeCell::new(0),
        });
        // A reader that enters on CPU 0 and leaves on CPU 1 (it migrated).
        let sleeper = {
            let s = s.clone();
            thread::spawn(move || {
                s.core.down_read(|| &s.counts[0]);
                let v = s.read();
                s.core.leave(&s.counts[1]);
                v
            })
        };
        // A reader that only tries.
        let trier = {
            let s = s.clone();
            thread::spawn(move || {
                if s.core.try_enter(|| &s.counts[1]) {
                    let v = s.read();
                    s.core.leave(&s.counts[1]);
                    Some(v)
                } else {
                    None
                }
            })
        };
        // Two writers: the second waits on the writers' lock.
        let other_writer = {
            let s = s.clone();
            thread::spawn(move || s.write())
        };
        s.write();
        let seen = sleeper.join().unwrap();
        let tried = trier.join().unwrap();
        other_writer.join().unwrap();
        assert!(seen <= 2 && tried.is_none_or(|v| v <= 2));
        assert_eq!(s.readers(), 0, "a reader's count was not undone");
        assert!(!s.core.is_write_locked());
        assert_eq!(s.read(), 2, "a write was lost");
    });
}
