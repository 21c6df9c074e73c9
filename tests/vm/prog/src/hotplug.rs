//! CPU hotplug under load. Worker threads allocate and free tagged objects (a
//! `KmemCache` and kmalloc boxes) and pages, one of them pinned to the last CPU through
//! a cpuset. The last CPU goes offline (`/sys/devices/system/cpu/cpuN/online` = 0),
//! `cpuset::rescan()` runs, and the CPU's page list and array caches must hold nothing,
//! then and half a second later. The CPU comes back, a thread in a cpuset of that CPU
//! runs and allocates there, and its caches fill again. At the end every object was
//! handed out once at a time (a registry of live addresses), carried its owner's tag
//! when freed, and the cache has no object in use after a shrink (nothing lost).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpuslab::cpuset::{self, CpusetFlags};
use cpuslab::page::{self, pcp};
use cpuslab::percpu::this_cpu;
use cpuslab::slab::reap::cpu_cached_objects;
use cpuslab::topology::CpuMask;
use cpuslab::KmemCache;

use crate::util::{confine, memory_nodes, online_cpus, verdict};

const MAGIC: u64 = 0x0c9b_51ab_7e57_0000;
/// Unpinned workers (beside the one pinned to the target CPU).
const WORKERS: u32 = 3;
/// Objects a worker keeps live before it frees its oldest.
const WINDOW: usize = 256;

/// An object tagged with its owner, so a second hand-out is seen.
#[repr(C)]
struct Tagged {
    owner: u32,
    seq: u32,
    magic: u64,
    pad: [u64; 6],
}

enum Held {
    Cached(*mut Tagged),
    Boxed(*mut Tagged),
}

struct Shared {
    cache: KmemCache<Tagged>,
    live: Mutex<HashSet<usize>>,
    stop: AtomicBool,
    allocs: AtomicU64,
    frees: AtomicU64,
    twice: AtomicU64,
    bad_tag: AtomicU64,
    no_memory: AtomicU64,
}

/// What one thread does: allocates, tags, registers, frees its oldest objects.
struct Worker<'a> {
    sh: &'a Shared,
    id: u32,
    seq: u32,
    held: VecDeque<(Held, u32)>,
}

impl<'a> Worker<'a> {
    fn new(sh: &'a Shared, id: u32) -> Self {
        Self {
            sh,
            id,
            seq: 0,
            held: VecDeque::with_capacity(WINDOW + 16),
        }
    }

    fn tag(&self, p: *mut Tagged) {
        // SAFETY: `p` is a fresh object of at least `Tagged`'s size, ours alone.
        unsafe {
            p.write(Tagged {
                owner: self.id,
                seq: self.seq,
                magic: MAGIC ^ p as u64,
                pad: [0; 6],
            })
        };
        if !self.sh.live.lock().unwrap().insert(p as usize) {
            self.sh.twice.fetch_add(1, Relaxed);
        }
        self.sh.allocs.fetch_add(1, Relaxed);
    }

    /// One round: two objects of each kind, and a page through the CPU's page list.
    fn round(&mut self) {
        for _ in 0..2 {
            match self.sh.cache.alloc() {
                Some(o) => {
                    self.tag(o.as_ptr());
                    self.held.push_back((Held::Cached(o.as_ptr()), self.seq));
                }
                None => {
                    self.sh.no_memory.fetch_add(1, Relaxed);
                }
            }
            // SAFETY: a zeroed `Tagged` is a valid value; `tag` overwrites it.
            let b = Box::into_raw(Box::new(unsafe { core::mem::zeroed::<Tagged>() }));
            self.tag(b);
            self.held.push_back((Held::Boxed(b), self.seq));
            self.seq = self.seq.wrapping_add(1);
        }
        let p = page::alloc_pages(0);
        if p.is_null() {
            self.sh.no_memory.fetch_add(1, Relaxed);
        } else {
            // SAFETY: allocated just above with order 0.
            unsafe { page::free_pages(p, 0) };
        }
        while self.held.len() > WINDOW {
            self.release_oldest();
        }
    }

