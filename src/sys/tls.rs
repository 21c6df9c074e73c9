//! The allocator's thread-local words: RCU's reader words, each read or written with
//! one instruction, and a few words other layers keep per thread ([`ThreadWord`]).
//!
//! `thread_local!` on stable Rust reaches its variable through an accessor call that
//! is not inlined across crates, which costs more than the whole RCU read side. On
//! x86_64 Linux the words are a symbol of our own in `.tdata`, whose offset from the
//! thread pointer comes from a TLS descriptor (`@TLSDESC`; see `offset`): a constant
//! in an executable, the static offset in a library loaded at start (LD_PRELOAD), and
//! still an answer in a library `dlopen`ed after glibc's static TLS surplus is gone,
//! where the initial-exec model (`@GOTTPOFF`) would make the load fail. Then
//! `%fs`-relative accesses: the read side touches the words in place. Elsewhere they
//! are a `thread_local!` array.
//!
//! Word 0 is the reader's `ctr`, word 1 its `rcu_special`; both start as `u64::MAX`
//! (no record yet). Other threads reach them through [`rcu_words`]. The words after
//! them are the [`ThreadWord`]s, which the crate keeps here rather than in
//! `thread_local!`s because on x86_64 Linux it does without `std` (so the C library
//! links neither std's runtime nor its unwinder).

use core::sync::atomic::{AtomicU64, Ordering};

/// The value both words start with.
pub const RCU_WORDS_INIT: u64 = u64::MAX;

// Not with `--cfg cpuslab_unsupported`: that build's `sys::cpu::thread_id` is no
// thread pointer, which the block's address is formed from (the words read another
// thread-local's neighbours instead, and RCU's reader slot came back as garbage once
// the layout moved).
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(loom),
    not(cpuslab_unsupported)
))]
mod imp {
    use core::sync::atomic::{AtomicU64, AtomicUsize};

    core::arch::global_asm!(
        ".pushsection .tdata.cpuslab_rcu_reader_tls,\"awT\",@progbits",
        ".balign 16",
        ".globl cpuslab_rcu_reader_tls",
        ".hidden cpuslab_rcu_reader_tls",
        ".type cpuslab_rcu_reader_tls, @object",
        ".size cpuslab_rcu_reader_tls, 64",
        "cpuslab_rcu_reader_tls:",
        // The RCU words, then the `ThreadWord`s with their initial values
        // (`ThreadWord::INIT`, checked by a test).
        ".quad -1, -1, 0, 0, 0, 0, -1, -1",
        ".popsection",
    );

    /// The block's offset from the thread pointer, by TLS descriptor (`@TLSDESC`, the
    /// "gnu2" dialect): the linker turns it into a constant or a GOT load in an
    /// executable and in the preload library (static TLS, as initial-exec); in a
    /// library loaded later with `dlopen` the loader's resolver returns the static
    /// offset while glibc's surplus of static TLS lasts, and a dynamically allocated
    /// block's offset after that, where initial-exec would make `dlopen` fail
    /// ("cannot allocate memory in static TLS block"). The resolver keeps every
    /// register but `rax`. The answer never changes within a thread, so the asm is
    /// `pure` and `nomem`: the compiler may share it between accesses.
    #[inline(always)]
    fn offset() -> usize {
        let off: usize;
        // SAFETY: calls the descriptor's resolver the loader (or linker) set up for our
        // own TLS symbol, with the calling convention TLS descriptors define (argument
        // and answer in rax, nothing else clobbered but flags); not `nostack`, so the
        // stack is aligned for a call and holds no red zone.
        unsafe {
            core::arch::asm!(
                "lea rax, [rip + cpuslab_rcu_reader_tls@TLSDESC]",
                "call qword ptr [rax + cpuslab_rcu_reader_tls@TLSCALL]",
                out("rax") off,
                options(nomem, pure)
            );
        }
        off
    }

