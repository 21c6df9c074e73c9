//! `CpuSlab` called directly through `GlobalAlloc`: sequences of alloc, alloc_zeroed,
//! realloc and dealloc with arbitrary layouts, against a model of the live blocks.
//!
//! Every live block holds a pattern derived from its id, checked before each realloc
//! and dealloc and at the end; zeroed blocks must read as zero; realloc keeps the
//! prefix; every block is aligned, has `usable_size >= size`, and no two live blocks
//! overlap.
//!
//! Zero-size layouts are included: `GlobalAlloc` leaves them to the allocator, and
//! cpuslab serves them as `malloc(0)` does (a distinct minimal block).

#![no_main]

use std::alloc::{GlobalAlloc, Layout};

use arbitrary::Arbitrary;
use cpuslab::kmalloc::{KMALLOC_SIZES, NR_KMALLOC};
use cpuslab::CpuSlab;
use cpuslab_fuzz::{boot, check, check_zero, fill, Ranges};
use libfuzzer_sys::fuzz_target;

/// Live blocks at most, and bytes live at most (an op that would pass it is skipped).
const MAX_LIVE: usize = 64;
const MAX_LIVE_BYTES: usize = 48 << 20;
/// Largest size asked for: past the 4 MiB page-pool limit into huge mappings.
const MAX_SIZE: usize = 6 << 20;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    /// 0 to 8 bytes.
    Tiny(u8),
    /// A kmalloc class size, or one to three bytes either side of it.
    Class { index: u8, delta: i8 },
    /// A multiple of 4 KiB (up to 6 MiB), or a byte or two either side.
    Pages { pages: u16, delta: i8 },
    /// A power of two up to 4 MiB, or a byte or two either side.
    Pow2 { shift: u8, delta: i8 },
    /// Anything up to `MAX_SIZE`.
    Any(u32),
}

impl Size {
    fn bytes(self) -> usize {
        let near = |base: usize, delta: i8, span: i8| {
            base.saturating_add_signed(isize::from(delta % (span + 1)))
        };
        let n = match self {
            Size::Tiny(n) => usize::from(n % 9),
            Size::Class { index, delta } => {
                near(KMALLOC_SIZES[usize::from(index) % NR_KMALLOC], delta, 3)
            }
            Size::Pages { pages, delta } => near(usize::from(pages % 1537) << 12, delta, 2),
            Size::Pow2 { shift, delta } => near(1usize << (shift % 23), delta, 2),
            Size::Any(n) => n as usize % (MAX_SIZE + 1),
        };
        n.min(MAX_SIZE)
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc {
        size: Size,
        align_shift: u8,
        zeroed: bool,
    },
    Realloc {
        slot: u8,
        size: Size,
    },
    Dealloc {
        slot: u8,
    },
    /// Checks every live block.
    CheckAll,
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
}

fn seed(id: u64) -> u64 {
    id.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0xA5A5
}

/// Alignment, size and usable size of a block cpuslab just returned.
fn check_new(p: *mut u8, layout: Layout, what: &str) {
    assert!(!p.is_null(), "{what}: null for {layout:?}");
    assert_eq!(
        p as usize % layout.align(),
        0,
        "{what}: {p:p} misaligned for {layout:?}"
    );
    // SAFETY: `p` is a live block of cpuslab.
    let usable = unsafe { cpuslab::usable_size(p) };
    assert!(
        usable >= layout.size(),
        "{what}: usable_size {usable} < {} for {p:p}",
        layout.size()
    );
}

fuzz_target!(|ops: Vec<Op>| {
    boot();
    let a = CpuSlab;
    let mut live: Vec<Block> = Vec::new();
    let mut ranges = Ranges::new();
    let mut live_bytes = 0usize;
    let mut next_id = 0u64;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Alloc {
                size,
                align_shift,
                zeroed,
            } => {
                let size = size.bytes();
                let layout = Layout::from_size_align(size, 1 << (align_shift % 17)).unwrap();
                if live.len() >= MAX_LIVE || live_bytes + size > MAX_LIVE_BYTES {
                    continue;
                }
                // SAFETY: a valid layout (zero size included, see the top).
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    }
                };
                let what = if zeroed { "alloc_zeroed" } else { "alloc" };
                check_new(p, layout, what);
                let id = next_id;
                next_id += 1;
                ranges.insert(p as usize, size, id, what);
                // SAFETY: `p` is a fresh block of `size` bytes.
                unsafe {
                    if zeroed {
                        check_zero(p, size, what);
                    }
                    fill(p, 0, size, seed(id));
                }
                live_bytes += size;
                live.push(Block { ptr: p, layout, id });
            }
            Op::Realloc { slot, size } => {
                if live.is_empty() {
                    continue;
                }
                let i = usize::from(slot) % live.len();
                let new_size = size.bytes();
                let b = &mut live[i];
                let old = b.layout.size();
                if live_bytes - old + new_size > MAX_LIVE_BYTES {
                    continue;
                }
                // SAFETY: `b` is live with this layout; the new size is valid for its
                // alignment (both are bounded far below isize::MAX).
                let q = unsafe {
                    check(b.ptr, 0, old, seed(b.id), "before realloc");
                    a.realloc(b.ptr, b.layout, new_size)
                };
                let new_layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                check_new(q, new_layout, "realloc");
                ranges.remove(b.ptr as usize);
                ranges.insert(q as usize, new_size, b.id, "realloc");
                // SAFETY: `q` holds `new_size` bytes, the first `min` copied from `b`.
                unsafe {
                    check(q, 0, old.min(new_size), seed(b.id), "realloc prefix");
                    if new_size > old {
                        fill(q, old, new_size, seed(b.id));
                    }
                }
                live_bytes = live_bytes - old + new_size;
                b.ptr = q;
                b.layout = new_layout;
            }
            Op::Dealloc { slot } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(usize::from(slot) % live.len());
                // SAFETY: `b` is live with this layout and not used again.
                unsafe {
                    check(b.ptr, 0, b.layout.size(), seed(b.id), "before dealloc");
                    a.dealloc(b.ptr, b.layout);
                }
                ranges.remove(b.ptr as usize);
                live_bytes -= b.layout.size();
            }
            Op::CheckAll => {
                for b in &live {
                    // SAFETY: `b` is live.
                    unsafe { check(b.ptr, 0, b.layout.size(), seed(b.id), "check") };
                }
            }
        }
    }
    for b in live.drain(..) {
        // SAFETY: `b` is live with this layout and not used again.
        unsafe {
            check(b.ptr, 0, b.layout.size(), seed(b.id), "at the end");
            a.dealloc(b.ptr, b.layout);
        }
        ranges.remove(b.ptr as usize);
    }
    assert!(ranges.is_empty());
});
