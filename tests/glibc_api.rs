//! glibc's introspection calls through `libcpuslab_preload.so`: `mallopt` answers as
//! glibc does, `malloc_info` writes glibc's XML layout, and `mallinfo2`/`mallinfo`
//! follow the blocks a program holds (`tests/capi/glibc_api.c`, run under both).

mod common;

use std::process::Command;

#[test]
fn introspection_matches_glibc() {
    let exe = common::compile_c("glibc_api.c", &["-Wno-deprecated-declarations"]);
    let plain = Command::new(&exe).output().expect("runs");
    let preloaded = Command::new(&exe)
        .env(
            "LD_PRELOAD",
            common::build_cdylib("cpuslab-preload", "cpuslab_preload"),
        )
        .output()
        .expect("runs");
    for (who, out) in [("glibc", &plain), ("cpuslab", &preloaded)] {
        assert!(
            out.status.success(),
            "{who}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let plain = String::from_utf8_lossy(&plain.stdout);
    let preloaded = String::from_utf8_lossy(&preloaded.stdout);
    assert!(plain.ends_with("glibc_api: ok\n"), "{plain}");
    assert!(plain.contains("info <malloc") && plain.contains("mallopt("));
    assert_eq!(plain, preloaded, "cpuslab's answers differ from glibc's");
}
