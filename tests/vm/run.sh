#!/usr/bin/env bash
# cpuslab's NUMA and CPU-hotplug tests on a real kernel with several nodes.
#
# Boots Debian's kernel under qemu (TCG software emulation: no KVM needed) three times,
# on 2 nodes x 2 CPUs, on 4 nodes x 1 CPU, and on 4 nodes with 128 possible CPUs of
# which 72 are present and 64 online with sparse ids (manycpu), with an initramfs holding
# only vminit (PID 1) and vmtest (the tests, a static program on cpuslab), reads the
# PASS / FAIL / SKIP lines from the serial console and exits non-zero on any failure,
# crash or timeout.
#
# Installs qemu-system-x86 and cpio with apt-get when missing. Downloads go to
# $CPUSLAB_VM_CACHE (default ~/.cache/cpuslab-vm), so reruns skip them; the build uses
# $CARGO_TARGET_DIR when set, else tests/vm/prog/target.
#
#   tests/vm/run.sh            all three machines
#   tests/vm/run.sh 2node      one of them (2node, 4node, manycpu)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${CPUSLAB_VM_CACHE:-$HOME/.cache/cpuslab-vm}
target_dir=${CARGO_TARGET_DIR:-$here/prog/target}
boot_timeout=${CPUSLAB_VM_BOOT_TIMEOUT:-120} # seconds, per small machine
# TCG runs each of manycpu's 72 vCPUs as a host thread: booting them and taking CPUs
# offline take far longer than a 4-CPU machine's whole run.
manycpu_timeout=${CPUSLAB_VM_MANYCPU_TIMEOUT:-240}
machines=("$@")
[ ${#machines[@]} -gt 0 ] || machines=(2node 4node manycpu)
start=$SECONDS
mkdir -p "$cache"

say() { printf '[vm %3ds] %s\n' $((SECONDS - start)) "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- qemu and cpio -------------------------------------------------------------------
apt_updated=
apt_update() {
  [ -n "$apt_updated" ] && return
  as_root apt-get update -qq
  apt_updated=1
}
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null; then
  say "installing qemu-system-x86 and cpio"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 cpio >/dev/null
fi

# --- the kernel: the package linux-image-amd64 depends on -----------------------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
pkg=$(kernel_pkg || true)
if [ -z "$pkg" ]; then
  apt_update || true
  pkg=$(kernel_pkg || true)
fi
if [ -z "$pkg" ]; then
  # No package lists (offline): the newest kernel already in the cache.
  pkg=$(ls -1 "$cache" 2>/dev/null | grep '^linux-image-[0-9]' | sort -V | tail -n 1 || true)
  [ -n "$pkg" ] || { echo "run.sh: cannot find Debian's kernel package" >&2; exit 1; }
fi
vmlinuz=$cache/$pkg/vmlinuz
if [ ! -s "$vmlinuz" ]; then
  say "fetching $pkg"
  tmp=$(mktemp -d "$cache/dl.XXXXXX")
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
  # The image only: dpkg-deb's tar stream, without the 400 MB of modules.
  dpkg-deb --fsys-tarfile "$tmp"/"$pkg"_*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
  mkdir -p "$cache/$pkg"
  mv "$tmp"/boot/vmlinuz-* "$vmlinuz"
  rm -rf "$tmp"
fi
say "kernel $pkg"

# --- the test program, static --------------------------------------------------------
say "building tests/vm/prog (static)"
(
  cd "$here/prog"
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --quiet --target x86_64-unknown-linux-gnu
)
bin=$target_dir/x86_64-unknown-linux-gnu/release

# --- initramfs: /init (vminit) and /vmtest, nothing else -----------------------------
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/proc "$stage"/sys "$stage"/dev
install -m 0755 "$bin/vminit" "$stage/init"
install -m 0755 "$bin/vmtest" "$stage/vmtest"
# In the staging folder, not the cache: two worktrees' runs sharing a cache must not
# boot each other's programs.
initrd=$stage.cpio
trap 'rm -rf "$stage" "$initrd"' EXIT
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$initrd"

# --- boot ----------------------------------------------------------------------------
failed=0
# boot NAME TIMEOUT EXTRA_CMDLINE QEMU_ARGS...
boot() {
  local name=$1 limit=$2 extra=$3
  shift 3
  local log=$cache/serial-$name.log
  say "booting $name: $* ${extra:+(kernel command line: $extra)}"
  local t0=$SECONDS rc=0 try
  # qemu itself crashing (killed by a signal, exit 128 + n, before the guest reached
  # vminit's VMTEST BEGIN) says nothing about cpuslab: TCG with 72 vCPUs was seen to
  # segfault while the firmware booted. That machine boots once more; a guest that
  # fails, hangs or panics (qemu exits 0 then) is not retried.
  for try in 1 2; do
    rc=0
    timeout -k 5 "$limit" qemu-system-x86_64 -accel tcg -m 1G "$@" \
      -nographic -no-reboot -kernel "$vmlinuz" -initrd "$initrd" \
      -append "console=ttyS0 loglevel=4 numa_balancing=disable panic=-1 rdinit=/init $extra" \
      </dev/null >"$log" 2>&1 || rc=$?
    if [ "$try" = 1 ] && [ "$rc" -gt 128 ] && [ "$rc" != 137 ] &&
      ! tr -d '\r' <"$log" | grep -q '^VMTEST BEGIN '; then
      say "$name: qemu exited $rc before the guest started its tests; booting again"
      continue
    fi
    break
  done
  tr -d '\r' <"$log" >"$log.txt"
  grep -E '^(PASS|FAIL|SKIP|INFO|TIME) |^VMTEST ' "$log.txt" | sed "s/^/[$name] /" || true
  local end pass fail
  end=$(grep -E '^VMTEST END ' "$log.txt" | tail -n 1 || true)
  pass=$(grep -c '^PASS ' "$log.txt" || true)
  fail=$(grep -c '^FAIL ' "$log.txt" || true)
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "[$name] FAIL: no power-off within ${limit} s"
    fail=$((fail + 1))
  elif [ -z "$end" ]; then
    echo "[$name] FAIL: the VM stopped (qemu exit $rc) before VMTEST END"
    fail=$((fail + 1))
  elif [ "$pass" = 0 ]; then
    echo "[$name] FAIL: no PASS line"
    fail=$((fail + 1))
  fi
  if [ "$fail" != 0 ]; then
    failed=1
    echo "[$name] ---- last 40 lines of the serial console ($log.txt) ----"
    tail -n 40 "$log.txt" | sed "s/^/[$name] | /"
  fi
  say "$name: $pass passed, $fail failed in $((SECONDS - t0)) s"
}

for m in "${machines[@]}"; do
  case $m in
    2node)
      boot 2node "$boot_timeout" "" -smp 4,sockets=2,cores=2 \
        -object memory-backend-ram,id=m0,size=512M -object memory-backend-ram,id=m1,size=512M \
        -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
      ;;
    4node)
      boot 4node "$boot_timeout" "" -smp 4,sockets=4,cores=1 \
        -object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M \
        -object memory-backend-ram,id=m2,size=256M -object memory-backend-ram,id=m3,size=256M \
        -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1 \
        -numa node,nodeid=2,cpus=2,memdev=m2 -numa node,nodeid=3,cpus=3,memdev=m3
      ;;
    manycpu)
      # 128 possible CPUs in 8 sockets of 16, 72 present at boot (qemu's present CPUs
      # are always 0 to N-1). Each node holds one socket below 64 and one above, so the
      # present CPUs past the first 64-bit word (64-71) lie on node 0, and the absent
      # ones (72-127) on all four. vminit takes 8 CPUs spread over every node (5, 14,
      # ..., 68) offline before the tests: 64 online, ids up to 71 with gaps, 0-127
      # possible. Only percpu, hotplug and owner_tags (CPUs past 42 have no owner tag of
      # their own) run (placement is the small machines' job);
      # hotplug loads CPUs 61-71 and takes 62, 64, 66, 69 and 71 offline and back.
      # Under TCG each CPU going offline takes seconds (96 present CPUs and 32 offline
      # did not finish in 300 s), so the machine stays near the 64 online asked for.
      # lpj= skips each CPU's delay-loop calibration, which under TCG fails and retries
      # for seconds per CPU; the value is the boot CPU's own from its timer, and only
      # udelay's accuracy depends on it. Expedited RCU grace periods shorten the several
      # that each CPU offline waits for.
      boot manycpu "$manycpu_timeout" \
        "lpj=10400028 rcupdate.rcu_expedited=1 vmtest.timeout=180 vmtest.offline=5-71:1/9 vmtest.tests=percpu,hotplug,owner_tags vmtest.hotplug=61-71" \
        -smp cpus=72,maxcpus=128,sockets=8,cores=16,threads=1 \
        -object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M \
        -object memory-backend-ram,id=m2,size=256M -object memory-backend-ram,id=m3,size=256M \
        -numa node,nodeid=0,cpus=0-15,cpus=64-79,memdev=m0 \
        -numa node,nodeid=1,cpus=16-31,cpus=80-95,memdev=m1 \
        -numa node,nodeid=2,cpus=32-47,cpus=96-111,memdev=m2 \
        -numa node,nodeid=3,cpus=48-63,cpus=112-127,memdev=m3
      ;;
    *)
      echo "run.sh: unknown machine $m (2node, 4node, manycpu)" >&2
      exit 2
      ;;
  esac
done

if [ "$failed" != 0 ]; then
  say "VM tests FAILED"
  exit 1
fi
say "VM tests passed"
