#!/usr/bin/env bash
# ibpoll's benchmark run: pktgen against the kernel UDP baseline, plus the control-plane
# rejoin, the snapshot read and instructions per packet (callgrind, marginal over two
# packet counts). Writes bench/results/latest.json, throughput.svg and latency_cdf.svg
# (see bench/README.md).
#
#   scripts/bench.sh            3 repetitions of everything (about 4 to 5 minutes)
#   scripts/bench.sh --quick    1 repetition, shorter runs (about 30 s)
#
# Options: --reps N, --duration S (seconds per throughput run), --out DIR (default
# bench/results), --keep (keep the raw runs directory and say where it is).
#
# Each configuration runs ibpoll and the kernel back to back, then the next: load that
# comes and goes hits both sides of a ratio alike. Nothing is tuned or retried: a run
# that fails fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=0
reps=""
duration=""
out="bench/results"
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --reps) reps="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --out) out="$2"; shift ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    reps=${reps:-1}; duration=${duration:-0.5}; pp_duration=1
else
    reps=${reps:-3}; duration=${duration:-2}; pp_duration=3
fi
# Callgrind: N and 2N run packets at a fixed rate, idle lcores sleeping (see
# "instructions per packet" below); the same in both modes, so that quick and full
# figures compare. cg_limit is pktgen's --duration, the time limit of a --count run.
cg_count=40000
cg_rate=40000
cg_idle_sleep_us=200
cg_limit=60
sizes=(64 512 2044)
bursts=(1 8 32)
# IPv4 (20) + UDP (8): kernel-udp's --size is the UDP payload, pktgen's the IP packet.
ip_udp=28

say() { echo "== bench.sh: $*"; }
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)

# ---- pktgen must be there: no figures without it --------------------------------------
if [ ! -f apps/pktgen/Cargo.toml ]; then
    echo "bench.sh: pktgen is missing (apps/pktgen): nothing to compare the kernel with; no results written" >&2
    exit 3
fi

say "building release binaries (pktgen, kernel-udp, rejoin, datapath-ir, bench-report)"
if ! cargo build --release -q -p pktgen -p ibpoll-bench --bins; then
    echo "bench.sh: the build failed (pktgen or ibpoll-bench); no results written" >&2
    exit 3
fi
bin="$root/target/release"
for f in --topology --size --burst --pingpong --duration --json --mcast-groups --cores --count --rate --idle-sleep-us; do
    if ! "$bin/pktgen" --help | grep -q -- "$f"; then
        echo "bench.sh: pktgen lacks $f; no results written" >&2
        exit 3
    fi
done

tmp=$(mktemp -d /tmp/ibpoll-bench.XXXXXX)
if [ "$keep" = 0 ]; then
    trap 'rm -rf "$tmp"' EXIT
fi
runs="$tmp/runs.jsonl"
: > "$runs"
log="$tmp/log"

# record BENCH CASE SIZE BURST REP OUTFILE [EXTRA_JSON]: appends the program's last
# JSON line with its configuration to runs.jsonl.
record() {
    local line
    line=$(grep '^{' "$6" | tail -n 1 || true)
    if [ -z "$line" ]; then
        echo "bench.sh: $1 $2 size $3 burst $4 gave no JSON line; its output:" >&2
        tail -n 20 "$6" >&2
        exit 1
    fi
    printf '{"bench":"%s","case":"%s","size":%d,"burst":%d,"rep":%d%s,"result":%s}\n' \
        "$1" "$2" "$3" "$4" "$5" "${7:-}" "$line" >> "$runs"
}

# run_to OUTFILE CMD...: runs CMD with its output in OUTFILE; a failure stops the script.
run_to() {
    local o="$1"; shift
    echo "\$ $*" >> "$log"
    if ! "$@" > "$o" 2>&1; then
        echo "bench.sh: failed: $*" >&2
        tail -n 20 "$o" >&2
        exit 1
    fi
}

pktgen() { # CASE TOPOLOGY SIZE BURST REP
    local o="$tmp/pktgen_$1_s$3_b$4_r$5.out"
    run_to "$o" "$bin/pktgen" --topology "$2" --size "$3" --burst "$4" --mcast-groups 0 \
        --duration "$duration" --json -
    record pktgen "$1" "$3" "$4" "$5" "$o"
}

