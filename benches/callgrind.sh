#!/usr/bin/env bash
# Instructions per 64 B alloc+free pair, per allocator, counted by callgrind.
#
# Usage (from anywhere):
#   benches/callgrind.sh [ALLOCATOR...]     default: cpuslab system mimalloc jemalloc
# Environment:
#   N1, N2            pair counts of the two runs (default 200000 and 1200000)
#   CARGO_TARGET_DIR  respected, as by cargo
#
# How it works: `suite --pairs <allocator> <N>` (see benches/suite/child.rs) runs N
# bare pairs -- alloc(64), write one byte, free -- on the allocator's static,
# not through the suite's dispatcher. The script runs it under
# `valgrind --tool=callgrind` with two values of N and reports
#   (instructions(N2) - instructions(N1)) / (N2 - N1),
# which cancels process start-up, allocator initialisation and first-touch
# costs, leaving the steady-state cost of one pair (loop overhead included:
# about 5 instructions).
#
# Under valgrind cpuslab cannot use rseq and takes its fallback per-CPU path,
# so its figure is for that path; the others are unaffected.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || {
    echo "valgrind not found (apt-get install valgrind)" >&2
    exit 1
}
N1=${N1:-200000}
N2=${N2:-1200000}
if [ "$#" -gt 0 ]; then allocs=("$@"); else allocs=(cpuslab system mimalloc jemalloc); fi

echo "building the suite binary..." >&2
exe=$(cargo bench -p cpuslab-bench --bench suite --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -x "$exe" ] || {
    echo "could not find the suite executable" >&2
    exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Total instructions ("Collected") of one callgrind run of N pairs.
count() {
    local alloc=$1 n=$2 log="$tmp/$1.$2.log"
    CPUSLAB_SUITE_ALLOC=system valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/callgrind.out.%p" --log-file="$log" \
        "$exe" --pairs "$alloc" "$n" >/dev/null || {
        echo "valgrind run failed for $alloc (N=$n); log:" >&2
        cat "$log" >&2
        return 1
    }
    awk '/Collected :/ { print $NF }' "$log"
}

printf '%-10s %16s %16s %14s\n' allocator "Ir(N=$N1)" "Ir(N=$N2)" "Ir per pair"
status=0
for a in "${allocs[@]}"; do
    if i1=$(count "$a" "$N1") && i2=$(count "$a" "$N2"); then
        awk -v a="$a" -v i1="$i1" -v i2="$i2" -v n1="$N1" -v n2="$N2" \
            'BEGIN { printf "%-10s %16d %16d %14.1f\n", a, i1, i2, (i2 - i1) / (n2 - n1) }'
    else
        printf '%-10s %16s\n' "$a" FAILED
        status=1
    fi
done
exit $status
