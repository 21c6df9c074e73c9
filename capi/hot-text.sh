#!/usr/bin/env bash
# Regenerates capi/hot-text.ld, the order of libcpuslab_preload.so's code: the
# functions programs run, first, so that they share a few pages.
#
# The kernel maps a file's pages 64 KiB around each page fault ("fault around"), and
# a program's peak RSS counts them. With the linker's order, boot, the allocation
# paths and exit touch code in every 64 KiB of the library's text, and a small
# program keeps all of it resident; gathered, they fit in the first two windows.
#
# The functions are those a uprobe on every function of the library sees run
# (natively: valgrind would run no restartable sequence), in order of first call:
#   1. capi/footprint.c, a small program: boot, blocks of 16-215 B, exit; then the
#      rseq abort handlers;
#   2. the suite's C workloads (benches/c/workloads.c) at a small scale: threads,
#      remote frees, larger and huge blocks, reallocation.
# Only Rust functions (their hashes cut: `17h<hash>E` and a crate's `Cs<hash>_`) and
# the library's exports are named: the start files' functions sit in plain .text,
# which the script's first line takes whole. Entries of cpuslab's own code hold
# across builds; those of core and alloc are best effort (what inlining leaves out
# of line changes with the toolchain). `tests/preload.rs` checks that cpuslab's
# entries still name functions and that a small program keeps at most 96 KiB of the
# text resident.
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
"${CC:-cc}" -O2 -pthread -o "$WORK/workloads" "$ROOT/benches/c/workloads.c"

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
old_size=$(cat "$T/buffer_size_kb")
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
    echo "@rseq_failure"
    for w in pair64 mixed-batch larson cache-scratch mstress threads256 malloc-large; do
        run_fns "$WORK/workloads" "$w" 2 0.002
    done
} >"$WORK/hits"
awk '!seen[$0]++' "$WORK/hits" >"$WORK/hit"
# Every name at each address, in the order hit: Rust functions and exports only.
awk 'FILENAME == ARGV[1] { exported[$1] = 1; next }
     FILENAME == ARGV[2] { names[$1] = names[$1] " " $2; next }
     $0 == "@rseq_failure" { print; next }
     {
         n = split(names[$0], a, " ")
         for (i = 1; i <= n; i++)
             if (a[i] ~ /^_ZN/ || a[i] ~ /^_R/ || a[i] in exported) print a[i]
     }' "$WORK/exports" "$WORK/syms" "$WORK/hit" >"$WORK/fns"
found=$(grep -c . "$WORK/fns" || true)
if [ "$found" -lt 100 ] || ! grep -qx malloc "$WORK/fns"; then
    echo "hot-text.sh: the traces named $found functions (and malloc?): not written" >&2
    exit 1
fi

# One input-section pattern a function, in both the plain and the cold (`#[cold]`:
# .text.unlikely.) sections, the hashes cut.
{
    printf '%s\n' \
        "/* Generated by capi/hot-text.sh: the code libcpuslab_preload.so runs, gathered at" \
        " * the start of its text (see the script). Functions not named here follow in the" \
        " * linker's order; a missing name costs RSS, never correctness. */" \
        "SECTIONS" "{" "  .text.hot :" "  {" "    *(.text)"
    awk '
        $0 == "@rseq_failure" { print "    *(__rseq_failure)"; next }
        {
            name = $0
            sub(/17h[0-9a-f]+E$/, "17h*", name)
            gsub(/Cs[0-9A-Za-z]+_/, "Cs*_", name)
            if (name in seen) next
            seen[name] = 1
            printf "    *(.text.%s .text.unlikely.%s)\n", name, name
        }' "$WORK/fns"
    printf '%s\n' "  }" "}" "INSERT BEFORE .text;"
} >"$OUT"
echo "wrote $OUT ($(grep -c '^    \*(\.text\.' "$OUT") functions)" >&2
