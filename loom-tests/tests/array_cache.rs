//! The SLAB layer's array caches: two CPUs allocate and free through array caches of
//! one object (every second operation refills or flushes), against one node's shared
//! cache and slab lists, while a third thread drains CPU 0's cache and then the shared
//! cache as `cache_reap` and `shrink` do (stopping the cache by its lock). The refills,
//! flushes, node fallbacks and drains are the library's own (`slab::transfer`, which
//! `RawCache` runs); the model keeps only the slabs' free objects.
//!
//! Checked: no object is handed to two holders at once (each object's memory is a loom
//! cell that its holder writes, so two unordered holders are a causality error), and
//! at the end every object is in exactly one place (an array cache, the shared cache,
//! a slab's free objects, a slab given back) with the lists' counts agreeing.
#![cfg(loom)]

use std::mem::{size_of, MaybeUninit};
use std::ptr;

use cpuslab::page::list::PageList;
use cpuslab::page::Page;
use cpuslab::slab::array_cache::ArrayCache;
use cpuslab::slab::node::NodeLists;
use cpuslab::slab::transfer::{self, SlabCache};
use cpuslab::sync::Mutex;
use cpuslab_loom_tests::model;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// Objects a slab holds.
const NUM: usize = 2;
const SLABS: usize = 3;
const OBJS: usize = NUM * SLABS;
const CPUS: usize = 2;
/// Per-CPU limit and batch count: a free into a cache holding one flushes.
const LIMIT: u32 = 2;
const BATCH: u32 = 2;
const SHARED_LIMIT: u32 = 2;
/// Times each CPU allocates `HOLD` objects and frees them.
const ROUNDS: usize = 2;
/// Objects a CPU holds at once: one more than its cache does, so frees flush.
const HOLD: usize = LIMIT as usize + 1;
/// Free objects in slabs above which an empty slab is given back.
const FREE_LIMIT: usize = NUM;

/// A slab: its descriptor, which the node's lists link, and its free objects.
#[repr(C)]
struct Slab {
    page: Page,
    /// Indices of the slab's free objects: `free[active..]`, as the freelist array.
    /// A loom cell, so that an access outside the list lock is reported.
    free: UnsafeCell<[usize; NUM]>,
}

/// An object; its memory records whether someone holds it.
struct Obj {
    held: UnsafeCell<bool>,
}

/// A cache of one node: its lists and shared cache, the CPUs' array caches.
struct Cache {
    node: Mutex<NodeLists>,
    slabs: Box<[Slab]>,
    objs: Box<[Obj]>,
    acs: [*mut ArrayCache; CPUS],
    shared: *mut ArrayCache,
}

// SAFETY: the array caches are touched under their locks, everything else under the
// node's list lock or through loom's types.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

/// An array cache of `limit` entries on the heap.
fn new_ac(limit: u32, batchcount: u32) -> *mut ArrayCache {
    let entries: Box<[*mut u8]> = vec![ptr::null_mut(); limit as usize].into_boxed_slice();
    let entry = Box::into_raw(entries).cast::<*mut u8>();
    let ac = Box::into_raw(Box::new(MaybeUninit::<ArrayCache>::uninit())).cast();
    // SAFETY: `ac` is a fresh header and `entry` holds `limit` pointers.
    unsafe { ArrayCache::init_with(ac, limit, batchcount, limit, entry) };
    ac
}

/// Frees an array cache made by [`new_ac`].
///
/// # Safety
/// `ac` came from `new_ac` and is not used afterwards.
unsafe fn free_ac(ac: *mut ArrayCache) {
    let cap = (*ac).capacity as usize;
    drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
        (*ac).entry,
        cap,
    )));
    drop(Box::from_raw(ac));
}

/// Pointers on a list, first to last.
fn on_list(list: &PageList) -> Vec<*mut Page> {
    let mut v = Vec::new();
    let mut p = list.first();
    while !p.is_null() {
        v.push(p);
        // SAFETY: the model's slabs live as long as the cache.
        p = unsafe { (*p).next };
    }
    assert_eq!(
        v.len(),
        list.len(),
        "a list's length disagrees with its links"
    );
    v
}

