//! Links the unwinder into `libcpuslab_preload.so` instead of loading `libgcc_s.so.1`
//! beside it, as `gcc -static-libgcc` does for a shared library.
//!
//! Rust's standard library needs an unwinder (panics, backtraces), which on GNU/Linux
//! it takes from `libgcc_s.so.1`. A C program that preloads cpuslab would load that
//! library for nothing: it costs every such program a mapping and about 80 KiB of
//! resident pages. Linked whole from `libgcc_eh.a` before the standard library, its
//! symbols resolve inside the library (the cdylib's version script keeps them
//! local, so a C++ program's own exceptions still go to its `libgcc_s`), and the
//! linker, given `--as-needed`, records no dependency on `libgcc_s`. Where the C
//! compiler has no `libgcc_eh.a` (another libc, clang alone), nothing changes.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // A compiler that does not know the file prints its bare name back.
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return;
    }
    let Some(dir) = path.parent() else {
        return;
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:+whole-archive=gcc_eh");
}
