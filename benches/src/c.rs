//! The suite's C part: `c/workloads.c`, compiled at run time with the system C
//! compiler, run under `LD_PRELOAD` of each allocator's shared library (none
//! for glibc).
//!
//! The C program checks every block and times its measured part itself; see
//! the comment at the top of `c/workloads.c`. This module knows the
//! workloads, how to compile the program, where the competitors' libraries
//! are, and how to build `libcpuslab_preload.so`.

use crate::WorkloadInfo;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The C source, in the bench crate.
pub const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/c/workloads.c");

/// Prefix of the C program's result line.
pub const RESULT_TAG: &str = "CPUSLAB_C_RESULT";

/// Environment variable the C program reads: malloc must resolve into a
/// library whose path contains its value.
pub const EXPECT_LIB_VAR: &str = "CPUSLAB_C_EXPECT_LIB";

const fn w(name: &'static str, multi_threaded: bool, about: &'static str) -> WorkloadInfo {
    WorkloadInfo {
        name,
        multi_threaded,
        global: false,
        about,
    }
}

/// The C workloads, in the order `workloads.c` lists them.
pub const C_WORKLOADS: &[WorkloadInfo] = &[
    w("pair64", false, "malloc(64)+free pair in a tight loop, one thread"),
    w(
        "mixed-batch",
        true,
        "batches of 1000 blocks of 64..120 B freed in shuffled order",
    ),
    w(
        "larson",
        true,
        "larson: random-slot replace, 16..1000 B, slot arrays filled by main and handed to successor threads",
    ),
    w(
        "larson-sparse",
        true,
        "larson as mimalloc-bench runs it: 5000 slots a thread, 8..1000 B, only each block's first and last words written",
    ),
    w(
        "cache-thrash",
        true,
        "active false sharing: each thread allocs an 8 B object, writes it 500 times, frees it",
    ),
    w(
        "cache-scratch",
        true,
        "passive false sharing: main's 8 B objects handed to the threads, freed, then alloc/write/free",
    ),
    w(
        "mstress",
        true,
        "mixed lifetimes 16 B..256 KiB, realloc growth, a quarter of medium blocks freed by the next thread",
    ),
    w(
        "xmalloc-test",
        true,
        "producers fill batches of 4096 blocks of 64 B, consumers on other threads free them",
    ),
    w(
        "malloc-large",
        false,
        "blocks of 5 to 25 MiB, four live, every page touched",
    ),
    w(
        "threads256",
        false,
        "256 threads at once, each allocating 2000 blocks of 16..1040 B; 10 rounds",
    ),
];

/// A competitor's shared library, as Debian ships it.
#[derive(Clone, Copy, Debug)]
pub struct Library {
    /// Allocator name in the suite.
    pub name: &'static str,
    /// File name searched for in the library directories.
    pub file: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
}

/// jemalloc, mimalloc and tcmalloc, as preloadable libraries.
pub const LIBRARIES: &[Library] = &[
    Library {
        name: "jemalloc",
        file: "libjemalloc.so.2",
        package: "libjemalloc2",
    },
    Library {
        name: "mimalloc",
        file: "libmimalloc.so.2",
        package: "libmimalloc2.0",
    },
    Library {
        name: "tcmalloc",
        file: "libtcmalloc_minimal.so.4",
        package: "libtcmalloc-minimal4",
    },
];

/// Looks `name` up in [`LIBRARIES`].
pub fn library(name: &str) -> Option<&'static Library> {
    LIBRARIES.iter().find(|l| l.name == name)
}

/// Directories searched for the libraries: `CPUSLAB_SUITE_LIB_DIRS`
/// (colon-separated) if set, else the multiarch and plain library
/// directories.
pub fn library_dirs() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os("CPUSLAB_SUITE_LIB_DIRS") {
        return std::env::split_paths(&v).collect();
    }
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// Where `lib` is installed, or why it is not usable.
pub fn find_library(lib: &Library) -> Result<PathBuf, String> {
    let dirs = library_dirs();
    dirs.iter()
        .map(|d| d.join(lib.file))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{} not found in {} (Debian: apt-get install {})",
                lib.file,
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                lib.package
            )
        })
}

/// The C compiler: `$CC`, else `cc`.
pub fn compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".into())
}

/// The ready-made file the environment variable `var` names, if it is set: Err when
/// that is not a file.
fn ready_made(var: &str) -> Option<Result<PathBuf, String>> {
    let p = PathBuf::from(std::env::var_os(var)?);
    Some(if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{var}={} is not a file", p.display()))
    })
}

/// Compiles [`SOURCE`] with `cc -O2 -pthread` to `out_dir/workloads`.
/// Err says why (no compiler, or the compile failed).
/// `CPUSLAB_SUITE_C_EXE` names a ready-made binary instead, for a machine
/// without a compiler or without this checkout's path to [`SOURCE`].
pub fn compile(out_dir: &Path) -> Result<PathBuf, String> {
    if let Some(ready) = ready_made("CPUSLAB_SUITE_C_EXE") {
        return ready;
    }
    let cc = compiler();
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let exe = out_dir.join("workloads");
    let out = Command::new(&cc)
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(SOURCE)
        // dladdr lives in libdl before glibc 2.34; later, -ldl is a stub.
        .arg("-ldl")
        .output()
        .map_err(|e| format!("no C compiler ({cc}: {e})"))?;
    if !out.status.success() {
        return Err(format!(
            "{cc} failed on {SOURCE}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(exe)
}

/// The workspace's target directory (`CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds `libcpuslab_preload.so` (`cargo build --release -p cpuslab-preload`)
/// into a target directory of its own under `target/cpuslab-suite`, so the
/// build never waits on the lock of the cargo that runs the suite, and
/// returns its path. `CPUSLAB_PRELOAD_SO` names a ready-made one instead.
pub fn build_preload() -> Result<PathBuf, String> {
    if let Some(ready) = ready_made("CPUSLAB_PRELOAD_SO") {
        return ready;
    }
    let target = target_dir().join("cpuslab-suite/preload-build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--release", "-p", "cpuslab-preload"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p cpuslab-preload failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let so = target.join("release/libcpuslab_preload.so");
    if so.is_file() {
        Ok(so)
    } else {
        Err(format!("{} was not built", so.display()))
    }
}
