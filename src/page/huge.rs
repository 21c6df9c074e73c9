//! Huge blocks (more than a max-order block): one mapping each, preceded by a header
//! page that records the mapping, so the block can be resized with mremap and
//! unmapped. Live blocks are also listed in a registry, so any pointer can be asked
//! whether it is one of ours without touching memory that may not be mapped.

use core::ptr;

use super::arena;
use crate::sync::Mutex;
use crate::sys::{self, PAGE_SIZE};

/// Slots of the registry: at most 3/4 of them hold live blocks (each is more than
/// 4 MiB, so 48K blocks span more than 192 GiB).
const REGISTRY_SLOTS: usize = 1 << 16;
const EMPTY: usize = 0;

/// A set of live huge block addresses: open addressing with linear probing and
/// backward-shift deletion (no tombstones).
pub(crate) struct Registry {
    slots: [usize; REGISTRY_SLOTS],
    live: usize,
}

pub(crate) static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    slots: [EMPTY; REGISTRY_SLOTS],
    live: 0,
});

impl Registry {
    fn home(block: usize) -> usize {
        ((block >> 12) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - 16)
    }

    fn find(&self, block: usize) -> Option<usize> {
        let mut i = Self::home(block);
        loop {
            match self.slots[i] {
                EMPTY => return None,
                b if b == block => return Some(i),
                _ => i = (i + 1) % REGISTRY_SLOTS,
            }
        }
    }

    fn insert(&mut self, block: usize) -> bool {
        if self.live >= REGISTRY_SLOTS * 3 / 4 {
            return false;
        }
        let mut i = Self::home(block);
        while self.slots[i] != EMPTY {
            i = (i + 1) % REGISTRY_SLOTS;
        }
        self.slots[i] = block;
        self.live += 1;
        true
    }

