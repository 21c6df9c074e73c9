//! Log matching with `regex` on `rayon`: generated log lines (one in twenty
//! malformed) matched with captures on a pool of `p.threads` workers, each match
//! turned into an owned event, events grouped per user by fold and reduce.

use super::{fnv, merge_groups, pool, scramble, Outcome, Params};
use crate::Rng;
use rayon::prelude::*;
use regex::Regex;
use std::collections::HashMap;

/// Lines at scale 1.
const LINES: u64 = 150_000;
/// Rounds over the same lines.
const ROUNDS: usize = 3;
/// Distinct users.
const USERS: usize = 5000;

const ACTIONS: &[&str] = &["login", "logout", "view", "search", "buy", "refund"];
const PATTERN: &str =
    r"^(\S+) (host-\d+) user=(\w+) action=(\w+) status=(\d{3}) latency_ms=(\d+) path=(\S+)$";

/// One matched line, owned.
struct Event {
    action: String,
    status: u16,
    latency_ms: u32,
    path: String,
}

/// The lines and how many are well-formed.
fn lines(n: u64) -> (Vec<String>, u64) {
    let mut rng = Rng::new(0x1065);
    let mut good = 0;
    let lines = (0..n)
        .map(|i| {
            let stamp = format!("2026-12-03T{:02}:{:02}:{:02}.{:03}Z", i / 3_600_000 % 24, i / 60_000 % 60, i / 1000 % 60, i % 1000);
            let user = format!("user{}", rng.below(USERS));
            let action = ACTIONS[rng.below(ACTIONS.len())];
            let status = [200, 200, 200, 201, 302, 404, 500][rng.below(7)];
            let path = format!("/api/v{}/items/{}", rng.range(1, 3), rng.below(100_000));
            if rng.below(20) == 0 {
                // Malformed: a field left out.
                format!("{stamp} host-{} user={user} status={status} path={path}", rng.below(64))
            } else {
                good += 1;
                format!(
                    "{stamp} host-{} user={user} action={action} status={status} latency_ms={} path={path}",
                    rng.below(64),
                    rng.range(1, 2000)
                )
            }
        })
        .collect();
    (lines, good)
}

/// Matches, groups and digests the lines `ROUNDS` times.
pub fn regex_logs(p: &Params) -> Outcome {
    let (lines, good) = lines(p.count(LINES));
    let re = Regex::new(PATTERN).expect("the pattern compiles");
    let mut out = Outcome {
        checksum: 0,
        allocs: lines.len() as u64,
    };
    pool(p).install(|| {
        for round in 0..ROUNDS {
            let by_user: HashMap<String, Vec<Event>> = lines
                .par_iter()
                .filter_map(|l| {
                    let c = re.captures(l)?;
                    Some((
                        c[3].to_string(),
                        Event {
                            action: c[4].to_string(),
                            status: c[5].parse().expect("three digits"),
                            latency_ms: c[6].parse().expect("digits"),
                            path: c[7].to_string(),
                        },
                    ))
                })
                .fold(
                    HashMap::new,
                    |mut m: HashMap<String, Vec<Event>>, (u, e)| {
                        m.entry(u).or_default().push(e);
                        m
                    },
                )
                .reduce(HashMap::new, merge_groups);
            let matched: usize = by_user.values().map(Vec::len).sum();
            assert_eq!(matched as u64, good, "round {round}: events lost");
            // Per user: events, failures, latency and the paths, summed in any order.
            let digest = by_user
                .par_iter()
                .map(|(u, events)| {
                    let (mut failed, mut latency, mut paths) = (0u64, 0u64, 0u64);
                    for e in events {
                        assert!(
                            ACTIONS.contains(&e.action.as_str()),
                            "bad action {}",
                            e.action
                        );
                        failed += u64::from(e.status >= 400);
                        latency += u64::from(e.latency_ms);
                        paths = paths.wrapping_add(scramble(fnv(e.path.as_bytes())));
                    }
                    scramble(
                        fnv(u.as_bytes()) ^ (events.len() as u64) << 40 ^ failed << 20 ^ latency,
                    )
                    .wrapping_add(paths)
                })
                .reduce(|| 0, u64::wrapping_add);
            out.checksum = out.checksum.wrapping_add(digest);
            out.allocs += 3 * good;
        }
    });
    out
}
