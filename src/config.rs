//! `CPUSLAB_*` environment options, read once at boot without allocating.
//!
//! | variable             | default | meaning                                             |
//! |----------------------|---------|-----------------------------------------------------|
//! | `CPUSLAB_DECAY_MS`   | 1000    | free pages stay resident this long before purging   |
//! | `CPUSLAB_RETAIN`     | 4M      | dirty free memory each node keeps without purging   |
//! | `CPUSLAB_HEAP_LIMIT` | 0       | refuse to commit more than this (0: no limit)       |
//! | `CPUSLAB_PCP_BATCH`  | 16      | pages moved per refill/drain of a CPU's page list   |
//! | `CPUSLAB_PCP_HIGH`   | 96      | a CPU's page list gives pages back above this count |
//! | `CPUSLAB_PCP_LOW`    | 0       | a take that leaves a CPU's page list at this count or below tops it up (0: refill when empty) |
//! | `CPUSLAB_BACKGROUND` | 1       | 0: no background reclaim thread (`background`)      |
//! | `CPUSLAB_FREELIST_RANDOM` | 0  | 1: new slabs hand objects out in a random order (`slab::layout`) |
//! | `CPUSLAB_DEBUG`      | 0       | 1: slab debug checks, red zones and poison (`slab::debug`); the `debug` feature makes 1 the default |
//!
//! Sizes take an optional `K`, `M` or `G` suffix. A value that does not parse is
//! ignored with a warning on stderr.

use core::ffi::CStr;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::sys;

/// Most pages a CPU's page list holds: `CPUSLAB_PCP_HIGH` is clamped to it, here and
/// when `page::pcp` sets a list's `high`.
pub const PCP_MAX_HIGH: u32 = 1024;

/// The options in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Decay time before free pages are purged, in ms.
    pub decay_ms: u64,
    /// Dirty free bytes each zone retains.
    pub retain_bytes: usize,
    /// Most bytes cpuslab commits (0: no limit).
    pub heap_limit: usize,
    /// Per-CPU page list batch.
    pub pcp_batch: u32,
    /// Per-CPU page list high watermark.
    pub pcp_high: u32,
    /// Per-CPU page list low watermark (at most `pcp_high - pcp_batch`).
    pub pcp_low: u32,
    /// Slab debugging (see `slab::debug`).
    pub debug: bool,
    /// The background reclaim thread (see `background`).
    pub background: bool,
    /// New slabs hand out their objects in a random order (`slab::layout`).
    pub freelist_random: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            decay_ms: 1000,
            retain_bytes: 4 << 20,
            heap_limit: 0,
            pcp_batch: 16,
            pcp_high: 96,
            pcp_low: 0,
            debug: cfg!(feature = "debug"),
            background: true,
            freelist_random: false,
        }
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Some(v) = option(c"CPUSLAB_DECAY_MS", parse_size) {
            c.decay_ms = v as u64;
        }
        if let Some(v) = option(c"CPUSLAB_RETAIN", parse_size) {
            c.retain_bytes = v;
        }
        if let Some(v) = option(c"CPUSLAB_HEAP_LIMIT", parse_size) {
            c.heap_limit = v;
        }
        if let Some(v) = option(c"CPUSLAB_PCP_BATCH", parse_size) {
            c.pcp_batch = v.clamp(1, 1024) as u32;
        }
        if let Some(v) = option(c"CPUSLAB_PCP_HIGH", parse_size) {
            c.pcp_high = v.clamp(1, PCP_MAX_HIGH as usize) as u32;
        }
        c.pcp_high = c.pcp_high.max(c.pcp_batch);
        if let Some(v) = option(c"CPUSLAB_PCP_LOW", parse_size) {
            c.pcp_low = v.min(PCP_MAX_HIGH as usize) as u32;
        }
        c.pcp_low = c.pcp_low.min(c.pcp_high - c.pcp_batch);
        c.debug = slab_debug();
        c.background = flag(c"CPUSLAB_BACKGROUND", c.background);
        c.freelist_random = flag(c"CPUSLAB_FREELIST_RANDOM", c.freelist_random);
        c
    }
}

/// `CPUSLAB_DEBUG`, read once (so a bad value warns once): `1` turns slab debugging
/// on, `0` off; unset, it is on exactly when the `debug` feature is enabled.
pub fn slab_debug() -> bool {
    static DEBUG: AtomicU8 = AtomicU8::new(0);
    match DEBUG.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let on = match sys::env::get(c"CPUSLAB_DEBUG") {
        None => cfg!(feature = "debug"),
        Some(b"1") => true,
        Some(b"0") => false,
        Some(raw) => {
            let shown = core::str::from_utf8(&raw[..raw.len().min(40)]).unwrap_or("?");
            sys::io::warn(format_args!("ignoring CPUSLAB_DEBUG={shown}: not 0 or 1"));
            cfg!(feature = "debug")
        }
    };
    DEBUG.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    on
}

/// A `0`/`1` option: `default` when unset, or (with a warning) when it is neither.
fn flag(name: &CStr, default: bool) -> bool {
    match sys::env::get(name) {
        None => default,
        Some(b"1") => true,
        Some(b"0") => false,
        Some(raw) => {
            let shown = core::str::from_utf8(&raw[..raw.len().min(40)]).unwrap_or("?");
            sys::io::warn(format_args!(
                "ignoring {}={shown}: not 0 or 1",
                name.to_str().unwrap_or("?")
            ));
            default
        }
    }
}

fn option(name: &CStr, parse: fn(&[u8]) -> Option<usize>) -> Option<usize> {
    let raw = sys::env::get(name)?;
    let v = parse(raw);
    if v.is_none() {
        let shown = core::str::from_utf8(&raw[..raw.len().min(40)]).unwrap_or("?");
        sys::io::warn(format_args!(
            "ignoring {}={shown}: not a size (digits with an optional K, M or G)",
            name.to_str().unwrap_or("?")
        ));
    }
    v
}

/// Parses `123`, `64K`, `16M`, `2G` (case-insensitive suffix).
pub fn parse_size(s: &[u8]) -> Option<usize> {
    let (digits, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: usize = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    v.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64k"), Some(64 << 10));
        assert_eq!(parse_size(b"16M"), Some(16 << 20));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"M"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999G"), None);
    }
}
