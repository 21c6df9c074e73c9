//! A `rayon` pipeline: keys formatted and collected in parallel, sorted with
//! `par_sort_unstable`, grouped by prefix into a `HashMap<String, Vec<String>>` by
//! fold and reduce, and cut into chunks indexed by `BTreeMap`s. Strings are made on
//! one worker and dropped on another, as rayon moves work.

use super::{fnv, merge_groups, pool, scramble, Outcome, Params};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// Keys per round at scale 1.
const KEYS: u64 = 250_000;
/// Rounds.
const ROUNDS: u64 = 4;
/// Keys a `BTreeMap` chunk indexes.
const CHUNK: usize = 2048;

fn key(round: u64, i: u64) -> String {
    let h = scramble(round << 40 | i);
    format!(
        "{:04x}/{:012x}/{}-{}",
        h >> 52,
        h & 0xFFFF_FFFF_FFFF,
        i % 977,
        round
    )
}

/// Runs the pipeline `ROUNDS` times on a pool of `p.threads` workers.
pub fn rayon_pipeline(p: &Params) -> Outcome {
    let n = p.count(KEYS);
    let mut out = Outcome {
        checksum: 0,
        allocs: 0,
    };
    pool(p).install(|| {
        for round in 0..ROUNDS {
            let mut keys: Vec<String> = (0..n).into_par_iter().map(|i| key(round, i)).collect();
            keys.par_sort_unstable();
            assert!(
                keys.par_windows(2).all(|w| w[0] < w[1]),
                "round {round}: keys not sorted (or duplicated)"
            );
            let groups: HashMap<String, Vec<String>> = keys
                .par_iter()
                .fold(HashMap::new, |mut m: HashMap<String, Vec<String>>, k| {
                    m.entry(k[..3].to_string()).or_default().push(k.clone());
                    m
                })
                .reduce(HashMap::new, merge_groups);
            let grouped: usize = groups.values().map(Vec::len).sum();
            assert_eq!(grouped as u64, n, "round {round}: keys lost in grouping");
            let digest = groups
                .par_iter()
                .map(|(prefix, v)| {
                    v.iter().fold(scramble(fnv(prefix.as_bytes())), |h, k| {
                        assert!(k.starts_with(prefix.as_str()), "key {k} under {prefix}");
                        h.wrapping_add(scramble(fnv(k.as_bytes())))
                    })
                })
                .reduce(|| 0, u64::wrapping_add);
            let chunks: Vec<BTreeMap<String, usize>> = keys
                .par_chunks(CHUNK)
                .map(|c| c.iter().enumerate().map(|(j, k)| (k.clone(), j)).collect())
                .collect();
            let indexed: usize = chunks.iter().map(BTreeMap::len).sum();
            assert_eq!(indexed as u64, n, "round {round}: keys lost in chunks");
            let first = chunks.first().and_then(|c| c.keys().next()).expect("keys");
            out.checksum = out
                .checksum
                .wrapping_add(digest)
                .wrapping_add(fnv(first.as_bytes()) ^ groups.len() as u64);
            // Formatted, grouped (prefix and clone) and indexed strings.
            out.allocs += 3 * n + groups.len() as u64;
        }
    });
    out
}
