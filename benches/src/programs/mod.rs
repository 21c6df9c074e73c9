//! Real Rust programs, in the shapes in which Rust users compare allocators: a JSON
//! service's parse/convert/write cycle on `serde_json`, a `rayon` pipeline, word
//! counting in std collections, boxes over `std::sync::mpsc` channels, log matching
//! with `regex` on `rayon`, and a request/response server on `tokio`.
//!
//! Each allocates through the process-wide `#[global_allocator]` (the suite's
//! [`crate::dispatch::Dispatch`]), verifies what it computed, and returns a checksum
//! that depends only on the input, never on thread timing: the same under every
//! allocator at the same thread count. `Outcome::allocs` counts the allocations the
//! program knows it makes (strings, boxes, records): a lower bound, since the crates
//! allocate more on their own.

use crate::workloads::{Outcome, Params, WorkloadInfo};

mod channel;
mod json;
mod logs;
mod pipeline;
mod server;
mod words;

/// Every program, in suite order.
pub const PROGRAMS: &[WorkloadInfo] = &[
    WorkloadInfo {
        name: "json",
        multi_threaded: false,
        global: true,
        about: "serde_json: records with strings, maps and options written once, then parsed to Value, converted to structs, written pretty, 4 rounds",
    },
    WorkloadInfo {
        name: "rayon-pipeline",
        multi_threaded: true,
        global: true,
        about: "rayon: formatted keys collected in parallel, par_sort_unstable, grouped into a HashMap<String, Vec<String>>, chunks into BTreeMaps",
    },
    WorkloadInfo {
        name: "words",
        multi_threaded: false,
        global: true,
        about: "a text counted in HashMap<String, usize>, sorted by count, bigrams in BTreeMap<(String, String), u32>",
    },
    WorkloadInfo {
        name: "channel",
        multi_threaded: true,
        global: true,
        about: "producers send batches of 16..1016 B boxes over sync_channel to one consumer that keeps some",
    },
    WorkloadInfo {
        name: "regex-logs",
        multi_threaded: true,
        global: true,
        about: "regex: log lines matched with captures on rayon, events grouped per user",
    },
    WorkloadInfo {
        name: "tokio-server",
        multi_threaded: true,
        global: true,
        about: "tokio: connection tasks parse requests, handler tasks answer with serde_json bodies over mpsc and oneshot channels",
    },
];

/// Runs program `name`; `None` for an unknown name. Panics if verification fails.
pub fn run(name: &str, p: &Params) -> Option<Outcome> {
    Some(match name {
        "json" => json::json(p),
        "rayon-pipeline" => pipeline::rayon_pipeline(p),
        "words" => words::words(p),
        "channel" => channel::channel(p),
        "regex-logs" => logs::regex_logs(p),
        "tokio-server" => server::tokio_server(p),
        _ => return None,
    })
}

/// A rayon pool of `p.threads` workers (pinned when `p.pin`), so that a program's
/// parallelism follows the suite's thread count rather than the machine's.
fn pool(p: &Params) -> rayon::ThreadPool {
    let pin = p.clone();
    rayon::ThreadPoolBuilder::new()
        .num_threads(p.threads)
        .start_handler(move |i| pin.pin_worker(i))
        .build()
        .expect("rayon pool")
}

/// Order-independent digest step: each item's digest is scrambled, then summed.
#[inline]
fn scramble(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Merges two groupings of values by key (a parallel fold's partial results).
fn merge_groups<K: Eq + std::hash::Hash, V>(
    mut a: std::collections::HashMap<K, Vec<V>>,
    b: std::collections::HashMap<K, Vec<V>>,
) -> std::collections::HashMap<K, Vec<V>> {
    for (k, mut v) in b {
        a.entry(k).or_default().append(&mut v);
    }
    a
}

/// FNV-1a over bytes: a string's digest.
#[inline]
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: f64 = 0.01;

    #[test]
    fn every_program_runs_and_is_deterministic() {
        for w in PROGRAMS {
            let mut seen = None;
            for threads in [1, 2, 3] {
                if threads > 1 && !w.multi_threaded {
                    continue;
                }
                let p = Params::new(threads, TINY);
                let a = run(w.name, &p).expect("registered");
                let b = run(w.name, &p).expect("registered");
                assert!(a.allocs > 0, "{} made no allocation", w.name);
                assert_eq!(a, b, "{} x{threads} is not deterministic", w.name);
                // The programs' results do not depend on how the work was split.
                if let Some(s) = seen {
                    assert_eq!(
                        s, a.checksum,
                        "{}: x{threads} computed another result",
                        w.name
                    );
                }
                seen = Some(a.checksum);
            }
        }
    }

    #[test]
    fn scale_changes_the_work() {
        for w in PROGRAMS {
            let small = run(w.name, &Params::new(2, TINY)).expect("registered");
            let big = run(w.name, &Params::new(2, 3.0 * TINY)).expect("registered");
            assert!(
                big.allocs > small.allocs,
                "{}: {small:?} vs {big:?}",
                w.name
            );
            assert_ne!(big.checksum, small.checksum, "{}", w.name);
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(run("no-such-program", &Params::new(1, TINY)).is_none());
        for w in PROGRAMS {
            assert!(
                crate::workloads::find(w.name).is_none(),
                "{} is in both lists",
                w.name
            );
        }
    }
}
