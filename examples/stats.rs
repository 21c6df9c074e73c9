//! What cpuslab holds: `/proc/slabinfo` and `/proc/buddyinfo` tables in the kernel's
//! formats and a summary of the memory it reserved, committed, cached and purged.
//!
//! ```sh
//! cargo run --release --example stats
//! ```

use cpuslab::{stats, KmemCache, SlabFlags};

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

struct Dentry {
    _hash: u64,
    _parent: usize,
    _name: [u8; 40],
}

fn main() {
    // Some work to report on: a typed cache with objects in use, kmalloc blocks of a
    // few sizes, and a huge block.
    let cache = KmemCache::<Dentry>::new("example_dentry", SlabFlags::NONE).unwrap();
    let dentries: Vec<_> = (0..1000)
        .map(|i| {
            cache
                .alloc_with(Dentry {
                    _hash: i,
                    _parent: 0,
                    _name: [0; 40],
                })
                .unwrap()
        })
        .collect();
    let blocks: Vec<Vec<u8>> = (0..3000).map(|i| vec![1; 16 << (i % 8)]).collect();
    let huge = vec![1u8; 8 << 20];

    let slabinfo = stats::slabinfo();
    print!("{slabinfo}");
    assert!(slabinfo.starts_with("slabinfo - version: 2.1\n"));
    // Our cache's row shows at least the objects in use.
    let row = slabinfo
        .lines()
        .find(|l| l.starts_with("example_dentry "))
        .expect("the cache's row");
    let active: usize = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(active >= 1000, "{row}");

    let buddyinfo = stats::buddyinfo();
    print!("\n{buddyinfo}");
    assert!(buddyinfo.starts_with("Node 0, zone   Normal"));

    let m = stats::memory();
    println!("\n{m:#?}");
    assert!(m.reserved_bytes > 0);
    assert!(
        m.committed_bytes >= huge.len(),
        "the huge block is committed"
    );
    assert!(m.dirty_free_bytes <= m.free_bytes);

    // Free everything and trim: the free pages go back to the OS.
    for d in dentries {
        // SAFETY: from this cache, not used again.
        unsafe { cache.free(d) };
    }
    drop(cache);
    let total: usize = blocks.iter().map(Vec::len).sum();
    assert_eq!(
        total,
        blocks
            .iter()
            .map(|b| b.iter().map(|&x| x as usize).sum::<usize>())
            .sum()
    );
    drop(blocks);
    drop(huge);
    let trimmed = cpuslab::trim();
    let after = stats::memory();
    println!(
        "trim gave back {trimmed} bytes; committed now {} bytes",
        after.committed_bytes
    );
    assert!(after.committed_bytes < m.committed_bytes);
    assert!(after.purged_bytes >= m.purged_bytes);
}
