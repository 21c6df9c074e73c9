#!/usr/bin/env bash
# Wall time and peak RSS of real programs under cpuslab (LD_PRELOAD), glibc's malloc,
# and jemalloc and mimalloc where their shared libraries are installed (Debian:
# apt-get install libjemalloc2 libmimalloc2.0). Allocators alternate run by run; each
# cell is the median of RUNS runs (default 5). Prints three markdown tables: wall
# time, peak RSS, and CPU time (less disturbed than wall time on a busy machine).
#
#   capi/bench.sh                 # from the repository root
#   RUNS=9 capi/bench.sh
#
# Peak RSS is the largest resident set of any single process of the run (getrusage's
# ru_maxrss over the waited-for children), e.g. cc1 for gcc.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpuslab-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "building libcpuslab_preload.so ..." >&2
cargo build --quiet --release -p cpuslab-preload --manifest-path "$ROOT/Cargo.toml"
TARGET=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
CPUSLAB_SO=$TARGET/release/libcpuslab_preload.so

# name=library ("" for glibc), in table order
ALLOCATORS=("glibc=" "cpuslab=$CPUSLAB_SO")
for lib in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2; do
    [ -f "$lib" ] && ALLOCATORS+=("jemalloc=$lib") && break
done
for lib in /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 /usr/lib/aarch64-linux-gnu/libmimalloc.so.2; do
    [ -f "$lib" ] && ALLOCATORS+=("mimalloc=$lib") && break
done

# ---- inputs, made once
echo "preparing inputs in $WORK ..." >&2
PYTHON=$(python3 -c 'import sys; print(sys.executable)') # past pyenv-style shims
cp "$ROOT/tests/capi/alloc_heavy.py" "$WORK/"
rustc -O --edition 2021 -o "$WORK/threads" "$ROOT/tests/capi/threads.rs"
python3 - "$WORK" <<'EOF'
import os, random, sys
work = sys.argv[1]
rng = random.Random(42)
with open(os.path.join(work, "sort.txt"), "w") as f:
    for i in range(1_000_000):
        f.write(f"{rng.getrandbits(24):x} {rng.randrange(1_000_003)} line{i % 977}\n")
with open(os.path.join(work, "gen.c"), "w") as f:
    f.write("#include <stdio.h>\n#include <string.h>\n")
    for k in range(300):
        n = k % 17 + 3
        f.write(f"struct s{k} {{ int a[{n}]; char name[32]; }};\n"
                f"static int fn{k}(int x) {{ struct s{k} v; memset(&v, 0, sizeof v);\n"
                f"  for (int i = 0; i < {n}; i++) v.a[i] = x * i + {k};\n"
                f"  snprintf(v.name, sizeof v.name, \"fn{k}-%d\", x);\n"
                f"  int acc = 0; for (int i = 0; i < {n}; i++) acc ^= v.a[i] << (i % 7);\n"
                f"  switch (x % 5) {{ case 0: acc += {k}; break; case 1: acc -= (int)strlen(v.name); break;\n"
                f"  case 2: acc *= 3; break; default: acc = ~acc; }}\n  return acc; }}\n")
    f.write("int main(void) { long sum = 0;\n")
    for k in range(300):
        f.write(f"  sum += fn{k}({k * 13 % 101});\n")
    f.write('  printf("%ld\\n", sum); return 0; }\n')
tpl = os.path.join(work, "repo-template")
for d in range(40):
    os.makedirs(os.path.join(tpl, f"dir{d:02}"))
    for k in range(25):
        with open(os.path.join(tpl, f"dir{d:02}", f"f{k:02}.txt"), "w") as f:
            for line in range(k * 7 + d):
                f.write(f"file {d}/{k} line {line} {line * 31 % 97}\n")
EOF

export LC_ALL=C GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=$WORK
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org
GIT_SCRIPT='git init -q -b main . && git add . && git commit -q -m first &&
echo changed >> dir03/f04.txt && git commit -q -a -m second && git log --stat >/dev/null &&
git repack -adq && git fsck --full --no-progress'
GIT_SCRIPT=${GIT_SCRIPT//$'\n'/ }

# ---- programs: "label|setup command|command", run in $WORK
PROGRAMS=(
    "python3 (pymalloc)||$PYTHON alloc_heavy.py"
    "python3 (PYTHONMALLOC=malloc)||env PYTHONMALLOC=malloc $PYTHON alloc_heavy.py"
    "git init/add/commit/repack|rm -rf repo && cp -r repo-template repo|sh -c 'cd repo && $GIT_SCRIPT'"
    "sort 1M lines|| sort -S 128M sort.txt"
    "gcc -O2 -c (300 functions)||gcc -O2 -c gen.c -o gen.o"
    "Rust threads (system allocator)||./threads"
)

# Runs one command (a shell string) under one allocator; prints "wall-seconds kib
# cpu-seconds" (cpu: user + system of all its processes).
measure() {
    local lib=$1 cmd=$2
    local pre=()
    [ -n "$lib" ] && pre=(env "LD_PRELOAD=$lib")
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.out" "${pre[@]}" sh -c "$cmd" >/dev/null 2>&1
        awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$WORK/time.out"
    else
        python3 -c '
import os, resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.2f %d %.2f" % (time.monotonic() - t, r.ru_maxrss, r.ru_utime + r.ru_stime))
' "${pre[@]}" sh -c "$cmd"
    fi
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cd "$WORK"
declare -A TIME RSS CPU
for p in "${PROGRAMS[@]}"; do
    IFS='|' read -r label setup cmd <<<"$p"
    echo "measuring: $label" >&2
    for a in "${ALLOCATORS[@]}"; do : >"$WORK/${a%%=*}.samples"; done
    for ((run = 0; run < RUNS; run++)); do
        for a in "${ALLOCATORS[@]}"; do
            [ -n "$setup" ] && sh -c "$setup"
            measure "${a#*=}" "$cmd" >>"$WORK/${a%%=*}.samples"
        done
    done
    for a in "${ALLOCATORS[@]}"; do
        name=${a%%=*}
        TIME[$label/$name]=$(awk '{ print $1 }' "$WORK/$name.samples" | median)
        RSS[$label/$name]=$(awk '{ printf "%.1f\n", $2 / 1024 }' "$WORK/$name.samples" | median)
        CPU[$label/$name]=$(awk '{ print $3 }' "$WORK/$name.samples" | median)
    done
done

names=()
for a in "${ALLOCATORS[@]}"; do names+=("${a%%=*}"); done
table() {
    local -n cells=$1
    local title=$2
    printf '| %s |' "$title"
    printf ' %s |' "${names[@]}"
    printf '\n|---|'
    printf -- '---:|%.0s' "${names[@]}"
    printf '\n'
    for p in "${PROGRAMS[@]}"; do
        label=${p%%|*}
        printf '| %s |' "$label"
        for n in "${names[@]}"; do printf ' %s |' "${cells[$label/$n]}"; done
        printf '\n'
    done
}
echo
echo "Median of $RUNS runs on $(nproc) CPUs, $(uname -r)."
echo
table TIME "wall time (s)"
echo
table RSS "peak RSS (MiB)"
echo
table CPU "CPU time, user + system (s)"
