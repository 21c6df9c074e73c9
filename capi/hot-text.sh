#!/usr/bin/env bash
# Regenerates capi/hot-text.ld, the order of libcpuslab_preload.so's code: what a
# small program runs first, what no traced program ran last.
#
# The kernel maps a file's pages 64 KiB around each page fault ("fault around"), and
# a program's peak RSS counts them. With the linker's order, boot, the allocation
# paths, the reclaim thread's ticks and exit touch code in every 64 KiB of the
# library's text, and a small program keeps all of it resident. The script writes
# two output sections around the linker's `.text`:
#   - `.text.hot`, before it: the rseq abort handlers and every function a small
#     program runs (capi/footprint.c, and tests/capi/text_resident.c, which stays
#     1.3 s so that the reclaim thread ticks and drains), in order of first call;
#   - `.text.cold`, after it: every function that none of the traced programs ran,
#     the suite's C workloads at a small scale included (threads, remote frees,
#     larger and huge blocks, reallocation), and the small program again without
#     restartable sequences (`CPUSLAB_RSEQ=0`).
# What neither names (the workloads' paths, and any function added, renamed, or
# left out of line by the inliner since the file was made) stays in `.text`, between
# the two: near the start, never in a cold window.
#
# The functions are those a uprobe on every function of the library sees run
# (natively: valgrind would run no restartable sequence). Only Rust functions (their
# hashes cut: `17h<hash>E` and a crate's `Cs<hash>_`) and the library's exports are
# named; a name is cold only if none of the functions it matches ran.
# `tests/preload.rs` checks that cpuslab's entries still name functions and that a
# small program keeps at most 96 KiB of the text resident.
#
# Needs root (uprobes, tracefs) and a C compiler; builds nothing itself, so build
# the library first and give its path when it is not target/release's:
#
#   cargo build --release -p cpuslab-preload
#   sudo capi/hot-text.sh [path/to/libcpuslab_preload.so]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/capi/hot-text.ld
LIB=$(realpath "${1:-$ROOT/target/release/libcpuslab_preload.so}")
[ -f "$LIB" ] || { echo "hot-text.sh: no library at $LIB (build it first)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpuslab-hot-text.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"${CC:-cc}" -O2 -o "$WORK/footprint" "$ROOT/capi/footprint.c"
"${CC:-cc}" -O2 -o "$WORK/text_resident" "$ROOT/tests/capi/text_resident.c"
"${CC:-cc}" -O2 -pthread -o "$WORK/workloads" "$ROOT/benches/c/workloads.c"
"${CXX:-c++}" -O2 -std=c++17 -fsized-deallocation -pthread -o "$WORK/cxx_test" "$ROOT/tests/capi/cxx_test.cc" -ldl

T=/sys/kernel/tracing
[ -w "$T/uprobe_events" ] || T=/sys/kernel/debug/tracing
[ -w "$T/uprobe_events" ] || { echo "hot-text.sh: no writable tracefs (root, mounted)" >&2; exit 1; }
GROUP=cpuslab_hot
# A uprobe at the entry of every function (one per address: identical functions
# folded into one share it), at its file offset.
read -r seg_off seg_addr < <(readelf -lW "$LIB" | awk '$1 == "LOAD" && / R E / { print $2, $3 }')
nm "$LIB" | awk '$2 ~ /^[tT]$/ { print $1, $3 }' | sort >"$WORK/syms"
nm -D --defined-only "$LIB" | awk '$2 == "T" { print $3 }' >"$WORK/exports"
awk '{ print $1 }' "$WORK/syms" | uniq >"$WORK/addrs"
# Before the buffer was first used it reads "7 (expanded: 1408)": the number alone.
old_size=$(awk '{ print $1; exit }' "$T/buffer_size_kb")
old_overwrite=$(cat "$T/options/overwrite")
remove_probes() {
    if [ -e "$T/events/$GROUP/enable" ]; then echo 0 >"$T/events/$GROUP/enable"; fi
    grep -o "^p:$GROUP/[a-z0-9]*" "$T/uprobe_events" | sed 's/^p:/-:/' >"$WORK/del" || true
    if [ -s "$WORK/del" ]; then cat "$WORK/del" >>"$T/uprobe_events"; fi
    echo 0 >"$T/tracing_on"
    echo "$old_size" >"$T/buffer_size_kb"
    echo "$old_overwrite" >"$T/options/overwrite"
}
trap 'remove_probes; rm -rf "$WORK"' EXIT
remove_probes
while read -r a; do
    printf 'p:%s/f%s %s:0x%x\n' "$GROUP" "$a" "$LIB" $((0x$a - seg_addr + seg_off))
done <"$WORK/addrs" >>"$T/uprobe_events"
# Events that do not fit are dropped, and counted, rather than written over the
# first calls, which decide the order.
echo 65536 >"$T/buffer_size_kb"
echo 0 >"$T/options/overwrite"
echo 1 >"$T/events/$GROUP/enable"

# The addresses of the library's functions a program runs, in order of first call
# (the trace merges the CPUs' buffers by time).
run_fns() {
    echo >"$T/trace"
    echo 1 >"$T/tracing_on"
    LD_PRELOAD="$LIB" "$@" >/dev/null 2>&1
    echo 0 >"$T/tracing_on"
    if grep -h "^dropped events: *[1-9]" "$T"/per_cpu/cpu*/stats >&2; then
        echo "hot-text.sh: the trace buffer overflowed during $*" >&2
        exit 1
    fi
    sed -n 's/.*: f\([0-9a-f]*\): (0x.*/\1/p' "$T/trace" | awk '!seen[$0]++'
}

{
    run_fns "$WORK/footprint" 1000
    run_fns "$WORK/text_resident"
} | awk '!seen[$0]++' >"$WORK/hot"
{
    for w in pair64 mixed-batch larson cache-scratch mstress threads256 malloc-large; do
        run_fns "$WORK/workloads" "$w" 2 0.002
    done
    # C++'s operators, which the C programs never call.
    run_fns "$WORK/cxx_test" cpuslab
    # The paths of a machine without restartable sequences (the per-CPU caches'
    # tried locks).
    run_fns env CPUSLAB_RSEQ=0 "$WORK/footprint" 1000
} | cat "$WORK/hot" - | awk '!seen[$0]++' >"$WORK/ran"
if [ "$(grep -c . "$WORK/hot")" -lt 100 ]; then
    echo "hot-text.sh: the traces found $(grep -c . "$WORK/hot") functions: not written" >&2
    exit 1
fi
# Names (Rust functions and exports) with their hashes cut, one a line, for the
# addresses in file $1, in its order; "@all" for every function of the library.
names() {
    awk -v all="$1" '
        FILENAME == ARGV[1] { exported[$1] = 1; next }
        FILENAME == ARGV[2] { addrs[++n] = $1; names[$1] = names[$1] " " $2; next }
        all != "@all" { order[++m] = $1; next }
        END {
            if (all == "@all") for (i = 1; i <= n; i++) order[++m] = addrs[i]
            for (i = 1; i <= m; i++) {
                k = split(names[order[i]], a, " ")
                for (j = 1; j <= k; j++) {
                    if (!(a[j] ~ /^_ZN/ || a[j] ~ /^_R/ || a[j] in exported)) continue
                    name = a[j]
                    sub(/17h[0-9a-f]+E$/, "17h*", name)
                    gsub(/Cs[0-9A-Za-z]+_/, "Cs*_", name)
                    if (!(name in seen)) { seen[name] = 1; print name }
                }
            }
        }' "$WORK/exports" "$WORK/syms" "${1/@all//dev/null}"
}
names "$WORK/hot" >"$WORK/hot.names"
names "$WORK/ran" >"$WORK/ran.names"
names @all | grep -vxF -f "$WORK/ran.names" >"$WORK/cold.names" || true

# The entry points a program calls for each block. Each starts a 64-byte line:
# rustc aligns functions to 16 bytes, and where that left `free`'s inline path
# across one line more, a malloc/free pair of 64 B took 4.7 ns instead of 4.1
# (`capi/ops.sh pair`). Those the small program did not run go at the end of the
# hot code, unless no traced program ran them: those stay in the cold code, aligned
# all the same (a few bytes of padding). `valloc` and `pvalloc` are left as they are.
# glibc's internal names (`__libc_malloc`, ...) are the same functions (the compiler
# merges the identical bodies, under either name's section), aligned as theirs.
ENTRIES="__libc_malloc __libc_free __libc_calloc __libc_realloc __libc_memalign malloc free cfree calloc realloc reallocarray aligned_alloc posix_memalign memalign malloc_usable_size free_sized free_aligned_sized _Znwm _Znam _ZnwmRKSt9nothrow_t _ZnamRKSt9nothrow_t _ZnwmSt11align_val_t _ZnamSt11align_val_t _ZnwmSt11align_val_tRKSt9nothrow_t _ZnamSt11align_val_tRKSt9nothrow_t _ZdlPv _ZdaPv _ZdlPvm _ZdaPvm _ZdlPvRKSt9nothrow_t _ZdaPvRKSt9nothrow_t _ZdlPvSt11align_val_t _ZdaPvSt11align_val_t _ZdlPvmSt11align_val_t _ZdaPvmSt11align_val_t _ZdlPvSt11align_val_tRKSt9nothrow_t _ZdaPvSt11align_val_tRKSt9nothrow_t"
printf '%s\n' $ENTRIES | grep -vxF -f "$WORK/hot.names" | grep -vxF -f "$WORK/cold.names" \
    >>"$WORK/hot.names" || true

# One input-section pattern a name, in both the plain and the cold (`#[cold]`:
# .text.unlikely.) sections; an entry point's after an alignment to 64 bytes.
patterns() {
    awk -v entries="$ENTRIES" 'BEGIN { n = split(entries, e, " "); for (i = 1; i <= n; i++) entry[e[i]] = 1 }
        { if ($0 in entry) print "    . = ALIGN(64);"; printf "    *(.text.%s .text.unlikely.%s)\n", $0, $0 }' "$1"
}
{
    printf '%s\n' \
        "/* Generated by capi/hot-text.sh: the code a small program runs before the" \
        " * linker's .text, the code no traced program ran after it (see the script). A" \
        " * name missing here costs RSS, never correctness. */" \
        "SECTIONS" "{" "  .text.hot :" "  {" "    *(__rseq_failure)"
    patterns "$WORK/hot.names"
    printf '%s\n' "  }" "}" "INSERT BEFORE .text;" "" "SECTIONS" "{" "  .text.cold :" "  {"
    patterns "$WORK/cold.names"
    printf '%s\n' "  }" "}" "INSERT AFTER .text;"
    # The PLT's one entry (crtbeginS's call of __cxa_finalize, during exit) beside the
    # hot code: after the cold code it cost a fault and a 64 KiB window of cold text
    # at every exit.
    printf '%s\n' "" "SECTIONS" "{" "  .plt : { *(.plt) }" "}" "INSERT BEFORE .text.hot;"
    # Where the text's mapping starts among the 64 KiB windows: the hot code (about
    # 75 KiB) spans two, and a fault maps the whole window within the mapping. Padding
    # after the read-only data (the unwind tables' tail, which nothing reads) makes the
    # mapping start 20 KiB before a window's end, so the two windows hold 84 KiB of it;
    # where it started 48 KiB before, a small program kept 112 KiB of code resident.
    # (The linker starts the text on the page after the one the read-only data ends in.)
    printf '%s\n' "" "SECTIONS" "{" "  .cpuslab_text_align :" "  {" \
        "    . = . + ((0xA7FF - (. & 0xFFFF)) & 0xFFFF);" "    BYTE(0)" "  }" "}" \
        "INSERT AFTER .eh_frame;"
} >"$OUT"
echo "wrote $OUT ($(grep -c . "$WORK/hot.names") hot, $(grep -c . "$WORK/cold.names") cold)" >&2
