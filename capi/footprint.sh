#!/usr/bin/env bash
# What preloading an allocator costs a small C program (capi/footprint.c: 1000
# blocks of 16-215 B allocated and freed): its peak RSS (VmHWM) and, at exit, its
# resident file pages (code and data of the program and its libraries) and anonymous
# pages, in KiB, under cpuslab, glibc, and jemalloc, mimalloc and tcmalloc where
# Debian's libraries are installed. Allocators alternate run by run; each cell lists
# RUNS runs (default 5).
#
#   capi/footprint.sh            # from the repository root
#   RUNS=9 capi/footprint.sh 100000
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
BLOCKS=${1:-1000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpuslab-footprint.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

source "$ROOT/capi/allocators.sh"
"${CC:-cc}" -O2 -o "$WORK/footprint" "$ROOT/capi/footprint.c"

declare -A hwm=() file=() anon=()
for _ in $(seq "$RUNS"); do
    for a in "${ALLOCATORS[@]}"; do
        name=${a%%=*}
        read -r _ h _ f _ n < <(LD_PRELOAD=${a#*=} "$WORK/footprint" "$BLOCKS")
        hwm[$name]="${hwm[$name]:-} $h"
        file[$name]="${file[$name]:-} $f"
        anon[$name]="${anon[$name]:-} $n"
    done
done
printf '%-9s %-8s %s\n' allocator what "KiB, $RUNS runs"
for a in "${ALLOCATORS[@]}"; do
    name=${a%%=*}
    printf '%-9s %-8s%s\n' "$name" peak "${hwm[$name]}"
    printf '%-9s %-8s%s\n' "$name" file "${file[$name]}"
    printf '%-9s %-8s%s\n' "$name" anon "${anon[$name]}"
done