impl Cache {
    fn new() -> Self {
        let slabs: Box<[Slab]> = (0..SLABS)
            .map(|_| Slab {
                // SAFETY: a descriptor is atomics, integers and raw pointers, all valid
                // zeroed: no flags, no objects in use, on no list.
                page: unsafe { MaybeUninit::zeroed().assume_init() },
                free: UnsafeCell::new(core::array::from_fn(|i| i)),
            })
            .collect();
        let objs = (0..OBJS)
            .map(|_| Obj {
                held: UnsafeCell::new(false),
            })
            .collect();
        let shared = new_ac(SHARED_LIMIT, BATCH);
        let mut lists = NodeLists::new(FREE_LIMIT, shared);
        lists.total_slabs = SLABS;
        lists.free_objects = OBJS;
        for s in slabs.iter() {
            // SAFETY: a fresh slab on no list.
            unsafe { lists.slabs_free.push_back(ptr::addr_of!(s.page).cast_mut()) };
        }
        Cache {
            node: Mutex::new(lists),
            slabs,
            objs,
            acs: core::array::from_fn(|_| new_ac(LIMIT, BATCH)),
            shared,
        }
    }

    fn slab_index(&self, slab: *mut Page) -> usize {
        let off = slab as usize - self.slabs.as_ptr() as usize;
        assert!(off.is_multiple_of(size_of::<Slab>()) && off / size_of::<Slab>() < SLABS);
        off / size_of::<Slab>()
    }

    fn obj_index(&self, obj: *mut u8) -> usize {
        let off = (obj as usize).wrapping_sub(self.objs.as_ptr() as usize);
        assert!(
            off.is_multiple_of(size_of::<Obj>()) && off / size_of::<Obj>() < OBJS,
            "{obj:p} is not an object of the cache"
        );
        off / size_of::<Obj>()
    }

    fn obj_ptr(&self, i: usize) -> *mut u8 {
        ptr::addr_of!(self.objs[i]).cast_mut().cast()
    }

    /// Takes `obj` into the caller's hands: nobody may hold it.
    fn claim(&self, obj: *mut u8) {
        let i = self.obj_index(obj);
        self.objs[i].held.with_mut(|h| {
            // SAFETY: loom checks that this access is ordered after the last holder's.
            let h = unsafe { &mut *h };
            assert!(!*h, "object {i} handed out twice");
            *h = true;
        });
    }

    /// Lets go of `obj` before freeing it.
    fn release(&self, obj: *mut u8) {
        let i = self.obj_index(obj);
        self.objs[i].held.with_mut(|h| {
            // SAFETY: as in `claim`.
            let h = unsafe { &mut *h };
            assert!(*h, "object {i} freed but not held");
            *h = false;
        });
    }

    /// `RawCache::alloc` on the tried-lock path, as CPU `cpu`: pop, else
    /// `cache_alloc_refill`; from the node when the cache is stopped.
    fn alloc(&self, cpu: usize) -> Option<*mut u8> {
        let ac = self.acs[cpu];
        // SAFETY: the array cache is touched only under its lock; the rest is
        // `transfer`'s, under the list lock.
        let obj = unsafe {
            if (*ac).lock.try_lock() {
                let avail = (*ac).avail;
                let obj = if avail > 0 {
                    (*ac).touched = 1;
                    (*ac).avail = avail - 1;
                    *ArrayCache::entries(ac).add(avail as usize - 1)
                } else {
                    transfer::alloc_refill(self, 0, ac, (*ac).batchcount, (*ac).batchcount)
                };
                (*ac).lock.unlock();
                obj
            } else {
                transfer::take_one(self, &mut self.node.lock()).unwrap_or(ptr::null_mut())
            }
        };
        // Null: every object is held or cached elsewhere, and the model grows no slab.
        (!obj.is_null()).then(|| {
            self.claim(obj);
            obj
        })
    }