    fn release_oldest(&mut self) {
        let Some((h, seq)) = self.held.pop_front() else {
            return;
        };
        let p = match h {
            Held::Cached(p) | Held::Boxed(p) => p,
        };
        // SAFETY: the object is ours until freed below.
        let t = unsafe { &mut *p };
        if t.owner != self.id || t.seq != seq || t.magic != MAGIC ^ p as u64 {
            self.sh.bad_tag.fetch_add(1, Relaxed);
        }
        t.magic = 0;
        if !self.sh.live.lock().unwrap().remove(&(p as usize)) {
            self.sh.bad_tag.fetch_add(1, Relaxed);
        }
        self.sh.frees.fetch_add(1, Relaxed);
        match h {
            // SAFETY: allocated from this cache by this worker, freed once.
            Held::Cached(p) => unsafe { self.sh.cache.free(core::ptr::NonNull::new_unchecked(p)) },
            // SAFETY: from `Box::into_raw`, freed once.
            Held::Boxed(p) => drop(unsafe { Box::from_raw(p) }),
        }
    }

    fn finish(&mut self) {
        while !self.held.is_empty() {
            self.release_oldest();
        }
    }
}

/// What CPU `cpu` caches: pages on its list, objects in its array caches.
fn held_by(cpu: usize) -> (usize, usize) {
    (pcp::count(cpu), cpu_cached_objects(cpu))
}

fn set_online(cpu: usize, on: bool) -> Result<(), String> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
    std::fs::write(&path, if on { "1" } else { "0" }).map_err(|e| format!("write {path}: {e}"))?;
    let now = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    if now.trim() != if on { "1" } else { "0" } {
        return Err(format!("{path} reads {:?} after the write", now.trim()));
    }
    Ok(())
}

fn wait_for(what: impl Fn() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while !what() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Offline, rescan, drain, online, reuse, under load; then the object accounting.
pub fn run() {
    let online = online_cpus();
    let Some(target) = online.last().filter(|&c| c > 0) else {
        verdict(
            "hotplug",
            false,
            format_args!("needs 2 online CPUs, found {online}"),
        );
        return;
    };
    let mut pin = CpuMask::new();
    pin.set(target);
    let sh = Shared {
        cache: KmemCache::new("vm_hotplug", cpuslab::SlabFlags::NONE).expect("KmemCache::new"),
        live: Mutex::new(HashSet::new()),
        stop: AtomicBool::new(false),
        allocs: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        twice: AtomicU64::new(0),
        bad_tag: AtomicU64::new(0),
        no_memory: AtomicU64::new(0),
    };
    let on_target = AtomicU64::new(0);
    // Build the process's cpuset tree from the machine as it is now, before it changes.
    let _ = cpuset::Cpuset::top();

    std::thread::scope(|s| {
        let pinned = s.spawn(|| {
            confine("hp_pin", &pin, &memory_nodes(), CpusetFlags::NONE)?;
            let mut w = Worker::new(&sh, 0);
            while !sh.stop.load(Relaxed) {
                w.round();
                if this_cpu() == target {
                    on_target.fetch_add(1, Relaxed);
                }
            }
            w.finish();
            Ok::<(), String>(())
        });
        let workers: Vec<_> = (1..=WORKERS)
            .map(|id| {
                let sh = &sh;
                s.spawn(move || {
                    let mut w = Worker::new(sh, id);
                    while !sh.stop.load(Relaxed) {
                        w.round();
                    }
                    w.finish();
                })
            })
            .collect();

        let warmed = wait_for(
            || on_target.load(Relaxed) >= 200 && sh.allocs.load(Relaxed) >= 4000,
            Duration::from_secs(30),
        );
        let before = held_by(target);
        if offline_phase(target, warmed, before) {
            online_phase(&sh, target);
        }

        sh.stop.store(true, Relaxed);
        for w in workers {
            if w.join().is_err() {
                verdict("hotplug.objects", false, format_args!("a worker panicked"));
            }
        }
        match pinned.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => verdict("hotplug.objects", false, format_args!("pinned worker: {e}")),
            Err(_) => verdict(
                "hotplug.objects",
                false,
                format_args!("pinned worker panicked"),
            ),
        }
    });

    let (allocs, frees) = (sh.allocs.load(Relaxed), sh.frees.load(Relaxed));
    let (twice, bad) = (sh.twice.load(Relaxed), sh.bad_tag.load(Relaxed));
    let no_mem = sh.no_memory.load(Relaxed);
    let left = sh.live.lock().unwrap().len();
    sh.cache.shrink();
    let in_use = sh.cache.active_objects();
    verdict(
        "hotplug.objects",
        twice == 0 && bad == 0 && no_mem == 0 && allocs == frees && left == 0 && in_use == 0,
        format_args!(
            "{allocs} objects allocated, {frees} freed by {} threads; handed out twice: \
             {twice}; wrong tag on free: {bad}; allocation failures: {no_mem}; registry \
             left: {left}; cache objects in use after shrink: {in_use}",
            WORKERS + 1
        ),
    );
}

