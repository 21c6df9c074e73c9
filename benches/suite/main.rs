//! The cpuslab benchmark suite: every workload under every allocator, each
//! run in a child process of its own so that its peak RSS is that
//! allocator's.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench suite -- [--quick] [--threads N|1,2,4]
//!     [--only w1,w2] [--alloc a,b] [--rounds N] [--scale F] [--timeout S]
//!     [--pin] [WORKLOAD-SUBSTRING...]
//! ```
//!
//! The parent re-executes this binary as
//! `--child <workload> <allocator> <threads> <scale> <pin|nopin>` with
//! `CPUSLAB_SUITE_ALLOC=<allocator>` in the environment; the child's global
//! allocator is a [`Dispatch`] pointed at that allocator before anything is
//! allocated. The child times the workload alone, reads VmHWM, and prints one
//! `CPUSLAB_SUITE_RESULT key=value...` line; under cpuslab also a
//! `CPUSLAB_SUITE_BREAKDOWN` line, where its memory sat at the most bytes in use,
//! which the parent gathers in `target/cpuslab-suite/breakdown.txt` and the report.
//!
//! `--pairs <allocator> <N>` runs N bare 64 B alloc+free pairs on the
//! allocator's static (used by `callgrind.sh`).

use cpuslab_bench::dispatch::{self, AllocKind, Dispatch, ENV_VAR};
use cpuslab_bench::programs::PROGRAMS;
use cpuslab_bench::{c, Params, WorkloadInfo, WORKLOADS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod chart;
mod child;
mod opts;
mod report;
mod results;
mod run;

use chart::*;
use child::*;
use opts::*;
use report::*;
use results::*;
use run::*;

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// Prefix of the child's machine-readable result line.
pub(crate) const RESULT_TAG: &str = "CPUSLAB_SUITE_RESULT";

fn main() -> ExitCode {
    // Fix the global allocator before anything else can allocate.
    dispatch::init();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => child(&args[2..]),
        Some("--pairs") => pairs(&args[2..]),
        _ => parent(&args[1..]),
    }
}
