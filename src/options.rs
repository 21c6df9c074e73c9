//! Options set from code while the allocator runs ([`Options`]), and the options in
//! force ([`current`]). The top layer: it changes the page pool's purging and heap
//! limit and the background thread, which the environment's options
//! (`crate::config`, read at boot) configured first.

use core::ffi::CStr;

use crate::config::Config;

/// Options a program sets from code, as `mi_option_set` and jemalloc's `mallctl` do:
/// those that can change while the allocator runs. Build with the setters, then
/// [`apply`](Options::apply):
///
/// ```
/// cpuslab::options::Options::new()
///     .decay_ms(5000)
///     .retain_bytes(16 << 20)
///     .apply()
///     .expect("valid options");
/// ```
///
/// A program's runtime allocates before `main` (Rust's does), so the allocator has
/// booted by then with the environment's options and the defaults; `apply` changes
/// them from then on: what is already free decays by the new time, and the next
/// growth checks the new heap limit. The options fixed at boot (`CPUSLAB_PCP_BATCH`,
/// `CPUSLAB_PCP_HIGH`, `CPUSLAB_PCP_LOW`, `CPUSLAB_DEBUG`, `CPUSLAB_FREELIST_RANDOM`)
/// stay environment variables. An option set in the environment overrides the code's:
/// `apply` leaves it and reports it in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    decay_ms: Option<u64>,
    retain_bytes: Option<usize>,
    heap_limit: Option<usize>,
    background: Option<bool>,
}

/// Why [`Options::apply`] refused (and changed nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// The value is outside the option's range.
    OutOfRange {
        /// The option, named as its environment variable.
        option: &'static str,
        /// The value asked for.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A heap limit below what is committed already.
    LimitBelowCommitted {
        /// The limit asked for, in bytes.
        limit: usize,
        /// Bytes committed now (`stats::memory().committed_bytes`).
        committed: usize,
    },
    /// The allocator could not boot.
    NotBooted,
}

impl core::fmt::Display for OptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::OutOfRange { option, value, max } => {
                write!(f, "cpuslab: {option}={value} is above its maximum {max}")
            }
            Self::LimitBelowCommitted { limit, committed } => write!(
                f,
                "cpuslab: a heap limit of {limit} bytes is below the {committed} bytes committed already"
            ),
            Self::NotBooted => f.write_str("cpuslab: the allocator could not boot"),
        }
    }
}

impl core::error::Error for OptionError {}

/// Longest decay time [`Options::decay_ms`] accepts: an hour.
pub const MAX_DECAY_MS: u64 = 3_600_000;

impl Options {
    /// No option changed.
    pub fn new() -> Self {
        Self::default()
    }

    /// `CPUSLAB_DECAY_MS`: how long free pages stay resident before they are purged
    /// (at most [`MAX_DECAY_MS`]).
    pub fn decay_ms(mut self, ms: u64) -> Self {
        self.decay_ms = Some(ms);
        self
    }

    /// `CPUSLAB_RETAIN`: dirty free bytes each node keeps without purging.
    pub fn retain_bytes(mut self, bytes: usize) -> Self {
        self.retain_bytes = Some(bytes);
        self
    }

    /// `CPUSLAB_HEAP_LIMIT`: refuse to commit more than this many bytes (0: no limit);
    /// not below what is committed already.
    pub fn heap_limit(mut self, bytes: usize) -> Self {
        self.heap_limit = Some(bytes);
        self
    }

    /// `CPUSLAB_BACKGROUND`: the background reclaim thread on or off. Off, a running
    /// thread exits within a quarter second.
    pub fn background(mut self, on: bool) -> Self {
        self.background = Some(on);
        self
    }

    /// Checks every option set, then applies them all, except those the environment
    /// sets, which keep the environment's value. Returns the options in force
    /// afterwards; on an error nothing changed.
    pub fn apply(self) -> Result<Config, OptionError> {
        if !crate::init::ensure() {
            return Err(OptionError::NotBooted);
        }
        let from_env = |name: &CStr| crate::sys::env::get(name).is_some();
        if let Some(ms) = self.decay_ms.filter(|&ms| ms > MAX_DECAY_MS) {
            return Err(OptionError::OutOfRange {
                option: "CPUSLAB_DECAY_MS",
                value: ms,
                max: MAX_DECAY_MS,
            });
        }
        let committed = crate::page::arena::committed();
        if let Some(limit) = self.heap_limit.filter(|&l| l != 0 && l < committed) {
            if !from_env(c"CPUSLAB_HEAP_LIMIT") {
                return Err(OptionError::LimitBelowCommitted { limit, committed });
            }
        }
        if let Some(ms) = self.decay_ms.filter(|_| !from_env(c"CPUSLAB_DECAY_MS")) {
            crate::page::purge::set_decay_ms(ms);
        }
        if let Some(b) = self.retain_bytes.filter(|_| !from_env(c"CPUSLAB_RETAIN")) {
            crate::page::purge::set_retain_bytes(b);
        }
        if let Some(l) = self.heap_limit.filter(|_| !from_env(c"CPUSLAB_HEAP_LIMIT")) {
            crate::page::arena::set_limit(l);
        }
        match self.background.filter(|_| !from_env(c"CPUSLAB_BACKGROUND")) {
            Some(true) => crate::background::enable(),
            Some(false) => crate::background::disable(),
            None => {}
        }
        Ok(current())
    }
}

/// The options in force now: the run-time ones as [`Options::apply`] and the
/// environment left them, the boot-time ones as the allocator booted.
pub fn current() -> Config {
    let boot = Config::from_env();
    Config {
        decay_ms: crate::page::purge::decay_ms(),
        retain_bytes: crate::page::purge::retain_bytes(),
        heap_limit: crate::page::arena::limit(),
        background: crate::background::stats().enabled,
        freelist_random: crate::slab::layout::freelist_random(),
        ..boot
    }
}