    #[inline(always)]
    pub fn ctr() -> u64 {
        let v: u64;
        // SAFETY: reads word 0 of this thread's copy of the block defined above.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr fs:[{off}]",
                off = in(reg) offset(),
                v = lateout(reg) v,
                options(nostack, readonly, pure, preserves_flags)
            );
        }
        v
    }

    #[inline(always)]
    pub fn set_ctr(value: u64) {
        // SAFETY: writes word 0 of this thread's copy of the block defined above. No
        // `nomem`: the compiler keeps every memory access on its side of the store.
        unsafe {
            core::arch::asm!(
                "mov qword ptr fs:[{off}], {v}",
                off = in(reg) offset(),
                v = in(reg) value,
                options(nostack, preserves_flags)
            );
        }
    }

    #[inline(always)]
    pub fn clear_ctr() {
        // SAFETY: as `set_ctr`, with an immediate 0.
        unsafe {
            core::arch::asm!(
                "mov qword ptr fs:[{off}], 0",
                off = in(reg) offset(),
                options(nostack, preserves_flags)
            );
        }
    }

    #[inline(always)]
    pub fn special() -> u64 {
        let v: u64;
        // SAFETY: reads word 1 of this thread's copy of the block defined above.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr fs:[{off} + 8]",
                off = in(reg) offset(),
                v = lateout(reg) v,
                options(nostack, readonly, pure, preserves_flags)
            );
        }
        v
    }

    /// The calling thread's copy of the block: the thread pointer (which
    /// `thread_id` is here) plus the block's offset.
    #[inline]
    fn block() -> *const u8 {
        crate::sys::cpu::thread_id().wrapping_add(offset()) as *const u8
    }

    #[inline]
    pub fn words() -> &'static [AtomicU64; 2] {
        // SAFETY: the block's first 16 bytes are the RCU words; the block lives as
        // long as the thread (callers stop using it before it exits).
        unsafe { &*block().cast::<[AtomicU64; 2]>() }
    }

    #[inline]
    pub fn thread_words() -> &'static [AtomicUsize; super::NR_THREAD_WORDS] {
        // SAFETY: the thread words follow the two RCU words in this thread's block
        // (its 64 bytes are 2 + 6 words), which lives as long as the thread.
        unsafe {
            &*block()
                .add(16)
                .cast::<[AtomicUsize; super::NR_THREAD_WORDS]>()
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(loom),
    not(cpuslab_unsupported)
)))]
mod imp {
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    std::thread_local! {
        static WORDS: [AtomicU64; 2] =
            const { [AtomicU64::new(super::RCU_WORDS_INIT), AtomicU64::new(super::RCU_WORDS_INIT)] };
        static THREAD_WORDS: [AtomicUsize; super::NR_THREAD_WORDS] = const {
            let init = super::ThreadWord::INIT;
            [
                AtomicUsize::new(init[0]),
                AtomicUsize::new(init[1]),
                AtomicUsize::new(init[2]),
                AtomicUsize::new(init[3]),
                AtomicUsize::new(init[4]),
                AtomicUsize::new(init[5]),
            ]
        };
    }

    #[inline]
    pub fn thread_words() -> &'static [AtomicUsize; super::NR_THREAD_WORDS] {
        // SAFETY: const-initialised without drop: valid for the thread's whole life
        // (callers stop using it before the thread exits).
        THREAD_WORDS.with(|w| unsafe { &*(w as *const [AtomicUsize; super::NR_THREAD_WORDS]) })
    }

    #[inline(always)]
    pub fn ctr() -> u64 {
        words()[0].load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_ctr(value: u64) {
        words()[0].store(value, Ordering::Relaxed);
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    #[inline(always)]
    pub fn clear_ctr() {
        words()[0].store(0, Ordering::Release);
    }

    #[inline(always)]
    pub fn special() -> u64 {
        words()[1].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn words() -> &'static [AtomicU64; 2] {
        // SAFETY: const-initialised without drop: valid for the thread's whole life
        // (callers stop using it before the thread exits).
        WORDS.with(|w| unsafe { &*(w as *const [AtomicU64; 2]) })
    }
}

/// The calling thread's RCU `ctr` word (a plain load).
#[inline(always)]
pub fn rcu_ctr() -> u64 {
    imp::ctr()
}

/// Stores `value` in the calling thread's `ctr` word; also a compiler barrier.
#[inline(always)]
pub fn set_rcu_ctr(value: u64) {
    imp::set_ctr(value)
}

/// Stores 0 in the calling thread's `ctr` word, after every access before it (a
/// release store: the compiler keeps them before it, and x86 stores are ordered).
#[inline(always)]
pub fn clear_rcu_ctr() {
    imp::clear_ctr()
}

/// The calling thread's RCU `rcu_special` word (a plain load).
#[inline(always)]
pub fn rcu_special() -> u64 {
    imp::special()
}

/// The calling thread's two RCU words, for other threads and the slow paths. Valid
/// until the thread exits: whoever hands the reference on must take it back first.
#[inline]
pub fn rcu_words() -> &'static [AtomicU64; 2] {
    imp::words()
}

