//! `CachePadded`: a value alone on its cache lines, so that writes to it do not take
//! the line its neighbours are read from.

use core::ops::Deref;

/// `T` aligned and padded to 128 bytes: two 64-byte lines, since x86_64's spatial
/// prefetcher pulls lines in pairs (the width crossbeam and the kernel's
/// `____cacheline_aligned_in_smp` on such parts use as well).
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Pads `value`.
    pub const fn new(value: T) -> Self {
        Self { value }
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::CachePadded;

    #[test]
    fn a_padded_value_owns_its_lines() {
        let pair = [CachePadded::new(1u8), CachePadded::new(2u8)];
        assert_eq!(core::mem::size_of::<CachePadded<u8>>(), 128);
        let (a, b) = (&pair[0] as *const _ as usize, &pair[1] as *const _ as usize);
        assert_eq!(a % 128, 0);
        assert_eq!(b - a, 128);
        assert_eq!((*pair[0], *pair[1]), (1, 2));
    }
}
