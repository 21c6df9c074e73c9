//! A huge block's move by `mremap(MREMAP_DONTUNMAP)` that the kernel refuses after it
//! unmapped the destination (kernels 5.7 to 6.16 do so when the source spans two of
//! their mappings, which earlier moves make): the destination must be mapped again
//! before it goes back to the heap, or the next block carved there faults on its first
//! write. This binary defines `mremap` itself, so that cpuslab's calls reach it and it
//! can behave as those kernels do; nothing else here calls it.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cpuslab::CpuSlab;

const MIB: usize = 1 << 20;

/// Whether moves fail as on the older kernels.
static FAIL_MOVES: AtomicBool = AtomicBool::new(false);
/// Moves refused so far.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// `mremap(2)`: with `FAIL_MOVES`, a move to a fixed address unmaps the destination
/// and fails with `EFAULT`, as `mremap_to` does on the older kernels for a source of
/// two mappings; otherwise the system call. (On x86_64 the variadic fifth argument
/// arrives as a fifth register argument, which this signature reads.)
///
/// # Safety
/// As for `mremap(2)`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut libc::c_void,
    old_len: usize,
    new_len: usize,
    flags: libc::c_int,
    new_addr: *mut libc::c_void,
) -> *mut libc::c_void {
    if FAIL_MOVES.load(Ordering::Relaxed) && flags & libc::MREMAP_FIXED != 0 {
        // SAFETY: the destination is the caller's (cpuslab's carved range), as the
        // kernel would unmap it.
        unsafe { libc::munmap(new_addr, new_len) };
        REFUSED.fetch_add(1, Ordering::Relaxed);
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::EFAULT };
        return libc::MAP_FAILED;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe {
        libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) as *mut libc::c_void
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn a_refused_move_leaves_no_hole_in_the_heap() {
    if common::is_child() {
        // SAFETY: blocks are used within their sizes and freed with their layouts.
        unsafe {
            let a = CpuSlab.alloc(layout(8 * MIB));
            // Right after `a`: it cannot grow in place.
            let b = CpuSlab.alloc(layout(8 * MIB));
            assert!(!a.is_null() && !b.is_null());
            common::fill(a, 8 * MIB, 7);
            FAIL_MOVES.store(true, Ordering::Relaxed);
            let g = CpuSlab.realloc(a, layout(8 * MIB), 12 * MIB);
            assert!(!g.is_null());
            assert!(REFUSED.load(Ordering::Relaxed) > 0, "no move was tried");
            // Copied instead, into a range carved where the move's destination was.
            common::check_moved(g, a as usize, 8 * MIB, 7);
            common::fill(g, 12 * MIB, 8);
            // More blocks of that size take what is left there.
            let more: Vec<*mut u8> = (0..4).map(|_| CpuSlab.alloc(layout(12 * MIB))).collect();
            for &p in &more {
                assert!(!p.is_null());
                common::fill(p, 12 * MIB, 9);
            }
            FAIL_MOVES.store(false, Ordering::Relaxed);
            for p in more {
                CpuSlab.dealloc(p, layout(12 * MIB));
            }
            common::check(g, 12 * MIB, 8);
            CpuSlab.dealloc(g, layout(12 * MIB));
            CpuSlab.dealloc(b, layout(8 * MIB));
        }
        eprintln!("child done");
        return;
    }
    let (status, err) = common::run_child(
        "a_refused_move_leaves_no_hole_in_the_heap",
        &[("RUST_BACKTRACE", "0")],
    );
    assert!(status.success(), "child failed ({status}): {err}");
    assert!(err.contains("child done"), "{err}");
}