/// How many [`ThreadWord`]s there are.
pub const NR_THREAD_WORDS: usize = 6;

/// A word each thread has of its own, for the layers above: what they would otherwise
/// keep in `thread_local!` cells (const-initialised, without destructors, readable
/// during thread exit). Read with [`ThreadWord::get`], written with
/// [`ThreadWord::set`]; only the thread itself touches its words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ThreadWord {
    /// RCU: the thread's reader slot + 1 (0: not registered).
    RcuSlot = 0,
    /// RCU: 1 once the thread's record was released at exit.
    RcuExiting = 1,
    /// cpusets: the thread's attach slot + 1 (0: never attached itself).
    CpusetSlot = 2,
    /// cpusets: 1 once the thread, never attached itself, was looked up for the
    /// cpuset it inherited.
    CpusetLookedUp = 3,
    /// cpusets: the page spread rotor (`cpuset_mem_spread_rotor`; `usize::MAX`: unset).
    MemSpreadRotor = 4,
    /// cpusets: the slab spread rotor (`cpuset_slab_spread_rotor`; `usize::MAX`: unset).
    SlabSpreadRotor = 5,
}

impl ThreadWord {
    /// Every word's value in a new thread.
    pub const INIT: [usize; NR_THREAD_WORDS] = [0, 0, 0, 0, usize::MAX, usize::MAX];

    /// The calling thread's value of this word.
    #[inline]
    pub fn get(self) -> usize {
        imp::thread_words()[self as usize].load(Ordering::Relaxed)
    }

    /// Sets the calling thread's value of this word.
    #[inline]
    pub fn set(self, value: usize) {
        imp::thread_words()[self as usize].store(value, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{ThreadWord, NR_THREAD_WORDS};

    const ALL: [ThreadWord; NR_THREAD_WORDS] = [
        ThreadWord::RcuSlot,
        ThreadWord::RcuExiting,
        ThreadWord::CpusetSlot,
        ThreadWord::CpusetLookedUp,
        ThreadWord::MemSpreadRotor,
        ThreadWord::SlabSpreadRotor,
    ];

    /// A new thread starts with `INIT` in every word (the asm block's initial values
    /// on x86_64 Linux); a word one thread sets is its own.
    #[test]
    fn thread_words_start_as_init_and_stay_per_thread() {
        std::thread::spawn(|| {
            for w in ALL {
                assert_eq!(
                    w.get(),
                    ThreadWord::INIT[w as usize],
                    "{w:?} in a new thread"
                );
            }
            for w in ALL {
                w.set(1000 + w as usize);
            }
            std::thread::spawn(|| {
                for w in ALL {
                    assert_eq!(w.get(), ThreadWord::INIT[w as usize], "{w:?} in another");
                }
            })
            .join()
            .unwrap();
            for w in ALL {
                assert_eq!(w.get(), 1000 + w as usize, "{w:?} kept");
            }
        })
        .join()
        .unwrap();
    }

    /// The thread words do not overlap the RCU words.
    #[test]
    fn thread_words_leave_the_rcu_words_alone() {
        std::thread::spawn(|| {
            let before = (super::rcu_ctr(), super::rcu_special());
            for w in ALL {
                w.set(7);
            }
            assert_eq!((super::rcu_ctr(), super::rcu_special()), before);
            assert!(ALL.iter().all(|w| w.get() == 7));
        })
        .join()
        .unwrap();
    }
}
