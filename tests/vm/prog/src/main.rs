//! cpuslab's NUMA and CPU-hotplug tests, run on a real kernel with several nodes (the
//! qemu machines of tests/vm/run.sh). `vmtest --list` names the tests; `vmtest NAME`
//! runs one, printing `PASS name: ...`, `FAIL name: ...` or `SKIP name: ...` lines (and
//! `INFO` lines with figures), and exits 1 when any check failed. vminit runs each test
//! in a fresh process, so one test's caches and cpusets never leak into another's.
//!
//! Every page's node is the kernel's answer: `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`
//! on a page written first. The machine's layout is read from sysfs here, not from
//! cpuslab, so the tests do not check cpuslab against itself.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod alien;
mod hotplug;
mod migrate;
mod mix;
mod owners;
mod percpu;
mod place;
mod spread;
mod util;

/// The tests, in the order vminit runs them.
const TESTS: &[(&str, fn())] = &[
    ("place", place::run),
    ("hardwall", place::hardwall),
    ("spread_page", spread::page),
    ("spread_slab", spread::slab),
    ("percpu", percpu::run),
    ("alien", alien::run),
    ("alien_fast", alien::fast),
    ("hotplug", hotplug::run),
    ("memory_migrate", migrate::run),
    ("owner_tags", owners::run),
];

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "--list" {
        for (name, _) in TESTS {
            println!("{name}");
        }
        return;
    }
    let Some((_, test)) = TESTS.iter().find(|(name, _)| *name == arg) else {
        println!("FAIL vmtest: unknown test {arg:?}");
        std::process::exit(2);
    };
    test();
    std::process::exit(i32::from(util::failed()));
}
