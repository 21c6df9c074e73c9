#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) on the stable
# toolchain; exits non-zero if any target crashed, hung or failed to build.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Each run starts from fuzz/corpus/<target> (kept between runs, git-ignored) and the
# saved inputs of fuzz/regressions/<target>, which are replayed first: a bug found once
# fails every later run until it is fixed. Crashing inputs land in
# fuzz/artifacts/<target>/. FUZZ_SANITIZER=none skips AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-20}
if [ $# -gt 0 ]; then shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(global_alloc kmem_cache percpu buddy masks)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov); let stable accept them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
# Assertions and overflow checks on in cpuslab too; libFuzzer's own -jobs stay at 1.
flags=(--release --debug-assertions)

sanitizer=${FUZZ_SANITIZER:-address}
echo "== cargo fuzz build (sanitizer: $sanitizer)"
if ! cargo fuzz build "${flags[@]}" --sanitizer "$sanitizer"; then
  if [ "$sanitizer" = none ]; then
    echo "fuzz/run.sh: build failed" >&2
    exit 1
  fi
  echo "fuzz/run.sh: the $sanitizer build failed; falling back to --sanitizer none" >&2
  sanitizer=none
  cargo fuzz build "${flags[@]}" --sanitizer none
fi
flags+=(--sanitizer "$sanitizer")

failed=()
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  mkdir -p "corpus/$t" "regressions/$t"
  start=$SECONDS
  # -timeout: one input running a minute is a hang; the outer timeout catches a wedge
  # that libFuzzer itself cannot report (a deadlock in a signal-blocked path).
  if timeout --kill-after=10 $((secs + 180)) \
    cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$secs" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
    >"/tmp/cpuslab-fuzz-$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "/tmp/cpuslab-fuzz-$t.log" || true
    echo "   ok ($((SECONDS - start))s)"
  else
    rc=$?
    # The panic message and the input that caused it.
    log="/tmp/cpuslab-fuzz-$t.log"
    grep -E -A3 "panicked at|^SUMMARY:|ERROR: libFuzzer: (timeout|out-of-memory)" "$log" | head -30 ||
      tail -40 "$log"
    sed -n '/^Failing input:/,/^Reproduce with:/p' "$log" | head -60
    echo "   FAILED (exit $rc, $((SECONDS - start))s; full log /tmp/cpuslab-fuzz-$t.log)"
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz/run.sh: all ${#targets[@]} targets ran ${secs}s without a crash (sanitizer: $sanitizer)"
