//! The percpu chunk allocator against a model: `alloc_percpu`, `alloc_reserved_percpu`
//! and `free_percpu` with arbitrary sizes and alignments.
//!
//! Checked: bad requests (size 0, over 32 KiB, an alignment that is not a power of two
//! or is over a page) get their `PercpuError` and nothing else; a good one gets an area
//! (or, from the small reserved chunk, `ReservedFull`) that is zero and aligned in
//! every CPU's unit; every CPU's copy of every live area keeps its own pattern; no two
//! live areas overlap in any unit; `percpu_stats().nr_cur_alloc` moves exactly with
//! the model.

#![no_main]

use arbitrary::Arbitrary;
use cpuslab::percpu::stats::percpu_stats;
use cpuslab::percpu::{
    alloc_percpu, alloc_reserved_percpu, free_percpu, PcpuPtr, PercpuError, PCPU_MAX_ALLOC_SIZE,
};
use cpuslab::topology::nr_cpu_ids;
use cpuslab_fuzz::{boot, check, check_zero, fill, Ranges};
use libfuzzer_sys::fuzz_target;

const MAX_LIVE: usize = 96;
const PAGE: usize = 4096;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Small(u8),
    Medium(u16),
    /// Near the 32 KiB limit: `32768 - 4 + n % 9`.
    Limit(u8),
    Any(u64),
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::Small(n) => usize::from(n),
            Size::Medium(n) => usize::from(n) % (PCPU_MAX_ALLOC_SIZE + 1),
            Size::Limit(n) => PCPU_MAX_ALLOC_SIZE - 4 + usize::from(n % 9),
            Size::Any(n) => n as usize,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Align {
    /// 2^(n % 15): 1 to 16 KiB.
    Pow2(u8),
    Any(u64),
}

impl Align {
    fn bytes(self) -> usize {
        match self {
            Align::Pow2(n) => 1 << (n % 15),
            Align::Any(n) => n as usize,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc {
        size: Size,
        align: Align,
        reserved: bool,
    },
    Free {
        slot: u8,
    },
    CheckAll,
}

struct Area {
    ptr: PcpuPtr,
    size: usize,
    id: u64,
}

/// The seed of `cpu`'s copy of area `id`: every copy reads differently.
fn seed(id: u64, cpu: usize) -> u64 {
    id.wrapping_mul(0xE703_7ED1_A0B4_28DB) ^ (cpu as u64).wrapping_mul(0x8EBC_6AF0_9C88_C6E3)
}

fn check_area(a: &Area, what: &str) {
    for cpu in 0..nr_cpu_ids() {
        // SAFETY: each CPU's copy of a live area holds `size` bytes.
        unsafe { check(a.ptr.per_cpu_ptr(cpu), 0, a.size, seed(a.id, cpu), what) };
    }
}

fn nr_cur_alloc() -> u64 {
    percpu_stats().nr_cur_alloc
}

fuzz_target!(|ops: Vec<Op>| {
    boot();
    let cpus = nr_cpu_ids();
    let base = nr_cur_alloc();
    let mut live: Vec<Area> = Vec::new();
    let mut ranges = Ranges::new();
    let mut next_id = 0u64;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Alloc {
                size,
                align,
                reserved,
            } => {
                if live.len() >= MAX_LIVE {
                    continue;
                }
                let (size, align) = (size.bytes(), align.bytes());
                let r = if reserved {
                    alloc_reserved_percpu(size, align)
                } else {
                    alloc_percpu(size, align)
                };
                let what = format!("alloc_percpu(size {size}, align {align}, reserved {reserved})");
                let want_err = if size == 0 {
                    Some(PercpuError::ZeroSize)
                } else if size > PCPU_MAX_ALLOC_SIZE {
                    Some(PercpuError::TooLarge(size))
                } else if !align.is_power_of_two() || align > PAGE {
                    Some(PercpuError::Alignment(align))
                } else {
                    None
                };
                let ptr = match (r, want_err) {
                    (Err(e), Some(want)) => {
                        assert_eq!(e, want, "{what}");
                        continue;
                    }
                    (Ok(p), Some(want)) => panic!("{what} = {p:?}, expected {want:?}"),
                    (Err(PercpuError::ReservedFull(_)), None) if reserved => continue,
                    (Err(e), None) => panic!("{what} failed: {e}"),
                    (Ok(p), None) => p,
                };
                assert!(
                    ptr.per_cpu_ptr(cpus).is_null(),
                    "{what}: copy of CPU {cpus}"
                );
                let id = next_id;
                next_id += 1;
                for cpu in 0..cpus {
                    let p = ptr.per_cpu_ptr(cpu);
                    assert_eq!(p as usize % align, 0, "{what}: CPU {cpu}'s copy {p:p}");
                    ranges.insert(p as usize, size, id, &what);
                    // SAFETY: each CPU's copy of the new area holds `size` bytes.
                    unsafe {
                        check_zero(p, size, &what);
                        fill(p, 0, size, seed(id, cpu));
                    }
                }
                live.push(Area { ptr, size, id });
            }
            Op::Free { slot } => {
                if live.is_empty() {
                    continue;
                }
                let a = live.swap_remove(usize::from(slot) % live.len());
                check_area(&a, "before free_percpu");
                // SAFETY: `a` is live and not used again.
                unsafe { free_percpu(a.ptr) };
                for cpu in 0..cpus {
                    ranges.remove(a.ptr.per_cpu_ptr(cpu) as usize);
                }
            }
            Op::CheckAll => live.iter().for_each(|a| check_area(a, "check")),
        }
        assert_eq!(
            nr_cur_alloc(),
            base + live.len() as u64,
            "percpu_stats nr_cur_alloc"
        );
    }
    for a in live.drain(..) {
        check_area(&a, "at the end");
        // SAFETY: `a` is live and not used again.
        unsafe { free_percpu(a.ptr) };
    }
    assert_eq!(nr_cur_alloc(), base, "percpu_stats nr_cur_alloc at the end");
});
