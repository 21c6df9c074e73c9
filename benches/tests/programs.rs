//! The real programs on cpuslab as the global allocator, at a small scale and on
//! one to three threads: each checks what it computed (records round-trip, keys
//! sorted and all grouped, every box intact, every well-formed line matched), so a
//! cpuslab that loses or corrupts memory fails here before the suite runs. The
//! checksums must not depend on the thread count (`programs::tests` compares them
//! under the system allocator).

use cpuslab_bench::programs::{run, PROGRAMS};
use cpuslab_bench::Params;

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

#[test]
fn every_program_verifies_on_cpuslab() {
    for w in PROGRAMS {
        let mut seen = None;
        for threads in [1, 2, 3] {
            if threads > 1 && !w.multi_threaded {
                continue;
            }
            let o = run(w.name, &Params::new(threads, 0.02)).expect("registered");
            assert!(o.allocs > 0, "{}", w.name);
            if let Some(s) = seen {
                assert_eq!(s, o.checksum, "{} x{threads}", w.name);
            }
            seen = Some(o.checksum);
        }
    }
}
