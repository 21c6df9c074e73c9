//! Rust-shaped workloads that allocate through the *global* allocator, the
//! way ordinary Rust code does: growing `Vec`s and `String`s, `BTreeMap` and
//! `HashMap` churn. Threads are independent; all content is verified.

use super::{Outcome, Params};
use crate::rng::SizeTable;
use crate::Rng;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Runs `body(thread_index)` on `p.threads` threads and folds their results.
fn on_threads(p: &Params, body: impl Fn(usize) -> Outcome + Sync) -> Outcome {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                let body = &body;
                s.spawn(move || {
                    p.pin_worker(i);
                    body(i)
                })
            })
            .collect();
        handles.into_iter().fold(
            Outcome {
                checksum: 0,
                allocs: 0,
            },
            |acc, h| {
                let o = h.join().expect("worker panicked");
                Outcome {
                    checksum: acc.checksum.wrapping_add(o.checksum),
                    allocs: acc.allocs + o.allocs,
                }
            },
        )
    })
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(27)
}

// ---------------------------------------------------------------- vec-growth

/// Vectors built at scale 1, all threads together.
const VEC_BASE: u64 = 200_000;
/// Vectors grown side by side, so a realloc can rarely extend in place for free.
const VEC_SIDE_BY_SIDE: usize = 8;

/// Byte `j` of vector `seed`.
#[inline]
fn vec_byte(seed: u64, j: usize) -> u8 {
    (seed as usize).wrapping_add(j.wrapping_mul(31)) as u8
}

/// Letter `j` of string `seed` (ASCII, so valid UTF-8).
#[inline]
fn str_byte(seed: u64, j: usize) -> u8 {
    b'a' + ((seed as usize).wrapping_add(j.wrapping_mul(7)) % 26) as u8
}

/// Content function of a grown vector: byte `j` of vector `seed`.
type ByteFn = fn(u64, usize) -> u8;

enum Grown {
    Amortised(Vec<u8>),
    Exact(Vec<u8>),
    Text(String),
}

impl Grown {
    fn len(&self) -> usize {
        match self {
            Grown::Amortised(v) | Grown::Exact(v) => v.len(),
            Grown::Text(s) => s.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Grown::Amortised(v) | Grown::Exact(v) => v.capacity(),
            Grown::Text(s) => s.capacity(),
        }
    }

    fn append(&mut self, seed: u64, n: usize) {
        let mut buf = [0u8; 64];
        let at = self.len();
        match self {
            Grown::Amortised(v) => {
                for (j, b) in buf[..n].iter_mut().enumerate() {
                    *b = vec_byte(seed, at + j);
                }
                v.extend_from_slice(&buf[..n]);
            }
            Grown::Exact(v) => {
                for (j, b) in buf[..n].iter_mut().enumerate() {
                    *b = vec_byte(seed, at + j);
                }
                // Exact growth: a realloc on every append.
                v.reserve_exact(n);
                v.extend_from_slice(&buf[..n]);
            }
            Grown::Text(s) => {
                for (j, b) in buf[..n].iter_mut().enumerate() {
                    *b = str_byte(seed, at + j);
                }
                s.push_str(std::str::from_utf8(&buf[..n]).expect("ascii"));
            }
        }
    }

    /// Verifies every byte; returns a digest of the content.
    fn verify(&self, seed: u64) -> u64 {
        let (bytes, f): (&[u8], ByteFn) = match self {
            Grown::Amortised(v) | Grown::Exact(v) => (v, vec_byte),
            Grown::Text(s) => (s.as_bytes(), str_byte),
        };
        let mut sum = 0u64;
        for (j, &b) in bytes.iter().enumerate() {
            assert_eq!(
                b,
                f(seed, j),
                "vec-growth: byte {j} of a grown vector is corrupt"
            );
            sum += b as u64;
        }
        mix(sum, bytes.len() as u64)
    }
}

/// Grows vectors and strings side by side to random lengths (log-uniform up
/// to 16 KiB), verifies their contents, drops them.
pub fn vec_growth(p: &Params) -> Outcome {
    let rounds = (p.per_thread(VEC_BASE) / VEC_SIDE_BY_SIDE as u64).max(1);
    let lens = SizeTable::log_uniform(1, 16 << 10, 0x7EC);
    on_threads(p, |i| {
        let mut rng = Rng::new(0x7EC0_0000 + i as u64);
        let mut out = Outcome {
            checksum: 0,
            allocs: 0,
        };
        for _ in 0..rounds {
            let mut vs: Vec<(Grown, u64, usize)> = (0..VEC_SIDE_BY_SIDE)
                .map(|k| {
                    let g = match k % 4 {
                        0 | 1 => Grown::Amortised(Vec::new()),
                        2 => Grown::Exact(Vec::new()),
                        _ => Grown::Text(String::new()),
                    };
                    (g, rng.next_u64(), lens.sample(&mut rng))
                })
                .collect();
            let mut unfinished = VEC_SIDE_BY_SIDE;
            while unfinished > 0 {
                unfinished = 0;
                for (g, seed, target) in vs.iter_mut() {
                    let left = *target - g.len();
                    if left == 0 {
                        continue;
                    }
                    let n = rng.range(1, 48).min(left);
                    let cap = g.capacity();
                    g.append(*seed, n);
                    out.allocs += u64::from(g.capacity() != cap);
                    if g.len() < *target {
                        unfinished += 1;
                    }
                }
            }
            for (g, seed, _) in vs.drain(..) {
                out.checksum = out.checksum.wrapping_add(g.verify(seed));
            }
        }
        out
    })
}

