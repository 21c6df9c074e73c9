//! Slab geometry: how many objects a slab of 2^order pages holds, where its freelist
//! lives and how many colours it has (the kernel's `calculate_slab_order` and
//! `cache_estimate`).
//!
//! The freelist is an array of object indices, out of line with the objects: on-slab
//! at the end of the slab, or, when objects are large, off-slab in the spare bytes of
//! the slab's last page descriptor: 48 bytes of a tail page (which uses only its flags
//! and head pointer), or the 16 spare bytes of the head page of a one-page slab.
//!
//! A new slab's freelist starts in a random order (the kernel's
//! `CONFIG_SLAB_FREELIST_RANDOM`, `shuffle_freelist`), so the order in which objects are
//! handed out, and so which objects neighbour each other in time, is not predictable
//! from their addresses. Each cache draws its slabs' permutations from its own
//! [`FreelistRng`] stream, seeded at setup from the clock and addresses that ASLR moves.

use crate::page::desc::Page;
use crate::sys::PAGE_SIZE;

/// Largest slab order.
pub const MAX_SLAB_ORDER: usize = 5;
/// Offset of the off-slab freelist inside a tail page's descriptor (from `Page::next`).
pub const OFF_SLAB_TAIL_OFFSET: usize = 16;
/// Offset of the off-slab freelist inside a one-page slab's descriptor (`Page::spare`).
pub const OFF_SLAB_HEAD_OFFSET: usize = 48;

const _: () = assert!(core::mem::offset_of!(Page, next) == OFF_SLAB_TAIL_OFFSET);
const _: () = assert!(core::mem::offset_of!(Page, spare) == OFF_SLAB_HEAD_OFFSET);

/// Indices an off-slab freelist can hold for a slab of `order`.
pub const fn off_slab_capacity(order: usize) -> usize {
    let offset = if order == 0 {
        OFF_SLAB_HEAD_OFFSET
    } else {
        OFF_SLAB_TAIL_OFFSET
    };
    core::mem::size_of::<Page>() - offset
}

/// The fixed shape of every slab of a cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct Geometry {
    /// Object size, a multiple of `align`.
    pub size: usize,
    /// Alignment every object honours.
    pub align: usize,
    /// Objects per slab.
    pub num: usize,
    /// Slab order (2^order pages).
    pub order: usize,
    /// Number of colours (distinct first-object offsets).
    pub colour: usize,
    /// Bytes between colours.
    pub colour_off: usize,
    /// Freelist in the last page's descriptor instead of the slab's end.
    pub off_slab: bool,
    /// Freelist indices are bytes (`num <= 256`) rather than u16.
    pub idx_u8: bool,
    /// `ceil(2^32 / size)`, for dividing offsets by `size` (`reciprocal_divide`).
    pub reciprocal: u64,
}

impl Geometry {
    /// Bytes in one slab.
    pub fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Bytes of the freelist.
    pub fn freelist_bytes(&self) -> usize {
        self.num * if self.idx_u8 { 1 } else { 2 }
    }

    /// Computes the geometry for objects of `size` bytes aligned to `align` (a power of
    /// two; above a page, slabs, aligned to their size, keep it, and colours step by
    /// it). Returns `None` when no slab order fits one object.
    pub fn calculate(size: usize, align: usize) -> Option<Self> {
        let align = align.max(8);
        let size = size.max(8).checked_next_multiple_of(align)?;
        let colour_off = align.max(64);
        let mut best: Option<Geometry> = None;
        for order in 0..=MAX_SLAB_ORDER {
            let slab = PAGE_SIZE << order;
            // On-slab: each object costs its size plus one index.
            let mut idx_u8 = true;
            let mut num = slab / (size + 1);
            if num > 256 {
                idx_u8 = false;
                num = (slab / (size + 2)).min(u16::MAX as usize);
            }
            let idx = if idx_u8 { 1 } else { 2 };
            let mut g = Geometry {
                size,
                align,
                num,
                order,
                colour: 0,
                colour_off,
                off_slab: false,
                idx_u8,
                reciprocal: (1u64 << 32).div_ceil(size as u64),
            };
            let mut left = slab - num * (size + idx);
            // Off-slab: the index array moves into the last page's descriptor.
            let off_num = (slab / size).min(off_slab_capacity(order));
            if off_num > num {
                g.num = off_num;
                g.off_slab = true;
                g.idx_u8 = true;
                left = slab - off_num * size;
            }
            if g.num == 0 {
                continue;
            }
            g.colour = left / colour_off;
            let better = best.is_none_or(|b| left * b.slab_bytes() < b.leftover() * slab);
            if better {
                best = Some(g);
            }
            // The kernel's rule: accept the first order that wastes at most 1/8.
            if left * 8 <= slab {
                return Some(g);
            }
        }
        best
    }

