#!/usr/bin/env bash
# Nanoseconds per C allocation operation (capi/ops.c: malloc/free pairs of 64 B and
# 4 KiB, batches of 32, calloc, posix_memalign, realloc growth; on request, bursts
# of 1600 blocks of 64 B, 512 B, 1, 2 or 4 KiB built and dropped: burst64 burst512
# burst1k burst2k burst4k;
# and of 10000 blocks of 64 B, more than a CPU's cache holds: burst64x10k; 4096
# blocks of 64 B freed out of order and allocated again: shuffle64x4k; 8 live
# blocks of 64-256 KiB replaced at random: churn-large; C++'s new and delete of a
# 64-byte object, capi/ops_new.cc: new (sized delete) new-unsized; malloc_trim(0) over
# a small heap: trim; calloc of 64 MiB used sparsely or whole: calloc64m
# calloc64m-fill)
# under cpuslab, glibc, and jemalloc, mimalloc and tcmalloc where Debian's libraries
# are installed. Allocators alternate run by run; each cell lists RUNS runs (default
# 5).
#
#   capi/ops.sh                   # from the repository root
#   RUNS=9 capi/ops.sh pair batch
#   capi/ops.sh burst64 burst512 burst1k
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
OPS=("$@")
[ ${#OPS[@]} -gt 0 ] || OPS=(pair pair4k batch calloc memalign realloc)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpuslab-ops.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

source "$ROOT/capi/allocators.sh"
"${CC:-cc}" -O2 -o "$WORK/ops" "$ROOT/capi/ops.c"
if printf '%s\n' "${OPS[@]}" | grep -q '^new'; then
    "${CXX:-c++}" -O2 -fsized-deallocation -o "$WORK/ops_new" "$ROOT/capi/ops_new.cc"
fi

for op in "${OPS[@]}"; do
    declare -A cell=()
    for _ in $(seq "$RUNS"); do
        for a in "${ALLOCATORS[@]}"; do
            name=${a%%=*}
            bin=$WORK/ops
            case $op in new*) bin=$WORK/ops_new ;; esac
            v=$(LD_PRELOAD=${a#*=} "$bin" "$op" | awk '{print $2}')
            cell[$name]="${cell[$name]:-} $v"
        done
    done
    for a in "${ALLOCATORS[@]}"; do
        name=${a%%=*}
        printf '%-9s %-9s%s\n' "$op" "$name" "${cell[$name]}"
    done
    unset cell
done
