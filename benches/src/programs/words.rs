//! Word counting in std collections: a generated text's words counted in a
//! `HashMap<String, usize>` (a `String` per word seen, as plain code writes it),
//! sorted by count, and its first bigrams counted in a `BTreeMap<(String, String),
//! u32>`.

use super::{fnv, scramble, Outcome, Params};
use crate::Rng;
use std::collections::{BTreeMap, HashMap};

/// Words of text at scale 1.
const WORDS: u64 = 2_000_000;
/// Bigrams counted, as a share of the words.
const BIGRAM_SHARE: u64 = 3;
/// Rounds over the same text.
const ROUNDS: usize = 3;

const SYLLABLES: &[&str] = &[
    "ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "qui", "ro", "su",
    "ta", "ve", "wo", "xa", "yu", "ze",
];

/// Word `k` of the vocabulary: two to five syllables spelling out `k`.
fn vocabulary_word(mut k: usize) -> String {
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[k % SYLLABLES.len()]);
        k /= SYLLABLES.len();
        if k == 0 && w.len() >= 4 {
            return w;
        }
    }
}

/// A text whose word ranks are roughly Zipf-distributed over a large vocabulary.
fn text(words: u64) -> String {
    let mut rng = Rng::new(0x3042D5);
    let mut t = String::new();
    for i in 0..words {
        // 1/u draws a heavy head and a long tail of rare words.
        let rank = ((1.0 / (rng.unit() + 1e-6)) as usize * 7 + rng.below(7)).min(400_000);
        t.push_str(&vocabulary_word(rank));
        t.push(if i % 17 == 16 { '\n' } else { ' ' });
    }
    t
}

/// Counts the text's words and bigrams `ROUNDS` times.
pub fn words(p: &Params) -> Outcome {
    let n = p.count(WORDS);
    let text = text(n);
    let mut out = Outcome {
        checksum: 0,
        allocs: 0,
    };
    for round in 0..ROUNDS {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for w in text.split_whitespace() {
            *counts.entry(w.to_string()).or_insert(0) += 1;
        }
        assert_eq!(
            counts.values().sum::<usize>() as u64,
            n,
            "round {round}: words lost"
        );
        let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut bigrams: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut it = text.split_whitespace().take((n / BIGRAM_SHARE) as usize);
        if let Some(mut prev) = it.next() {
            for w in it {
                *bigrams
                    .entry((prev.to_string(), w.to_string()))
                    .or_insert(0) += 1;
                prev = w;
            }
        }
        let pairs: u32 = bigrams.values().sum();
        assert_eq!(
            u64::from(pairs),
            (n / BIGRAM_SHARE).min(n).saturating_sub(1),
            "round {round}: bigrams lost"
        );
        let top = ranked.iter().take(100).fold(0u64, |h, (w, c)| {
            scramble(h ^ fnv(w.as_bytes())).wrapping_add(*c as u64)
        });
        let common = bigrams
            .iter()
            .max_by_key(|(k, c)| (**c, std::cmp::Reverse(*k)));
        let common = common.map_or(0, |((a, b), c)| {
            fnv(a.as_bytes()) ^ fnv(b.as_bytes()) ^ u64::from(*c)
        });
        out.checksum = out
            .checksum
            .wrapping_add(top ^ common ^ ranked.len() as u64 ^ (bigrams.len() as u64) << 32);
        out.allocs += n + 2 * u64::from(pairs);
    }
    out
}