    /// `RawCache::free` on the tried-lock path, as CPU `cpu`: push, after taking a
    /// batch out if the cache is full (given to the node once the cache is released);
    /// to the node when it is stopped.
    fn free(&self, cpu: usize, obj: *mut u8, to_destroy: &mut PageList) {
        self.release(obj);
        let ac = self.acs[cpu];
        // SAFETY: as in `alloc`; the caller held `obj`.
        unsafe {
            if (*ac).lock.try_lock() {
                let mut buf = transfer::ObjBuf::new();
                let mut n = 0;
                if (*ac).avail >= (*ac).limit {
                    n = transfer::flush_take(ac, &mut buf);
                }
                let avail = (*ac).avail;
                *ArrayCache::entries(ac).add(avail as usize) = obj;
                (*ac).avail = avail + 1;
                (*ac).lock.unlock();
                // The flushed batch reaches the node after the cache is released.
                transfer::give_back(self, 0, buf.objs(n), to_destroy);
            } else {
                transfer::free_to_node(self, 0, obj, to_destroy);
            }
        }
    }

    /// `shrink` of CPU `cpu`'s cache and the node's shared cache: stops the CPU's
    /// cache, drains it to the slabs, then drains the shared cache under the list lock.
    fn drain(&self, cpu: usize, to_destroy: &mut PageList) {
        let ac = self.acs[cpu];
        // SAFETY: the array cache is drained while stopped by its lock, the shared
        // cache under the list lock.
        unsafe {
            assert!((*ac).lock.lock_wait());
            drop(transfer::drain_array(
                self,
                ac,
                (*ac).avail,
                None,
                None,
                to_destroy,
            ));
            (*ac).lock.unlock();
            let l = self.node.lock();
            let sh = l.shared;
            drop(transfer::drain_array(
                self,
                sh,
                (*sh).avail,
                Some(0),
                Some((0, l)),
                to_destroy,
            ));
        }
    }

    /// Checks that every object is in exactly one place and the lists agree with the
    /// slabs. `given_back` are the slabs the threads collected to free.
    fn check(&self, given_back: &[usize]) {
        let mut seen = [0usize; OBJS];
        let mut count = |obj: *mut u8, place: &str| {
            let i = self.obj_index(obj);
            seen[i] += 1;
            assert_eq!(seen[i], 1, "object {i} found again in {place}");
        };
        for (cpu, &ac) in self.acs.iter().enumerate() {
            // SAFETY: every thread is done.
            unsafe {
                for k in 0..(*ac).avail as usize {
                    count(
                        *ArrayCache::entries(ac).add(k),
                        &format!("CPU {cpu}'s cache"),
                    );
                }
            }
        }
        let l = self.node.lock();
        // SAFETY: as above.
        unsafe {
            assert!(ptr::eq(l.shared, self.shared));
            for k in 0..(*self.shared).avail as usize {
                count(*ArrayCache::entries(self.shared).add(k), "the shared cache");
            }
        }
        let mut placed = [0usize; SLABS];
        let mut free_objects = 0;
        let lists = [
            (&l.slabs_free, "free"),
            (&l.slabs_partial, "partial"),
            (&l.slabs_full, "full"),
        ];
        let listed = lists
            .iter()
            .flat_map(|&(list, name)| on_list(list).into_iter().map(move |s| (s, name)));
        for (slab, name) in listed.chain(
            given_back
                .iter()
                .map(|&si| (ptr::addr_of!(self.slabs[si].page).cast_mut(), "given back")),
        ) {
            let si = self.slab_index(slab);
            placed[si] += 1;
            assert_eq!(placed[si], 1, "slab {si} found again on {name}");
            // SAFETY: as above.
            let active = unsafe { (*slab).active } as usize;
            let ok = match name {
                "free" | "given back" => active == 0,
                "partial" => active > 0 && active < NUM,
                _ => active == NUM,
            };
            assert!(ok, "slab {si} with {active} objects in use is {name}");
            if name != "given back" {
                free_objects += NUM - active;
            }
            self.slabs[si].free.with(|f| {
                // SAFETY: every thread is done.
                for &k in unsafe { &(&*f)[active..] } {
                    count(self.obj_ptr(si * NUM + k), &format!("slab {si}"));
                }
            });
        }
        assert!(
            placed.iter().all(|&p| p == 1),
            "a slab was lost: {placed:?}"
        );
        assert_eq!(l.free_objects, free_objects, "free_objects disagrees");
        assert_eq!(
            l.total_slabs,
            SLABS - given_back.len(),
            "total_slabs disagrees"
        );
        assert!(seen.iter().all(|&s| s == 1), "an object was lost: {seen:?}");
        for o in self.objs.iter() {
            o.held.with(|h| {
                // SAFETY: as above.
                assert!(!unsafe { *h }, "an object is still held");
            });
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: nobody uses the cache any more.
        unsafe {
            for &ac in &self.acs {
                free_ac(ac);
            }
            free_ac(self.shared);
        }
    }
}

impl SlabCache for Cache {
    fn num(&self) -> usize {
        NUM
    }

