//! A kernel page size cpuslab does not support (16 KiB, as on some arm64 kernels,
//! simulated by a preloaded `sysconf`): `cpuslab::supported()` says so, one
//! `cpuslab:` line on stderr says so, and `CpuSlab` hands every request to glibc's
//! malloc (before, the first allocation failed and the program aborted), small, large,
//! huge, aligned, zeroed and resized alike, through `GlobalAlloc` and `allocator_api2`.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

use allocator_api2::alloc::Allocator;
use cpuslab::CpuSlab;

/// Set in the child this test starts under the shim.
const CHILD: &str = "CPUSLAB_TEST_PAGE_SIZE_CHILD";

#[test]
fn an_unsupported_page_size_forwards_to_glibc() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let shim = common::compile_c("pagesize_shim.c", &["-shared", "-fPIC"]);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_unsupported_page_size_forwards_to_glibc",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD, "1")
        .env("LD_PRELOAD", &shim)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("page_size child: ok"), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("cpuslab:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("page size 16384 is not supported"),
        "{stderr}"
    );
}

/// Runs under the shim: everything below is served by glibc.
fn child() {
    assert!(!cpuslab::supported(), "a 16 KiB page size is not supported");
    // SAFETY: valid layouts; every block is written within its size, resized and
    // freed once with the layout it has.
    unsafe {
        for &(size, align) in &[
            (8, 8),
            (24, 8),
            (1000, 8),
            (4096, 4096),
            (40_000, 8),
            (300_000, 64),
            (8 << 20, 8),
            (64, 256),
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = CpuSlab.alloc(l);
            assert!(
                !p.is_null() && (p as usize).is_multiple_of(align),
                "{size}/{align}"
            );
            p.write_bytes(0xA5, size);
            let z = CpuSlab.alloc_zeroed(l);
            assert!(!z.is_null() && (z as usize).is_multiple_of(align));
            assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
            CpuSlab.dealloc(z, l);
            // Grow past the class and shrink again; the contents follow.
            let q = CpuSlab.realloc(p, l, size * 3 + 5);
            let aligned = (q as usize).is_multiple_of(align);
            assert!(!q.is_null() && aligned, "realloc {size}/{align}");
            assert!(std::slice::from_raw_parts(q, size)
                .iter()
                .all(|&b| b == 0xA5));
            let l3 = Layout::from_size_align(size * 3 + 5, align).unwrap();
            let r = CpuSlab.realloc(q, l3, size / 2 + 1);
            assert!(!r.is_null());
            assert!(std::slice::from_raw_parts(r, size / 2 + 1)
                .iter()
                .all(|&b| b == 0xA5));
            CpuSlab.dealloc(r, Layout::from_size_align(size / 2 + 1, align).unwrap());
        }
        // allocator_api2 reports what was asked for: glibc's block may hold no more.
        let l = Layout::from_size_align(40_000, 8).unwrap();
        let block = CpuSlab.allocate(l).unwrap();
        assert_eq!(block.len(), 40_000);
        CpuSlab.deallocate(block.cast(), l);
    }
    // The program's own collections, on glibc.
    let v: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
    let total: usize = v.iter().map(|s| s.len()).sum();
    assert!(total > 60_000);
    println!("page_size child: ok");
}
