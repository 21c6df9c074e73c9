//! A worker pool pinned by a cpuset: the workers attach themselves to a child of the
//! process's top cpuset, so they run only on its CPUs and their memory comes from its
//! nodes, while the main thread stays where it was.
//!
//! ```sh
//! cargo run --release --example cpuset_pool
//! ```

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use cpuslab::cpuset::{self, Cpuset};
use cpuslab::topology::CpuMask;

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

const WORKERS: usize = 4;
const JOBS: u64 = 64;

fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() as usize }
}

fn main() {
    // What the process may use, and the pool's share: every CPU but the first when
    // there are several (the main thread keeps the first), else the only one.
    let top = Cpuset::top();
    let all = top.effective_cpus().expect("top cpuset");
    let first = all.first().expect("at least one CPU");
    let mut pool_cpus = all;
    if all.weight() > 1 {
        pool_cpus.clear(first);
    }

    let pool = top.create_child("example-pool").expect("create cpuset");
    pool.set_cpus(&pool_cpus).expect("set cpuset.cpus");
    let mut text = String::new();
    pool.read_file("cpuset.cpus.effective", &mut text).unwrap();
    println!(
        "process CPUs {}, pool CPUs {} (cpuset.cpus.effective: {})",
        all.list(),
        pool_cpus.list(),
        text.trim()
    );
    assert_eq!(pool.effective_cpus().unwrap(), pool_cpus);

    // The pool: workers take jobs from one queue and answer on another.
    let (job_tx, job_rx) = mpsc::channel::<u64>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (out_tx, out_rx) = mpsc::channel::<(u64, u64, usize)>();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (job_rx, out_tx) = (job_rx.clone(), out_tx.clone());
            thread::spawn(move || {
                pool.attach_current().expect("attach to the pool cpuset");
                assert_eq!(Cpuset::current(), pool);
                let allowed: CpuMask = pool.effective_cpus().unwrap();
                let mems = pool.effective_mems().unwrap();
                assert_eq!(cpuset::current_mems_allowed(), mems);
                loop {
                    let job = job_rx.lock().unwrap().recv();
                    let Ok(n) = job else { break };
                    // The work allocates: its memory comes from the pool's nodes.
                    let v: Vec<u64> = (0..=n * 1000).collect();
                    let cpu = current_cpu();
                    assert!(allowed.test(cpu), "worker ran on CPU {cpu}");
                    out_tx.send((n, v.iter().sum(), cpu)).unwrap();
                }
            })
        })
        .collect();
    drop(out_tx);

    for n in 0..JOBS {
        job_tx.send(n).unwrap();
    }
    drop(job_tx);

    let mut seen = CpuMask::default();
    let mut answers = 0;
    for (n, sum, cpu) in out_rx {
        let m = n * 1000;
        assert_eq!(sum, m * (m + 1) / 2, "job {n}");
        assert!(pool_cpus.test(cpu));
        seen.set(cpu);
        answers += 1;
    }
    assert_eq!(answers, JOBS);
    for w in workers {
        w.join().expect("worker");
    }
    // The main thread was never attached: it is still in the top cpuset.
    assert_eq!(Cpuset::current(), top);

    // The workers exited, so the cpuset can go.
    pool.remove().expect("remove the cpuset");
    println!("ok: {JOBS} jobs answered on CPUs {}", seen.list());
}
