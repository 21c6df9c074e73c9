//! `KmemCache` operations against a model: create (several object types, the three
//! flag sets, arbitrary names), alloc, free, shrink, tune (valid and invalid tunables)
//! and destroy, with every object's contents checked.
//!
//! Checked: objects are aligned and never overlap (across caches too); contents
//! survive other objects' traffic, shrinks and retunes; `tune` refuses exactly the
//! tunables outside `1 <= batchcount <= limit <= 4096` with `Tunables`; after a shrink
//! `active_objects` equals the model's count; `destroy` fails with `Busy` naming the
//! live count while objects live, and succeeds once they are freed; `name` is a prefix
//! of the name given.

#![no_main]

use arbitrary::Arbitrary;
use cpuslab::{CacheError, KmemCache, SlabFlags};
use cpuslab_fuzz::{boot, check, fill, Ranges};
use libfuzzer_sys::fuzz_target;

const MAX_CACHES: usize = 4;
const MAX_OBJECTS: usize = 512;

#[repr(align(128))]
struct Align128 {
    _bytes: [u8; 136],
}
#[repr(align(4096))]
struct PageAligned {
    _bytes: [u8; 100],
}

/// A cache of one object type, without its type.
trait Cache {
    fn alloc(&self) -> Option<*mut u8>;
    /// # Safety
    /// As `KmemCache::free`.
    unsafe fn free(&self, p: *mut u8);
    fn shrink(&self) -> usize;
    fn tune(&self, limit: u32, batch: u32, shared: u32) -> Result<(), CacheError>;
    fn destroy(self: Box<Self>) -> Result<(), (Box<dyn Cache>, CacheError)>;
    fn name(&self) -> &str;
    fn object_size(&self) -> usize;
    fn active_objects(&self) -> usize;
}

impl<T: 'static> Cache for KmemCache<T> {
    fn alloc(&self) -> Option<*mut u8> {
        KmemCache::alloc(self).map(|p| p.as_ptr().cast())
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: as the caller promised.
        unsafe { KmemCache::free(self, std::ptr::NonNull::new_unchecked(p.cast())) }
    }
    fn shrink(&self) -> usize {
        KmemCache::shrink(self)
    }
    fn tune(&self, limit: u32, batch: u32, shared: u32) -> Result<(), CacheError> {
        KmemCache::tune(self, limit, batch, shared)
    }
    fn destroy(self: Box<Self>) -> Result<(), (Box<dyn Cache>, CacheError)> {
        (*self)
            .destroy()
            .map_err(|(c, e)| (Box::new(c) as Box<dyn Cache>, e))
    }
    fn name(&self) -> &str {
        KmemCache::name(self)
    }
    fn object_size(&self) -> usize {
        KmemCache::object_size(self)
    }
    fn active_objects(&self) -> usize {
        KmemCache::active_objects(self)
    }
}

/// Makes a cache of type number `ty`; returns it with the type's size and alignment.
fn make(
    ty: u8,
    name: &str,
    flags: SlabFlags,
) -> (Result<Box<dyn Cache>, CacheError>, usize, usize) {
    fn of<T: 'static>(
        name: &str,
        flags: SlabFlags,
    ) -> (Result<Box<dyn Cache>, CacheError>, usize, usize) {
        (
            KmemCache::<T>::new(name, flags).map(|c| Box::new(c) as Box<dyn Cache>),
            core::mem::size_of::<T>(),
            core::mem::align_of::<T>(),
        )
    }
    match ty % 11 {
        0 => of::<u8>(name, flags),
        1 => of::<()>(name, flags),
        2 => of::<[u8; 24]>(name, flags),
        3 => of::<[u64; 8]>(name, flags),
        4 => of::<[u8; 200]>(name, flags),
        5 => of::<Align128>(name, flags),
        6 => of::<[u8; 1000]>(name, flags),
        7 => of::<[u8; 4096]>(name, flags),
        8 => of::<[u8; 5000]>(name, flags),
        9 => of::<[u64; 2500]>(name, flags),
        _ => of::<PageAligned>(name, flags),
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        ty: u8,
        flags: u8,
        name: String,
    },
    Alloc {
        cache: u8,
        count: u8,
    },
    Free {
        slot: u16,
    },
    Shrink {
        cache: u8,
    },
    Tune {
        cache: u8,
        limit: u16,
        batch: u16,
        shared: u8,
    },
    Destroy {
        cache: u8,
    },
}

struct Live {
    cache: Box<dyn Cache>,
    /// Bytes of each object (`size_of::<T>()`, at least one).
    size: usize,
    align: usize,
    objects: usize,
}

struct Object {
    ptr: *mut u8,
    cache: usize,
    id: u64,
}

fn seed(id: u64) -> u64 {
    id.wrapping_mul(0x9FB2_1C65_1E98_DF25) ^ 0x5A5A
}

fn check_all(objects: &[Object], caches: &[Option<Live>], what: &str) {
    for o in objects {
        let size = caches[o.cache].as_ref().unwrap().size;
        // SAFETY: `o` is live and `size` bytes.
        unsafe { check(o.ptr, 0, size, seed(o.id), what) };
    }
}