    /// Bytes of a slab not used by objects or an on-slab freelist.
    pub fn leftover(&self) -> usize {
        let fl = if self.off_slab {
            0
        } else {
            self.freelist_bytes()
        };
        self.slab_bytes() - self.num * self.size - fl
    }

    /// `obj_to_index` by multiplication with the reciprocal.
    #[inline]
    pub fn obj_to_index(&self, offset: usize) -> usize {
        ((offset as u64 * self.reciprocal) >> 32) as usize
    }
}

/// `splitmix64`'s output function: a bijection that spreads every input bit.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The Weyl step between the seeds of a cache's successive slabs.
pub const SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seed for a cache's freelist permutations, from the monotonic clock, `salt` (the
/// cache's address) and addresses that ASLR moves (the stack, this code).
pub fn random_seed(salt: usize) -> u64 {
    let stack = 0u8;
    let here = random_seed as fn(usize) -> u64 as usize;
    mix(crate::sys::time::now_ns()
        ^ mix(salt as u64)
        ^ mix(core::ptr::addr_of!(stack) as u64).rotate_left(17)
        ^ (here as u64).rotate_left(41))
}

/// The generator of one slab's freelist permutation (xorshift64* over a mixed seed).
pub struct FreelistRng(u64);

impl FreelistRng {
    /// A generator for the slab whose seed is `seed` (one step of the cache's stream).
    pub fn new(seed: u64) -> Self {
        Self(mix(seed) | 1)
    }

    /// A number below `n` (`n <= 2^32`), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        ((r * n as u64) >> 32) as usize
    }
}

/// Writes a random permutation of `0..num` through `set(i, idx)`, reading back earlier
/// entries with `get(i)` (the "inside-out" Fisher-Yates shuffle).
pub fn shuffle_freelist(
    num: usize,
    rng: &mut FreelistRng,
    mut get: impl FnMut(usize) -> usize,
    mut set: impl FnMut(usize, usize),
) {
    for i in 0..num {
        let j = rng.below(i + 1);
        if j != i {
            set(i, get(j));
        }
        set(j, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_fits_with_little_waste() {
        for size in (8..=4096).step_by(8).chain((4096..=32768).step_by(512)) {
            let g = Geometry::calculate(size, 8).unwrap();
            assert!(g.num >= 1, "size {size}");
            let used = g.num * g.size + if g.off_slab { 0 } else { g.freelist_bytes() };
            assert!(used <= g.slab_bytes(), "size {size}: {g:?}");
            assert!(
                g.leftover() * 4 <= g.slab_bytes(),
                "size {size} wastes: {g:?}"
            );
            if g.off_slab {
                assert!(g.num <= off_slab_capacity(g.order));
            }
        }
    }

    #[test]
    fn page_sized_classes_use_one_page() {
        for size in [512, 1024, 2048, 4096] {
            let g = Geometry::calculate(size, size.min(PAGE_SIZE)).unwrap();
            assert_eq!((g.order, g.leftover()), (0, 0), "size {size}: {g:?}");
        }
    }

    #[test]
    fn reciprocal_divides_exactly() {
        for size in [
            8, 24, 48, 80, 96, 112, 160, 320, 640, 896, 1280, 3584, 10240, 28672,
        ] {
            let g = Geometry::calculate(size, 8).unwrap();
            for i in 0..g.num {
                assert_eq!(g.obj_to_index(i * g.size), i, "size {size}");
            }
        }
    }

    #[test]
    fn alignment_is_kept() {
        let g = Geometry::calculate(100, 64).unwrap();
        assert_eq!(g.size % 64, 0);
        assert_eq!(g.colour_off % 64, 0);
        assert!(Geometry::calculate(1 << 20, 8).is_none());
        // kmalloc-24576 is 8 KiB aligned: every colour keeps that.
        let g = Geometry::calculate(24576, 8192).unwrap();
        assert_eq!(g.colour_off % 8192, 0);
        assert_eq!(g.slab_bytes() % 8192, 0);
    }

    #[test]
    fn shuffles_are_permutations_and_differ() {
        let mut seen = [[0u16; 300]; 2];
        for (k, out) in seen.iter_mut().enumerate() {
            let mut rng = FreelistRng::new(random_seed(k) ^ ((k as u64) * SEED_STEP));
            let cells: [core::cell::Cell<u16>; 300] =
                core::array::from_fn(|_| core::cell::Cell::new(u16::MAX));
            shuffle_freelist(
                300,
                &mut rng,
                |i| cells[i].get() as usize,
                |i, v| cells[i].set(v as u16),
            );
            let a = cells.map(|c| c.get());
            let mut sorted = a;
            sorted.sort_unstable();
            assert!(sorted.iter().enumerate().all(|(i, &v)| v as usize == i));
            assert!(a.windows(2).any(|w| w[0] > w[1]), "not shuffled");
            *out = a;
        }
        assert_ne!(seen[0], seen[1]);
    }
}
