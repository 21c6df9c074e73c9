//! The page tags the C `free` finds a block's class by (`page::tag`): every page of a
//! kmalloc slab carries its class's tag while the slab lives, and none once the slab's
//! pages went back to the page pool; the tag's test accepts exactly the slots' starts,
//! in a slab's tail pages as in its head. In a binary of its own: another test's slabs
//! could take the pages this one watches go back.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::alloc::{GlobalAlloc, Layout};

use cpuslab::kmalloc::{self, KMALLOC_SIZES};
use cpuslab::page::desc::PG_SLAB;
use cpuslab::page::{arena, tag};
use cpuslab::CpuSlab;

/// The tag of the page holding `p`, an address inside an arena block.
fn tag_of(p: *const u8) -> usize {
    let off = arena::offset_in(p).expect("an arena address");
    // SAFETY: `off` is `p`'s offset in its arena.
    unsafe { tag::tag_at(p, off) }
}

/// Classes of one-page slabs and of multi-page ones (640 B and up: 2 to 8 pages).
const SIZES: [usize; 7] = [64, 200, 640, 1000, 3000, 5000, 20000];

/// One test at a time: the other's blocks would refill the slabs one test empties
/// before its trim gives them back.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn (see [`SERIAL`]), or `None` where the kmalloc caches are not
/// tagged: debug caches (`CPUSLAB_DEBUG=1`) are not, as every free of theirs takes the
/// checked path.
fn serial_if_tagged() -> Option<std::sync::MutexGuard<'static, ()>> {
    assert!(cpuslab::supported());
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (!cpuslab::slab::debug::enabled()).then_some(turn)
}

#[test]
fn slab_pages_carry_their_class_while_the_slab_lives() {
    let Some(_turn) = serial_if_tagged() else {
        return;
    };
    for size in SIZES {
        let class = KMALLOC_SIZES.iter().position(|&s| s >= size).unwrap();
        let l = Layout::from_size_align(size, 8).unwrap();
        // Enough blocks for several slabs of every class.
        let n = (256 << 10) / KMALLOC_SIZES[class];
        // SAFETY: valid layouts; every block is freed with its own.
        let blocks: Vec<*mut u8> = (0..n).map(|_| unsafe { CpuSlab.alloc(l) }).collect();
        let mut pages = Vec::new();
        for &p in &blocks {
            assert!(!p.is_null());
            // Every page the block spans, its first and last byte's included.
            let mut a = p as usize & !4095;
            while a < p as usize + size {
                assert_eq!(
                    tag_of(a as *const u8),
                    class + 1,
                    "page {a:#x} of a block of {size} B ({p:p})"
                );
                pages.push(a);
                a += 4096;
            }
            // The tag's test: the block's start is a slot, a pointer inside it none,
            // and `realloc` to a size of the same class keeps it in place (the C
            // interface's test, which reads the tag too), to another class moves it
            // from a block of its class's size.
            if size <= kmalloc::FAST_MAX {
                use kmalloc::FastRealloc;
                // SAFETY: `p` is a live block of `size` bytes; the tests read only.
                unsafe {
                    assert_eq!(kmalloc::krealloc_fast(p, size), FastRealloc::InPlace);
                    assert_eq!(kmalloc::krealloc_fast(p.add(16), size), FastRealloc::Slow);
                    if size * 2 + 16 <= kmalloc::FAST_MAX {
                        assert_eq!(
                            kmalloc::krealloc_fast(p, size * 2 + 16),
                            FastRealloc::Move(KMALLOC_SIZES[class])
                        );
                    }
                }
            }
        }
        for &p in &blocks {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { CpuSlab.dealloc(p, l) };
        }
        // Empty slabs go back to the page pool: their pages lose the tag. A slab that
        // still holds another allocation's block of the class stays, tagged.
        cpuslab::trim();
        pages.sort_unstable();
        pages.dedup();
        let mut gone = 0;
        for &a in &pages {
            let head = cpuslab::page::virt_to_head_page(a as *const u8);
            // SAFETY: the descriptor of an arena page, always mapped.
            let slab = unsafe { (*head).flags() } & PG_SLAB != 0;
            let t = tag_of(a as *const u8);
            // A page of another cache's slab may be untagged (a `KmemCache`'s).
            assert!(
                t == 0 || slab,
                "page {a:#x} of {size} B: tag {t}, in no slab"
            );
            gone += usize::from(!slab);
        }
        assert!(
            gone * 2 > pages.len(),
            "{gone} of {} pages of {size} B left their slabs",
            pages.len()
        );
    }
}

