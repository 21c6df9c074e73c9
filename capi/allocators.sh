# Sourced by capi/ops.sh and capi/footprint.sh, with ROOT set to the repository root:
# builds libcpuslab_preload.so and sets ALLOCATORS to name=library pairs (glibc with
# an empty library), cpuslab and glibc first, then jemalloc, mimalloc and tcmalloc
# where Debian's libraries are installed.
cargo build --quiet --release -p cpuslab-preload --manifest-path "$ROOT/Cargo.toml"
TARGET=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
ALLOCATORS=("cpuslab=$TARGET/release/libcpuslab_preload.so" "glibc=")
for pair in jemalloc=libjemalloc.so.2 mimalloc=libmimalloc.so.2 tcmalloc=libtcmalloc_minimal.so.4; do
    lib=/usr/lib/x86_64-linux-gnu/${pair#*=}
    # An `if`, not `&&`: a missing last library must not end a `set -e` caller.
    if [ -f "$lib" ]; then
        ALLOCATORS+=("${pair%%=*}=$lib")
    else
        echo "capi/allocators.sh: ${pair%%=*} not installed ($lib): left out" >&2
    fi
done
