#!/usr/bin/env bash
# cpuslab built against, and run on, an older glibc: Debian 11's 2.31, which has no
# `__rseq_offset`/`__rseq_size` (2.35), no merged libpthread (2.34) and registers no
# rseq area. This is the platform the weak references are for.
#
# Downloads Debian 11's libc6, libc6-dev and libgcc-s1 packages (about 6 MB, cached in
# $CPUSLAB_OLDGLIBC_CACHE, default ~/.cache/cpuslab-oldglibc), unpacks them into a
# sysroot, and then:
#   1. links libcpuslab_preload.so and a Rust cdylib on `CpuSlab` (tests/plugin)
#      against that sysroot, each in its own build (the plugin without `capi`), and
#      checks that neither needs a symbol version newer than GLIBC_2.31;
#   2. links the C test programs against it, with glibc 2.31's dynamic loader as their
#      interpreter, so they run on 2.31 alone on this machine;
#   3. runs tests/capi/capi_test.c (every exported function and its error cases) under
#      LD_PRELOAD on 2.31, which must take the tried-lock fast path and say so, and
#      tests/capi/dlclose_host.c (the cdylib loaded late, called from every thread,
#      unloaded and loaded again);
#   4. runs the library's unit tests and its pure-Rust integration tests as executables
#      linked against, and loaded by, glibc 2.31.
# Exits non-zero on any failure. Without network it says so and exits 0 (as the
# suite does without its competitors' libraries).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CPUSLAB_OLDGLIBC_CACHE:-$HOME/.cache/cpuslab-oldglibc}
work=$repo/target/oldglibc
root=$work/root
mirror=http://deb.debian.org/debian
suite=bullseye
packages=(libc6 libc6-dev libgcc-s1)
start=$SECONDS
say() { printf '[oldglibc %3ds] %s\n' $((SECONDS - start)) "$*"; }
fail() { say "FAIL: $*"; exit 1; }
mkdir -p "$cache" "$work"

# --- the packages ----------------------------------------------------------------
# The pool file names carry the point release, so they are looked up in the suite's
# package index rather than written here.
debs=()
for pkg in "${packages[@]}"; do
  found=$(ls "$cache/${pkg}_"*_amd64.deb 2>/dev/null | head -1 || true)
  [ -n "$found" ] && debs+=("$found")