#[test]
fn the_tagged_free_refuses_what_starts_no_slot() {
    let Some(_turn) = serial_if_tagged() else {
        return;
    };
    for size in SIZES {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: valid layouts; every block is freed with its own.
        let blocks: Vec<*mut u8> = (0..64).map(|_| unsafe { CpuSlab.alloc(l) }).collect();
        for &p in &blocks {
            for q in [p.wrapping_add(8), p.wrapping_add(size / 2)] {
                // SAFETY: `q` lies inside the live block `p`, so it starts no slot: the
                // fast path must turn it down with nothing done.
                assert!(
                    !unsafe { kmalloc::kfree_unsized_fast(q) },
                    "a free of {q:p} (block {p:p} of {size} B) was taken"
                );
            }
        }
        for &p in &blocks {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { CpuSlab.dealloc(p, l) };
        }
    }
}

/// The small classes, whose objects go back to the CPU that took them from their slab
/// (`slab::cache::remote`), tag that CPU's slabs with a tag of its own: the tagged free
/// learns the owner from the tag byte, where it read the page's descriptor before, and
/// turns away, with nothing done, a block another CPU owns.
#[test]
fn small_slabs_carry_their_owners_tag() {
    let Some(_turn) = serial_if_tagged() else {
        return;
    };
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let (Some(&owner), Some(&other)) = (cpus.first(), cpus.get(1)) else {
        eprintln!("fewer than two CPUs to pin to; skipped");
        return;
    };
    if owner.id >= 42 || cpuslab::topology::nr_cpu_ids() > 254 {
        eprintln!("CPU {} has no owner tag of its own; skipped", owner.id);
        return;
    }
    let l = Layout::from_size_align(16, 8).unwrap();
    let class = KMALLOC_SIZES.iter().position(|&s| s >= 16).unwrap();
    assert!(core_affinity::set_for_current(owner));
    // The CPU's next refills take objects from the slabs, which it claims.
    cpuslab::trim();
    // SAFETY: a valid layout; every block is freed below.
    let blocks: Vec<*mut u8> = (0..600).map(|_| unsafe { CpuSlab.alloc(l) }).collect();
    let mut named = 0;
    for &p in &blocks {
        assert!(!p.is_null());
        let t = tag_of(p);
        let entry = kmalloc::tag_entry(t as u8);
        assert_eq!(entry.cache_tag(), class + 1, "tag {t} of {p:p}");
        if entry.owner() == owner.id as u32 + 1 {
            named += 1;
            // The tag and the descriptor name the same owner.
            let page = cpuslab::page::virt_to_page(p);
            // SAFETY: the descriptor of an arena page, always mapped.
            let byte = unsafe { &(*page).owner }.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(usize::from(byte), owner.id + 1, "{p:p}'s descriptor");
        }
    }
    // Another thread of the harness may have claimed a slab of the class meanwhile.
    assert!(
        named * 10 >= blocks.len() * 9,
        "only {named} of {} blocks' pages name CPU {} in their tag",
        blocks.len(),
        owner.id
    );
    let (mine, theirs) = blocks.split_at(blocks.len() / 2);
    let theirs: Vec<usize> = theirs.iter().map(|&p| p as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(other));
            for &p in &theirs {
                let p = p as *mut u8;
                let t = tag_of(p);
                let owned = kmalloc::tag_entry(t as u8).owner() == owner.id as u32 + 1;
                // SAFETY: a live block, freed once: by the fast path, or when it turns
                // it away (as it must for the owner's), by the whole path.
                unsafe {
                    let taken = kmalloc::kfree_unsized_fast(p);
                    assert!(!(owned && taken), "{p:p}, CPU {}'s, freed here", owner.id);
                    if !taken {
                        kmalloc::kfree_unsized(p);
                    }
                }
            }
        });
    });
    for &p in mine {
        // SAFETY: a live block, freed once.
        unsafe {
            if !kmalloc::kfree_unsized_fast(p) {
                kmalloc::kfree_unsized(p);
            }
        }
    }
}