kernel_mmsg() { # SIZE BATCH REP
    local o="$tmp/kernel_mmsg_s$1_b$2_r$3.out"
    run_to "$o" "$bin/kernel-udp" --mode mmsg --size $(($1 - ip_udp)) --batch "$2" \
        --duration "$duration" --json -
    record kernel mmsg "$1" "$2" "$3" "$o"
}

pingpong() { # TOPOLOGY REP
    local o="$tmp/pktgen_pingpong_$1_r$2.out"
    run_to "$o" "$bin/pktgen" --pingpong --topology "$1" --size 64 \
        --duration "$pp_duration" --json -
    record pktgen "pingpong_$1" 64 1 "$2" "$o"
}

kernel_pingpong() { # REP
    local o="$tmp/kernel_pingpong_r$1.out" cdf="kernel_pingpong_r$1.cdf"
    run_to "$o" "$bin/kernel-udp" --mode pingpong --size $((64 - ip_udp)) \
        --duration "$pp_duration" --cdf "$tmp/$cdf" --json -
    record kernel pingpong 64 1 "$1" "$o" ",\"cdf\":\"$cdf\""
}

# ---- throughput and latency, alternating ------------------------------------------------
n_runs=$((reps * (${#sizes[@]} * ${#bursts[@]} * 3 + 3 + 1)))
say "$reps repetition(s), ${duration} s per throughput run, ${pp_duration} s per ping-pong: $n_runs runs"
say "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$reps"); do
    for size in "${sizes[@]}"; do
        for burst in "${bursts[@]}"; do
            pktgen direct direct "$size" "$burst" "$rep"
            kernel_mmsg "$size" "$burst" "$rep"
            pktgen fwd fwd "$size" "$burst" "$rep"
        done
    done
    pingpong direct "$rep"
    kernel_pingpong "$rep"
    pingpong fwd "$rep"
    o="$tmp/rejoin_r$rep.out"
    run_to "$o" "$bin/rejoin" --groups 10000 --window 64 --json -
    record rejoin 10k 0 0 "$rep" "$o"
    say "repetition $rep of $reps done ($(($(date +%s) - t0)) s, load $(cut -d' ' -f1 /proc/loadavg))"
done

# ---- instructions per packet ------------------------------------------------------------
# perf's instruction counter where the machine has one (not in most VMs; not used yet);
# callgrind always: its counts do not depend on the load. Each topology runs twice, with
# --count N and --count 2N run packets: per thread role, (Ir(2N) - Ir(N)) / (packets(2N) -
# packets(N)) is the marginal cost of a packet, set-up and shutdown removed exactly
# (bench-report computes it, and splits the forwarder's Ir into the simulated NIC, the
# controller and the rest from the callgrind files' inclusive call costs). --cores 1:
# valgrind runs one thread at a time anyway. At full rate the generator outruns the
# other lcores under valgrind and most packets die in the forwarder's (or the sink's)
# receive queue, so the generator is held to --rate $cg_rate packets per second, below
# what the forwarder keeps up with under valgrind on this machine (no drops). Idle
# lcores sleep ($cg_idle_sleep_us us per idle iteration) rather than spin or yield:
# under valgrind the spare time of a rate-limited run would otherwise be spent in idle
# polls, counted as work, and how much spare time there is depends on the machine's
# load. What is still paid per unit of time (the idle wake-ups, the controller's polls)
# is in the marginal figures; the loop iterations per packet say how much. Drops, if
# any, are in the report.
perf_ok=false
if command -v perf >/dev/null 2>&1 &&
    perf stat -x, -e instructions:u true 2>&1 | grep -q '^[0-9]'; then
    perf_ok=true
fi
cg_ok=false
if command -v valgrind >/dev/null 2>&1; then
    cg_ok=true
    for topo in direct fwd; do
        for k in 1 2; do
            n=$((k * cg_count))
            say "callgrind: pktgen --topology $topo --cores 1, 64 bytes, burst 32, unicast only, --count $n --rate $cg_rate --idle-sleep-us $cg_idle_sleep_us"
            o="$tmp/cg_${topo}_$k.out"
            run_to "$o" valgrind --tool=callgrind --separate-threads=yes \
                --callgrind-out-file="$tmp/callgrind.$topo.$k" \
                "$bin/pktgen" --topology "$topo" --cores 1 --size 64 --burst 32 --mcast-groups 0 \
                --count "$n" --rate "$cg_rate" --idle-sleep-us "$cg_idle_sleep_us" \
                --duration "$cg_limit" --json -
            record callgrind "$topo" 64 32 "$k" "$o" ",\"callgrind\":\"callgrind.$topo.$k\""
        done
    done
    # The data lcore's classify + resolve alone (no NIC, no loop): datapath-ir counts only
    # its bursts (--toggle-collect), so Ir / packets is exact.
    for c in unicast_1 unicast_8 mcast_4 mcast_32_of_10k; do
        say "callgrind: datapath-ir --case $c (classify + resolve, 1000 bursts of 32)"
        o="$tmp/dp_$c.out"
        run_to "$o" valgrind --tool=callgrind --collect-atstart=no \
            --toggle-collect='*Fixture*run_bursts*' \
            --callgrind-out-file="$tmp/callgrind.datapath.$c" \
            "$bin/datapath-ir" --case "$c" --bursts 1000
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$tmp/callgrind.datapath.$c")
        line=$(grep '^{' "$o" | tail -n 1)
        printf '%s\n' "${line%\}},\"ir\":$ir}" >> "$tmp/datapath_ir.jsonl"
    done
else
    say "valgrind not installed: no instruction counts"
fi

# ---- snapshot read ----------------------------------------------------------------------
if [ "$quick" = 0 ]; then
    say "criterion: crates/rcu benches/read.rs, qsbr/* (snapshot read)"
    run_to "$tmp/criterion.out" cargo bench -q -p ibpoll-rcu --bench read -- qsbr
    say "criterion: bench/benches/datapath.rs (classify + resolve per burst of 32)"
    run_to "$tmp/criterion_datapath.out" cargo bench -q -p ibpoll-bench --bench datapath
    snapshot_src="measured by this run"
else
    snapshot_src="criterion's saved estimates (not re-run by --quick)"
fi

finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
elapsed=$(($(date +%s) - t0))
rustc_v=$(rustc --version)
cat > "$tmp/meta.json" <<EOF
{"mode":"$([ "$quick" = 1 ] && echo quick || echo full)","repetitions":$reps,"throughput_duration_s":$duration,"pingpong_duration_s":$pp_duration,"callgrind_count":$cg_count,"callgrind_counts":[$cg_count,$((2 * cg_count))],"callgrind_rate_pps":$cg_rate,"callgrind_idle_sleep_us":$cg_idle_sleep_us,"callgrind_duration_limit_s":$cg_limit,"started_at":"$started","finished_at":"$finished","elapsed_s":$elapsed,"rustc":"$rustc_v","perf_instructions_supported":$perf_ok,"callgrind":$cg_ok,"snapshot_read_source":"$snapshot_src","loadavg_at_end":"$(cut -d' ' -f1-3 /proc/loadavg)","instructions_method":"callgrind (--separate-threads) of pktgen --cores 1 --size 64 --burst 32 --mcast-groups 0 --rate $cg_rate --idle-sleep-us $cg_idle_sleep_us, twice per topology: --count $cg_count and --count $((2 * cg_count)) run packets. Marginal Ir per packet per thread role = (Ir(2N) - Ir(N)) / (packets(2N) - packets(N)), set-up and shutdown cancelling out: generator (TX and the simulated fabric) per packet sent, forwarder core and sink (RX) per packet received at the sink. The rate keeps the forwarder from being overrun under valgrind (at full rate most packets die in its receive queue); idle lcores sleep $cg_idle_sleep_us us per idle iteration instead of spinning, so that the run's spare time is not counted as idle polls; the idle wake-ups and the controller's polls still in the figures are shown as loop iterations per packet. The forwarder core's Ir is split by inclusive call costs (calls= lines of the callgrind files) into the simulated NIC (SimRxQueue::rx_burst and SimTxQueue::tx_burst, outside the controller), the controller (CtlHost::poll, its own sends included) and the rest (the stack and ipoib-fwd); 'excluding the simulated NIC' leaves out the NIC part, which a real HCA does in hardware. Single-run figures (set-up and shutdown included) are reported too"}
EOF

say "aggregating"
"$bin/bench-report" --input "$tmp" --out "$out" --criterion target/criterion
if [ "$keep" = 1 ]; then
    say "raw runs kept in $tmp"
fi
say "done in ${elapsed} s: $out/latest.json, $out/throughput.svg, $out/latency_cdf.svg"