// --------------------------------------------------------------- btree-churn

/// Map operations at scale 1, all threads together.
const BTREE_BASE: u64 = 8_000_000;
/// Operations between dropping the whole map.
const EPOCH: u64 = 250_000;
/// Key space (so about half the keys are present at steady state).
const KEYS: usize = 1 << 16;

/// The value stored under `key`: 8..=64 bytes derived from the key.
fn value_for(key: u64) -> Vec<u8> {
    let len = 8 + (key as usize * 7) % 57;
    (0..len).map(|j| (key as usize + j * 13) as u8).collect()
}

fn check_value(key: u64, v: &[u8]) -> u64 {
    let len = 8 + (key as usize * 7) % 57;
    let ok = v.len() == len
        && v.iter()
            .enumerate()
            .all(|(j, &b)| b == (key as usize + j * 13) as u8);
    assert!(ok, "map value for key {key} is corrupt");
    mix(key, len as u64)
}

/// Inserts (45 %), removes (35 %) and looks up (20 %) random keys in a
/// `BTreeMap<u64, Vec<u8>>`, verifying every value seen; drops and rebuilds
/// the map every epoch.
pub fn btree_churn(p: &Params) -> Outcome {
    let ops = p.per_thread(BTREE_BASE);
    on_threads(p, |i| {
        let mut rng = Rng::new(0xB7EE_0000 + i as u64);
        let mut out = Outcome {
            checksum: 0,
            allocs: 0,
        };
        let mut map: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for op in 0..ops {
            let key = rng.below(KEYS) as u64;
            match rng.below(100) {
                0..=44 => {
                    out.allocs += 1;
                    if let Some(old) = map.insert(key, value_for(key)) {
                        out.checksum = out.checksum.wrapping_add(check_value(key, &old));
                    }
                }
                45..=79 => {
                    if let Some(old) = map.remove(&key) {
                        out.checksum = out.checksum.wrapping_add(check_value(key, &old));
                    }
                }
                _ => {
                    if let Some(v) = map.get(&key) {
                        out.checksum = out.checksum.wrapping_add(check_value(key, v));
                    }
                }
            }
            if (op + 1) % EPOCH == 0 || op + 1 == ops {
                for (k, v) in &map {
                    out.checksum = out.checksum.wrapping_add(check_value(*k, v));
                }
                map = BTreeMap::new();
            }
        }
        out
    })
}

// ------------------------------------------------------------- hashmap-churn

/// Map operations at scale 1, all threads together.
const HASH_BASE: u64 = 8_000_000;

/// A fixed multiplicative hasher: the same table layout in every run (std's
/// `RandomState` would add run-to-run noise).
#[derive(Default)]
struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x)
            .wrapping_mul(0xFF51_AFD7_ED55_8CCD)
            .rotate_left(31);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// The string stored under `key`: 4..=48 letters derived from the key.
fn text_for(key: u64) -> String {
    let len = 4 + (key as usize * 11) % 45;
    (0..len)
        .map(|j| (b'a' + ((key as usize + j) % 26) as u8) as char)
        .collect()
}

fn check_text(key: u64, s: &str) -> u64 {
    let len = 4 + (key as usize * 11) % 45;
    let ok = s.len() == len
        && s.bytes()
            .enumerate()
            .all(|(j, b)| b == b'a' + ((key as usize + j) % 26) as u8);
    assert!(ok, "hash map string for key {key} is corrupt");
    mix(key, len as u64)
}

/// Like `btree_churn` on a `HashMap<u64, String>`; starting each epoch from
/// an empty map makes the table grow (and rehash) through every size again.
pub fn hashmap_churn(p: &Params) -> Outcome {
    let ops = p.per_thread(HASH_BASE);
    on_threads(p, |i| {
        let mut rng = Rng::new(0x4A54_0000 + i as u64);
        let mut out = Outcome {
            checksum: 0,
            allocs: 0,
        };
        let mut map: HashMap<u64, String, BuildHasherDefault<FixedHasher>> = HashMap::default();
        for op in 0..ops {
            let key = rng.below(KEYS) as u64;
            match rng.below(100) {
                0..=44 => {
                    out.allocs += 1;
                    if let Some(old) = map.insert(key, text_for(key)) {
                        out.checksum = out.checksum.wrapping_add(check_text(key, &old));
                    }
                }
                45..=79 => {
                    if let Some(old) = map.remove(&key) {
                        out.checksum = out.checksum.wrapping_add(check_text(key, &old));
                    }
                }
                _ => {
                    if let Some(v) = map.get(&key) {
                        out.checksum = out.checksum.wrapping_add(check_text(key, v));
                    }
                }
            }
            if (op + 1) % EPOCH == 0 || op + 1 == ops {
                for (k, v) in &map {
                    out.checksum = out.checksum.wrapping_add(check_text(*k, v));
                }
                map = HashMap::default();
            }
        }
        out
    })
}
