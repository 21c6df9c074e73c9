//! CPU hotplug under load. Worker threads allocate and free tagged objects (a
//! `KmemCache` and kmalloc boxes) and pages, and hand some of their objects to one
//! another through a queue, so objects are freed on other CPUs than they came from. One
//! worker is pinned through a cpuset to each CPU of the load set (`vmtest.hotplug=LIST`
//! on the kernel command line, the online ones of it; by default the last online CPU),
//! three more run anywhere. Every second CPU of the load set, from the highest down,
//! goes offline (`/sys/devices/system/cpu/cpuN/online` = 0), `cpuset::rescan()` runs,
//! and each of those CPUs' page list and array caches must hold nothing, then and half
//! a second later. The CPUs come back, a thread in a cpuset of each runs and allocates
//! there, and its caches fill again. At the end every object was handed out once at a
//! time (a registry of live addresses), carried its allocator's tag when freed, and the
//! cache has no object in use after a shrink (nothing lost).
//!
//! On the manycpu machine the load set is CPUs 60-95 with gaps: per-CPU caches, page
//! lists and rseq CPU ids past the first 64-bit word of every mask.

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

use crate::util::{cmdline_param, confine, memory_nodes, online_cpus, verdict};

const MAGIC: u64 = 0x0c9b_51ab_7e57_0000;
/// Unpinned workers (beside the pinned ones).
const WORKERS: u32 = 3;
/// Objects a worker keeps live before it frees its oldest.
const WINDOW: usize = 256;
/// Objects waiting in the hand-off queue before a worker takes one to free: enough
/// that the taker is usually another thread, on another CPU.
const HANDOFF: usize = 64;
/// Rounds each pinned worker runs on its CPU before the CPUs go offline.
const WARM_ROUNDS: u64 = 200;
/// Rounds of each thread put on a CPU that came back.
const BACK_ROUNDS: usize = 400;
/// The id pinned workers' and returning threads' ids start from.
const PINNED_ID: u32 = 1000;

/// An object tagged with its owner, so a second hand-out is seen.
#[repr(C)]
struct Tagged {
    owner: u32,
    seq: u32,
    magic: u64,
    pad: [u64; 6],
}

#[derive(Clone, Copy)]
enum Held {
    Cached(*mut Tagged),
    Boxed(*mut Tagged),
}

/// A live object and what its tag must say when it is freed.
struct Obj {
    held: Held,
    owner: u32,
    seq: u32,
    cpu: usize,
}

// SAFETY: an `Obj` in the hand-off queue is owned by the queue alone; whoever pops it
// owns it.
unsafe impl Send for Obj {}

struct Shared {
    cache: KmemCache<Tagged>,
    live: Mutex<HashSet<usize>>,
    handoff: Mutex<VecDeque<Obj>>,
    stop: AtomicBool,
    allocs: AtomicU64,
    frees: AtomicU64,
    /// Objects freed by another thread than their allocator.
    handed: AtomicU64,
    /// Objects freed on another CPU than the one they were allocated on.
    cross_cpu: AtomicU64,
    twice: AtomicU64,
    bad_tag: AtomicU64,
    no_memory: AtomicU64,
}

/// What one thread does: allocates, tags, registers, frees its oldest objects or hands
/// them to another thread.
struct Worker<'a> {
    sh: &'a Shared,
    id: u32,
    seq: u32,
    held: VecDeque<Obj>,
    released: u64,
}

impl<'a> Worker<'a> {
    fn new(sh: &'a Shared, id: u32) -> Self {
        Self {
            sh,
            id,
            seq: 0,
            held: VecDeque::with_capacity(WINDOW + 16),
            released: 0,
        }
    }

    fn tag(&mut self, held: Held) {
        let p = match held {
            Held::Cached(p) | Held::Boxed(p) => p,
        };
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
        self.held.push_back(Obj {
            held,
            owner: self.id,
            seq: self.seq,
            cpu: this_cpu(),
        });
    }

