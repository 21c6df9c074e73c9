//! The per-CPU allocator: random areas against a model with every CPU's copy written
//! and checked, statistics against the model, depopulation seen in resident memory,
//! the typed users (`PerCpu`, `PercpuCounter`, `PercpuRwSem`) under threads.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;

use common::{check, fill, Rng};
use cpuslab::percpu::stats::{for_each_chunk, percpu_stats, ChunkStats};
use cpuslab::percpu::{
    self, alloc_percpu, alloc_reserved_percpu, free_percpu, LocalLock, PcpuPtr, PerCpu,
    PercpuCounter, PercpuError, PercpuRwSem, PCPU_EMPTY_POP_PAGES_HIGH, PCPU_MAX_ALLOC_SIZE,
    PCPU_MIN_ALLOC_SIZE, PCPU_RESERVED_SIZE, PCPU_UNIT_SIZE,
};
use cpuslab::topology::nr_cpu_ids;

/// The tests count areas, chunks and pages: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn round(size: usize) -> usize {
    size.div_ceil(PCPU_MIN_ALLOC_SIZE) * PCPU_MIN_ALLOC_SIZE
}

fn chunks() -> Vec<ChunkStats> {
    let mut v = Vec::new();
    for_each_chunk(|c| v.push(*c));
    v
}

/// Bytes allocated (per unit) in the dynamic chunks.
fn dynamic_used_bytes() -> usize {
    chunks()
        .iter()
        .filter(|c| !c.reserved)
        .map(|c| c.nr_pages * 4096 - c.free_bytes)
        .sum()
}

/// Checks the per-chunk figures against each other and against the global ones.
fn check_chunk_stats() {
    let s = percpu_stats();
    let cs = chunks();
    assert_eq!(cs.iter().filter(|c| c.reserved).count(), 1);
    assert_eq!(cs.iter().filter(|c| c.first).count(), 1);
    assert_eq!(cs.len() as u32, s.nr_chunks + 1, "chunks: {cs:?}");
    assert_eq!(
        cs.iter().map(|c| c.nr_alloc as u64).sum::<u64>(),
        s.nr_cur_alloc
    );
    assert_eq!(
        cs.iter().map(|c| c.populated_pages).sum::<usize>(),
        s.populated_pages
    );
    assert_eq!(
        cs.iter()
            .filter(|c| !c.reserved)
            .map(|c| c.empty_pop_pages)
            .sum::<usize>(),
        s.empty_pop_pages
    );
    for c in &cs {
        assert!(c.contig_bytes <= c.free_bytes && c.free_bytes <= c.nr_pages * 4096);
        assert_eq!(c.sum_frag, c.free_bytes - c.contig_bytes);
        assert!(c.max_frag <= c.contig_bytes && c.max_frag <= c.sum_frag);
        assert!(c.populated_pages <= c.nr_pages && c.empty_pop_pages <= c.populated_pages);
        assert!(c.cur_min_alloc <= c.cur_med_alloc && c.cur_med_alloc <= c.cur_max_alloc);
        assert!(c.cur_max_alloc <= c.max_alloc_size);
        if c.nr_alloc == 0 {
            assert_eq!(c.free_bytes, c.nr_pages * 4096);
        }
    }
}

struct Area {
    p: PcpuPtr,
    size: usize,
    salt: u64,
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => 1 + rng.below(64) as usize,
        70..=94 => 65 + rng.below(960) as usize,
        _ => 1025 + rng.below(PCPU_MAX_ALLOC_SIZE as u64 - 1024) as usize,
    }
}

