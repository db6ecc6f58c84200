#!/usr/bin/env bash
# Real verbs on a real (software) RDMA device: boots Debian's own kernel in QEMU with
# the kernel's soft-RoCE driver (rdma_rxe on lo; RoCE v2) and runs there, in one boot
# (the guest's /init is scripts/vm-init.sh):
#   tests   ibpoll-pmd-verbs' test binaries with IBPOLL_RXE=1 (so they must find rxe0):
#           the driver contract's conformance suite over the verbs driver
#           (tests/conformance.rs; IBPOLL_RXE_EVENTS=1 lets it take lo down and up) and
#           the verbs wrappers' tests;
#   e2e     two ibpoll stacks in two processes on rxe0: udp_echo's server and client
#           (unicast request/response), mcast_feed's subscribers and publisher (4 IPv4
#           multicast groups); each process checks its counts, its drops and that
#           every buffer is back in its pool after its stop;
#   pktgen  `pktgen --fabric verbs:rxe0 --topology direct` streaming (unicast and
#           multicast), then PINGPONG_ROUNDS rounds of rdma-core's ibv_ud_pingpong and
#           pktgen's ping-pong back to back, at the same UD message size (pktgen's IP
#           packet plus the 4-byte IPoIB header).
# The pktgen JSON reports are merged on the host into one results file (VM_RESULTS, by
# scripts/vm-results.py): the ping-pong's gains `peers.ibv_ud_pingpong.rtt_us` and
# `ratios.pktgen_rtt_vs_ibv_ud_pingpong` (pktgen's mean round trip over
# ibv_ud_pingpong's usec/iter), from the round whose ratio is the median; every
# round's figures are in `pingpong_rounds`.
#
#   scripts/vm-test.sh              (root: installs missing Debian packages with apt)
#
# Prints each test binary's libtest summary line, each end-to-end process's summary,
# the figures and the timings; exits non-zero when a test binary or an end-to-end
# process fails (counts, drops, buffers out), a pktgen run is not conserved, the VM does
# not power off cleanly, or anything expected is missing from its console.
# Knobs (environment): VM_STEPS (default "tests e2e pktgen"), VM_ACCEL=tcg|kvm (default
# tcg: this project's machines have no usable KVM), VM_MEM (MiB, default 1024), VM_SMP
# (default 2), VM_TIMEOUT (s, whole boot, default 900), VM_STEP_TIMEOUT (s, each guest
# command, default 240), VM_WORKDIR (default target/vm-test), VM_RESULTS (default
# $VM_WORKDIR/vm-rxe.json), PINGPONG_ITERS (1000), PINGPONG_SIZE (UD message bytes,
# 1024), PINGPONG_ROUNDS (5), STREAM_S (pktgen stream seconds, 3), ECHO_COUNT (2000), FEED_COUNT (500 per
# group).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR="$PWD"

STEPS="${VM_STEPS:-tests e2e pktgen}"
ACCEL="${VM_ACCEL:-tcg}"
MEM="${VM_MEM:-1024}"
SMP="${VM_SMP:-2}"
TIMEOUT="${VM_TIMEOUT:-900}"
STEP_TIMEOUT="${VM_STEP_TIMEOUT:-240}"
WORK="${VM_WORKDIR:-$ROOT_DIR/target/vm-test}"
RESULTS="${VM_RESULTS:-$WORK/vm-rxe.json}"
ITERS="${PINGPONG_ITERS:-1000}"
SIZE="${PINGPONG_SIZE:-1024}"
ROUNDS="${PINGPONG_ROUNDS:-5}"
STREAM_S="${STREAM_S:-3}"
ECHO_COUNT="${ECHO_COUNT:-2000}"
FEED_COUNT="${FEED_COUNT:-500}"
# The stacks' addresses, configured on lo in the guest (see scripts/vm-init.sh).
ADDRS="10.0.0.1 10.0.0.2 10.0.1.1 10.0.1.2"

for s in $STEPS; do
    case "$s" in tests | e2e | pktgen) ;; *) echo "VM_STEPS: unknown step $s (tests, e2e, pktgen)"; exit 2 ;; esac
done
has_step() { [[ " $STEPS " == *" $1 "* ]]; }
now() { date +%s.%N; }
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "== vm-test: $*"; }
T_START=$(now)

# ---------------------------------------------------------------- packages
PACKAGES=(qemu-system-x86 linux-image-amd64 rdma-core ibverbs-providers ibverbs-utils
    libibverbs-dev libibumad-dev busybox-static iproute2 kmod cpio python3)
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

