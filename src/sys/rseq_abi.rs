//! The interface of the per-CPU stack sequences that does not depend on how they are
//! run: the layout of a stack they work on, and the hold bits that make callers step
//! aside. `sys::rseq` on Linux runs the sequences; elsewhere they always fail.

/// Field offsets of a per-CPU stack as `rseq::stack_pop` and `rseq::stack_push` address it:
/// a `u32` that is non-zero while someone has the stack stopped (a lock taken from
/// outside any sequence), the `u32` count of entries, the `u32` limit, and the pointer
/// to the entry array.
///
/// A sequence's only stores are the entry a push writes and the count that commits
/// it. The kernel's `ac->touched`, set on every allocation for the reaper, is not
/// written by the pop: with that store too, a C `malloc(64)`/`free` loop on an AMD
/// EPYC (Zen 4) host took 6.9-7.2 ns a pair at the median against 6.6-6.8 without it,
/// and ran at 18 ns in about one process of seven (`slab::reap` tells a used cache
/// from an idle one by its count instead).
pub mod stack {
    /// The stop word: sequences leave a stack alone while it is non-zero.
    pub const LOCK: usize = 0;
    /// Entries on the stack (`u32`).
    pub const COUNT: usize = 4;
    /// Most entries (`u32`).
    pub const LIMIT: usize = 8;
    /// The entry array (`*mut *mut u8`).
    pub const ENTRY: usize = 24;
    /// Non-zero where `stack_push_nonempty` may push onto the stack while it is empty
    /// (`u32`).
    pub const INTO_EMPTY: usize = 48;

    /// Whether a structure's fields sit at these offsets, for a compile-time check:
    /// the stop word, count, limit and entry pointer, in that order.
    pub const fn laid_out(offsets: [usize; 4]) -> bool {
        offsets[0] == LOCK && offsets[1] == COUNT && offsets[2] == LIMIT && offsets[3] == ENTRY
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
