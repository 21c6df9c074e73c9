//! Remote frees: a small object freed on another CPU than the one whose array cache
//! took it from its slab goes back to that CPU, as mimalloc's frees of another thread's
//! blocks go back to their page's owner.
//!
//! Objects smaller than a cache line share lines with their neighbours. A CPU's refill
//! takes runs of neighbours from one slab, so its allocations write lines no other CPU
//! writes, until objects cross: a block that CPU A allocated and CPU B freed went on
//! top of B's array cache, and B's next allocation wrote it while A went on writing its
//! neighbours, both CPUs on one line. A server's requests, parsed on one worker and
//! answered on another, mixed every small class that way: `tokio-server` on 2 CPUs
//! ran at 3.4 s of CPU time against 2.6 s with both workers on one CPU, and at 3.0 s
//! with every class under 64 bytes rounded to 64.
//!
//! So each slab page of such a cache records the CPU that last took objects of its
//! slab from the node's lists into its array cache (a refill from the shared cache
//! leaves the owner as it was) (`Page::owner`, set by [`claim_slab`](RawCache::claim_slab)), and a free of
//! one of them on another CPU pushes it onto that CPU's *inbox*: a lock-free stack
//! linked through the objects' first words, one word per cache and CPU with the
//! head's address and the count. The owner's next refill takes its whole inbox before
//! it goes to the node (`alloc_refill_rseq`, `cache_alloc_refill`), so its objects come
//! home while their lines may still be in its data cache. A push is one
//! compare-and-swap on the owner's word, where a free to the CPU's own cache is a
//! restartable sequence: the same trade mimalloc makes.
//!
//! An inbox holds at most [`inbox_bound`](RawCache::inbox_bound) objects (256, or the
//! cache's tuned limit where lower): the free that
//! finds it full takes it all and sends it, with its own object, to the node, so a CPU
//! that stopped allocating (its thread moved) holds little. The reaper, shrinking and
//! a CPU's drain empty inboxes to the node as they do alien caches.

use core::sync::atomic::{AtomicU64, Ordering};

use super::RawCache;
use crate::page::{self, arena, Page};
use crate::percpu::{self, PCPU_UNIT_SIZE};
use crate::slab::transfer::{ObjBuf, FLUSH_MAX};
use crate::sys;
use crate::topology;

/// Bits of an inbox word that hold the head's address (user addresses are below
/// 2^48); the count of objects sits above them.
const PTR_BITS: u32 = 48;
/// The head's part of an inbox word.
const PTR_MASK: u64 = (1 << PTR_BITS) - 1;

/// Most CPUs whose index (plus one) a page's owner byte holds; past it a cache keeps
/// no inboxes and every free stays on the freeing CPU.
pub(crate) const MAX_OWNER_CPUS: usize = 254;

/// Whether `obj`, an object of a slab page, may belong on another CPU's inbox than
/// `cpu`'s: its page names an owner, and it is not `cpu`. For the free fast paths,
/// which then leave the object to the slow one ([`RawCache::free_remote`] decides).
/// The byte of a page that never had an owner is 0; one left from an earlier slab of
/// the page names a CPU all the same, which only sends the object to that CPU's inbox
/// of the freeing cache.
///
/// # Safety
/// `obj` lies in an arena page that the zones hand out (its descriptor is mapped).
#[inline(always)]
pub(crate) unsafe fn owned_elsewhere(obj: *const u8, cpu: usize) -> bool {
    // SAFETY: descriptors of arena pages are always mapped (the contract).
    let owner = unsafe { (*page::virt_to_page(obj)).owner.load(Ordering::Relaxed) };
    owner != 0 && owner as usize != cpu.wrapping_add(1)
}

/// Marks the path that calls it as rarely taken, for the layout of the fast paths:
/// the test for a small class falls through for every other one.
#[cold]
#[inline(always)]
pub(crate) fn unlikely() {}

impl RawCache {
    /// CPU `cpu`'s inbox, when this cache keeps inboxes and a thread worked on `cpu`
    /// (only such a CPU owns slabs, so only its inbox can hold anything; the others are
    /// not read, which would map pages for them: see `percpu::used`).
    #[inline(always)]
    fn inbox(&self, cpu: usize) -> Option<&AtomicU64> {
        let base = self.inboxes.load(Ordering::Acquire);
        if base.is_null() || cpu >= topology::nr_cpu_ids() || !percpu::cpu_used(cpu) {
            return None;
        }
        // SAFETY: a percpu area of one word per possible CPU (see `setup_in`), alive
        // while the cache is set up.
        Some(unsafe { &*base.byte_add(cpu * PCPU_UNIT_SIZE) })
    }

