//! Links the library with `hot-text.ld` (see `hot-text.sh`): the functions programs
//! run first in the text, so that a small program keeps one or two 64 KiB windows of
//! it resident rather than all of it. On Linux only, where the GNU linker and lld
//! read the script; `CPUSLAB_NO_HOT_TEXT=1` links in the linker's own order (for a
//! linker that rejects the script).

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-env-changed=CPUSLAB_NO_HOT_TEXT");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let off = env::var("CPUSLAB_NO_HOT_TEXT").is_ok_and(|v| v == "1");
    if linux && !off {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = Path::new(&dir).join("hot-text.ld");
        // `-Xlinker` rather than `-Wl,`, which would split a path at its commas.
        for arg in ["-Xlinker", "-T", "-Xlinker"] {
            println!("cargo:rustc-cdylib-link-arg={arg}");
        }
        println!("cargo:rustc-cdylib-link-arg={}", script.display());
        // The link reads the script, which rustc does not track: an output that
        // changes with it makes cargo link again when it changes.
        let text = fs::read(&script).expect("capi/hot-text.ld is readable");
        let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        println!("cargo:rustc-env=CPUSLAB_HOT_TEXT_FNV={hash:016x}");
    }
}