/// Allocates, checks placement and zeroing in every CPU's unit, fills every copy.
fn alloc_area(rng: &mut Rng, live: &BTreeMap<usize, Area>) -> Area {
    let size = random_size(rng);
    let align = 1usize << rng.below(13);
    let p = alloc_percpu(size, align)
        .unwrap_or_else(|e| panic!("alloc_percpu({size}, {align}) failed: {e}"));
    let addr = p.as_ptr() as usize;
    assert_eq!(
        addr % align,
        0,
        "area of {size} bytes misaligned for {align}"
    );
    if let Some((&prev, a)) = live.range(..=addr).next_back() {
        assert!(
            prev + a.size <= addr,
            "new area {addr:#x}+{size} overlaps {prev:#x}+{}",
            a.size
        );
    }
    if let Some((&next, _)) = live.range(addr..).next() {
        assert!(
            addr + size <= next,
            "new area {addr:#x}+{size} overlaps {next:#x}"
        );
    }
    let salt = rng.next();
    for cpu in 0..nr_cpu_ids() {
        let copy = p.per_cpu_ptr(cpu);
        assert_eq!(copy as usize, addr + cpu * PCPU_UNIT_SIZE);
        // SAFETY: every CPU's copy is `size` bytes of ours.
        let bytes = unsafe { std::slice::from_raw_parts(copy, size) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "CPU {cpu}'s copy of a new area is not zeroed"
        );
        // SAFETY: as above.
        unsafe { fill(copy, size, salt ^ cpu as u64) };
    }
    assert!(p.per_cpu_ptr(nr_cpu_ids()).is_null());
    Area { p, size, salt }
}

/// Checks every CPU's copy still holds its pattern, then frees the area.
fn free_area(a: Area) {
    for cpu in 0..nr_cpu_ids() {
        // SAFETY: filled by `alloc_area`, still live.
        unsafe { check(a.p.per_cpu_ptr(cpu), a.size, a.salt ^ cpu as u64) };
    }
    // SAFETY: live, freed once.
    unsafe { free_percpu(a.p) };
}

#[test]
fn random_areas_against_model() {
    let _g = serial();
    // The global allocator's caches of this CPU allocate their full entry arrays from
    // percpu when they first fill their small ones: before the counts, not among them.
    common::settle_entry_arrays();
    // Settle earlier tests' leftovers so the baseline is steady.
    percpu::balance();
    let before = percpu_stats();
    let used_before = dynamic_used_bytes();
    let mut rng = Rng::new(0x5eed);
    let mut live: BTreeMap<usize, Area> = BTreeMap::new();
    let mut keys: Vec<usize> = Vec::new();
    let (mut allocs, mut frees, mut max_live) = (0u64, 0u64, 0u64);
    let (mut min_size, mut max_size) = (usize::MAX, 0);
    for op in 0..24_000 {
        let grow = live.len() < 64 || (live.len() < 1500 && rng.below(100) < 55);
        if grow {
            let a = alloc_area(&mut rng, &live);
            min_size = min_size.min(round(a.size));
            max_size = max_size.max(round(a.size));
            let addr = a.p.as_ptr() as usize;
            assert!(live.insert(addr, a).is_none());
            keys.push(addr);
            allocs += 1;
            max_live = max_live.max(live.len() as u64);
        } else {
            let i = rng.below(keys.len() as u64) as usize;
            let addr = keys.swap_remove(i);
            free_area(live.remove(&addr).unwrap());
            frees += 1;
        }
        if op % 2000 == 1999 {
            let s = percpu_stats();
            assert_eq!(s.nr_alloc - before.nr_alloc, allocs);
            assert_eq!(s.nr_dealloc - before.nr_dealloc, frees);
            assert_eq!(s.nr_cur_alloc - before.nr_cur_alloc, live.len() as u64);
            assert!(s.nr_max_alloc >= before.nr_cur_alloc + max_live);
            assert!(s.nr_max_chunks >= s.nr_chunks);
            let live_bytes: usize = live.values().map(|a| round(a.size)).sum();
            assert_eq!(dynamic_used_bytes() - used_before, live_bytes);
            assert!(s.empty_pop_pages <= PCPU_EMPTY_POP_PAGES_HIGH);
            check_chunk_stats();
        }
    }
    let s = percpu_stats();
    assert!(s.min_alloc_size <= min_size && s.min_alloc_size >= PCPU_MIN_ALLOC_SIZE);
    assert!(s.max_alloc_size >= max_size && s.max_alloc_size <= PCPU_MAX_ALLOC_SIZE);
    assert!(
        s.nr_max_chunks > 2,
        "the model run should need several chunks"
    );
    for (_, a) in std::mem::take(&mut live) {
        free_area(a);
    }
    let s = percpu_stats();
    assert_eq!(s.nr_cur_alloc, before.nr_cur_alloc);
    assert_eq!(dynamic_used_bytes(), used_before);
    // Wholly empty chunks beyond one went back.
    let empty_dynamic = chunks()
        .iter()
        .filter(|c| !c.reserved && c.nr_alloc == 0)
        .count();
    assert!(empty_dynamic <= 1, "{empty_dynamic} empty chunks kept");
    check_chunk_stats();
}

