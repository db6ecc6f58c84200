#!/usr/bin/env bash
# Real verbs on a real (software) RDMA device: boots Debian's own kernel in QEMU with
# the kernel's soft-RoCE driver (rdma_rxe on lo) and runs ibpoll-pmd-verbs' test
# binaries there with IBPOLL_RXE=1 (so they must find rxe0): the driver contract's
# conformance suite over the verbs driver (tests/conformance.rs; IBPOLL_RXE_EVENTS=1 lets
# it take lo down and up), the verbs wrappers' tests, plus rdma-core's ibv_ud_pingpong
# in the same boot for comparison.
#
#   scripts/vm-test.sh              (root: installs missing Debian packages with apt)
#
# Prints each test binary's libtest summary line, ibv_ud_pingpong's usec/iter and the
# timings; exits non-zero when a test binary fails, the VM does not power off cleanly,
# or anything expected is missing from its console.
# Knobs (environment): VM_ACCEL=tcg|kvm (default tcg: this project's machines have no
# usable KVM), VM_MEM (MiB, default 1024), VM_SMP (default 2), VM_TIMEOUT (s, default
# 600), VM_WORKDIR (default target/vm-test), PINGPONG_ITERS (1000), PINGPONG_SIZE (1024).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR="$PWD"

ACCEL="${VM_ACCEL:-tcg}"
MEM="${VM_MEM:-1024}"
SMP="${VM_SMP:-2}"
TIMEOUT="${VM_TIMEOUT:-600}"
WORK="${VM_WORKDIR:-$ROOT_DIR/target/vm-test}"
ITERS="${PINGPONG_ITERS:-1000}"
SIZE="${PINGPONG_SIZE:-1024}"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "== vm-test: $*"; }
T_START=$(now)

# ---------------------------------------------------------------- packages
PACKAGES=(qemu-system-x86 linux-image-amd64 rdma-core ibverbs-providers ibverbs-utils
    libibverbs-dev libibumad-dev busybox-static iproute2 kmod cpio)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
T_APT=$(now)

# ---------------------------------------------------------------- test binaries
say "building the test binaries of ibpoll-pmd-verbs"
mapfile -t BINS < <(cargo test --no-run --message-format=json -p ibpoll-pmd-verbs --release 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ ${#BINS[@]} -gt 0 ] || { say "no test binaries found"; exit 1; }
T_BUILD=$(now)

# ---------------------------------------------------------------- initramfs
KVER="$(ls /lib/modules | grep -E 'amd64$' | sort -V | tail -n 1)"
KERNEL="/boot/vmlinuz-$KVER"
[ -r "$KERNEL" ] || { say "no guest kernel $KERNEL (package linux-image-amd64)"; exit 1; }
IMG="$WORK/root"
rm -rf "$IMG"
mkdir -p "$IMG"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/libibverbs.d,proc,sys,dev,tmp,tests}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$IMG/$d"; done   # merged /usr, as Debian

cp /bin/busybox "$IMG/usr/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$IMG/usr/bin/$applet" ] || ln -s busybox "$IMG/usr/bin/$applet"
done