done
if [ ${#debs[@]} -ne ${#packages[@]} ]; then
  say "downloading Debian 11's ${packages[*]}"
  if ! curl -fsS --max-time 120 "$mirror/dists/$suite/main/binary-amd64/Packages.xz" \
    -o "$cache/Packages.xz" || ! xz -dcf "$cache/Packages.xz" >"$cache/Packages"; then
    say "warning: cannot reach $mirror (no network?); skipped"
    exit 0
  fi
  debs=()
  for pkg in "${packages[@]}"; do
    file=$(awk -v p="$pkg" '$1 == "Package:" { hit = ($2 == p) }
      hit && $1 == "Filename:" { print $2; exit }' "$cache/Packages")
    [ -n "$file" ] || fail "$pkg is not in $suite's index"
    curl -fsS --max-time 120 "$mirror/$file" -o "$cache/$(basename "$file")" ||
      fail "cannot download $file"
    debs+=("$cache/$(basename "$file")")
  done
fi

# --- the sysroot -----------------------------------------------------------------
rm -rf "$root"
mkdir -p "$root"
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$root"; done
# Absolute links (libc.so.6's development link, ld.so's /lib64 name) would lead the
# linker back to this machine's glibc: point them inside the sysroot.
find "$root" -type l -lname '/*' | while read -r link; do
  ln -sfn "$root$(readlink "$link")" "$link"
done
ldso=$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[ -e "$ldso" ] || fail "no dynamic loader in the packages"
version=$(basename "$(readlink -f "$ldso")" .so) # ld-2.31
version="glibc ${version#ld-}"
say "sysroot: $version"
libdirs=$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu

# --- the libraries -----------------------------------------------------------------
# An explicit --target keeps RUSTFLAGS off build scripts, which run here. Each library
# is its own build so that cargo does not unite their features.
export CARGO_TARGET_DIR=$work/target
export RUSTFLAGS="-L native=$root/usr/lib/x86_64-linux-gnu -C link-arg=--sysroot=$root"
out=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
for crate in cpuslab-preload cpuslab-test-plugin; do
  say "building $crate against it"
  (cd "$repo" && cargo build -q --release --target x86_64-unknown-linux-gnu -p "$crate")
done
for so in "$out/libcpuslab_preload.so" "$out/libcpuslab_test_plugin.so"; do
  needs=$(objdump -p "$so" | awk '/required from/ { lib = $3 } $4 ~ /^GLIBC_/ { print lib, $4 }')
  newer=$(awk '{ split(substr($2, 7), v, "."); if (v[1] > 2 || (v[1] == 2 && v[2] > 31)) print }' <<<"$needs")
  [ -z "$newer" ] || fail "$(basename "$so") needs versions 2.31 lacks: $newer"
  say "$(basename "$so"): newest version needed $(sort -t. -k2,2n <<<"$needs" | awk '{ print $2 }' | sort -V | tail -1)"
done

# --- the programs -------------------------------------------------------------------
# --disable-new-dtags: an RPATH (not RUNPATH) also finds the libraries' own needs
# (libgcc_s), so nothing of this machine's glibc 2.36 is loaded.
cflags=(--sysroot="$root" -idirafter /usr/include -idirafter /usr/include/x86_64-linux-gnu
  -L"$root/usr/lib/x86_64-linux-gnu" -Wl,--dynamic-linker="$ldso"
  -Wl,--disable-new-dtags -Wl,-rpath="$libdirs" -O2 -pthread)
for prog in capi_test dlclose_host; do
  gcc "${cflags[@]}" "$repo/tests/capi/$prog.c" -o "$work/$prog" -ldl
done

say "capi_test under LD_PRELOAD on $version"
log=$work/capi_test.log
if ! env -u CPUSLAB_RSEQ LD_PRELOAD="$out/libcpuslab_preload.so" CPUSLAB_STATS=1 \
  "$work/capi_test" cpuslab >"$log" 2>&1; then
  tail -20 "$log"
  fail "capi_test"
fi
grep -q '^capi_test: ok' "$log" || fail "capi_test did not finish: $(tail -3 "$log")"
grep -q '^cpuslab: per-CPU fast path: trylock (no rseq area' "$log" ||
  fail "capi_test: no tried-lock fast path line: $(grep '^cpuslab: per-CPU' "$log" || true)"
grep -q 'libc.so.6 => .*'"$root" < <(LD_TRACE_LOADED_OBJECTS=1 "$work/capi_test") ||
  fail "capi_test did not load the sysroot's glibc"
say "$(grep '^capi_test: ok' "$log")"

# The library must bring what it needs itself: on 2.31 `dlsym` is libdl's and the
# thread calls libpthread's, which a program linked without -ldl and -pthread does not
# load. Immediate binding reports any symbol left unresolved at start.
say "a program linked without -ldl or -pthread, under LD_PRELOAD, bound at start"
cat >"$work/plain.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void)
{
    for (int i = 0; i < 100000; i++) {
        char *p = malloc(16 + i % 4000);
        if (!p)
            return 1;
        memset(p, 1, 16);
        free(p);
    }
    puts("plain: ok");
    return 0;
}
EOF
plain_flags=()
for f in "${cflags[@]}"; do [ "$f" = -pthread ] || plain_flags+=("$f"); done
gcc "${plain_flags[@]}" "$work/plain.c" -o "$work/plain"
result=$(LD_BIND_NOW=1 LD_PRELOAD="$out/libcpuslab_preload.so" "$work/plain" 2>&1) ||
  fail "plain program under the library: exit $?: $result"
grep -q '^plain: ok' <<<"$result" || fail "plain program under the library: $result"

say "dlclose_host: a cdylib on CpuSlab loaded late, unloaded, loaded again (3 runs)"
for round in 1 2 3; do
  result=$("$work/dlclose_host" "$out/libcpuslab_test_plugin.so" 2>&1) ||
    fail "dlclose_host round $round: exit $?: $result"
  grep -q 'dlclose_host: ok' <<<"$result" || fail "dlclose_host round $round: $result"
done

# --- the library's own tests ---------------------------------------------------------
# Test executables on 2.31 the same way (its loader, its libraries): the unit tests and
# the integration tests that start no C program and preload no library of this build.
say "the library's tests, linked and run on $version"
RUSTFLAGS+=" -L native=$root/lib/x86_64-linux-gnu -C link-arg=-Wl,--dynamic-linker=$ldso"
RUSTFLAGS+=" -C link-arg=-Wl,--disable-new-dtags -C link-arg=-Wl,-rpath=$libdirs"
log=$work/cargo_test.log
if ! (cd "$repo" && env -u CPUSLAB_RSEQ cargo test -q --release --target x86_64-unknown-linux-gnu \
  -p cpuslab --lib --test collections --test rcu --test stress --test pages --test percpu \
  --test process --test cpuset) >"$log" 2>&1; then
  tail -40 "$log"
  fail "the library's tests on $version"
fi
grep '^test result' "$log"
say "PASS: glibc 2.31 builds, loads and runs cpuslab"