#[test]
fn bad_requests_get_errors() {
    let _g = serial();
    assert_eq!(alloc_percpu(0, 8), Err(PercpuError::ZeroSize));
    assert_eq!(
        alloc_percpu(PCPU_MAX_ALLOC_SIZE + 1, 8),
        Err(PercpuError::TooLarge(PCPU_MAX_ALLOC_SIZE + 1))
    );
    assert_eq!(
        alloc_percpu(usize::MAX, 8),
        Err(PercpuError::TooLarge(usize::MAX))
    );
    for align in [0, 3, 12, 8192, 1 << 40] {
        assert_eq!(alloc_percpu(8, align), Err(PercpuError::Alignment(align)));
    }
    assert_eq!(alloc_reserved_percpu(0, 8), Err(PercpuError::ZeroSize));
    let msg = PercpuError::TooLarge(40000).to_string();
    assert!(msg.contains("40000") && msg.contains("32768"), "{msg}");
    assert!(PercpuError::Alignment(3).to_string().contains('3'));
    assert!(!PercpuError::ZeroSize.to_string().is_empty());
    // The limits themselves are fine.
    let p = alloc_percpu(PCPU_MAX_ALLOC_SIZE, 4096).unwrap();
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    // SAFETY: allocated above, freed once.
    unsafe { free_percpu(p) };
    #[repr(align(8192))]
    struct Overaligned(#[allow(dead_code)] u8);
    assert_eq!(
        PerCpu::<Overaligned>::new_with(|_| Overaligned(0)).err(),
        Some(PercpuError::Alignment(8192))
    );
    assert_eq!(
        PerCpu::<[u8; 40000]>::new_with(|_| [0; 40000]).err(),
        Some(PercpuError::TooLarge(40000))
    );
}

#[test]
fn reserved_chunk_serves_reserved_areas_only() {
    let _g = serial();
    let base = || {
        chunks()
            .into_iter()
            .find(|c| c.reserved)
            .expect("reserved chunk")
    };
    let r0 = base();
    assert_eq!(r0.nr_pages * 4096, PCPU_RESERVED_SIZE);
    let dynamic_before = dynamic_used_bytes();
    let mut areas = Vec::new();
    let mut rng = Rng::new(7);
    let err = loop {
        match alloc_reserved_percpu(256, 64) {
            Ok(p) => {
                let a = p.as_ptr() as usize;
                assert!(a >= r0.base_addr && a + 256 <= r0.base_addr + PCPU_RESERVED_SIZE);
                let salt = rng.next();
                for cpu in 0..nr_cpu_ids() {
                    // SAFETY: 256 bytes of ours in every unit.
                    unsafe { fill(p.per_cpu_ptr(cpu), 256, salt ^ cpu as u64) };
                }
                areas.push((p, salt));
                assert!(areas.len() <= PCPU_RESERVED_SIZE / 256);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, PercpuError::ReservedFull(256));
    assert_eq!(
        areas.len(),
        r0.free_bytes / 256,
        "the reserved chunk was not filled"
    );
    assert_eq!(base().free_bytes, r0.free_bytes - areas.len() * 256);
    assert_eq!(dynamic_used_bytes(), dynamic_before);
    for (p, salt) in areas {
        for cpu in 0..nr_cpu_ids() {
            // SAFETY: filled above.
            unsafe { check(p.per_cpu_ptr(cpu), 256, salt ^ cpu as u64) };
        }
        // SAFETY: live, freed once.
        unsafe { free_percpu(p) };
    }
    assert_eq!(base().free_bytes, r0.free_bytes);
    check_chunk_stats();
}

/// Resident pages among the given page-aligned ranges (unmapped ones count as not
/// resident).
fn resident_pages(ranges: &[(usize, usize)]) -> usize {
    let mut vec = vec![0u8; 16];
    let mut n = 0;
    for &(addr, len) in ranges {
        let pages = len / 4096;
        if vec.len() < pages {
            vec.resize(pages, 0);
        }
        // SAFETY: mincore writes one byte per page into `vec`.
        let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc == 0 {
            n += vec[..pages].iter().filter(|&&b| b & 1 != 0).count();
        }
    }
    n
}

/// The copies on the given CPUs of page-sized areas, as ranges for [`resident_pages`].
fn page_copies(areas: &[PcpuPtr], cpus: &[usize]) -> Vec<(usize, usize)> {
    areas
        .iter()
        .flat_map(|p| cpus.iter().map(move |&c| (p.per_cpu_ptr(c) as usize, 4096)))
        .collect()
}

/// A lazy area (`alloc_percpu_lazy`, what the array caches' entries use) commits
/// nothing up front: its pages become resident only in the units whose CPU copy is
/// written, `resident_pages` in the stats follows them, and freeing it gives them back.
/// (A lazy area may land in one of the few empty pages kept populated for the next
/// allocation, [`PCPU_EMPTY_POP_PAGES_HIGH`] at most: those are resident already.)
#[test]
fn lazy_areas_commit_only_what_is_touched() {
    let _g = serial();
    percpu::balance();
    let ncpu = nr_cpu_ids();
    const N: usize = 32;
    let spare = PCPU_EMPTY_POP_PAGES_HIGH;
    let populated_before = percpu_stats().populated_pages;
    let areas: Vec<PcpuPtr> = (0..N)
        .map(|_| percpu::alloc_percpu_lazy(4096, 4096).expect("page-sized lazy area"))
        .collect();
    let ranges = |cpus: &[usize]| page_copies(&areas, cpus);
    let all: Vec<usize> = (0..ncpu).collect();
    let committed = resident_pages(&ranges(&all));
    assert!(
        committed <= spare * ncpu,
        "{committed} lazy pages committed"
    );
    assert!(
        percpu_stats().populated_pages <= populated_before,
        "a lazy area populated pages"
    );
    // CPU 0's copies only: written, read back, resident; the other units untouched.
    let resident_before = percpu_stats().resident_pages;
    for (i, p) in areas.iter().enumerate() {
        let c = p.per_cpu_ptr(0).cast::<u64>();
        // SAFETY: CPU 0's copy of a live 4096-byte area.
        unsafe {
            for w in 0..512 {
                c.add(w).write((i * 512 + w) as u64);
            }
        }
    }
    for (i, p) in areas.iter().enumerate() {
        let c = p.per_cpu_ptr(0).cast::<u64>();
        // SAFETY: as above.
        assert!((0..512).all(|w| unsafe { c.add(w).read() } == (i * 512 + w) as u64));
    }
    assert_eq!(resident_pages(&ranges(&[0])), N);
    if ncpu > 1 {
        let others: Vec<usize> = (1..ncpu).collect();
        assert!(resident_pages(&ranges(&others)) <= spare * (ncpu - 1));
    }
    assert!(
        percpu_stats().resident_pages >= resident_before + N - spare,
        "the stats missed the touched pages"
    );
    for &p in &areas {
        // SAFETY: allocated above, freed once.
        unsafe { free_percpu(p) };
    }
    let left = resident_pages(&ranges(&[0]));
    assert!(left <= spare, "{left} freed lazy pages stayed resident");
}

/// An area from `alloc_percpu` reads as zero in every unit, and commits only the copies
/// that are written: one CPU's copy written leaves the others off the process's
/// memory, so a possible CPU that never runs a thread costs nothing. Freed and taken
/// again, its copies read as zero again: the written one was zeroed, and the others,
/// which no CPU wrote, were neither written nor read (a read maps the kernel's zero
/// page, which `mincore` counts). Residency is measured before anything reads them.
#[test]
fn areas_read_zero_and_commit_only_the_copies_written() {
    let _g = serial();
    percpu::balance();
    let ncpu = nr_cpu_ids();
    const N: usize = 16;
    let spare = PCPU_EMPTY_POP_PAGES_HIGH;
    let take = || -> Vec<PcpuPtr> {
        (0..N)
            .map(|_| alloc_percpu(4096, 4096).expect("page-sized area"))
            .collect()
    };
    let copies = page_copies;
    let zero = |areas: &[PcpuPtr], cpus: &[usize]| {
        areas.iter().all(|p| {
            cpus.iter().all(|&cpu| {
                // SAFETY: `cpu`'s copy of a live 4096-byte area.
                let b = unsafe { std::slice::from_raw_parts(p.per_cpu_ptr(cpu), 4096) };
                b.iter().all(|&x| x == 0)
            })
        })
    };
    let others: Vec<usize> = (1..ncpu).collect();
    let areas = take();
    let committed = resident_pages(&copies(&areas, &others));
    assert!(
        committed <= spare * others.len(),
        "{committed} copies committed by the allocation"
    );
    assert!(zero(&areas, &[0]), "a new area read other than zero");
    for p in &areas {
        // SAFETY: CPU 0's copy of a live 4096-byte area.
        unsafe { p.per_cpu_ptr(0).write_bytes(0x5A, 4096) };
    }
    assert_eq!(resident_pages(&copies(&areas, &[0])), N);
    let committed = resident_pages(&copies(&areas, &others));
    assert!(
        committed <= spare * others.len(),
        "{committed} copies of other CPUs committed, none written"
    );
    for &p in &areas {
        // SAFETY: allocated above, freed once.
        unsafe { free_percpu(p) };
    }
    let again = take();
    let committed = resident_pages(&copies(&again, &others));
    assert!(
        committed <= spare * others.len(),
        "zeroing touched {committed} copies no CPU wrote"
    );
    let all: Vec<usize> = (0..ncpu).collect();
    assert!(
        zero(&again, &all),
        "a reused area kept what its last user wrote"
    );
    for &p in &again {
        // SAFETY: allocated above, freed once.
        unsafe { free_percpu(p) };
    }
    check_chunk_stats();
}

#[test]
fn depopulation_lowers_resident_memory() {
    let _g = serial();
    percpu::balance();
    let ncpu = nr_cpu_ids();
    let before = percpu_stats();
    const N: usize = 48;
    let areas: Vec<PcpuPtr> = (0..N)
        .map(|_| alloc_percpu(4096, 4096).expect("page-sized area"))
        .collect();
    let ranges = page_copies(&areas, &(0..ncpu).collect::<Vec<_>>());
    // Nothing committed up front (a page an earlier area wrote may be reused, at most
    // the few kept populated); every unit's copy written, all resident.
    let spare = PCPU_EMPTY_POP_PAGES_HIGH * ncpu;
    let committed = resident_pages(&ranges);
    assert!(
        committed <= spare,
        "{committed} pages committed before a write"
    );
    for &p in &areas {
        for cpu in 0..ncpu {
            // SAFETY: `cpu`'s copy of a live 4096-byte area.
            unsafe { p.per_cpu_ptr(cpu).write_bytes(0xA5, 4096) };
        }
    }
    assert_eq!(resident_pages(&ranges), N * ncpu);
    let s = percpu_stats();
    assert!(
        s.nr_chunks >= before.nr_chunks + 2,
        "48 pages need several chunks"
    );
    assert!(s.populated_pages >= N);
    let rss_full = common::rss_bytes();
    for &p in &areas {
        // SAFETY: allocated above, freed once.
        unsafe { free_percpu(p) };
    }
    // The frees ran the balance work: at most the high watermark of empty pages stays
    // populated, and empty chunks beyond one are gone.
    let left = resident_pages(&ranges);
    assert!(
        left <= PCPU_EMPTY_POP_PAGES_HIGH * ncpu,
        "{left} of {} pages still resident",
        N * ncpu
    );
    let s = percpu_stats();
    assert!(s.empty_pop_pages <= PCPU_EMPTY_POP_PAGES_HIGH);
    // The allocator itself (the harness's threads, a cache made meanwhile) may have
    // taken an area in one of the new chunks while these were live, which keeps that
    // chunk: only those and one empty chunk may stay.
    let empty = chunks()
        .iter()
        .filter(|c| !c.reserved && c.nr_alloc == 0)
        .count();
    assert!(empty <= 1, "{empty} empty chunks kept");
    let taken_meanwhile = s.nr_cur_alloc.saturating_sub(before.nr_cur_alloc) as u32;
    assert!(
        s.nr_chunks <= before.nr_chunks + 1 + taken_meanwhile,
        "{} chunks, {} before, {taken_meanwhile} areas taken meanwhile",
        s.nr_chunks,
        before.nr_chunks
    );
    let rss_empty = common::rss_bytes();
    let expected = (N - PCPU_EMPTY_POP_PAGES_HIGH) * ncpu * 4096;
    assert!(
        rss_full.saturating_sub(rss_empty) >= expected / 2,
        "RSS went from {rss_full} to {rss_empty}, expected a drop near {expected}"
    );
    check_chunk_stats();
}

#[test]
fn percpu_typed_copies() {
    let _g = serial();
    let ncpu = nr_cpu_ids();
    let mut p = PerCpu::new_with(|cpu| cpu as u64 * 10).unwrap();
    for cpu in 0..ncpu {
        assert_eq!(p.get(cpu), Some(&(cpu as u64 * 10)));
    }
    assert!(p.get(ncpu).is_none());
    let (cpu, v) = p.this_cpu_with_id();
    assert_eq!(*v, cpu as u64 * 10);
    assert_eq!(p.iter().count(), ncpu);
    for (cpu, v) in p.iter_mut() {
        *v += cpu as u64;
    }
    assert_eq!(
        p.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        (0..ncpu as u64).map(|c| c * 11).collect::<Vec<_>>()
    );
    *p.get_mut(0).unwrap() = 99;
    assert_eq!(p.get(0), Some(&99));

    // Every copy is dropped once.
    let drops = Arc::new(AtomicUsize::new(0));
    struct D(Arc<AtomicUsize>);
    impl Drop for D {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(PerCpu::new_with(|_| D(drops.clone())).unwrap());
    assert_eq!(drops.load(Ordering::Relaxed), ncpu);

    // Zero-sized types get an area too.
    let unit = PerCpu::<()>::new().unwrap();
    assert_eq!(unit.iter().count(), ncpu);

    // Threads counting on their CPU's copy lose nothing.
    let hits = Arc::new(PerCpu::<AtomicU64>::new().unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let hits = hits.clone();
            thread::spawn(move || {
                for _ in 0..50_000 {
                    hits.this_cpu().fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total: u64 = hits.iter().map(|(_, h)| h.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 200_000);

    // The per-CPU discipline: a copy's lock is tried, and a held one says no.
    let locked = PerCpu::<LocalLock<u64>>::new().unwrap();
    {
        let mut g = locked.get(0).unwrap().try_lock().unwrap();
        *g += 5;
        // A failed try leaves the holder's lock held.
        assert!(locked.get(0).unwrap().try_lock().is_none());
        assert!(locked.get(0).unwrap().try_lock().is_none());
    }
    assert_eq!(*locked.get(0).unwrap().try_lock().unwrap(), 5);
    let mut g = locked.try_lock_this_cpu().unwrap();
    *g += 1;
}

/// Runs `THREADS` threads adding `OPS` amounts from `amount` to `c`; returns what they
/// added in all.
fn add_from_threads(
    c: &Arc<PercpuCounter>,
    seed: u64,
    amount: fn(&mut Rng) -> i64,
    start: Option<&Arc<Barrier>>,
) -> Vec<thread::JoinHandle<i64>> {
    (0..4)
        .map(|t| {
            let c = c.clone();
            let start = start.cloned();
            thread::spawn(move || {
                let mut rng = Rng::new(seed + t);
                let mut mine = 0i64;
                if let Some(b) = start {
                    b.wait();
                }
                for _ in 0..100_000 {
                    let a = amount(&mut rng);
                    c.add(a);
                    mine += a;
                }
                mine
            })
        })
        .collect()
}

#[test]
fn counter_sums_exactly_under_threads() {
    let _g = serial();
    let c = Arc::new(PercpuCounter::new(1000).unwrap());
    // Signed amounts, some past the batch: the exact sum is what was added.
    let signed = |rng: &mut Rng| rng.below(41) as i64 - 20 + (rng.below(500) == 0) as i64 * 400;
    let handles = add_from_threads(&c, 1, signed, None);
    let expected: i64 = 1000 + handles.into_iter().map(|h| h.join().unwrap()).sum::<i64>();
    assert_eq!(c.sum(), expected);
    // A delta is folded once it reaches the batch, but waits while another fold holds
    // the lock until it reaches twice the batch, and one add may take it up to 420
    // past where it was: what `read` misses is below that much a CPU.
    let slack = (2 * c.batch() + 420) * nr_cpu_ids() as i64;
    assert!(
        (c.read() - expected).abs() < slack,
        "read {} vs {expected}",
        c.read()
    );
    assert_eq!(c.compare(expected), std::cmp::Ordering::Equal);
    assert_eq!(c.compare(expected + 1), std::cmp::Ordering::Less);
    assert_eq!(c.compare(i64::MIN / 2), std::cmp::Ordering::Greater);

    // Non-negative amounts with a watcher: exact sums taken while threads add never
    // go down. A fold caught half-done (the delta in neither place) would show as a
    // drop of a whole batch.
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(5));
    let base = c.sum();
    let positive = |rng: &mut Rng| rng.below(21) as i64 + (rng.below(500) == 0) as i64 * 400;
    let handles = add_from_threads(&c, 11, positive, Some(&start));
    let watcher = {
        let (c, done) = (c.clone(), done.clone());
        thread::spawn(move || {
            let mut prev = c.sum();
            let mut sums = 0u64;
            // At least one sum after the first, however late this thread runs.
            loop {
                let s = c.sum();
                assert!(s >= prev, "exact sum fell from {prev} to {s}");
                prev = s;
                sums += 1;
                if done.load(Ordering::Relaxed) {
                    break;
                }
            }
            sums
        })
    };
    start.wait();
    let added: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 0);
    assert_eq!(c.sum(), base + added);

    c.set(-7);
    assert_eq!(c.sum(), -7);
    assert_eq!(c.sum_positive(), 0);
    c.inc();
    c.sub(3);
    assert_eq!(c.sum(), -9);
}

#[test]
fn rwsem_never_lets_a_reader_overlap_a_writer() {
    let _g = serial();
    const READERS: usize = 4;
    const WRITERS: usize = 2;
    const WRITES: u64 = 300;
    struct Shared {
        sem: PercpuRwSem,
        readers_inside: AtomicI64,
        writer_inside: AtomicBool,
        a: AtomicU64,
        b: AtomicU64,
        writers_left: AtomicUsize,
    }
    let sh = Arc::new(Shared {
        sem: PercpuRwSem::new().unwrap(),
        readers_inside: AtomicI64::new(0),
        writer_inside: AtomicBool::new(false),
        a: AtomicU64::new(0),
        b: AtomicU64::new(0),
        writers_left: AtomicUsize::new(WRITERS),
    });
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let sh = sh.clone();
            thread::spawn(move || {
                let mut reads = 0u64;
                while sh.writers_left.load(Ordering::Relaxed) > 0 || reads < 1000 {
                    let _r = sh.sem.down_read();
                    sh.readers_inside.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        !sh.writer_inside.load(Ordering::Relaxed),
                        "reader inside with a writer"
                    );
                    let (a, b) = (sh.a.load(Ordering::Relaxed), sh.b.load(Ordering::Relaxed));
                    assert_eq!(a, b, "reader saw a half-done write");
                    sh.readers_inside.fetch_sub(1, Ordering::Relaxed);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let sh = sh.clone();
            thread::spawn(move || {
                for i in 0..WRITES {
                    let _w = sh.sem.down_write();
                    assert!(
                        !sh.writer_inside.swap(true, Ordering::Relaxed),
                        "two writers"
                    );
                    assert_eq!(
                        sh.readers_inside.load(Ordering::Relaxed),
                        0,
                        "writer with readers"
                    );
                    assert!(sh.sem.try_down_read().is_none());
                    let v = (w as u64) << 32 | i;
                    sh.a.store(v, Ordering::Relaxed);
                    std::hint::spin_loop();
                    sh.b.store(v, Ordering::Relaxed);
                    assert_eq!(
                        sh.readers_inside.load(Ordering::Relaxed),
                        0,
                        "writer with readers"
                    );
                    sh.writer_inside.store(false, Ordering::Relaxed);
                }
                sh.writers_left.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    for h in readers {
        assert!(h.join().unwrap() >= 1000);
    }
    assert!(!sh.sem.is_write_locked());
    // Many readers at once are fine.
    let r1 = sh.sem.down_read();
    let r2 = sh.sem.try_down_read().expect("no writer around");
    drop((r1, r2));
    let w = sh.sem.down_write();
    assert!(sh.sem.try_down_read().is_none());
    drop(w);
    assert!(sh.sem.try_down_read().is_some());
}

#[test]
fn stats_report_reads_like_the_kernels() {
    let _g = serial();
    let p = alloc_percpu(100, 8).unwrap();
    let mut out = String::new();
    cpuslab::stats::write_percpu_stats(&mut out).unwrap();
    let s = cpuslab::stats::percpu_stats();
    for needle in [
        "Percpu Memory Statistics",
        "Allocation Info:",
        "Global Stats:",
        "Per Chunk Stats:",
        "<- Reserved Chunk",
        "<- First Chunk",
        "contig_bytes",
        "populated_pages",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    let line = |name: &str| -> u64 {
        let l = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line"));
        l.rsplit(':').next().unwrap().trim().parse().unwrap()
    };
    assert_eq!(line("unit_size"), PCPU_UNIT_SIZE as u64);
    assert_eq!(line("nr_alloc"), s.nr_alloc);
    assert_eq!(line("nr_cur_alloc"), s.nr_cur_alloc);
    assert_eq!(line("nr_chunks"), s.nr_chunks as u64);
    assert_eq!(
        out.matches("\nChunk: ").count() + out.starts_with("Chunk: ") as usize,
        s.nr_chunks as usize + 1
    );
    assert!(s.nr_cur_alloc >= 1);
    // SAFETY: allocated above, freed once.
    unsafe { free_percpu(p) };
    assert_eq!(
        cpuslab::stats::percpu_stats().nr_cur_alloc,
        s.nr_cur_alloc - 1
    );
}
