//! The interface of the per-CPU stack sequences that does not depend on how they are
//! run: the layout of a stack they work on, and the hold bits that make callers step
//! aside. `sys::rseq` on Linux runs the sequences; elsewhere they always fail.

/// Field offsets of a per-CPU stack as `rseq::stack_pop` and `rseq::stack_push` address it:
/// a `u32` that is non-zero while someone has the stack stopped (a lock taken from
/// outside any sequence), the `u32` limit, the `u32` count of entries, a `u32` set on
/// every pop ("touched", the kernel's `ac->touched`), and the pointer to the entry
/// array.
///
/// The count and the touched word are one aligned 8-byte word, so that a pop commits
/// both with a single store. With a store of its own for the touched word, a C
/// `malloc(64)`/`free` loop on an AMD EPYC (Zen 4) host ran at 7 ns a pair in most
/// processes and at 18 in about one of seven, for the whole run (in none of 60 with
/// the one store), and its median was 1-5% higher.
pub mod stack {
    /// The stop word: sequences leave a stack alone while it is non-zero.
    pub const LOCK: usize = 0;
    /// Most entries (`u32`).
    pub const LIMIT: usize = 4;
    /// Entries on the stack (`u32`), the low half of an aligned 8-byte word.
    pub const COUNT: usize = 8;
    /// Set to 1 by every pop (`u32`), the high half of the count's word.
    pub const TOUCHED: usize = COUNT + 4;
    /// The entry array (`*mut *mut u8`).
    pub const ENTRY: usize = 24;
    /// Non-zero where `stack_push_nonempty` may push onto the stack while it is empty
    /// (`u32`).
    pub const INTO_EMPTY: usize = 48;

    /// Whether a structure's fields sit at these offsets, for a compile-time check:
    /// the stop word, count, limit, touched word and entry pointer, in that order.
    pub const fn laid_out(offsets: [usize; 5]) -> bool {
        offsets[0] == LOCK
            && offsets[1] == COUNT
            && offsets[2] == LIMIT
            && COUNT.is_multiple_of(8)
            && offsets[3] == TOUCHED
            && offsets[4] == ENTRY
    }
}

/// Hold bit: the callers' inline pop fast paths step aside for their full paths (a
/// placement policy wants to see every allocation).
pub const HOLD_POP: usize = 1;
/// Hold bit: the machine has more than one node, so a free may be of another node's
/// object, which must not go onto this CPU's array cache (`cache_free_alien`): the
/// callers' inline push fast paths compare the object's node with the CPU's first.
pub const HOLD_NODES: usize = 2;

/// Hold bit: the stack sequences are off (set until `rseq::enable_stacks`). Their area
/// offset is meaningless then: a sequence would write its descriptor into the thread
/// control block, so nothing may run one while this bit is set.
pub const HOLD_OFF: usize = 4;

/// Hold bit: the stack sequences were retired (`rseq::retire_stacks`): the kernel stopped
/// letting other threads restart them. The area offset stays valid and the CPU bound
/// is 0, so a sequence that still runs fails before its commit.
pub const HOLD_GONE: usize = 8;

/// Hold bit: kmalloc's tables of array caches by size are not filled yet (set until its
/// boot fills them, then released): its inline pops step aside, and so need not test a
/// table entry for null on every allocation.
pub const HOLD_TABLES: usize = 16;

/// Hold bit: whether the preload library's C++ operators serve the program is not
/// decided yet, or they forward to the C++ runtime's (the program replaces some
/// operators: `sys::cxx::decide_operators`). Set from the start and released once they
/// are decided to serve; only the operators' inline paths test it, folded into the
/// test of the bits they test already.
pub const HOLD_CXX: usize = 32;

/// Hold bit: some blocks that `CpuSlab` handed out are glibc's (the kernel refused
/// cpuslab an arena and the system allocator served instead: `kmalloc`'s `MIXED`).
/// Set once, never cleared: the sized frees' inline pushes step aside, so that their
/// full paths, which look at the arena map, give glibc its blocks.
pub const HOLD_FOREIGN: usize = 64;

/// The hold bits under which callers must use their locked paths instead of the
/// stack sequences: not enabled yet, or retired.
pub const HOLD_STOPPED: usize = HOLD_OFF | HOLD_GONE;