    /// Whether this cache returns remote frees to their owners.
    #[inline(always)]
    pub(crate) fn has_inboxes(&self) -> bool {
        !self.inboxes.load(Ordering::Relaxed).is_null()
    }

    /// How many CPUs may own slabs of this cache: those below [`MAX_OWNER_CPUS`], for
    /// a cache that keeps inboxes; 0 otherwise.
    pub(super) fn owner_cpus(&self) -> usize {
        if self.has_inboxes() {
            topology::nr_cpu_ids().min(MAX_OWNER_CPUS)
        } else {
            0
        }
    }

    /// The CPU [`claim_slab`](Self::claim_slab) would record now: the calling one, for
    /// a cache that keeps inboxes and a CPU a page's owner byte can name.
    #[inline]
    pub(super) fn claimer(&self) -> Option<usize> {
        if !self.has_inboxes() {
            return None;
        }
        let cpu = sys::cpu::current();
        (cpu < MAX_OWNER_CPUS).then_some(cpu)
    }

    /// The CPU that last claimed `slab`, for a cache that keeps inboxes (a slab never
    /// claimed may name one from an earlier slab of its page, which does no harm:
    /// only the list it waits on while partial follows it).
    ///
    /// # Safety
    /// `slab` heads a slab of this cache.
    #[inline]
    pub(super) unsafe fn slab_owner(&self, slab: *mut Page) -> Option<usize> {
        if !self.has_inboxes() {
            return None;
        }
        // SAFETY: a slab's head descriptor (the contract); the byte is atomic.
        let owner = unsafe { (*slab).owner.load(Ordering::Relaxed) };
        (owner != 0).then(|| owner as usize - 1)
    }

    /// Most objects an inbox holds: the cache's tuned limit, as many as the owner's
    /// array cache would have kept, and no more than one refill takes.
    #[inline]
    fn inbox_bound(&self) -> u64 {
        (self.limit.load(Ordering::Relaxed) as u64).clamp(1, FLUSH_MAX as u64)
    }

    /// Gives the slabs this cache's CPUs below `count` claim page tags of their own,
    /// `base + cpu`, where the tag a slab grows with is the cache's own: the owner
    /// table (kmalloc's `TAGS`) maps each to this cache and that CPU, so that a free
    /// finds a small object's owner in the tag byte it reads anyway (64 pages to a
    /// cache line) rather than in the page's descriptor. CPUs from `count` on still
    /// name themselves in the descriptor alone. Nothing for a cache without inboxes.
    ///
    /// # Safety
    /// Called once, at boot, after [`setup`](Self::setup) and before any slab of the
    /// cache was claimed; the tags `base..base + count` are this cache's alone, each
    /// mapped to it and its CPU before this call, and within a byte.
    pub(crate) unsafe fn set_owner_tags(&self, base: u8, count: u8) {
        if self.has_inboxes() {
            let word = u32::from(base) << 8 | u32::from(count);
            self.owner_tags.store(word, Ordering::Relaxed);
        }
    }

    /// The owner tags' base and count (see [`set_owner_tags`](Self::set_owner_tags));
    /// a count of 0 for none.
    #[inline]
    fn owner_tags(&self) -> (usize, usize) {
        let word = self.owner_tags.load(Ordering::Relaxed) as usize;
        (word >> 8, word & 0xff)
    }

    /// Whether `tag` is one this cache's slabs carry: its own or an owner's.
    #[inline]
    pub(crate) fn has_page_tag(&self, tag: usize) -> bool {
        let (base, count) = self.owner_tags();
        tag == usize::from(self.tag()) || tag.wrapping_sub(base) < count
    }

