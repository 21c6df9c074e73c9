//! Slab geometry: how many objects a slab of 2^order pages holds, where its freelist
//! lives and how many colours it has (the kernel's `calculate_slab_order` and
//! `cache_estimate`).
//!
//! The freelist is an array of object indices, out of line with the objects: on-slab
//! at the end of the slab, or, when objects are large, off-slab in the spare bytes of
//! the slab's last page descriptor: 48 bytes of a tail page (which uses only its flags
//! and head pointer), or the 16 spare bytes of the head page of a one-page slab.

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
    /// two at most a page). Returns `None` when no slab order fits one object.
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
    }
}
