//! A forked child of a program that never used cpusets builds no cpuset tree: the
//! tree is zero bytes in `.bss` until first used (see `tests/static_footprint.rs`),
//! and the child's fork handler used to build it. A test binary of its own, so that
//! no other test allocates while the child measures itself.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

/// `RssAnon` of this process, KiB.
fn rss_anon_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A forked child of a program that never used cpusets does not build the cpuset tree
/// (its fork handler wrote the whole 110 KiB of it before).
#[test]
fn a_forked_child_does_not_build_the_cpuset_tree() {
    let v: Vec<Box<[u8; 64]>> = (0..100).map(|_| Box::new([1; 64])).collect();
    assert_eq!(v.len(), 100);
    let mut pipe = [0i32; 2];
    // SAFETY: a valid array of two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let before = rss_anon_kib();
    // SAFETY: the child only reads /proc, writes to the pipe and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let grown = rss_anon_kib() - before;
        let b = grown.to_le_bytes();
        // SAFETY: writes 8 bytes from a live buffer, then leaves without unwinding.
        unsafe {
            libc::write(pipe[1], b.as_ptr().cast(), 8);
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer; waits for our own child.
    unsafe {
        assert_eq!(libc::read(pipe[0], b.as_mut_ptr().cast(), 8), 8);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let grown = i64::from_le_bytes(b);
    assert!(grown < 64, "the child's anonymous memory grew {grown} KiB");
}
