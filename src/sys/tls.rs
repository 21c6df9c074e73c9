//! A thread-local word read with one instruction.
//!
//! `thread_local!` on stable Rust reaches its variable through an accessor call that
//! is not inlined across crates, which costs more than the whole RCU read side. On
//! x86_64 Linux the word is a symbol of our own in `.tbss`, read with the
//! initial-exec model (`@GOTTPOFF`: the thread-pointer offset from the GOT, then an
//! `%fs`-relative load), which works in executables and in libraries loaded at start
//! (LD_PRELOAD), as jemalloc and tcmalloc place their thread caches. Elsewhere it is a
//! `thread_local!` cell.

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
mod imp {
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".balign 8",
        ".globl cpuslab_rcu_reader_tls",
        ".hidden cpuslab_rcu_reader_tls",
        ".type cpuslab_rcu_reader_tls, @object",
        ".size cpuslab_rcu_reader_tls, 8",
        "cpuslab_rcu_reader_tls:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub fn get() -> usize {
        let v: usize;
        // SAFETY: reads this thread's copy of an 8-byte TLS object we defined above.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + cpuslab_rcu_reader_tls@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure)
            );
        }
        v
    }

    #[inline]
    pub fn set(value: usize) {
        // SAFETY: writes this thread's copy of an 8-byte TLS object we defined above.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + cpuslab_rcu_reader_tls@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) value,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
mod imp {
    use core::cell::Cell;

    std::thread_local! {
        static WORD: Cell<usize> = const { Cell::new(0) };
    }

    #[inline(always)]
    pub fn get() -> usize {
        WORD.get()
    }

    #[inline]
    pub fn set(value: usize) {
        WORD.set(value)
    }
}

/// The calling thread's RCU reader word (its record's address; 0 until registered).
#[inline(always)]
pub fn rcu_reader() -> usize {
    imp::get()
}

/// Sets the calling thread's RCU reader word.
#[inline]
pub fn set_rcu_reader(value: usize) {
    imp::set(value)
}
