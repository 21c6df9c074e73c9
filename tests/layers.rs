//! The layer order written in the crate docs (`src/lib.rs`, "# Layers") is the one the
//! code keeps: no module reaches (`crate::x`) a module listed after it. The list is read
//! from the docs themselves, so the two cannot drift apart.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each module the docs list, with its rank (the modules of one entry share it). An
/// entry is a numbered item; its modules are the names in backticks before its dash
/// (after it comes prose, which names other things).
fn documented_order() -> HashMap<String, usize> {
    let lib = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let section = lib
        .split("//! # Layers")
        .nth(1)
        .and_then(|s| s.split("//! # ").next())
        .expect("src/lib.rs has no '# Layers' section");
    let mut entries: Vec<(usize, String)> = Vec::new();
    for line in section.lines() {
        let text = line.trim_start_matches("//!").trim();
        let numbered = text
            .split_once(". ")
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
        match (numbered, entries.last_mut()) {
            (Some((n, rest)), _) => entries.push((n, rest.to_string())),
            (None, Some(last)) if !text.is_empty() && !last.1.ends_with('\n') => {
                last.1.push(' ');
                last.1.push_str(text);
            }
            (None, Some(last)) => last.1.push('\n'),
            (None, None) => {}
        }
    }
    let mut rank = HashMap::new();
    for (n, text) in entries {
        let head = text.split('—').next().unwrap_or("");
        for name in head.split('`').skip(1).step_by(2) {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                rank.insert(name.to_string(), n);
            }
        }
    }
    rank
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a source text names through `crate::`, with `crate::{a, b}`
/// groups expanded.
fn crate_paths(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn no_module_reaches_one_listed_after_it() {
    let rank = documented_order();
    let chain = [
        "ds", "sys", "sync", "state", "topology", "config", "cpuset", "page", "percpu", "rcu",
        "slab", "kmalloc", "init",
    ];
    for pair in chain.windows(2) {
        let (a, b) = (rank.get(pair[0]), rank.get(pair[1]));
        assert!(
            a.is_some() && a < b,
            "the layer list does not put {pair:?} in order: {rank:?}"
        );
    }
    for m in [
        "background",
        "global",
        "kmem_cache",
        "capi",
        "stats",
        "options",
    ] {
        assert_eq!(
            rank.get(m),
            rank.get("init"),
            "`{m}` is not on the top layer: {rank:?}"
        );
    }
    let top = rank.values().copied().max().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut violations = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let Some(&mine) = rank.get(&module) else {
            if module != "lib" {
                violations.push(format!("{rel}: module `{module}` is not in the layer list"));
            }
            continue;
        };
        // The per-CPU page lists live in percpu units: listed after `percpu`.
        let mine = if rel == "page/pcp.rs" {
            rank["percpu"]
        } else {
            mine
        };
        let mut src = fs::read_to_string(f).unwrap();
        if let Some(i) = src.find("#[cfg(test)]\nmod tests") {
            src.truncate(i);
        }
        for target in crate_paths(&src) {
            if let Some(&theirs) = rank.get(&target) {
                if theirs > mine && !(mine == top && theirs == top) {
                    violations.push(format!("{rel} ({module}) reaches crate::{target}"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward references:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_paths() {
    let paths = crate_paths("use crate::{cpuset, kmalloc::kfree};\nlet x = crate::sys::PAGE_SIZE;");
    assert_eq!(paths, ["cpuset", "kmalloc", "sys"]);
}
