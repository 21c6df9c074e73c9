//! A JSON service's cycle on `serde_json`: records written once, then each round
//! parsed into a `serde_json::Value`, converted to typed structs, checked against
//! the originals and written pretty. The previous round's output lives until the
//! next one is written, as a service's responses outlive the next request's parse.

use super::{fnv, Outcome, Params};
use crate::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Records at scale 1.
const RECORDS: u64 = 30_000;
/// Parse, convert and write rounds.
const ROUNDS: usize = 4;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order {
    sku: String,
    quantity: u32,
    price_cents: u64,
    shipped: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Record {
    id: u64,
    name: String,
    email: String,
    active: bool,
    /// Quarters only, so that the value survives printing and parsing exactly.
    score: Option<f64>,
    tags: Vec<String>,
    attrs: BTreeMap<String, String>,
    orders: Vec<Order>,
    note: Option<String>,
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "or",
];

fn word(rng: &mut Rng, min: usize, max: usize) -> String {
    let n = rng.range(min, max);
    (0..n)
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
        .collect()
}

fn record(id: u64) -> Record {
    let mut rng = Rng::new(0x7503 ^ id);
    let name = format!("{} {}", word(&mut rng, 2, 4), word(&mut rng, 2, 5));
    let email = format!(
        "{}.{id}@{}.example",
        word(&mut rng, 2, 3),
        word(&mut rng, 1, 3)
    );
    let tags = (0..rng.range(0, 6)).map(|_| word(&mut rng, 1, 4)).collect();
    let attrs = (0..rng.range(1, 6))
        .map(|k| (format!("{}{k}", word(&mut rng, 1, 2)), word(&mut rng, 1, 8)))
        .collect();
    let orders = (0..rng.range(0, 4))
        .map(|k| Order {
            sku: format!("SKU-{:06}-{k}", rng.below(1_000_000)),
            quantity: rng.range(1, 20) as u32,
            price_cents: rng.range(99, 99_999) as u64,
            shipped: (rng.below(3) != 0)
                .then(|| format!("2026-{:02}-{:02}", rng.range(1, 12), rng.range(1, 28))),
        })
        .collect();
    Record {
        id,
        name,
        email,
        active: rng.below(2) == 0,
        score: (rng.below(4) != 0).then(|| rng.below(400) as f64 / 4.0),
        tags,
        attrs,
        orders,
        note: (rng.below(5) == 0).then(|| word(&mut rng, 8, 40)),
    }
}

/// Strings a record is made of (its allocations, less the vectors and map nodes).
fn strings(r: &Record) -> u64 {
    (2 + r.tags.len()
        + 2 * r.attrs.len()
        + r.orders
            .iter()
            .map(|o| 1 + usize::from(o.shipped.is_some()))
            .sum::<usize>()
        + usize::from(r.note.is_some())) as u64
}

/// Writes the records, then parses, converts, checks and rewrites them `ROUNDS` times.
pub fn json(p: &Params) -> Outcome {
    let n = p.count(RECORDS);
    let records: Vec<Record> = (0..n).map(record).collect();
    let mut allocs: u64 = records.iter().map(strings).sum();
    let text = serde_json::to_string(&records).expect("records serialise");
    let mut checksum = fnv(text.as_bytes());
    let mut previous = String::new();
    for round in 0..ROUNDS {
        let value: serde_json::Value = serde_json::from_str(&text).expect("own output parses");
        let array = value.as_array().expect("an array of records");
        assert_eq!(array.len() as u64, n, "round {round}: records lost");
        let parsed: Vec<Record> = serde_json::from_value(value).expect("records convert");
        assert!(
            parsed == records,
            "round {round}: a record came back different"
        );
        allocs += 2 * parsed.iter().map(strings).sum::<u64>();
        let pretty = serde_json::to_string_pretty(&parsed).expect("records serialise");
        assert!(
            previous.is_empty() || previous == pretty,
            "round {round}: output differs"
        );
        checksum = checksum
            .wrapping_mul(31)
            .wrapping_add(pretty.len() as u64 ^ fnv(&pretty.as_bytes()[pretty.len() / 2..]));
        previous = pretty;
    }
    Outcome { checksum, allocs }
}
