//! `SlabFlags`: the kernel's `SLAB_*` cache creation flags that cpuslab knows.

/// Flags for [`KmemCache::new`](crate::KmemCache::new), the kernel's `SLAB_*` creation
/// flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabFlags(pub u32);

impl SlabFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// Align objects to a cache line (`SLAB_HWCACHE_ALIGN`), so no two objects share
    /// one: for objects written by different CPUs.
    pub const HWCACHE_ALIGN: Self = Self(1 << 13);
    /// `SLAB_TYPESAFE_BY_RCU`: a slab that empties goes back to the page pool only
    /// after an RCU grace period, so a lock-free reader inside
    /// [`rcu::read_lock`](crate::rcu::read_lock) that still holds a pointer to a freed
    /// object reads memory that is an object of this type (possibly freed or reused for
    /// another object of the type) — never memory reused for something else. The
    /// reader must check, under the object's own lock or by a generation, that it has
    /// the object it wanted, as with the kernel's flag.
    pub const TYPESAFE_BY_RCU: Self = Self(1 << 19);

    /// Every flag cpuslab knows.
    pub(crate) const KNOWN: u32 = Self::HWCACHE_ALIGN.0 | Self::TYPESAFE_BY_RCU.0;

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}