    /// Records the calling CPU as the owner of `slab`'s pages: it takes objects of the
    /// slab into its array cache. In every page's descriptor, and in the pages' tags
    /// where the CPU has one (else the cache's own tag, which sends a free to the
    /// descriptor). Nothing for a cache without inboxes.
    ///
    /// # Safety
    /// `slab` heads a slab of this cache.
    #[inline]
    pub(super) unsafe fn claim_slab(&self, slab: *mut Page) {
        if !self.has_inboxes() {
            return;
        }
        let cpu = sys::cpu::current();
        if cpu >= MAX_OWNER_CPUS {
            return;
        }
        let owner = cpu as u8 + 1;
        let pages = 1usize << self.geom().order;
        for i in 0..pages {
            // SAFETY: the slab's pages have their descriptors side by side (the
            // contract); the byte is atomic, read by frees on any CPU.
            unsafe { (*slab.add(i)).owner.store(owner, Ordering::Relaxed) };
        }
        let (base, count) = self.owner_tags();
        let tag = if cpu < count {
            (base + cpu) as u8
        } else {
            self.tag()
        };
        // A free on another CPU may meanwhile read the old tag or the new, and the old
        // descriptor byte or the new (relaxed: no order between them): it then sends
        // the object to the old owner or the new one, or keeps it, which costs only
        // where the object goes next. Every tag it can read is this cache's.
        // SAFETY: the slab's pages are this cache's (the contract), tagged while it
        // lives.
        unsafe { page::tag::set_tags(slab, pages, tag) };
    }

    /// The free of `obj` when it belongs on another CPU's inbox: pushes it there and
    /// returns true; false (nothing done) when its page is this CPU's or has no owner,
    /// or the cache keeps no inboxes. An inbox found full is taken whole and sent, with
    /// `obj`, to the node.
    ///
    /// # Safety
    /// `obj` is an object of this cache, in an arena, given up by the caller, who
    /// holds no list lock.
    #[inline]
    pub(super) unsafe fn free_remote(&self, obj: *mut u8) -> bool {
        if !self.has_inboxes() {
            return false;
        }
        // SAFETY: `obj` is an object of this cache, in an arena (the contract).
        let owner = unsafe { (*page::virt_to_page(obj)).owner.load(Ordering::Relaxed) };
        let cpu = sys::cpu::current();
        // An owner on another node (its thread moved while it claimed the slab) does
        // not get the object: a CPU's array cache holds its node's objects only.
        if owner == 0
            || owner as usize == cpu + 1
            || topology::cpu_to_node(owner as usize - 1) != topology::cpu_to_node(cpu)
        {
            return false;
        }
        let Some(inbox) = self.inbox(owner as usize - 1) else {
            return false;
        };
        let bound = self.inbox_bound();
        let mut word = inbox.load(Ordering::Relaxed);
        loop {
            let head = (word & PTR_MASK) as *mut u8;
            if head == obj {
                // The object freed last onto this inbox, freed again: glibc's tcache
                // check, as the array cache's push makes it.
                self.double_free_inbox(obj);
            }
            let count = word >> PTR_BITS;
            if count >= bound {
                // SAFETY: the caller gives `obj` up; it holds no list lock.
                unsafe { self.inbox_overflow(inbox, obj) };
                return true;
            }
            // SAFETY: `obj` is given up (the contract): its first word is ours until the
            // push publishes it.
            unsafe { obj.cast::<*mut u8>().write(head) };
            let next = obj as u64 | (count + 1) << PTR_BITS;
            match inbox.compare_exchange_weak(word, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(w) => word = w,
            }
        }
    }

    /// A full inbox: takes it whole and sends it to the node with `obj`.
    ///
    /// # Safety
    /// As for [`free_remote`](Self::free_remote).
    #[cold]
    #[inline(never)]
    unsafe fn inbox_overflow(&self, inbox: &AtomicU64, obj: *mut u8) {
        let mut buf = ObjBuf::new();
        // SAFETY: `buf` holds `FLUSH_MAX` pointers, at least the inbox's bound.
        let n = unsafe { self.take_chain(inbox, &mut buf) };
        // SAFETY: `take_chain` wrote the first `n`: objects of this cache, held by
        // nobody now, as `obj` (the caller's contract); no lock is held.
        unsafe {
            self.send_home(buf.objs(n));
            self.send_home(&[obj]);
        }
    }

    /// Takes CPU `cpu`'s inbox whole into `buf`, for its refill; returns how many
    /// objects it held (0 for a cache without inboxes).
    #[inline]
    pub(super) fn inbox_take(&self, cpu: usize, buf: &mut ObjBuf) -> usize {
        let Some(inbox) = self.inbox(cpu) else {
            return 0;
        };
        if inbox.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        // SAFETY: `buf` holds `FLUSH_MAX` pointers, at least an inbox's bound.
        unsafe { self.take_chain(inbox, buf) }
    }