    fn list_lock(&self, _node: usize) -> &Mutex<NodeLists> {
        &self.node
    }

    unsafe fn obj_to_slab(&self, obj: *mut u8) -> *mut Page {
        let i = self.obj_index(obj);
        ptr::addr_of!(self.slabs[i / NUM].page).cast_mut()
    }

    unsafe fn slab_node(&self, _slab: *mut Page) -> usize {
        0
    }

    unsafe fn slab_get_obj(&self, slab: *mut Page) -> *mut u8 {
        let si = self.slab_index(slab);
        let active = (*slab).active as usize;
        assert!(active < NUM, "slab {si} has no free object");
        let k = self.slabs[si].free.with_mut(|f| (*f)[active]);
        (*slab).active += 1;
        self.obj_ptr(si * NUM + k)
    }

    unsafe fn slab_put_obj(&self, slab: *mut Page, obj: *mut u8) {
        let si = self.slab_index(slab);
        let i = self.obj_index(obj);
        assert!((*slab).active > 0, "double free of object {i}");
        (*slab).active -= 1;
        let active = (*slab).active as usize;
        self.slabs[si].free.with_mut(|f| (*f)[active] = i % NUM);
    }

    unsafe fn cache_grow_begin(&self, _node: usize) -> *mut Page {
        ptr::null_mut() // a fixed set of slabs
    }

    unsafe fn cache_grow_end(&self, _l: &mut NodeLists, _slab: *mut Page) {
        unreachable!("the model grows no slab")
    }
}

/// The slabs on `list`, by index, taken off it.
fn drain_list(c: &Cache, mut list: PageList) -> Vec<usize> {
    core::iter::from_fn(|| Some(list.pop_front()).filter(|p| !p.is_null()))
        .map(|p| c.slab_index(p))
        .collect()
}

#[test]
fn refills_flushes_and_drains_conserve_objects() {
    model(|| {
        let c = Arc::new(Cache::new());
        let mut given_back = PageList::new();
        // CPU 0's cache holds one object and the shared cache one, so that the first
        // allocations take the fast path and the shared cache.
        let a = c.alloc(0).unwrap();
        let b = c.alloc(0).unwrap();
        c.free(0, a, &mut given_back);
        c.release(b);
        // SAFETY: `b` was released above.
        unsafe { transfer::free_to_node(&*c, 0, b, &mut given_back) };
        assert!(given_back.is_empty());

        let cpus: Vec<_> = (0..CPUS)
            .map(|cpu| {
                let c = c.clone();
                thread::spawn(move || {
                    let mut to_destroy = PageList::new();
                    for _ in 0..ROUNDS {
                        let held: Vec<_> = (0..HOLD).filter_map(|_| c.alloc(cpu)).collect();
                        for obj in held {
                            c.free(cpu, obj, &mut to_destroy);
                        }
                    }
                    drain_list(&c, to_destroy)
                })
            })
            .collect();
        let drainer = {
            let c = c.clone();
            thread::spawn(move || {
                let mut to_destroy = PageList::new();
                c.drain(0, &mut to_destroy);
                drain_list(&c, to_destroy)
            })
        };
        let mut slabs = Vec::new();
        for t in cpus.into_iter().chain([drainer]) {
            slabs.extend(t.join().unwrap());
        }
        c.check(&slabs);
    });
}