    /// One round: two objects of each kind, and a page through the CPU's page list.
    fn round(&mut self) {
        for _ in 0..2 {
            match self.sh.cache.alloc() {
                Some(o) => self.tag(Held::Cached(o.as_ptr())),
                None => {
                    self.sh.no_memory.fetch_add(1, Relaxed);
                }
            }
            // SAFETY: a zeroed `Tagged` is a valid value; `tag` overwrites it.
            let b = Box::into_raw(Box::new(unsafe { core::mem::zeroed::<Tagged>() }));
            self.tag(Held::Boxed(b));
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

    /// Frees the oldest object, or every second time puts it in the hand-off queue and
    /// frees the queue's oldest instead (another thread's, as a rule).
    fn release_oldest(&mut self) {
        let Some(obj) = self.held.pop_front() else {
            return;
        };
        self.released += 1;
        if self.released % 2 == 1 {
            release(self.sh, obj, self.id);
            return;
        }
        let taken = {
            let mut q = self.sh.handoff.lock().unwrap();
            q.push_back(obj);
            if q.len() > HANDOFF {
                q.pop_front()
            } else {
                None
            }
        };
        if let Some(obj) = taken {
            release(self.sh, obj, self.id);
        }
    }

    fn finish(&mut self) {
        while let Some(obj) = self.held.pop_front() {
            release(self.sh, obj, self.id);
        }
    }
}

/// Checks `obj`'s tag, unregisters it and frees it, on behalf of thread `by`.
fn release(sh: &Shared, obj: Obj, by: u32) {
    let p = match obj.held {
        Held::Cached(p) | Held::Boxed(p) => p,
    };
    // SAFETY: the object is ours until freed below.
    let t = unsafe { &mut *p };
    if t.owner != obj.owner || t.seq != obj.seq || t.magic != MAGIC ^ p as u64 {
        sh.bad_tag.fetch_add(1, Relaxed);
    }
    t.magic = 0;
    if !sh.live.lock().unwrap().remove(&(p as usize)) {
        sh.bad_tag.fetch_add(1, Relaxed);
    }
    sh.frees.fetch_add(1, Relaxed);
    if by != obj.owner {
        sh.handed.fetch_add(1, Relaxed);
    }
    if this_cpu() != obj.cpu {
        sh.cross_cpu.fetch_add(1, Relaxed);
    }
    match obj.held {
        // SAFETY: allocated from this cache, freed once.
        Held::Cached(p) => unsafe { sh.cache.free(core::ptr::NonNull::new_unchecked(p)) },
        // SAFETY: from `Box::into_raw`, freed once.
        Held::Boxed(p) => drop(unsafe { Box::from_raw(p) }),
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

/// The CPUs to load and, of them, the ones to take offline.
fn plan() -> Result<(CpuMask, CpuMask), String> {
    let online = online_cpus();
    let load = match cmdline_param("vmtest.hotplug") {
        Some(list) => {
            let want: CpuMask = list
                .parse()
                .map_err(|e| format!("vmtest.hotplug={list}: {e}"))?;
            want.and(&online)
        }
        None => {
            let mut one = CpuMask::new();
            if let Some(last) = online.last() {
                one.set(last);
            }
            one
        }
    };
    // CPU 0 cannot go offline here, and a machine must keep a CPU besides the load.
    if load.is_empty() || load.test(0) || online.andnot(&load).is_empty() {
        return Err(format!(
            "needs online CPUs past 0 to load and one more to stay, found {online} \
             (load set {load})"
        ));
    }
    let mut off = CpuMask::new();
    let ids: Vec<usize> = load.iter().collect();
    for &cpu in ids.iter().rev().step_by(2) {
        off.set(cpu);
    }
    Ok((load, off))
}

/// Offline, rescan, drain, online, reuse, under load; then the object accounting.
pub fn run() {
    let (load, off) = match plan() {
        Ok(p) => p,
        Err(e) => {
            verdict("hotplug", false, format_args!("{e}"));
            return;
        }
    };
    let sh = Shared {
        cache: KmemCache::new("vm_hotplug", cpuslab::SlabFlags::NONE).expect("KmemCache::new"),
        live: Mutex::new(HashSet::new()),
        handoff: Mutex::new(VecDeque::new()),
        stop: AtomicBool::new(false),
        allocs: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        handed: AtomicU64::new(0),
        cross_cpu: AtomicU64::new(0),
        twice: AtomicU64::new(0),
        bad_tag: AtomicU64::new(0),
        no_memory: AtomicU64::new(0),
    };
    let cpus: Vec<usize> = load.iter().collect();
    // Rounds each pinned worker ran on its own CPU (by cpuslab's rseq CPU id).
    let on_cpu: Vec<AtomicU64> = cpus.iter().map(|_| AtomicU64::new(0)).collect();
    // Build the process's cpuset tree from the machine as it is now, before it changes.
    let _ = cpuset::Cpuset::top();

    std::thread::scope(|s| {
        let pinned: Vec<_> = cpus
            .iter()
            .zip(&on_cpu)
            .map(|(&cpu, ran)| {
                let sh = &sh;
                s.spawn(move || {
                    let mut pin = CpuMask::new();
                    pin.set(cpu);
                    confine(
                        &format!("hp_pin{cpu}"),
                        &pin,
                        &memory_nodes(),
                        CpusetFlags::NONE,
                    )?;
                    let mut w = Worker::new(sh, PINNED_ID + cpu as u32);
                    while !sh.stop.load(Relaxed) {
                        w.round();
                        if this_cpu() == cpu {
                            ran.fetch_add(1, Relaxed);
                        }
                    }
                    w.finish();
                    Ok::<(), String>(())
                })
            })
            .collect();
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
            || {
                on_cpu.iter().all(|r| r.load(Relaxed) >= WARM_ROUNDS)
                    && sh.allocs.load(Relaxed) >= 4000
            },
            Duration::from_secs(30),
        );
        let cold: Vec<usize> = cpus
            .iter()
            .zip(&on_cpu)
            .filter(|(_, r)| r.load(Relaxed) < WARM_ROUNDS)
            .map(|(&c, _)| c)
            .collect();
        let before: Vec<(usize, usize)> = off.iter().map(held_by).collect();
        let fewest = cpus
            .iter()
            .zip(&on_cpu)
            .map(|(&c, r)| (r.load(Relaxed), c))
            .min()
            .unwrap_or_default();
        let warm = Warm {
            load,
            ok: warmed,
            cold,
            fewest,
        };
        if offline_phase(&off, &warm, &before) {
            online_phase(&sh, &off);
        }

        sh.stop.store(true, Relaxed);
        for w in workers {
            if w.join().is_err() {
                verdict("hotplug.objects", false, format_args!("a worker panicked"));
            }
        }
        for p in pinned {
            match p.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => verdict("hotplug.objects", false, format_args!("pinned worker: {e}")),
                Err(_) => verdict(
                    "hotplug.objects",
                    false,
                    format_args!("pinned worker panicked"),
                ),
            }
        }
    });
    // What is still in the hand-off queue, freed here.
    let left_in_queue: Vec<Obj> = sh.handoff.lock().unwrap().drain(..).collect();
    for obj in left_in_queue {
        release(&sh, obj, 0);
    }

    let (allocs, frees) = (sh.allocs.load(Relaxed), sh.frees.load(Relaxed));
    let (handed, cross) = (sh.handed.load(Relaxed), sh.cross_cpu.load(Relaxed));
    let (twice, bad) = (sh.twice.load(Relaxed), sh.bad_tag.load(Relaxed));
    let no_mem = sh.no_memory.load(Relaxed);
    let left = sh.live.lock().unwrap().len();
    sh.cache.shrink();
    let in_use = sh.cache.active_objects();
    verdict(
        "hotplug.objects",
        twice == 0
            && bad == 0
            && no_mem == 0
            && allocs == frees
            && left == 0
            && in_use == 0
            && handed > 0
            && cross > 0,
        format_args!(
            "{allocs} objects allocated, {frees} freed by {} threads ({handed} by another \
             thread than their allocator, {cross} on another CPU); handed out twice: \
             {twice}; wrong tag on free: {bad}; allocation failures: {no_mem}; registry \
             left: {left}; cache objects in use after shrink: {in_use}",
            WORKERS as usize + cpus.len()
        ),
    );
}

/// The CPUs of `cpus` whose (pcp pages, array-cache objects) in `held` are not `(0, 0)`,
/// with their figures, or "none".
fn holding(cpus: &CpuMask, held: &[(usize, usize)]) -> String {
    let v: Vec<String> = cpus
        .iter()
        .zip(held)
        .filter(|(_, &h)| h != (0, 0))
        .map(|(c, h)| format!("cpu{c} {h:?}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

/// How the pinned workers' warm-up went.
struct Warm {
    /// The CPUs with a pinned worker.
    load: CpuMask,
    /// Every pinned worker ran [`WARM_ROUNDS`] rounds on its CPU in time.
    ok: bool,
    /// The CPUs whose pinned worker did not.
    cold: Vec<usize>,
    /// The fewest rounds a pinned worker ran on its CPU (as cpuslab's rseq CPU id saw
    /// it), and that CPU.
    fewest: (u64, usize),
}

/// Takes the CPUs of `off` offline under load and checks that rescan drained them.
fn offline_phase(off: &CpuMask, warm: &Warm, before: &[(usize, usize)]) -> bool {
    let cold = &warm.cold;
    if !warm.ok {
        verdict(
            "hotplug.offline",
            false,
            format_args!(
                "pinned workers that did not run {WARM_ROUNDS} rounds on their CPU in 30 s: \
                 {cold:?} (or the workers stalled)"
            ),
        );
        return false;
    }
    let start = Instant::now();
    for cpu in off.iter() {
        if let Err(e) = set_online(cpu, false) {
            verdict("hotplug.offline", false, format_args!("{e}"));
            return false;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let report = cpuset::rescan();
    let after: Vec<_> = off.iter().map(held_by).collect();
    std::thread::sleep(Duration::from_millis(500));
    let later: Vec<_> = off.iter().map(held_by).collect();
    let dead = cpuset::dead_cpus();
    let empty_before: Vec<usize> = off
        .iter()
        .zip(before)
        .filter(|(_, &(p, o))| p + o == 0)
        .map(|(c, _)| c)
        .collect();
    let (pages, objects) = before
        .iter()
        .fold((0, 0), |(p, o), &(bp, bo)| (p + bp, o + bo));
    let ok = off.is_subset(&report.offline_cpus)
        && off.is_subset(&dead)
        && empty_before.is_empty()
        && after.iter().all(|&h| h == (0, 0))
        && later.iter().all(|&h| h == (0, 0));
    verdict(
        "hotplug.offline",
        ok,
        format_args!(
            "pinned workers on CPUs {} each ran at least {} rounds on their CPU by rseq's \
             CPU id (fewest: cpu{}); CPUs {off} ({} of them) offline under load in \
             {took:.1} s; rescan: offline_cpus {}, moved_threads {}, emptied cpusets {}, \
             dead_cpus {dead}; before, they held \
             {pages} pcp pages and {objects} array-cache objects (CPUs holding nothing: \
             {empty_before:?}); still holding after rescan: {}; 0.5 s later: {}",
            warm.load,
            warm.fewest.0,
            warm.fewest.1,
            off.weight(),
            report.offline_cpus,
            report.moved_threads,
            report.emptied,
            holding(off, &after),
            holding(off, &later),
        ),
    );
    ok
}

/// Brings the CPUs of `off` back and checks that a thread in a cpuset of each runs and
/// caches there again.
fn online_phase(sh: &Shared, off: &CpuMask) {
    for cpu in off.iter() {
        if let Err(e) = set_online(cpu, true) {
            verdict("hotplug.online", false, format_args!("{e}"));
            return;
        }
    }
    let report = cpuset::rescan();
    cpuset::clear_dead_cpus(off);
    let results: Vec<(usize, Result<usize, String>)> = std::thread::scope(|s| {
        let threads: Vec<_> = off
            .iter()
            .map(|cpu| {
                let t = s.spawn(move || {
                    let mut one = CpuMask::new();
                    one.set(cpu);
                    confine(
                        &format!("hp_back{cpu}"),
                        &one,
                        &memory_nodes(),
                        CpusetFlags::NONE,
                    )?;
                    let mut w = Worker::new(sh, PINNED_ID + 2000 + cpu as u32);
                    let mut there = 0;
                    for _ in 0..BACK_ROUNDS {
                        w.round();
                        there += usize::from(this_cpu() == cpu);
                    }
                    // Freed here, on the CPU: its array caches fill again.
                    w.finish();
                    Ok::<_, String>(there)
                });
                (cpu, t)
            })
            .collect();
        threads
            .into_iter()
            .map(|(cpu, t)| {
                let r = t
                    .join()
                    .unwrap_or_else(|_| Err("the thread panicked".into()));
                (cpu, r)
            })
            .collect()
    });
    let mut bad = Vec::new();
    let (mut pages, mut objects) = (0, 0);
    for (cpu, r) in &results {
        let cached = held_by(*cpu);
        pages += cached.0;
        objects += cached.1;
        match r {
            Ok(there) if *there == BACK_ROUNDS && cached.0 > 0 && cached.1 > 0 => {}
            Ok(there) => bad.push(format!(
                "cpu{cpu}: ran there {there} of {BACK_ROUNDS} rounds, holds {cached:?}"
            )),
            Err(e) => bad.push(format!("cpu{cpu}: {e}")),
        }
    }
    let ok = off.is_subset(&report.online_cpus) && bad.is_empty();
    verdict(
        "hotplug.online",
        ok,
        format_args!(
            "CPUs {off} online again; rescan: online_cpus {}; a thread in a cpuset of each \
             ran {BACK_ROUNDS} rounds there, after which they hold {pages} pcp pages and \
             {objects} array-cache objects; wrong: {}",
            report.online_cpus,
            if bad.is_empty() {
                "none".into()
            } else {
                bad.join("; ")
            }
        ),
    );
}
