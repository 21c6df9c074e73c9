//! Slab debugging, the kernel's `SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER`: on for
//! every cache when `CPUSLAB_DEBUG=1` is set at boot or the `debug` cargo feature is
//! enabled (`CPUSLAB_DEBUG=0` turns the feature's default off).
//!
//! A debug cache lays each object out in a larger slot:
//!
//! ```text
//! | pad | owner | red zone 1 | object (obj_size bytes) | red zone 2 | pad |
//!                            ^ the pointer users get, still aligned
//! ```
//!
//! Both red zones hold the object's state, [`RED_ACTIVE`] or [`RED_FREE`]; any other
//! value is an overwrite from outside the object. `owner` is the pthread that last
//! allocated or freed it. A free checks the zones (overflow, underflow, double free),
//! marks them free and fills the object with [`POISON_FREE`] (ending in
//! [`POISON_END`]); an allocation checks that the zones still say free and the poison
//! is intact (a write after free), then marks them active. Each finding writes one
//! `cpuslab: ...` line naming the problem, the cache and the address, and aborts.
//!
//! Caches of `TYPESAFE_BY_RCU` are not poisoned: their readers may still look at a
//! freed object, which must keep its contents, as in the kernel.
//!
//! The per-CPU array caches of a debug cache have a limit of 0, so the fast paths
//! (rseq or the tried lock) find them empty on every allocation and full on every free
//! and go to the slow paths, which run the checks. A cache without debugging runs none
//! of this: the choice is made once per cache, at setup, by its geometry.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::cache::RawCache;
use crate::sys;