    /// Swaps `inbox` empty and writes its objects to `buf`; returns how many. A link
    /// that is not an object of this cache (the first word of a freed object written
    /// after its free) aborts.
    ///
    /// # Safety
    /// `buf` has room for the inbox's count (at most the bound, at most `FLUSH_MAX`).
    unsafe fn take_chain(&self, inbox: &AtomicU64, buf: &mut ObjBuf) -> usize {
        let word = inbox.swap(0, Ordering::Acquire);
        let count = ((word >> PTR_BITS) as usize).min(FLUSH_MAX);
        let out = buf.as_mut_ptr();
        let mut obj = (word & PTR_MASK) as *mut u8;
        let mut n = 0;
        while n < count && !obj.is_null() {
            if !self.starts_a_slot(obj) {
                self.corrupt_inbox(obj);
            }
            // SAFETY: `n < count <= FLUSH_MAX`, within `buf`; `obj` is an object of
            // this cache pushed by `free_remote`, whose first word holds the next link,
            // published by the push's release and acquired by the swap.
            unsafe {
                *out.add(n) = obj;
                obj = obj.cast::<*mut u8>().read();
            }
            n += 1;
        }
        // A link written over (a null before the count, or a pointer past the end)
        // would lose the rest of the list, or hand out what is not free.
        if n != count || !obj.is_null() {
            self.corrupt_inbox(obj);
        }
        n
    }

    /// Whether `obj` starts a slot of a slab of this cache, by its page's tag (caches
    /// with inboxes are tagged) and its slab's first slot: a link of an inbox that may
    /// be followed.
    fn starts_a_slot(&self, obj: *mut u8) -> bool {
        let Some(off) = arena::offset_in(obj) else {
            return false;
        };
        // SAFETY: `off` is `obj`'s offset in its arena.
        if !self.has_page_tag(unsafe { page::tag::tag_at(obj, off) }) {
            return false;
        }
        // SAFETY: a page tagged with this cache's tag is a page of one of its slabs,
        // whose head descriptor is mapped.
        unsafe { self.starts_slot(page::virt_to_head_page(obj), off) }
    }

    /// A link of an inbox that is no object of the cache: aborts, as glibc does on a
    /// corrupted free list.
    #[cold]
    #[inline(never)]
    fn corrupt_inbox(&self, link: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "remote free list of cache {} corrupted at {link:p}: a block written after its free",
            self.name()
        ))
    }

    /// A second free of the object on top of an inbox.
    #[cold]
    #[inline(never)]
    fn double_free_inbox(&self, obj: *mut u8) -> ! {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {}: it waits in its owner CPU's remote free list",
            self.name()
        ))
    }

    /// Objects sent back to their nodes: their shared caches while they have room, the
    /// rest to their slabs.
    ///
    /// # Safety
    /// The objects are this cache's, held by nobody; the caller holds no list lock.
    pub(super) unsafe fn send_home(&self, objs: &[*mut u8]) {
        if topology::nr_node_ids() == 1 {
            // SAFETY: the caller's contract; every object is node 0's.
            return unsafe { self.give_back_to(0, objs) };
        }
        // Runs of one node (an inbox's objects are most likely all of one), each under
        // one hold of its node's lock.
        let mut rest = objs;
        while let Some(&first) = rest.first() {
            let node = page::addr_node(first);
            let run = rest
                .iter()
                .take_while(|&&o| page::addr_node(o) == node)
                .count();
            // SAFETY: the caller's contract; the run's objects are `node`'s.
            unsafe { self.give_back_to(node, &rest[..run]) };
            rest = &rest[run..];
        }
    }

    /// Empties the inboxes of `cpus` to the node (the reaper, shrinking, a CPU's
    /// drain). Returns how many objects moved.
    pub(crate) fn drain_inboxes(&self, cpus: core::ops::Range<usize>) -> usize {
        let mut moved = 0;
        for cpu in cpus {
            let mut buf = ObjBuf::new();
            let n = self.inbox_take(cpu, &mut buf);
            if n > 0 {
                // SAFETY: objects taken out of an inbox: the cache's, held by nobody;
                // no lock is held.
                unsafe { self.send_home(buf.objs(n)) };
                moved += n;
            }
        }
        moved
    }

    /// Objects waiting in this cache's inboxes, for the statistics (racy).
    pub(crate) fn inbox_objects(&self) -> usize {
        (0..topology::nr_cpu_ids())
            .filter_map(|cpu| self.inbox(cpu))
            .map(|i| (i.load(Ordering::Relaxed) >> PTR_BITS) as usize)
            .sum()
    }
}
