//! `RcuCell`: readers on several threads see a consistent value without locks while a
//! writer replaces it; each old value is dropped after a grace period, once no reader
//! can still hold it.
//!
//! ```sh
//! cargo run --release --example rcu_cell
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use cpuslab::rcu::{self, RcuCell};

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);

/// A configuration whose fields must agree: a torn or freed value would show.
struct Config {
    version: u64,
    name: String,
    check: u64,
}

impl Config {
    fn new(version: u64) -> Self {
        Config {
            version,
            name: format!("config-{version}"),
            check: version.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // Poison the value, so a reader that could still see it would fail its check.
        self.check = !self.check;
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

const READERS: usize = 3;
const VERSIONS: u64 = 2_000;

fn main() {
    let cell = Arc::new(RcuCell::new(Config::new(0)));
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (cell, done) = (cell.clone(), done.clone());
            thread::spawn(move || {
                let (mut reads, mut last) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let g = rcu::read_lock();
                    let c = cell.read(&g);
                    assert_eq!(c.check, c.version.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let named = c.name.strip_prefix("config-").and_then(|n| n.parse().ok());
                    assert_eq!(named, Some(c.version));
                    assert!(c.version >= last, "versions only go forward");
                    last = c.version;
                    drop(g);
                    reads += 1;
                    READS.fetch_add(1, Ordering::Relaxed);
                    thread::yield_now();
                }
                (reads, last)
            })
        })
        .collect();

    // The writer: every old value goes to call_rcu, the last through a synchronous
    // replace that waits for the grace period itself. Every 50 versions it lets the
    // readers in, so reads and replacements interleave even on one CPU.
    for v in 1..VERSIONS {
        if v % 50 == 0 {
            let seen = READS.load(Ordering::Relaxed);
            while READS.load(Ordering::Relaxed) < seen + READERS as u64 {
                thread::yield_now();
            }
        }
        cell.replace(Config::new(v));
    }
    let old = cell.replace_sync(Config::new(VERSIONS));
    assert_eq!(old.version, VERSIONS - 1);
    drop(old);
    done.store(true, Ordering::Relaxed);

    let mut total = 0;
    for r in readers {
        let (reads, last) = r.join().expect("reader");
        assert!(last <= VERSIONS);
        total += reads;
    }

    // Wait for every queued callback: all VERSIONS old values are dropped, the current
    // one is not.
    rcu::barrier();
    assert_eq!(DROPPED.load(Ordering::Relaxed), VERSIONS);
    {
        let g = rcu::read_lock();
        assert_eq!(cell.read(&g).version, VERSIONS);
    }
    let stats = rcu::rcu_stats();
    assert!(stats.completed > 0, "grace periods ran");
    println!(
        "ok: {READERS} readers made {total} reads over {VERSIONS} replacements; \
         {} grace periods, {} callbacks invoked",
        stats.completed, stats.invoked_callbacks
    );
}