# A file and the shared libraries it needs, at the same paths.
add() {
    local f lib
    for f in "$@"; do
        [ -e "$IMG$f" ] || cp --parents -L "$f" "$IMG/"
        for lib in $(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
            [ -e "$IMG$lib" ] || cp --parents -L "$lib" "$IMG/"
        done
    done
}
LIBDIR=/usr/lib/x86_64-linux-gnu
add /usr/bin/ibv_devinfo /usr/bin/ibv_ud_pingpong /usr/bin/rdma \
    "$LIBDIR/libibverbs.so.1" "$LIBDIR"/libibverbs/librxe-rdmav*.so
cp /etc/libibverbs.d/rxe.driver "$IMG/etc/libibverbs.d/"

# Kernel modules: the dependency closure of rxe (crc32_generic first: the emulated CPU
# has no PCLMUL, and rxe's ICRC asks the crypto API for "crc32").
: > "$IMG/etc/modules"
for m in crc32_generic rdma_rxe; do
    modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
    cp --parents "$ko" "$IMG/"
    echo "$ko" >> "$IMG/etc/modules"
done

names=()
for b in "${BINS[@]}"; do
    n="$(basename "$b")"
    cp "$b" "$IMG/tests/$n"
    if command -v strip >/dev/null 2>&1; then strip --strip-debug "$IMG/tests/$n"; fi
    add "$b"
    names+=("$n")
done
echo "${names[*]}" > "$IMG/etc/tests"
printf 'ITERS=%s\nSIZE=%s\n' "$ITERS" "$SIZE" > "$IMG/etc/vm.conf"

cat > "$IMG/init" <<'INIT'
#!/bin/sh
export PATH=/usr/bin:/usr/sbin
. /etc/vm.conf
mount -t proc proc /proc; mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev; mount -t tmpfs tmpfs /tmp
stamp() { echo "@@AT $1 $(cut -d' ' -f1 /proc/uptime)"; }
status=0
stamp init
for ko in $(cat /etc/modules); do insmod "$ko" || { echo "@@FAIL insmod $ko"; status=1; }; done
ip link set lo up
ip link set lo multicast on
rdma link add rxe0 type rxe netdev lo || { echo "@@FAIL rdma link add"; status=1; }
stamp rxe
GIDX=$(ibv_devinfo -v -d rxe0 | grep 'GID\[' | grep -i '::ffff:127.0.0.1' | head -n 1 | sed 's/.*GID\[ *\([0-9]*\)\].*/\1/')
echo "@@GID ::ffff:127.0.0.1 index ${GIDX:-none}"
ibv_ud_pingpong -d rxe0 -g "${GIDX:-1}" -n "$ITERS" -s "$SIZE" > /tmp/pp-server 2>&1 &
sleep 1
if ibv_ud_pingpong -d rxe0 -g "${GIDX:-1}" -n "$ITERS" -s "$SIZE" 127.0.0.1 > /tmp/pp-client 2>&1; then
    echo "@@PINGPONG $(grep 'iters in' /tmp/pp-client)"
else
    echo "@@PINGPONG failed"; cat /tmp/pp-client
fi
wait
stamp pingpong
cd /tests
for t in $(cat /etc/tests); do
    IBPOLL_RXE=1 IBPOLL_RXE_EVENTS=1 IBPOLL_SKIP_OPENSM=1 RUST_BACKTRACE=1 ./"$t" --test-threads=1 --nocapture > /tmp/out 2>&1
    rc=$?
    cat /tmp/out
    echo "@@TEST $t rc=$rc"
    echo "@@SUMMARY ${t%-*}: $(grep '^test result:' /tmp/out | tail -n 1) (rc=$rc)"
    [ $rc = 0 ] || status=1
done
stamp tests
echo "@@DONE status=$status"
poweroff -f
INIT
chmod +x "$IMG/init"
(cd "$IMG" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$WORK/initramfs.gz"
T_IMG=$(now)
say "initramfs $(du -h "$WORK/initramfs.gz" | cut -f1), ${#names[@]} test binaries, kernel $KVER"

# ---------------------------------------------------------------- boot
case "$ACCEL" in
    tcg) accel=(-accel tcg,thread=multi -cpu max) ;;
    kvm) accel=(-accel kvm -cpu host) ;;
    *) say "VM_ACCEL must be tcg or kvm"; exit 2 ;;
esac
LOG="$WORK/console.log"
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -smp "$SMP" -m "$MEM" \
    -display none -serial stdio -monitor none -no-reboot -nic none \
    -kernel "$KERNEL" -initrd "$WORK/initramfs.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" </dev/null > "$LOG" 2>&1
qemu_rc=$?
set -e
T_VM=$(now)

# ---------------------------------------------------------------- verdict
tr -d '\r' < "$LOG" > "$LOG.txt"
echo "---- test binaries (IBPOLL_RXE=1, rxe0 on lo)"
grep -E '^(test .* \.\.\. |test result:|@@TEST|SKIPPED|thread .* panicked|.*packets each way in|.*: member got|moved QP|as expected)' "$LOG.txt" || true
echo "---- summary (one line per test binary)"
sed -n 's/^@@SUMMARY //p' "$LOG.txt"
echo "---- ibv_ud_pingpong ($ITERS x $SIZE bytes, same boot)"
grep '^@@PINGPONG' "$LOG.txt" || echo "no ibv_ud_pingpong result"
grep -E '^@@(AT|GID|FAIL)' "$LOG.txt" || true
echo "---- timings: apt $(awk -v a="$T_START" -v b="$T_APT" 'BEGIN{printf "%.1f", b-a}')s," \
    "build $(awk -v a="$T_APT" -v b="$T_BUILD" 'BEGIN{printf "%.1f", b-a}')s," \
    "initramfs $(awk -v a="$T_BUILD" -v b="$T_IMG" 'BEGIN{printf "%.1f", b-a}')s," \
    "VM $(awk -v a="$T_IMG" -v b="$T_VM" 'BEGIN{printf "%.1f", b-a}')s, total $(since "$T_START")s"
ok=1
[ "$qemu_rc" = 0 ] || { echo "qemu exited with $qemu_rc (124: timeout; console in $LOG.txt)"; ok=0; }
grep -q '^@@DONE status=0' "$LOG.txt" || { echo "the guest reported a failure (console in $LOG.txt)"; ok=0; }
ran=$(grep -c '^@@TEST ' "$LOG.txt" || true)
[ "$ran" = "${#names[@]}" ] || { echo "ran $ran of ${#names[@]} test binaries"; ok=0; }
grep -q '^@@PINGPONG .*usec/iter' "$LOG.txt" || { echo "ibv_ud_pingpong gave no figure"; ok=0; }
if [ "$ok" = 1 ]; then echo "vm-test: PASS"; else echo "vm-test: FAIL"; exit 1; fi
