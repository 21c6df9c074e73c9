//! The allocator leaves the thread control block alone: a restartable sequence run
//! before the sequences are set up (or with them off) would store its descriptor at
//! an unset offset from the thread pointer, over glibc's TCB. In its own binary so its
//! load does not run beside the conservation tests.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

/// The thread control block's first words (x86_64: the TCB's own address at `%fs:0`,
/// glibc's DTV pointer at `%fs:8`, its self pointer at `%fs:16`).
#[cfg(target_arch = "x86_64")]
fn tcb_words() -> [usize; 3] {
    let (a, b, c): (usize, usize, usize);
    // SAFETY: reads three words of this thread's TCB, which x86_64 Linux keeps at %fs.
    unsafe {
        std::arch::asm!(
            "mov {a}, qword ptr fs:0",
            "mov {b}, qword ptr fs:8",
            "mov {c}, qword ptr fs:16",
            a = out(reg) a,
            b = out(reg) b,
            c = out(reg) c,
            options(nostack, readonly, preserves_flags)
        );
    }
    [a, b, c]
}

/// Allocation and free through every path leave the thread control block alone, on
/// either fast path: a restartable sequence run while the sequences are off would
/// store its descriptor at an unset offset from the thread pointer, over the TCB.
#[cfg(target_arch = "x86_64")]
#[test]
fn allocations_leave_the_thread_control_block_alone() {
    let before = tcb_words();
    let t = std::thread::spawn(|| {
        // A fresh thread: its first allocation is the one most likely to run a path
        // that was not set up yet.
        let before = tcb_words();
        let v: Vec<Box<[u8]>> = (0..5000)
            .map(|i| vec![1u8; 1 + i % 3000].into_boxed_slice())
            .collect();
        drop(v);
        assert_eq!(tcb_words(), before, "a new thread's TCB changed");
    });
    t.join().unwrap();
    for round in 0..3 {
        let v: Vec<Vec<u64>> = (0..20_000).map(|i| vec![i as u64; 1 + i % 100]).collect();
        drop(v);
        assert_eq!(tcb_words(), before, "round {round}: the TCB changed");
    }
    let forced_off = std::env::var("CPUSLAB_RSEQ").is_ok_and(|v| v == "0");
    if !common::is_child() && !forced_off {
        let (status, err) = common::run_child(
            "allocations_leave_the_thread_control_block_alone",
            &[("CPUSLAB_RSEQ", "0")],
        );
        assert!(status.success(), "child with CPUSLAB_RSEQ=0 failed: {err}");
    }
}
