//! A typed object cache, as the kernel's `kmem_cache_create`: objects of one type come
//! from slabs of that type with per-CPU array caches in front.
//!
//! ```sh
//! cargo run --release --example kmem_cache
//! ```

use std::ptr::NonNull;

use cpuslab::{KmemCache, SlabFlags};

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

#[derive(Debug)]
struct Inode {
    ino: u64,
    size: u64,
    name: [u8; 16],
}

fn main() {
    let cache = KmemCache::<Inode>::new("example_inode", SlabFlags::HWCACHE_ALIGN)
        .expect("create the cache");
    println!(
        "cache {}: {} bytes an object, {} objects in a slab of {} page(s)",
        cache.name(),
        cache.object_size(),
        cache.objects_per_slab(),
        cache.pages_per_slab()
    );
    assert!(cache.object_size() >= std::mem::size_of::<Inode>());

    // Fill several slabs' worth of objects, each with its own contents.
    let n = cache.objects_per_slab() * 5 + 3;
    let objs: Vec<NonNull<Inode>> = (0..n as u64)
        .map(|i| {
            let mut name = [0u8; 16];
            name[..8].copy_from_slice(&i.to_le_bytes());
            cache
                .alloc_with(Inode {
                    ino: i,
                    size: i * 4096,
                    name,
                })
                .expect("memory")
        })
        .collect();
    assert!(cache.active_objects() >= n);

    // Every object reads back what was written to it: no two share memory.
    for (i, p) in objs.iter().enumerate() {
        // SAFETY: live objects of this cache, initialised by alloc_with.
        let inode = unsafe { p.as_ref() };
        assert_eq!(inode.ino, i as u64);
        assert_eq!(inode.size, i as u64 * 4096);
        assert_eq!(inode.name[..8], (i as u64).to_le_bytes());
    }

    // Free them all, give the slabs back, and tune the per-CPU caches.
    for p in objs {
        // SAFETY: each object came from this cache and is not used again.
        unsafe { cache.free(p) };
    }
    let pages = cache.shrink();
    assert_eq!(cache.active_objects(), 0, "no object in use after shrink");
    cache.tune(240, 120, 8).expect("tune");

    // The cache still serves after all that, and is destroyed empty.
    let again = cache.alloc_with(Inode {
        ino: 1,
        size: 2,
        name: [3; 16],
    });
    let again = again.expect("memory");
    // SAFETY: live and initialised.
    assert_eq!(unsafe { again.as_ref() }.name, [3; 16]);
    // SAFETY: from this cache, not used again.
    unsafe { cache.free(again) };
    cache
        .destroy()
        .map_err(|(_, e)| e)
        .expect("destroy an empty cache");
    println!("ok: {n} objects written and read back; shrink gave back {pages} page(s)");
}
