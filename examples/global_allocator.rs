//! cpuslab as the program's allocator: one line, and every `Box`, `Vec`, `String` and
//! `HashMap` below comes from its size classes.
//!
//! ```sh
//! cargo run --release --example global_allocator
//! ```

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

fn main() {
    // Small blocks of many sizes, written and read back.
    let words: Vec<String> = (0..10_000).map(|i| format!("word-{i}")).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        *counts.entry(w.as_str()).or_default() += w.len();
    }
    assert_eq!(counts.len(), words.len());
    assert_eq!(counts["word-9999"], "word-9999".len());

    // A block the size classes do not hold (a large block from the page pool), grown
    // by realloc, keeps its contents.
    let mut big: Vec<u64> = (0..100_000).collect();
    big.extend(100_000..300_000);
    assert_eq!(big.iter().sum::<u64>(), 299_999 * 300_000 / 2);

    // The block really came from cpuslab: it knows its usable size.
    let b = Box::new([7u8; 100]);
    // SAFETY: `b` is live and was allocated by the global allocator, CpuSlab.
    let usable = unsafe { cpuslab::usable_size(b.as_ptr()) };
    assert!(usable >= 100, "usable size {usable}");
    assert_eq!(b.iter().map(|&x| x as u32).sum::<u32>(), 700);

    println!(
        "ok: {} strings, {} u64s, a 100-byte box in a {usable}-byte block",
        words.len(),
        big.len()
    );
}
