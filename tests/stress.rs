//! Many threads on a 2-core machine: random sizes from 1 B to 1 MiB, alignments up to
//! 4 KiB, cross-thread frees through channels, realloc chains; every block is filled
//! with a pattern derived from its address and checked before it is freed.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use common::{check, fill, Rng};
use cpuslab::CpuSlab;

const THREADS: usize = 8;
const OPS_PER_THREAD: u64 = 1_300_000;

/// The longer run: `CPUSLAB_STRESS_SECS` (run this long instead of a fixed number of
/// operations) and `CPUSLAB_STRESS_THREADS` (instead of 8).
fn long_run() -> (usize, Option<std::time::Instant>) {
    let threads = std::env::var("CPUSLAB_STRESS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(THREADS)
        .max(2);
    let deadline = std::env::var("CPUSLAB_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    (threads, deadline)
}

struct Block {
    ptr: usize,
    layout: Layout,
    salt: u64,
}

fn random_layout(rng: &mut Rng) -> Layout {
    let r = rng.below(1000);
    let size = if r < 900 {
        1 + rng.below(1024)
    } else if r < 995 {
        1024 + rng.below(63 * 1024)
    } else {
        64 * 1024 + rng.below(960 * 1024)
    } as usize;
    let align = 1usize << rng.below(13);
    Layout::from_size_align(size, align).unwrap()
}

fn alloc_block(rng: &mut Rng) -> Block {
    let layout = random_layout(rng);
    let salt = rng.next();
    // SAFETY: non-zero size.
    let ptr = unsafe { CpuSlab.alloc(layout) };
    assert!(!ptr.is_null(), "allocation of {layout:?} failed");
    assert_eq!(ptr as usize % layout.align(), 0, "{layout:?} misaligned");
    // SAFETY: `ptr` has `layout.size()` bytes.
    unsafe { fill(ptr, layout.size(), salt) };
    Block {
        ptr: ptr as usize,
        layout,
        salt,
    }
}

fn free_block(b: Block) {
    // SAFETY: the block is live and was filled by `alloc_block` or `realloc_block`.
    unsafe {
        check(b.ptr as *const u8, b.layout.size(), b.salt);
        CpuSlab.dealloc(b.ptr as *mut u8, b.layout);
    }
}

fn realloc_block(b: Block, rng: &mut Rng) -> Block {
    let new_size = random_layout(rng).size();
    // SAFETY: live block with its layout.
    unsafe {
        check(b.ptr as *const u8, b.layout.size(), b.salt);
        let p = CpuSlab.realloc(b.ptr as *mut u8, b.layout, new_size);
        assert!(!p.is_null());
        assert_eq!(p as usize % b.layout.align(), 0);
        // The kept prefix moved with the block: its pattern was made for the old address.
        common::check_moved(p, b.ptr, b.layout.size().min(new_size), b.salt);
        let salt = rng.next();
        fill(p, new_size, salt);
        Block {
            ptr: p as usize,
            layout: Layout::from_size_align(new_size, b.layout.align()).unwrap(),
            salt,
        }
    }
}

#[test]
fn eight_threads_ten_million_operations() {
    static OPS: AtomicU64 = AtomicU64::new(0);
    let (threads, deadline) = long_run();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Vec<Block>>()).unzip();
    let mut handles = Vec::new();
    for (t, rx) in receivers.into_iter().enumerate() {
        let next = senders[(t + 1) % threads].clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng::new(t as u64 + 1);
            let mut live: Vec<Block> = Vec::new();
            let mut outgoing: Vec<Block> = Vec::new();
            let mut ops = 0u64;
            let mut rounds = 0u64;
            let mut more = |ops: u64| {
                rounds += 1;
                match deadline {
                    Some(d) => !rounds.is_multiple_of(4096) || std::time::Instant::now() < d,
                    None => ops < OPS_PER_THREAD,
                }
            };
            while more(ops) {
                match rng.below(10) {
                    0..=4 => {
                        live.push(alloc_block(&mut rng));
                        ops += 1;
                    }
                    5..=6 if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        free_block(live.swap_remove(i));
                        ops += 1;
                    }
                    7 if !live.is_empty() => {
                        let i = rng.below(live.len() as u64) as usize;
                        let b = live.swap_remove(i);
                        live.push(realloc_block(b, &mut rng));
                        ops += 1;
                    }
                    8 if !live.is_empty() => {
                        // Hand a block to the next thread, which frees it.
                        let i = rng.below(live.len() as u64) as usize;
                        outgoing.push(live.swap_remove(i));
                        if outgoing.len() >= 64 {
                            let _ = next.send(std::mem::take(&mut outgoing));
                        }
                    }
                    _ => {
                        while let Ok(batch) = rx.try_recv() {
                            for b in batch {
                                free_block(b);
                                ops += 1;
                            }
                        }
                    }
                }
                if live.len() > 2000 {
                    free_block(live.swap_remove(0));
                    ops += 1;
                }
            }
            drop(next);
            for b in live.drain(..).chain(outgoing) {
                free_block(b);
                ops += 1;
            }
            OPS.fetch_add(ops, Ordering::Relaxed);
            rx
        }));
    }
    drop(senders);
    let receivers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Blocks still in flight between threads.
    for rx in receivers {
        while let Ok(batch) = rx.try_recv() {
            for b in batch {
                free_block(b);
                OPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let ops = OPS.load(Ordering::Relaxed);
    eprintln!("stress: {threads} threads, {ops} operations, every block's contents checked");
    if deadline.is_none() {
        assert!(ops >= 10_000_000, "only {ops} operations");
    }
}