/// Takes `target` offline under load and checks that rescan drained it.
fn offline_phase(target: usize, warmed: bool, before: (usize, usize)) -> bool {
    if !warmed {
        verdict(
            "hotplug.offline",
            false,
            format_args!("the pinned worker never ran on CPU {target} (or the workers stalled)"),
        );
        return false;
    }
    if let Err(e) = set_online(target, false) {
        verdict("hotplug.offline", false, format_args!("{e}"));
        return false;
    }
    let report = cpuset::rescan();
    let after = held_by(target);
    std::thread::sleep(Duration::from_millis(500));
    let later = held_by(target);
    let dead = cpuset::dead_cpus().test(target);
    let ok = report.offline_cpus.test(target)
        && dead
        && before.0 + before.1 > 0
        && after == (0, 0)
        && later == (0, 0);
    verdict(
        "hotplug.offline",
        ok,
        format_args!(
            "CPU {target} offline under load; rescan: offline_cpus {}, moved_threads {}, \
             emptied cpusets {}, dead_cpus has it: {dead}; CPU {target} held (pcp pages, \
             array-cache objects) {before:?} before, {after:?} after rescan, {later:?} 0.5 s \
             later",
            report.offline_cpus, report.moved_threads, report.emptied
        ),
    );
    ok
}

/// Brings `target` back and checks a thread in a cpuset of that CPU runs and caches
/// there again.
fn online_phase(sh: &Shared, target: usize) {
    if let Err(e) = set_online(target, true) {
        verdict("hotplug.online", false, format_args!("{e}"));
        return;
    }
    let report = cpuset::rescan();
    let mut one = CpuMask::new();
    one.set(target);
    cpuset::clear_dead_cpus(&one);
    let ran = std::thread::scope(|s| {
        s.spawn(|| {
            confine("hp_back", &one, &memory_nodes(), CpusetFlags::NONE)?;
            let mut w = Worker::new(sh, 100);
            let mut there = 0;
            for _ in 0..400 {
                w.round();
                there += usize::from(this_cpu() == target);
            }
            // Freed here, on the target CPU: its array caches fill again.
            w.finish();
            Ok::<_, String>(there)
        })
        .join()
        .map_err(|_| "the thread panicked".to_string())?
    });
    let cached = held_by(target);
    let (ok, detail) = match ran {
        Ok(there) => (
            report.online_cpus.test(target) && there == 400 && cached.0 > 0 && cached.1 > 0,
            format!(
                "CPU {target} online again; rescan: online_cpus {}; a thread in a cpuset of \
                 CPU {target} ran there {there} of 400 rounds; CPU {target} now holds (pcp \
                 pages, array-cache objects) {cached:?}",
                report.online_cpus
            ),
        ),
        Err(e) => (false, e),
    };
    verdict("hotplug.online", ok, format_args!("{detail}"));
}
