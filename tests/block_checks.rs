//! Large blocks (32 KiB to 4 MiB, buddy pages) and huge blocks (own mappings) are
//! checked on every free, realloc and usable-size query: a pointer that is not a live
//! block's start (an interior pointer, a double free, a stray pointer near a huge
//! block, a huge block whose header was overwritten) aborts the process with one
//! `cpuslab:` line naming the call and the address, instead of freeing the whole
//! block, handing a freed block to glibc, or unmapping an arbitrary range.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;

use cpuslab::CpuSlab;

const LARGE: usize = 100_000;
const HUGE: usize = 8 << 20;

/// Runs test `name` in a child with `env`; requires it to die of SIGABRT after one
/// `cpuslab:` line that names the address the child printed (`addr=...`) and holds
/// every string of `want`.
fn expect_abort(name: &str, env: &[(&str, &str)], want: &[&str]) {
    let mut env = env.to_vec();
    env.push(("RUST_BACKTRACE", "0"));
    let (status, err) = common::run_child(name, &env);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "child {name} {env:?} did not abort: {status:?}\n{err}"
    );
    let addr = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("child {name} printed no address:\n{err}"))
        .to_string();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("cpuslab:")).collect();
    assert_eq!(lines.len(), 1, "want one cpuslab line:\n{err}");
    let line = lines[0];
    assert!(line.contains(&addr), "line does not name {addr}: {line}");
    for w in want {
        assert!(line.contains(w), "line lacks {w:?}: {line}");
    }
}

/// In a child: a block of `size` bytes, written, whose address `+ off` is printed.
fn block(size: usize, off: isize) -> (*mut u8, Layout) {
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a valid layout; the block is written within its size.
    let p = unsafe { CpuSlab.alloc(l) };
    assert!(!p.is_null());
    // SAFETY: as above.
    unsafe { p.write_bytes(0x5A, size) };
    eprintln!("addr={:p}", p.wrapping_offset(off));
    (p, l)
}

#[test]
fn large_free_of_an_interior_pointer_aborts() {
    if common::is_child() {
        let (p, l) = block(LARGE, 16);
        // SAFETY: deliberately wrong: a pointer 16 bytes into the block's first page,
        // which freed the whole block (also in debug mode) and let the next
        // allocation hand it out again while it was in use.
        unsafe { CpuSlab.dealloc(p.add(16), l) };
        // SAFETY: as above; not reached once the free aborts.
        let q = unsafe { CpuSlab.alloc(l) };
        eprintln!("not reached: the block came back as {q:p}");
        return;
    }
    for env in [&[][..], &[("CPUSLAB_DEBUG", "1")][..]] {
        expect_abort(
            "large_free_of_an_interior_pointer_aborts",
            env,
            &["cpuslab: free(): invalid pointer"],
        );
    }
}

#[test]
fn large_free_of_a_later_page_aborts() {
    if common::is_child() {
        let (p, l) = block(LARGE, 8192);
        // SAFETY: deliberately wrong: the start of the block's third page.
        unsafe { CpuSlab.dealloc(p.add(8192), l) };
        return;
    }
    expect_abort(
        "large_free_of_a_later_page_aborts",
        &[],
        &["cpuslab: free(): invalid pointer"],
    );
}

#[test]
fn large_double_free_aborts() {
    if common::is_child() {
        // A neighbour, so the freed block's pages need not all merge away.
        let (_keep, _) = block(LARGE, 0);
        let (p, l) = block(LARGE, 0);
        // SAFETY: deliberately wrong: the block is freed twice.
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    for env in [&[][..], &[("CPUSLAB_DEBUG", "1")][..]] {
        expect_abort(
            "large_double_free_aborts",
            env,
            &["cpuslab: free(): double free"],
        );
    }
}

/// 64 KiB is a power of two of pages: the first free puts the block on the CPU's
/// order-4 page list (`page::pcp`), and the second must still find it freed.
#[test]
fn large_double_free_of_a_cached_size_aborts() {
    if common::is_child() {
        let (p, l) = block(64 << 10, 0);
        // SAFETY: deliberately wrong: the block is freed twice.
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    for env in [
        &[][..],
        &[("CPUSLAB_DEBUG", "1")][..],
        &[("CPUSLAB_RSEQ", "0")][..],
    ] {
        expect_abort(
            "large_double_free_of_a_cached_size_aborts",
            env,
            &["cpuslab: free(): double free"],
        );
    }
}

/// An interior pointer into a 64 KiB block (a size the per-CPU lists cache) aborts
/// before the block could reach a list.
#[test]
fn large_free_of_an_interior_pointer_of_a_cached_size_aborts() {
    if common::is_child() {
        let (p, l) = block(64 << 10, 4096);
        // SAFETY: deliberately wrong: the start of the block's second page.
        unsafe { CpuSlab.dealloc(p.add(4096), l) };
        return;
    }
    expect_abort(
        "large_free_of_an_interior_pointer_of_a_cached_size_aborts",
        &[],
        &["cpuslab: free(): invalid pointer"],
    );
}

#[test]
fn large_realloc_of_an_interior_pointer_aborts() {
    if common::is_child() {
        let (p, l) = block(LARGE, 16);
        // SAFETY: deliberately wrong: realloc of a pointer into the block.
        unsafe { CpuSlab.realloc(p.add(16), l, 2 * LARGE) };
        return;
    }
    expect_abort(
        "large_realloc_of_an_interior_pointer_aborts",
        &[],
        &["cpuslab: realloc(): invalid pointer"],
    );
}

#[test]
fn large_usable_size_of_an_interior_pointer_aborts() {
    if common::is_child() {
        let (p, _) = block(LARGE, 16);
        // SAFETY: deliberately wrong: not a block's start.
        let n = unsafe { cpuslab::usable_size(p.add(16)) };
        eprintln!("not reached: {n}");
        return;
    }
    expect_abort(
        "large_usable_size_of_an_interior_pointer_aborts",
        &[],
        &["cpuslab: malloc_usable_size(): invalid pointer"],
    );
}

#[test]
fn huge_double_free_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, 0);
        // SAFETY: deliberately wrong: freed twice (the mapping is cached, or with
        // CPUSLAB_RETAIN=0 already unmapped).
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    for env in [&[][..], &[("CPUSLAB_RETAIN", "0")][..]] {
        expect_abort(
            "huge_double_free_aborts",
            env,
            &["cpuslab: free(): double free"],
        );
    }
}

