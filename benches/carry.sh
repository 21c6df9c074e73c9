#!/usr/bin/env bash
# Packs the suite for a machine that has neither a compiler nor the peers' libraries
# (a lent many-core machine): the suite binary, libcpuslab_preload.so and the C
# workloads built here, the peers' libraries from this machine's Debian packages, and
# a run.sh that points the suite at them. Binaries are stripped; the directory is
# about 8 MiB.
#
# Usage (from anywhere):
#   benches/carry.sh DIR                  # build and pack into DIR (created)
#   DIR/run.sh [SUITE OPTIONS...]         # there: runs the suite, e.g.
#   DIR/run.sh --threads 1,2,4,8,16 --rounds 1 --baseline glibc --only larson,mstress
# run.sh writes the report to DIR/target/cpuslab-suite/ and prints it, as the suite
# does; `--child` runs work too (`CPUSLAB_SUITE_ALLOC=cpuslab DIR/suite --child ...`).
# The target's glibc must be 2.34 or later (the suite binary's newest symbols).
set -euo pipefail

OUT=${1:?usage: benches/carry.sh DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/lib"
OUT=$(cd "$OUT" && pwd)

exe=$(cargo bench --quiet --manifest-path "$ROOT/Cargo.toml" -p cpuslab-bench --bench suite \
    --no-run --message-format json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "suite" and m.get("executable"):
        print(m["executable"])')
source "$ROOT/capi/allocators.sh" # builds libcpuslab_preload.so; sets ALLOCATORS
strip -o "$OUT/suite" "$exe"
strip -o "$OUT/libcpuslab_preload.so" "${ALLOCATORS[0]#cpuslab=}"
"${CC:-cc}" -O2 -pthread -o "$OUT/workloads" "$ROOT/benches/c/workloads.c" -ldl
for a in "${ALLOCATORS[@]:2}"; do
    cp -L "${a#*=}" "$OUT/lib/"
done
cat > "$OUT/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the carried suite (see benches/carry.sh in cpuslab's repository).
D=$(cd "$(dirname "$0")" && pwd)
export CPUSLAB_SUITE_LIB_DIRS=$D/lib CPUSLAB_PRELOAD_SO=$D/libcpuslab_preload.so \
    CPUSLAB_SUITE_C_EXE=$D/workloads CARGO_TARGET_DIR=$D/target
exec "$D/suite" "$@"
RUN
chmod +x "$OUT/run.sh"
echo "packed into $OUT: $(du -sh "$OUT" | cut -f1)"