    fn remove(&mut self, block: usize) -> bool {
        let Some(mut hole) = self.find(block) else {
            return false;
        };
        self.live -= 1;
        // Shift later members of the probe run back into the hole when their home
        // position does not lie between the hole and themselves.
        let mut j = hole;
        loop {
            j = (j + 1) % REGISTRY_SLOTS;
            let b = self.slots[j];
            if b == EMPTY {
                break;
            }
            let home = Self::home(b);
            let dist_home = (j + REGISTRY_SLOTS - home) % REGISTRY_SLOTS;
            let dist_hole = (j + REGISTRY_SLOTS - hole) % REGISTRY_SLOTS;
            if dist_home >= dist_hole {
                self.slots[hole] = b;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        true
    }
}

/// Number of live huge blocks.
pub fn live_blocks() -> usize {
    REGISTRY.lock().live
}

const HUGE_MAGIC: u64 = 0x6370_7573_6c61_6268; // "cpuslabh"

#[repr(C)]
struct HugeHeader {
    magic: u64,
    /// Start of the whole mapping (may precede the header when the block was aligned).
    map_base: *mut u8,
    /// Length of the whole mapping.
    map_len: usize,
    /// Usable bytes from the block's start to the end of the mapping.
    usable: usize,
    /// Whether the block read as zero when it was handed out (a fresh mapping).
    zero: bool,
}

fn header(block: *mut u8) -> *mut HugeHeader {
    // SAFETY: the header page precedes every huge block.
    unsafe { block.sub(PAGE_SIZE).cast() }
}

/// Maps a huge block of at least `size` bytes aligned to `align`. Null on failure.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    let Some(len) = size
        .checked_add(PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
        .and_then(|s| s.checked_add(PAGE_SIZE))
    else {
        return ptr::null_mut();
    };
    // The header page sits right before the aligned block: map align extra bytes and
    // trim what precedes the header.
    let Some(span) = len.checked_add(align - PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if span > isize::MAX as usize || !arena::charge(span) {
        return ptr::null_mut();
    }
    let raw = sys::mmap::map_aligned(span, PAGE_SIZE, false);
    if raw.is_null() {
        arena::uncharge(span);
        return ptr::null_mut();
    }
    let block = ((raw as usize + PAGE_SIZE + align - 1) & !(align - 1)) as *mut u8;
    let map_base = (block as usize - PAGE_SIZE) as *mut u8;
    let lead = map_base as usize - raw as usize;
    if lead > 0 {
        sys::mmap::unmap(raw, lead);
    }
    let map_len = span - lead;
    arena::uncharge(lead);
    if !REGISTRY.lock().insert(block as usize) {
        sys::mmap::unmap(map_base, map_len);
        arena::uncharge(map_len);
        return ptr::null_mut();
    }
    // SAFETY: the header page is mapped and ours.
    unsafe {
        header(block).write(HugeHeader {
            magic: HUGE_MAGIC,
            map_base,
            map_len,
            usable: map_len - PAGE_SIZE,
            zero: true,
        });
    }
    block
}

/// Whether `block` heads a live huge block. Safe for any address.
pub fn is_huge(block: *const u8) -> bool {
    REGISTRY.lock().find(block as usize).is_some()
}

/// Usable bytes of a huge block.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and not freed.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    (*header(block)).usable
}

/// Whether a block just returned by [`alloc`] reads as zero (a fresh mapping).
///
/// # Safety
/// `block` was returned by [`alloc`] and not freed.
pub unsafe fn is_zero(block: *mut u8) -> bool {
    (*header(block)).zero
}

/// Unmaps a huge block.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and is not used any more.
pub unsafe fn free(block: *mut u8) {
    if !REGISTRY.lock().remove(block as usize) {
        sys::io::fatal(format_args!(
            "invalid free of {block:p}: not a live block of cpuslab"
        ));
    }
    let h = header(block);
    let (base, len) = ((*h).map_base, (*h).map_len);
    (*h).magic = 0;
    sys::mmap::unmap(base, len);
    arena::uncharge(len);
}

/// Resizes a page-aligned huge block with mremap. Returns null, leaving the block
/// intact, when that cannot be done (the caller copies instead).
///
/// # Safety
/// `block` was returned by [`alloc`] with an alignment of at most a page.
pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
    let h = header(block);
    let (base, old_len) = ((*h).map_base, (*h).map_len);
    if base != block.sub(PAGE_SIZE) {
        return ptr::null_mut();
    }
    let Some(new_len) = new_size
        .checked_add(2 * PAGE_SIZE - 1)
        .map(|s| s & !(PAGE_SIZE - 1))
    else {
        return ptr::null_mut();
    };
    if new_len > old_len && !arena::charge(new_len - old_len) {
        return ptr::null_mut();
    }
    let mut registry = REGISTRY.lock();
    let moved = sys::mmap::remap(base, old_len, new_len);
    if moved.is_null() {
        if new_len > old_len {
            arena::uncharge(new_len - old_len);
        }
        return ptr::null_mut();
    }
    if new_len < old_len {
        arena::uncharge(old_len - new_len);
    }
    registry.remove(block as usize);
    // Cannot fail: the entry just removed frees a slot.
    registry.insert(moved as usize + PAGE_SIZE);
    drop(registry);
    let h = moved.cast::<HugeHeader>();
    (*h).map_base = moved;
    (*h).map_len = new_len;
    (*h).usable = new_len - PAGE_SIZE;
    moved.add(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_against_a_model() {
        let mut r = Registry {
            slots: [EMPTY; REGISTRY_SLOTS],
            live: 0,
        };
        let mut model = std::collections::HashSet::new();
        let mut x = 0x9E37_79B9u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct pages so probe runs collide and wrap.
            let block = ((x % 5000) as usize + 1) << 12;
            if x & 1 == 0 && model.len() < 4000 {
                if model.insert(block) {
                    assert!(r.insert(block));
                }
            } else {
                assert_eq!(r.remove(block), model.remove(&block));
            }
            assert_eq!(r.live, model.len());
        }
        for b in 1..5001usize {
            assert_eq!(r.find(b << 12).is_some(), model.contains(&(b << 12)));
        }
    }
}