#[test]
fn huge_realloc_after_free_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, 0);
        // SAFETY: deliberately wrong: the block is resized after it was freed (its
        // header was read, unchecked, from a cached or unmapped mapping).
        unsafe {
            CpuSlab.dealloc(p, l);
            CpuSlab.realloc(p, l, 2 * HUGE);
        }
        return;
    }
    for env in [&[][..], &[("CPUSLAB_RETAIN", "0")][..]] {
        expect_abort(
            "huge_realloc_after_free_aborts",
            env,
            &["cpuslab: realloc(): invalid pointer", "already freed"],
        );
    }
}

#[test]
fn huge_free_of_a_stray_pointer_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, -16);
        // SAFETY: deliberately wrong: a pointer underflowed into the header page.
        unsafe { CpuSlab.dealloc(p.sub(16), l) };
        return;
    }
    expect_abort(
        "huge_free_of_a_stray_pointer_aborts",
        &[],
        &["cpuslab: free(): invalid pointer", "not a live block"],
    );
}

#[test]
fn huge_free_with_an_overwritten_header_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, 0);
        // SAFETY: deliberately wrong: an underflowing write over the header page
        // before the block (mapped, cpuslab's), which said what to unmap.
        unsafe {
            p.sub(4096).write_bytes(0x41, 4096);
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    expect_abort(
        "huge_free_with_an_overwritten_header_aborts",
        &[],
        &["cpuslab: free(): corrupted header of huge block"],
    );
}

#[test]
fn huge_usable_size_of_a_freed_block_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, 0);
        // SAFETY: deliberately wrong: asked after the free.
        unsafe {
            CpuSlab.dealloc(p, l);
            let n = cpuslab::usable_size(p);
            eprintln!("not reached: {n}");
        }
        return;
    }
    expect_abort(
        "huge_usable_size_of_a_freed_block_aborts",
        &[],
        &["cpuslab: malloc_usable_size(): invalid pointer"],
    );
}

/// The checks leave correct use alone: large and huge blocks freed, resized and
/// measured in every way still work, and a large block's pages are reused.
#[test]
fn valid_large_and_huge_blocks_pass_the_checks() {
    for size in [LARGE, 1 << 20, HUGE] {
        let l = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: blocks are used within their sizes and freed once with their layout.
        unsafe {
            let p = CpuSlab.alloc(l);
            assert!(cpuslab::usable_size(p) >= size);
            let q = CpuSlab.realloc(p, l, size * 2);
            assert!(!q.is_null());
            let l2 = Layout::from_size_align(size * 2, 8).unwrap();
            let r = CpuSlab.realloc(q, l2, size / 2);
            assert!(!r.is_null());
            CpuSlab.dealloc(r, Layout::from_size_align(size / 2, 8).unwrap());
        }
    }
}

/// A huge block that realloc moved is gone from its old address: freeing that address
/// is a double free (it was reported as an unknown pointer; through the C ABI, not
/// recognised as cpuslab's, it went to glibc's free).
#[test]
fn huge_free_of_the_address_realloc_moved_from_aborts() {
    if common::is_child() {
        let (p, l) = block(HUGE, 0);
        // Growing 16 times moves the mapping in practice (the space above it is
        // taken); when it does not, the parent has nothing to check.
        // SAFETY: a live block grown with its layout; the old address is then freed,
        // deliberately wrong when the block moved.
        unsafe {
            let q = CpuSlab.realloc(p, l, 16 * HUGE);
            assert!(!q.is_null());
            if q == p {
                eprintln!("stayed in place");
                return;
            }
            CpuSlab.dealloc(p, l);
        }
        return;
    }
    let (status, err) = common::run_child(
        "huge_free_of_the_address_realloc_moved_from_aborts",
        &[("RUST_BACKTRACE", "0")],
    );
    if err.contains("stayed in place") {
        eprintln!("the block grew in place: nothing to check");
        return;
    }
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("cpuslab: free(): double free"), "{err}");
}