/// The cache picked by `n` among the live ones.
fn pick(caches: &[Option<Live>], n: u8) -> Option<usize> {
    let live: Vec<usize> = (0..caches.len()).filter(|&i| caches[i].is_some()).collect();
    (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
}

fuzz_target!(|ops: Vec<Op>| {
    boot();
    let mut caches: Vec<Option<Live>> = (0..MAX_CACHES).map(|_| None).collect();
    let mut objects: Vec<Object> = Vec::new();
    let mut ranges = Ranges::new();
    let mut next_id = 0u64;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Create { ty, flags, name } => {
                let Some(slot) = caches.iter().position(Option::is_none) else {
                    continue;
                };
                let flags = match flags % 4 {
                    0 => SlabFlags::NONE,
                    1 => SlabFlags::HWCACHE_ALIGN,
                    2 => SlabFlags::TYPESAFE_BY_RCU,
                    _ => SlabFlags::HWCACHE_ALIGN | SlabFlags::TYPESAFE_BY_RCU,
                };
                let (cache, size, align) = make(ty, &name, flags);
                let cache = cache.unwrap_or_else(|e| panic!("create {name:?} {flags:?}: {e}"));
                let shown = cache.name();
                assert!(
                    shown.len() <= 31 && name.as_bytes().starts_with(shown.as_bytes()),
                    "cache name {shown:?} is not a prefix (of at most 31 bytes) of {name:?}"
                );
                let align = if flags.contains(SlabFlags::HWCACHE_ALIGN) {
                    align.max(64)
                } else {
                    align
                };
                assert!(cache.object_size() >= size.max(1), "object_size");
                caches[slot] = Some(Live {
                    cache,
                    size: size.max(1),
                    align,
                    objects: 0,
                });
            }
            Op::Alloc { cache, count } => {
                let Some(c) = pick(&caches, cache) else {
                    continue;
                };
                for _ in 0..count % 64 {
                    if objects.len() >= MAX_OBJECTS {
                        break;
                    }
                    let l = caches[c].as_mut().unwrap();
                    let p = l.cache.alloc().expect("KmemCache::alloc returned None");
                    assert_eq!(
                        p as usize % l.align,
                        0,
                        "object {p:p} misaligned to {}",
                        l.align
                    );
                    let id = next_id;
                    next_id += 1;
                    ranges.insert(p as usize, l.size, id, "KmemCache::alloc");
                    // SAFETY: a fresh object of `size` bytes.
                    unsafe { fill(p, 0, l.size, seed(id)) };
                    l.objects += 1;
                    objects.push(Object {
                        ptr: p,
                        cache: c,
                        id,
                    });
                }
            }
            Op::Free { slot } => {
                if objects.is_empty() {
                    continue;
                }
                let o = objects.swap_remove(usize::from(slot) % objects.len());
                let l = caches[o.cache].as_mut().unwrap();
                // SAFETY: `o` is a live object of this cache, not used again.
                unsafe {
                    check(o.ptr, 0, l.size, seed(o.id), "before free");
                    l.cache.free(o.ptr);
                }
                ranges.remove(o.ptr as usize);
                l.objects -= 1;
            }
            Op::Shrink { cache } => {
                let Some(c) = pick(&caches, cache) else {
                    continue;
                };
                let l = caches[c].as_ref().unwrap();
                l.cache.shrink();
                assert_eq!(
                    l.cache.active_objects(),
                    l.objects,
                    "active objects after shrink"
                );
                check_all(&objects, &caches, "after shrink");
            }
            Op::Tune {
                cache,
                limit,
                batch,
                shared,
            } => {
                let Some(c) = pick(&caches, cache) else {
                    continue;
                };
                let (limit, batch, shared) =
                    (u32::from(limit), u32::from(batch), u32::from(shared));
                let valid = 1 <= batch && batch <= limit && limit <= 4096;
                let r = caches[c].as_ref().unwrap().cache.tune(limit, batch, shared);
                // A shared cache is grown up to 65536 entries (`shared` batches of
                // `batch`); past that the tune is refused and changes nothing.
                if valid && shared * batch > 65536 {
                    assert!(
                        matches!(r, Err(CacheError::Shared { .. })),
                        "tune({limit}, {batch}, {shared}) must be refused: {r:?}"
                    );
                } else if valid {
                    r.unwrap_or_else(|e| panic!("tune({limit}, {batch}, {shared}): {e}"));
                } else {
                    assert_eq!(
                        r,
                        Err(CacheError::Tunables {
                            limit,
                            batchcount: batch
                        }),
                        "tune({limit}, {batch}, {shared}) must be refused"
                    );
                }
                check_all(&objects, &caches, "after tune");
            }
            Op::Destroy { cache } => {
                let Some(c) = pick(&caches, cache) else {
                    continue;
                };
                let l = caches[c].take().unwrap();
                match l.cache.destroy() {
                    Ok(()) => assert_eq!(l.objects, 0, "destroy succeeded with live objects"),
                    Err((back, e)) => {
                        assert_eq!(
                            e,
                            CacheError::Busy {
                                live_objects: l.objects
                            },
                            "destroy with {} live objects",
                            l.objects
                        );
                        caches[c] = Some(Live { cache: back, ..l });
                    }
                }
                check_all(&objects, &caches, "after destroy");
            }
        }
    }
    for o in objects.drain(..) {
        let l = caches[o.cache].as_mut().unwrap();
        // SAFETY: `o` is a live object of this cache, not used again.
        unsafe {
            check(o.ptr, 0, l.size, seed(o.id), "at the end");
            l.cache.free(o.ptr);
        }
        l.objects -= 1;
    }
    for l in caches.into_iter().flatten() {
        if let Err((_, e)) = l.cache.destroy() {
            panic!("destroy with every object freed: {e}");
        }
    }
});