/// Red zone value of an object in use.
pub const RED_ACTIVE: u64 = 0xA11C_A7ED_0B1E_C7A5;
/// Red zone value of a free object.
pub const RED_FREE: u64 = 0xF4EE_D0B1_EC7F_4EE5;
/// Poison byte of a free object.
pub const POISON_FREE: u8 = 0x6b;
/// Last poison byte of a free object (marks its end in a dump).
pub const POISON_END: u8 = 0xa5;

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether caches set up from now on are debug caches. Decided on the first call (at
/// boot, when the first cache is set up) from the configuration.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = crate::config::slab_debug();
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Where a cache's objects sit in their slots.
#[derive(Clone, Copy, Debug)]
pub struct DebugLayout {
    /// Red zones, poison and owner tracking are on.
    pub on: bool,
    /// Free objects are poisoned (not for `TYPESAFE_BY_RCU` caches).
    pub poison: bool,
    /// Offset of the object in its slot (0 without debugging).
    pub offset: usize,
    /// Bytes of the object users see.
    pub obj_size: usize,
    /// Bytes of a slot (the object size without debugging).
    pub slot_size: usize,
}

impl DebugLayout {
    /// No debugging: the slot is the object.
    pub const fn off(obj_size: usize) -> Self {
        Self {
            on: false,
            poison: false,
            offset: 0,
            obj_size,
            slot_size: obj_size,
        }
    }

    /// Debug slots for objects of `obj_size` bytes (a multiple of `align`, itself a
    /// power of two of at least 8): the left zone (owner, red zone 1) and the right one
    /// (red zone 2) are rounded to `align` so that the object stays aligned.
    pub fn new(obj_size: usize, align: usize, poison: bool) -> Self {
        let align = align.max(8);
        let left = 16usize.next_multiple_of(align);
        let right = 8usize.next_multiple_of(align);
        Self {
            on: true,
            poison,
            offset: left,
            obj_size,
            slot_size: left + obj_size + right,
        }
    }

    /// The owner word and the two red zones of the slot at `slot`.
    ///
    /// # Safety
    /// `slot` is a slot of a debug cache with this layout.
    unsafe fn words(&self, slot: *mut u8) -> (&AtomicU64, &AtomicU64, &AtomicU64) {
        // SAFETY: a debug slot (the contract) holds `offset` bytes before its object.
        let obj = unsafe { slot.add(self.offset) };
        // SAFETY: the left zone ends in the owner word and red zone 1, and red zone 2
        // follows the object's `obj_size` bytes (see `new`): three words of the slot,
        // 8-byte aligned as slots, `offset` and `obj_size` are multiples of 8.
        unsafe {
            (
                &*obj.sub(16).cast::<AtomicU64>(),
                &*obj.sub(8).cast::<AtomicU64>(),
                &*obj.add(self.obj_size).cast::<AtomicU64>(),
            )
        }
    }
}

/// Marks a slot of a new slab free and poisons its object.
///
/// # Safety
/// `slot` is a slot of a new slab of a debug cache with layout `d`, not yet handed out.
pub(crate) unsafe fn init_slot(d: &DebugLayout, slot: *mut u8) {
    // SAFETY: a slot of a debug cache with layout `d` (the contract).
    let (owner, rz1, rz2) = unsafe { d.words(slot) };
    owner.store(0, Ordering::Relaxed);
    rz1.store(RED_FREE, Ordering::Relaxed);
    rz2.store(RED_FREE, Ordering::Relaxed);
    if d.poison {
        // SAFETY: the object sits `offset` bytes into the slot, which nobody holds yet.
        poison(unsafe { slot.add(d.offset) }, d.obj_size);
    }
}

fn poison(obj: *mut u8, size: usize) {
    // SAFETY: the caller's object has `size >= 8` bytes it no longer uses.
    unsafe {
        core::ptr::write_bytes(obj, POISON_FREE, size - 1);
        *obj.add(size - 1) = POISON_END;
    }
}

/// The offset of the first byte of `obj` that is not the poison, if any.
fn poison_damage(obj: *const u8, size: usize) -> Option<usize> {
    const WORD: u64 = u64::from_ne_bytes([POISON_FREE; 8]);
    let words = (size - 1) / 8;
    // SAFETY: `size` bytes of a free object; slots are 8-byte aligned.
    unsafe {
        for w in 0..words {
            if *obj.add(w * 8).cast::<u64>() != WORD {
                return (w * 8..w * 8 + 8).find(|&i| *obj.add(i) != POISON_FREE);
            }
        }
        for i in words * 8..size {
            let want = if i == size - 1 {
                POISON_END
            } else {
                POISON_FREE
            };
            if *obj.add(i) != want {
                return Some(i);
            }
        }
    }
    None
}

/// Checks a slot just taken from the cache's free objects and hands its object out:
/// the red zones must say free and the poison be intact.
///
/// # Safety
/// `slot` is a free slot of `cache`, a debug cache, now owned by the caller.
pub(crate) unsafe fn check_alloc(cache: &RawCache, slot: *mut u8) -> *mut u8 {
    let d = cache.debug_layout();
    // SAFETY: a slot of `cache`, a debug cache (the contract): its object is `offset`
    // bytes in.
    let obj = unsafe { slot.add(d.offset) };
    // SAFETY: as above: a slot with `cache`'s debug layout.
    let (owner, rz1, rz2) = unsafe { d.words(slot) };
    let who = owner.load(Ordering::Relaxed);
    if let Err(v) = rz1.compare_exchange(RED_FREE, RED_ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
    {
        if v == RED_ACTIVE {
            sys::io::fatal(format_args!(
                "object {obj:p} in cache {} handed out while in use (corrupted freelist; \
                 last allocated by pthread {who:#x})",
                cache.name()
            ));
        }
        sys::io::fatal(format_args!(
            "red zone before free object {obj:p} in cache {} overwritten: {v:#018x} \
             (a write before the object's start; freed by pthread {who:#x})",
            cache.name()
        ));
    }
    let v = rz2.load(Ordering::Relaxed);
    if v != RED_FREE {
        sys::io::fatal(format_args!(
            "red zone after free object {obj:p} in cache {} overwritten: {v:#018x} \
             (a write past the object's {} bytes; freed by pthread {who:#x})",
            cache.name(),
            d.obj_size
        ));
    }
    if d.poison {
        if let Some(off) = poison_damage(obj, d.obj_size) {
            sys::io::fatal(format_args!(
                "write after free to {obj:p} in cache {}: byte {off} is {:#04x}, not poison \
                 (freed by pthread {who:#x})",
                cache.name(),
                // SAFETY: `poison_damage` found `off` inside the object's `obj_size`
                // bytes, and the slot is the caller's now.
                unsafe { *obj.add(off) }
            ));
        }
    }
    rz2.store(RED_ACTIVE, Ordering::Relaxed);
    owner.store(sys::cpu::thread_id() as u64, Ordering::Relaxed);
    obj
}

/// Checks an object being freed, already known to be at an object's place in one of
/// `cache`'s slabs: the red zones must say in use (else a double free) and be intact.
/// Marks it free, poisons it and returns its slot.
///
/// # Safety
/// `slot` is a slot of `cache`, a debug cache, and `obj` its object.
pub(crate) unsafe fn check_free(cache: &RawCache, slot: *mut u8, obj: *mut u8) -> *mut u8 {
    let d = cache.debug_layout();
    // SAFETY: a slot of `cache`, a debug cache (the contract).
    let (owner, rz1, rz2) = unsafe { d.words(slot) };
    let who = owner.load(Ordering::Relaxed);
    let v1 = rz1.load(Ordering::Acquire);
    let v2 = rz2.load(Ordering::Relaxed);
    if v1 == RED_FREE {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {} (already freed by pthread {who:#x})",
            cache.name()
        ));
    }
    if v1 != RED_ACTIVE {
        sys::io::fatal(format_args!(
            "red zone before object {obj:p} in cache {} overwritten: {v1:#018x} \
             (a write before the object's start; allocated by pthread {who:#x})",
            cache.name()
        ));
    }
    if v2 != RED_ACTIVE {
        sys::io::fatal(format_args!(
            "red zone after object {obj:p} in cache {} overwritten: {v2:#018x} \
             (a write past the object's {} bytes; allocated by pthread {who:#x})",
            cache.name(),
            d.obj_size
        ));
    }
    // Two threads freeing the same object: one of them finds it free here.
    if rz1
        .compare_exchange(RED_ACTIVE, RED_FREE, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        sys::io::fatal(format_args!(
            "double free of {obj:p} in cache {} (freed at the same time by another thread)",
            cache.name()
        ));
    }
    owner.store(sys::cpu::thread_id() as u64, Ordering::Relaxed);
    rz2.store(RED_FREE, Ordering::Relaxed);
    if d.poison {
        poison(obj, d.obj_size);
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_keep_objects_aligned() {
        for align in [8usize, 16, 64, 4096] {
            let d = DebugLayout::new(align.max(24).next_multiple_of(align), align, true);
            assert_eq!(d.offset % align, 0);
            assert_eq!(d.slot_size % align, 0);
            assert!(d.offset >= 16 && d.slot_size >= d.offset + d.obj_size + 8);
        }
    }

    #[test]
    fn poison_damage_finds_the_first_changed_byte() {
        let mut buf = [0u64; 8];
        let p = buf.as_mut_ptr().cast::<u8>();
        poison(p, 64);
        assert_eq!(poison_damage(p, 64), None);
        // SAFETY: inside `buf`.
        unsafe { *p.add(37) = 0 };
        assert_eq!(poison_damage(p, 64), Some(37));
        poison(p, 64);
        // SAFETY: inside `buf`.
        unsafe { *p.add(63) = POISON_FREE };
        assert_eq!(poison_damage(p, 64), Some(63));
    }
}
