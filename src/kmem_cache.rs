//! `KmemCache<T>`: a typed slab cache for users, `kmem_cache_create` for one type. An
//! interface on top of the slab layer, as `CpuSlab` is on top of kmalloc: creating
//! the first cache boots the allocator.

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::slab::{self, CacheError, RawCache, SlabFlags};
use crate::sys::PAGE_SIZE;

impl core::ops::BitOr for SlabFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A cache of `T`-sized objects with per-CPU array caches, as the kernel's
/// `kmem_cache_create` makes for one structure type.
///
/// Objects are uninitialised memory handed out by [`alloc`](Self::alloc) and returned
/// with [`free`](Self::free). Dropping the cache destroys it; if objects are still in
/// use it is left alive (so they stay valid) and a warning names it.
pub struct KmemCache<T> {
    raw: &'static RawCache,
    _marker: PhantomData<fn() -> T>,
}

// SAFETY: the cache is internally synchronised; objects are raw memory.
unsafe impl<T> Send for KmemCache<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for KmemCache<T> {}

impl<T> KmemCache<T> {
    /// Creates a cache named `name` (up to 31 bytes shown in slabinfo) for `T`.
    pub fn new(name: &str, flags: SlabFlags) -> Result<Self, CacheError> {
        if flags.0 & !SlabFlags::KNOWN != 0 {
            return Err(CacheError::Flags(flags.0 & !SlabFlags::KNOWN));
        }
        let mut align = core::mem::align_of::<T>();
        if align > PAGE_SIZE {
            return Err(CacheError::Alignment(align));
        }
        if flags.contains(SlabFlags::HWCACHE_ALIGN) {
            align = align.max(64);
        }
        if !crate::init::ensure() {
            return Err(if crate::init::unsupported() {
                CacheError::Unsupported
            } else {
                CacheError::NoMemory
            });
        }
        let raw = slab::create_cache(name, core::mem::size_of::<T>().max(1), align, flags.0)?;
        Ok(Self {
            raw,
            _marker: PhantomData,
        })
    }

    /// Allocates an uninitialised object; `None` when memory ran out.
    #[inline]
    pub fn alloc(&self) -> Option<NonNull<T>> {
        NonNull::new(self.raw.alloc().cast())
    }

    /// Allocates an object holding `value`; `None` (dropping `value`) when memory ran
    /// out.
    #[inline]
    pub fn alloc_with(&self, value: T) -> Option<NonNull<T>> {
        let p = self.alloc()?;
        // SAFETY: fresh, aligned memory for one T.
        unsafe { p.as_ptr().write(value) };
        Some(p)
    }

    /// Returns an object to the cache. The object is not dropped.
    ///
    /// # Safety
    /// `ptr` came from this cache's `alloc` and is not used afterwards.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<T>) {
        // SAFETY: `ptr` is an object of `raw`, handed out by this cache's `alloc`, and
        // the caller does not use it again (the contract).
        unsafe { self.raw.free(ptr.as_ptr().cast()) };
    }

    /// Gives the cache's cached objects and free slabs back to the page pool
    /// (`kmem_cache_shrink`). Returns the pages freed.
    pub fn shrink(&self) -> usize {
        slab::reap::shrink(self.raw)
    }

    /// Destroys the cache. Fails, returning the cache, while objects are in use.
    pub fn destroy(self) -> Result<(), (Self, CacheError)> {
        // SAFETY: `self` is owned, so no other thread uses this cache.
        match unsafe { slab::destroy_cache(self.raw) } {
            Ok(()) => {
                core::mem::forget(self);
                Ok(())
            }
            Err(e) => Err((self, e)),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        self.raw.name()
    }

    /// Bytes each object offers (the size of `T` rounded up to its alignment; a debug
    /// cache's slots are larger, holding red zones around it).
    pub fn object_size(&self) -> usize {
        self.raw.object_size()
    }

    /// Objects per slab.
    pub fn objects_per_slab(&self) -> usize {
        self.raw.geom().num
    }

    /// Pages in each slab (2^order; a slab starts at a multiple of its size).
    pub fn pages_per_slab(&self) -> usize {
        1 << self.raw.geom().order
    }

    /// Objects currently in use (allocated and not freed; objects cached per CPU count
    /// as in use until the cache is shrunk, as in slabinfo).
    pub fn active_objects(&self) -> usize {
        slab::cache_counts(self.raw).active_objs
    }

    /// Retunes the per-CPU caches (`do_tune_cpucache`): per-CPU `limit` and
    /// `batchcount`, and a shared cache of `shared` batches per node (added where the
    /// node had none). What it reports (slabinfo) is what is in effect: values out of
    /// range, a shared cache larger than a node keeps room for
    /// ([`CacheError::Shared`]) and a debug cache, which keeps its array caches empty
    /// so every operation stays checked ([`CacheError::DebugCache`]), are refused.
    pub fn tune(&self, limit: u32, batchcount: u32, shared: u32) -> Result<(), CacheError> {
        slab::tune::do_tune_cpucache(self.raw, limit, batchcount, shared)
    }

    /// Whether the cache checks every object on allocation and free (`CPUSLAB_DEBUG=1`
    /// or the `debug` feature at boot): red zones, poison, double and invalid frees.
    pub fn debug(&self) -> bool {
        self.raw.debug()
    }
}

impl<T> Drop for KmemCache<T> {
    fn drop(&mut self) {
        // SAFETY: `self` is being dropped, so no other thread uses this cache.
        if let Err(e) = unsafe { slab::destroy_cache(self.raw) } {
            crate::sys::io::warn(format_args!(
                "kmem_cache_destroy {}: {e}; the cache is left in place",
                self.raw.name()
            ));
        }
    }
}

impl<T> fmt::Debug for KmemCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmemCache")
            .field("name", &self.name())
            .field("object_size", &self.object_size())
            .finish()
    }
}