# ---------------------------------------------------------------- binaries
BINS=()
if has_step tests; then
    say "building the test binaries of ibpoll-pmd-verbs"
    mapfile -t BINS < <(cargo test --no-run --message-format=json -p ibpoll-pmd-verbs --release 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
    [ ${#BINS[@]} -gt 0 ] || { say "no test binaries found"; exit 1; }
fi
PROGS=()
if has_step e2e || has_step pktgen; then
    say "building pktgen and the examples udp_echo and mcast_feed"
    cargo build --release -q -p pktgen --bin pktgen -p ibpoll --example udp_echo --example mcast_feed
    PROGS=(target/release/pktgen target/release/examples/udp_echo target/release/examples/mcast_feed)
fi
T_BUILD=$(now)

# ---------------------------------------------------------------- initramfs
KVER="$(ls /lib/modules | grep -E 'amd64$' | sort -V | tail -n 1)"
KERNEL="/boot/vmlinuz-$KVER"
[ -r "$KERNEL" ] || { say "no guest kernel $KERNEL (package linux-image-amd64)"; exit 1; }
IMG="$WORK/root"
rm -rf "$IMG"
mkdir -p "$IMG"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/libibverbs.d,proc,sys,dev,tmp,tests,opt/ibpoll}
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
# A binary of ours under $2 (debug info stripped: the initramfs stays small), with its
# shared libraries.
add_bin() {
    cp "$1" "$2/"
    strip --strip-debug "$2/$(basename "$1")" 2>/dev/null || true
    add "$1"
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
    add_bin "$b" "$IMG/tests"
    names+=("$(basename "$b")")
done
echo "${names[*]}" > "$IMG/etc/tests"
for b in "${PROGS[@]}"; do add_bin "$b" "$IMG/opt/ibpoll"; done
cat > "$IMG/etc/vm.conf" <<CONF
STEPS="$STEPS"
ADDRS="$ADDRS"
STEP_TIMEOUT=$STEP_TIMEOUT
ITERS=$ITERS
SIZE=$SIZE
PP_ROUNDS=$ROUNDS
STREAM_S=$STREAM_S
ECHO_COUNT=$ECHO_COUNT
FEED_COUNT=$FEED_COUNT
CONF
install -m 755 scripts/vm-init.sh "$IMG/init"
(cd "$IMG" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$WORK/initramfs.gz"
T_IMG=$(now)
say "initramfs $(du -h "$WORK/initramfs.gz" | cut -f1), ${#names[@]} test binaries, ${#PROGS[@]} programs, kernel $KVER, steps: $STEPS"

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
ok=1
[ "$qemu_rc" = 0 ] || { echo "qemu exited with $qemu_rc (124: timeout; console in $LOG.txt)"; ok=0; }
grep -q '^@@DONE status=0' "$LOG.txt" || { echo "the guest reported a failure (console in $LOG.txt)"; ok=0; }
grep -E '^@@(GID|FAIL)' "$LOG.txt" || true
if has_step tests; then
    echo "---- test binaries (IBPOLL_RXE=1, rxe0 on lo)"
    grep -E '^(test .* \.\.\. |test result:|@@TEST|SKIPPED|thread .* panicked|.*packets each way in|.*: member got|moved QP|as expected)' "$LOG.txt" || true
    echo "---- summary (one line per test binary)"
    sed -n 's/^@@SUMMARY //p' "$LOG.txt"
    ran=$(grep -c '^@@TEST ' "$LOG.txt" || true)
    [ "$ran" = "${#names[@]}" ] || { echo "ran $ran of ${#names[@]} test binaries"; ok=0; }
fi
if has_step e2e; then
    echo "---- two ibpoll processes on rxe0 (udp_echo: unicast; mcast_feed: multicast)"
    grep -E '^(udp_echo summary|mcast_feed summary|  (round trip|server|client|publisher|subscriber|SA memberships)|.*error:|@@E2E (udp_echo|mcast_feed))' "$LOG.txt" || true
    e2e_ok=$(grep -cE '^@@E2E (udp_echo|mcast_feed)-(server|client) rc=0$' "$LOG.txt" || true)
    [ "$e2e_ok" = 4 ] || { echo "end to end: $e2e_ok of 4 processes passed"; ok=0; }
fi
if has_step pktgen; then
    echo "---- pktgen --fabric verbs:rxe0 --topology direct; ibv_ud_pingpong ($ITERS x $SIZE bytes, same boot)"
    grep -E '^(pktgen summary|  (round trip|buffers still out|conservation)|@@E2E pktgen|@@PINGPONG|pktgen: (error|conservation))' "$LOG.txt" || true
    pk_ok=$(grep -cE '^@@E2E pktgen-(stream|pingpong[0-9]+) rc=0$' "$LOG.txt" || true)
    [ "$pk_ok" = $((ROUNDS + 1)) ] || { echo "pktgen: $pk_ok of $((ROUNDS + 1)) runs passed"; ok=0; }
    mkdir -p "$(dirname "$RESULTS")"
    if python3 scripts/vm-results.py "$LOG.txt" "$RESULTS" --kernel "$KVER" --accel "$ACCEL" \
        --smp "$SMP" --size "$SIZE" --iters "$ITERS" --rounds "$ROUNDS"; then
        echo "results: $RESULTS"
    else
        echo "the pktgen results could not be merged"
        ok=0
    fi
fi
grep -E '^@@AT' "$LOG.txt" | tr '\n' ' ' && echo
echo "---- timings: apt $(span "$T_START" "$T_APT")s, build $(span "$T_APT" "$T_BUILD")s," \
    "initramfs $(span "$T_BUILD" "$T_IMG")s, VM $(span "$T_IMG" "$T_VM")s, total $(span "$T_START" "$(now)")s"
if [ "$ok" = 1 ]; then echo "vm-test: PASS"; else echo "vm-test: FAIL"; exit 1; fi
