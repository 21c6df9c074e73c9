//! A Rust program on the system allocator (C `malloc`, `realloc`, `posix_memalign`,
//! `free`) with threads: maps, strings and over-aligned values built on several
//! threads, handed to other threads through channels and freed there, and
//! thread-local values whose destructors allocate while their thread exits.
//!
//! `tests/preload.rs` compiles it with rustc and runs it with and without cpuslab
//! preloaded; the output must be identical. Prints one deterministic line per worker
//! and a total.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

/// Over-aligned, so `Vec<Line>` goes through `posix_memalign`.
#[repr(align(64))]
#[derive(Clone, Copy)]
struct Line([u64; 8]);

struct Farewell(Vec<String>);

impl Drop for Farewell {
    fn drop(&mut self) {
        // Runs while the thread exits: allocate, reallocate, free.
        let mut words: Vec<String> = self.0.drain(..).map(|s| s.repeat(3)).collect();
        words.sort();
        words.dedup();
        let total: usize = words.iter().map(String::len).sum();
        assert!(total > 0);
    }
}

thread_local! {
    static FAREWELL: RefCell<Farewell> = const { RefCell::new(Farewell(Vec::new())) };
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn work(id: u64, to_collector: mpsc::Sender<Vec<String>>) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15 ^ (id + 1);
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut sum = 0u64;
    for round in 0..200_000u64 {
        let r = xorshift(&mut x);
        let key = format!("k{}", r % 5000);
        let v = map.entry(key).or_default();
        v.push(r >> 3);
        if v.len() > 12 {
            sum = sum.wrapping_add(v.iter().sum::<u64>());
            v.clear();
            v.shrink_to_fit();
        }
        if round % 64 == 0 {
            lines.push(Line([r; 8]));
            let batch: Vec<String> = (0..8).map(|i| format!("{id}-{round}-{i}")).collect();
            to_collector.send(batch).expect("collector alive");
        }
        if round % 1000 == 999 {
            sum = sum.wrapping_add(lines.iter().map(|l| l.0[7] & 0xffff).sum::<u64>());
            lines.truncate(lines.len() / 2);
            lines.shrink_to_fit();
        }
    }
    let ordered: BTreeMap<&String, usize> = map.iter().map(|(k, v)| (k, v.len())).collect();
    for (k, n) in ordered.iter().take(100) {
        sum = sum.wrapping_add(k.len() as u64 * *n as u64);
    }
    FAREWELL.with(|f| {
        f.borrow_mut()
            .0
            .extend((0..200).map(|i| format!("bye {id} {i}")))
    });
    sum
}

fn main() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let collector = thread::spawn(move || {
        let mut bytes = 0usize;
        for batch in rx {
            bytes += batch.iter().map(String::len).sum::<usize>();
        }
        bytes
    });
    let workers: Vec<_> = (0..4)
        .map(|id| {
            let tx = tx.clone();
            thread::spawn(move || work(id, tx))
        })
        .collect();
    drop(tx);
    let mut total = 0u64;
    for (id, w) in workers.into_iter().enumerate() {
        let sum = w.join().expect("worker");
        println!("worker {id}: {sum:016x}");
        total = total.wrapping_add(sum);
    }
    let bytes = collector.join().expect("collector");
    // Short-lived threads that only allocate in their thread-local destructor.
    for i in 0..32 {
        thread::spawn(move || FAREWELL.with(|f| f.borrow_mut().0.push(format!("short {i}"))))
            .join()
            .expect("short-lived thread");
    }
    println!("collected {bytes} bytes");
    println!("total {total:016x}");
}
