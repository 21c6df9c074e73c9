//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::Command;

/// A small xorshift generator: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The pattern of the 8 bytes at offset `off` (a multiple of 8) of a block at `base`.
pub fn pattern_word(base: usize, off: usize, salt: u64) -> u64 {
    ((base + off) as u64 ^ salt).wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The pattern byte at offset `off` of a block at `base`.
pub fn pattern(base: usize, off: usize, salt: u64) -> u8 {
    pattern_word(base, off & !7, salt).to_le_bytes()[off & 7]
}

/// Fills `len` bytes at `p` with a pattern derived from their addresses.
pub unsafe fn fill(p: *mut u8, len: usize, salt: u64) {
    let base = p as usize;
    let words = len / 8;
    for w in 0..words {
        p.add(w * 8)
            .cast::<u64>()
            .write_unaligned(pattern_word(base, w * 8, salt));
    }
    for off in words * 8..len {
        *p.add(off) = pattern(base, off, salt);
    }
}

/// Checks the pattern that [`fill`] wrote at `base` (the block may since have moved to
/// `p`, as realloc does); panics naming the first bad byte.
pub unsafe fn check_moved(p: *const u8, base: usize, len: usize, salt: u64) {
    let words = len / 8;
    for w in 0..words {
        let got = p.add(w * 8).cast::<u64>().read_unaligned();
        if got != pattern_word(base, w * 8, salt) {
            panic!("block {p:p} len {len}: word at offset {} corrupted", w * 8);
        }
    }
    for off in words * 8..len {
        assert_eq!(
            *p.add(off),
            pattern(base, off, salt),
            "block {p:p} len {len}: byte {off} corrupted"
        );
    }
}

/// Checks the pattern written by [`fill`] in place.
pub unsafe fn check(p: *const u8, len: usize, salt: u64) {
    check_moved(p, p as usize, len, salt);
}

/// Runs the test `name` of this binary again in a child process with `CPUSLAB_CHILD=1`
/// and the given environment; returns its exit status and stderr.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    cmd.env("CPUSLAB_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pins the calling thread to its first allowed CPU; that CPU's id.
pub fn pin() -> Option<usize> {
    let cpu = *core_affinity::get_core_ids()?.first()?;
    core_affinity::set_for_current(cpu).then_some(cpu.id)
}

/// Pins the calling thread (as [`pin`]) and moves its CPU's kmalloc caches to their
/// full entry arrays: a cache starts on a small first array and moves, allocating a
/// percpu area, when it first fills it. A test that counts percpu areas or bytes then
/// sees only its own, as long as it stays on the CPU.
#[allow(dead_code)]
pub fn settle_entry_arrays() {
    pin();
    for &size in cpuslab::kmalloc::KMALLOC_SIZES.iter() {
        let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
        for _ in 0..3 {
            // SAFETY: a layout of non-zero size.
            let v: Vec<*mut u8> = (0..300)
                .map(|_| unsafe { std::alloc::alloc(layout) })
                .collect();
            for p in v {
                assert!(!p.is_null());
                // SAFETY: allocated above with `layout`.
                unsafe { std::alloc::dealloc(p, layout) };
            }
        }
    }
}

/// Whether this process is a child started by [`run_child`].
pub fn is_child() -> bool {
    std::env::var_os("CPUSLAB_CHILD").is_some()
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Builds workspace package `package` in release mode into a target directory of the
/// tests' own (once per test binary and package) and returns its `lib{name}.so`.
pub fn build_cdylib(package: &str, name: &str) -> std::path::PathBuf {
    use std::sync::Mutex;
    static BUILT: Mutex<Vec<(String, std::path::PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, so)) = built.iter().find(|(p, _)| p == package) {
        return so.clone();
    }
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("preload");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(cargo)
        .args(["build", "--release", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let so = target.join(format!("release/lib{name}.so"));
    assert!(so.is_file(), "{so:?} was not built");
    built.push((package.to_string(), so.clone()));
    so
}

/// Compiles `tests/capi/{source}` with the C compiler (`$CC`, else `cc`) into the
/// tests' scratch directory, with `extra` flags; returns the executable.
pub fn compile_c(source: &str, extra: &[&str]) -> std::path::PathBuf {
    use std::sync::Mutex;
    // Tests of one binary compile the same program at once: one of them does it.
    static COMPILED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-programs");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let exe = dir.join(source.trim_end_matches(".c"));
    if compiled.iter().any(|s| s == source) {
        return exe;
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/capi")
        .join(source);
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .output()
        .expect("the C compiler runs");
    assert!(
        out.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    compiled.push(source.to_string());
    exe
}

/// Free pages in every zone plus pages on every CPU's lists.
pub fn pages_free_or_cached() -> usize {
    use cpuslab::page::{self, pcp};
    let zones: usize = (0..cpuslab::topology::nr_node_ids())
        .map(|n| page::zone(n).lock().free_pages)
        .sum();
    zones + (0..pcp::nr_lists()).map(pcp::count).sum::<usize>()
}

/// [`pages_free_or_cached`] plus the pages in the slab caches' slabs and those taken
/// for cpuslab's own metadata, and with `large` those taken for large blocks. Threads
/// that start and exit allocate and free through the slab layer, which may grow a slab
/// or a node structure (a page taken) or give one back; the sum stays the same either
/// way. The slabinfo is read twice: the first read's own allocations may grow a slab,
/// the second reuses what the first freed.
pub fn pages_accounted(large: bool) -> usize {
    drop(cpuslab::stats::caches());
    let slabs: usize = cpuslab::stats::caches()
        .iter()
        .map(|c| c.num_slabs * c.pages_per_slab)
        .sum();
    let taken: usize = (0..cpuslab::topology::nr_node_ids())
        .map(|n| {
            let z = cpuslab::page::zone(n).lock();
            z.meta_pages + if large { z.large_pages } else { 0 }
        })
        .sum();
    pages_free_or_cached() + slabs + taken
}

/// `f` of the fields of cache `name`'s slabinfo line. The fields stay borrowed from
/// the report: a test that reads the line between its own allocations must not make
/// many more of its own (their slab growth runs the growth reap, which drains idle
/// caches, the test's among them).
fn slabinfo_line<R>(name: &str, f: impl FnOnce(&[&str]) -> R) -> R {
    let info = cpuslab::stats::slabinfo();
    let line = info
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no slabinfo row for {name}:\n{info}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    f(&fields)
}

/// The slabinfo row of cache `name`: (active_objs, objsize, limit, batchcount, shared).
pub fn slab_row(name: &str) -> (usize, usize, u32, u32, u32) {
    // name active num objsize objperslab pagesperslab : tunables limit batch shared : ...
    slabinfo_line(name, |f| {
        (
            f[1].parse().unwrap(),
            f[3].parse().unwrap(),
            f[8].parse().unwrap(),
            f[9].parse().unwrap(),
            f[10].parse().unwrap(),
        )
    })
}

/// Objects in the nodes' shared caches of cache `name` (slabinfo's `sharedavail`, the
/// line's last field).
pub fn shared_avail(name: &str) -> usize {
    slabinfo_line(name, |f| f.last().unwrap().parse().unwrap())
}

/// Objects of cache `name` in use or cached (slabinfo's `active_objs`) and in the nodes'
/// shared caches, from one reading of its line: read apart, the reaper may drain the
/// shared cache between the two.
pub fn active_and_shared(name: &str) -> (usize, usize) {
    slabinfo_line(name, |f| {
        (f[1].parse().unwrap(), f.last().unwrap().parse().unwrap())
    })
}

/// Allocates `n` objects from `cache`, then frees them all.
pub fn alloc_then_free<T>(cache: &cpuslab::KmemCache<T>, n: usize) {
    let objs: Vec<std::ptr::NonNull<T>> = (0..n).map(|_| cache.alloc().unwrap()).collect();
    for o in objs {
        // SAFETY: allocated above from this cache.
        unsafe { cache.free(o) };
    }
}

/// Four bursts of `n` objects of `cache` (slabinfo's `name`), each allocated and then
/// freed: asserts that no round leaves an object in the node's shared cache, and that
/// at least `n` stay cached on the CPU afterwards. For a caller pinned to one CPU.
#[allow(dead_code)]
pub fn bursts_stay_on_the_cpu<T>(cache: &cpuslab::KmemCache<T>, name: &str, n: usize) {
    for i in 0..4 {
        alloc_then_free(cache, n);
        let at_node = shared_avail(name);
        assert_eq!(
            at_node, 0,
            "round {i} flushed {at_node} objects to the node"
        );
    }
    let (held, ..) = slab_row(name);
    assert!(held >= n, "only {held} objects stayed on the CPU");
}
