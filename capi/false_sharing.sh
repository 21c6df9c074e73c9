#!/usr/bin/env bash
# Passive false sharing under each allocator (capi/false_sharing.c): the time of a
# cache-scratch run and which cache lines the workers' objects share. Allocators
# alternate run by run, RUNS runs each (default 3).
#
#   capi/false_sharing.sh [THREADS]     # from the repository root; default: all CPUs
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
THREADS=${1:-$(nproc)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpuslab-false-sharing.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

source "$ROOT/capi/allocators.sh"
"${CC:-cc}" -O2 -pthread -o "$WORK/false_sharing" "$ROOT/capi/false_sharing.c"

for _ in $(seq "$RUNS"); do
    for a in "${ALLOCATORS[@]}"; do
        printf '%-9s ' "${a%%=*}"
        LD_PRELOAD=${a#*=} "$WORK/false_sharing" "$THREADS"
    done
done
