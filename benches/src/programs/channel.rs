//! Boxes over channels: producers send batches of 16..1016-byte boxes over a
//! bounded `std::sync::mpsc::sync_channel` to one consumer, which checks every box,
//! keeps one in eight in a bounded store (replacing older ones) and drops the rest:
//! nearly every box is freed on another thread than the one that made it.

use super::{scramble, Outcome, Params};
use crate::Rng;
use std::sync::mpsc::sync_channel;

/// Boxes at scale 1, all producers together.
const BOXES: u64 = 1_500_000;
/// Batches in flight per channel.
const BOUND: usize = 64;
/// Boxes the consumer keeps at most.
const KEPT: usize = 4096;

/// Box `k`'s length and fill byte (a function of `k` alone).
fn shape(k: u64) -> (usize, u8) {
    let h = scramble(k);
    (16 + (h % 1001) as usize, (h >> 32) as u8)
}

/// Producer `i` of `producers` makes boxes `i, i + producers, ...` in batches of 1..32.
fn produce(i: u64, producers: u64, n: u64, tx: std::sync::mpsc::SyncSender<Vec<(u64, Box<[u8]>)>>) {
    let mut rng = Rng::new(0xC4A2 + i);
    let mut k = i;
    while k < n {
        let want = rng.range(1, 32);
        let mut batch = Vec::with_capacity(want);
        while batch.len() < want && k < n {
            let (len, fill) = shape(k);
            batch.push((k, vec![fill; len].into_boxed_slice()));
            k += producers;
        }
        tx.send(batch)
            .expect("the consumer lives until every producer is done");
    }
}

/// Checks box `k` and returns its digest.
fn check(k: u64, b: &[u8]) -> u64 {
    let (len, fill) = shape(k);
    assert!(
        b.len() == len && b.iter().all(|&x| x == fill),
        "box {k} arrived corrupt"
    );
    scramble(k ^ (len as u64) << 48)
}

/// `p.threads` producers, one consumer.
pub fn channel(p: &Params) -> Outcome {
    let n = p.count(BOXES);
    let producers = p.threads as u64;
    let (tx, rx) = sync_channel::<Vec<(u64, Box<[u8]>)>>(BOUND);
    std::thread::scope(|s| {
        for i in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                p.pin_worker(i as usize + 1);
                produce(i, producers, n, tx)
            });
        }
        drop(tx);
        let mut kept: Vec<(u64, Box<[u8]>)> = Vec::with_capacity(KEPT);
        let mut rng = Rng::new(0xC0);
        let mut checksum = 0u64;
        let mut received = 0u64;
        for batch in rx {
            for (k, b) in batch {
                checksum = checksum.wrapping_add(check(k, &b));
                received += 1;
                if k % 8 == 0 {
                    if kept.len() < KEPT {
                        kept.push((k, b));
                    } else {
                        // The replaced box was checked on arrival; check it again on
                        // its way out (it sat in memory the allocator manages).
                        let slot = rng.below(KEPT);
                        let (old, ob) = std::mem::replace(&mut kept[slot], (k, b));
                        check(old, &ob);
                    }
                }
            }
        }
        for (k, b) in &kept {
            check(*k, b);
        }
        assert_eq!(received, n, "boxes lost");
        Outcome {
            checksum,
            allocs: n,
        }
    })
}
