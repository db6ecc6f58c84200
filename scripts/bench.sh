#!/usr/bin/env bash
# ibpoll's benchmark run: pktgen against the kernel UDP baseline; DPDK peers measured in
# the same run (l3fwd over net_pcap, testpmd io over net_null) beside ipoib-fwd on one
# lcore over the replay PMD and pktgen direct over the ring PMD; the control-plane
# rejoin, the snapshot read and instructions per packet (callgrind: pktgen marginal
# over two packet counts, ipoib-fwd's forwarder at bursts 1, 8, 32 by scripts/fwd-ir.sh).
# Writes bench/results/latest.json, summary.md, throughput.svg and latency_cdf.svg (see
# bench/README.md).
#
#   scripts/bench.sh            3 repetitions of everything (6 to 9 minutes)
#   scripts/bench.sh --quick    1 repetition, shorter runs (about 1.5 minutes)
#
# Options: --reps N, --duration S (seconds per throughput run), --out DIR (default
# bench/results), --keep (keep the raw runs directory and say where it is), --no-peers
# (leave out DPDK, ipoib-fwd on one lcore and the ring PMD).
#
# Each configuration runs ibpoll and the kernel back to back, then the next; the peers
# run back to back in each repetition (l3fwd, ipoib-fwd, testpmd, the ring PMD): load
# that comes and goes hits both sides of a ratio alike. Nothing is tuned or retried: an
# ibpoll run that fails fails the script. Nothing is installed: a DPDK peer that is
# missing (packages dpdk, dpdk-dev, libdpdk-dev, dpdk-doc) or fails is said so, and its
# figures are null in latest.json. DPDK_TESTPMD (a dpdk-testpmd binary) and
# DPDK_EXAMPLES (DPDK's example sources, default /usr/share/dpdk/examples) override
# where they are looked for.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=0
reps=""
duration=""
out="bench/results"
keep=0
peers=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --reps) reps="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --out) out="$2"; shift ;;
        --keep) keep=1 ;;
        --no-peers) peers=0 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    reps=${reps:-1}; duration=${duration:-0.5}; pp_duration=1; peer_duration=1
else
    reps=${reps:-3}; duration=${duration:-2}; pp_duration=3; peer_duration=3
fi
# The peers: each DPDK program's rate is sampled after its first packet and a warm-up;
# ipoib-fwd and l3fwd replay the same 64-byte IP packets, peer_flows UDP source ports.
peer_warmup=1
peer_flows=16
# scripts/fwd-ir.sh: the forwarder's Ir per packet, marginal over two durations under
# callgrind (the same in both modes, like the counts below; 4 s apart, so that the
# longer run forwards clearly more packets even when valgrind gets little CPU).
fwd_ir_durations="2 6"
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
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- pktgen must be there: no figures without it --------------------------------------
if [ ! -f apps/pktgen/Cargo.toml ]; then
    echo "bench.sh: pktgen is missing (apps/pktgen): nothing to compare the kernel with; no results written" >&2
    exit 3
fi

say "building release binaries (pktgen, ipoib-fwd, kernel-udp, rejoin, datapath-ir, dpdk-peer, bench-report)"
if ! cargo build --release -q -p pktgen -p ipoib-fwd -p ibpoll-bench --bins; then
    echo "bench.sh: the build failed (pktgen, ipoib-fwd or ibpoll-bench); no results written" >&2
    exit 3
fi
bin="$root/target/release"
# The help text once (grep -q on a pipe would stop reading early: pktgen then fails its
# write with EPIPE, and pipefail fails the check).
pktgen_help=$("$bin/pktgen" --help)
for f in --topology --size --burst --pingpong --duration --json --mcast-groups --cores --count --rate --idle-sleep-us --fabric; do
    if ! grep -q -- "$f" <<< "$pktgen_help"; then
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

# ---- the peers: DPDK, ipoib-fwd on one lcore, the ring PMD --------------------------
# json_str TEXT: TEXT as a JSON string (quotes and backslashes escaped, control
# characters dropped), or null when empty.
json_str() {
    if [ -z "$1" ]; then echo null; return; fi
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# unavailable BENCH CASE SIZE BURST REP WHY: a run that could not be made, recorded so
# that its figures are null and the reason is in latest.json.
unavailable() {
    printf '{"bench":"%s","case":"%s","size":%d,"burst":%d,"rep":%d,"result":{"unavailable":%s}}\n' \
        "$1" "$2" "$3" "$4" "$5" "$(json_str "$6")" >> "$runs"
}

dpdk_dir="$root/target/dpdk-peers"
dpdk_examples=${DPDK_EXAMPLES:-/usr/share/dpdk/examples}
dpdk_version=""
l3fwd_bin=""; l3fwd_why=""
testpmd_bin=""; testpmd_why=""
l3fwd_cmd=""; testpmd_cmd=""
# DPDK's memory: 2 MiB hugepages like ibpoll's pools (which prefer them) when enough
# are free, through --in-memory (memfd, no hugetlbfs mount needed); else 4 KiB pages
# (--no-huge), said so, since that slows DPDK down (about 2.4x for l3fwd here).
dpdk_mem_mb=128
dpdk_eal_mem=""; dpdk_memory=""
# ipoib-fwd's lcore is pinned to the CPU of the DPDK programs' forwarding lcore
# (--cpus, like their -l), its other threads left free like DPDK's control threads:
# neither side can move away from a busy CPU that the other is pinned to.
fwd_cpu=$(( $(nproc) > 1 ? 1 : 0 ))

# find_dpdk: the two DPDK programs, or why not. l3fwd is built (once, into
# target/dpdk-peers) from DPDK's example sources with its request for RX checksum
# offload turned off: software NICs offer none, and l3fwd 22.11 asks unconditionally.
find_dpdk() {
    dpdk_version=$(pkg-config --modversion libdpdk 2>/dev/null || true)
    local tp=${DPDK_TESTPMD:-$(command -v dpdk-testpmd || true)}
    if [ -n "$tp" ] && [ -x "$tp" ]; then
        testpmd_bin=$tp
    else
        testpmd_why="dpdk-testpmd is not installed (${DPDK_TESTPMD:-Debian package dpdk-dev}); not installed by bench.sh"
    fi
    if [ "$(nproc)" -lt 2 ]; then
        testpmd_why="testpmd needs 2 CPUs (a main and a forwarding lcore)"; testpmd_bin=""
    fi
    local src="$dpdk_examples/l3fwd" b="$dpdk_dir/l3fwd/build/l3fwd"
    if [ ! -f "$src/main.c" ] || [ ! -d "$dpdk_examples/common" ]; then
        l3fwd_why="DPDK's example sources are not installed ($src; Debian package dpdk-doc); not installed by bench.sh"
    elif ! pkg-config --exists libdpdk 2>/dev/null; then
        l3fwd_why="libdpdk's pkg-config file is missing (Debian package libdpdk-dev); not installed by bench.sh"
    elif ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
        l3fwd_why="make or a C compiler is missing: l3fwd cannot be built from $src"
    elif [ -x "$b" ] && [ "$b" -nt "$src/main.c" ]; then
        l3fwd_bin="$b"
    else
        say "building DPDK's l3fwd from $src into $dpdk_dir (checksum offload request off)"
        rm -rf "$dpdk_dir"
        mkdir -p "$dpdk_dir"
        cp -r "$src" "$dpdk_examples/common" "$dpdk_dir/"
        sed -i 's/\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,/.offloads = 0,/' "$dpdk_dir/l3fwd/main.c"
        if grep -q 'RTE_ETH_RX_OFFLOAD_CHECKSUM' "$dpdk_dir/l3fwd/main.c"; then
            l3fwd_why="l3fwd's main.c is not 22.11's: its RX checksum offload request could not be turned off"
        elif ! make -C "$dpdk_dir/l3fwd" > "$dpdk_dir/build.log" 2>&1; then
            l3fwd_why="building l3fwd failed (see $dpdk_dir/build.log)"
        else
            l3fwd_bin="$b"
        fi
    fi
    local hp_free hp_kib
    hp_free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
    hp_kib=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo)
    if [ "${hp_free:-0}" -gt 0 ] && [ $(( hp_free * ${hp_kib:-0} )) -ge $(( dpdk_mem_mb * 1024 )) ]; then
        dpdk_eal_mem="--in-memory -m $dpdk_mem_mb"
        dpdk_memory="hugepages ($hp_free free of ${hp_kib} KiB at the start; --in-memory -m $dpdk_mem_mb), as ibpoll's pools"
    else
        dpdk_eal_mem="--no-huge -m 1024"
        dpdk_memory="4 KiB pages (--no-huge): fewer than $dpdk_mem_mb MiB of free hugepages; ibpoll's pools prefer hugepages, so the ratios against DPDK favour ibpoll"
        say "DPDK on 4 KiB pages: $dpdk_memory"
    fi
    [ -n "$l3fwd_why" ] && say "no DPDK l3fwd: $l3fwd_why"
    [ -n "$testpmd_why" ] && say "no DPDK testpmd: $testpmd_why"
    if [ -n "$l3fwd_bin" ]; then
        "$bin/dpdk-peer" pcap --dir "$tmp" --size 64 --flows "$peer_flows" >> "$log"
        l3fwd_cmd="$l3fwd_bin -l $fwd_cpu $dpdk_eal_mem --no-pci --file-prefix PREFIX --vdev net_pcap0,rx_pcap=in0.pcap,infinite_rx=1 --vdev net_pcap1,rx_pcap=in1.pcap,infinite_rx=1 -- -p 0x3 --config=(0,0,1),(1,0,1) --lookup lpm --parse-ptype"
    fi
    if [ -n "$testpmd_bin" ]; then
        testpmd_cmd="$testpmd_bin -l 0,$fwd_cpu $dpdk_eal_mem --no-pci --file-prefix PREFIX --vdev net_null0 --vdev net_null1 -- --forward-mode=io --stats-period=1 --auto-start --total-num-mbufs=16384"
    fi
    return 0
}

# dpdk_peer CASE REP CMD...: runs a DPDK program (CMD, whose EAL arguments include
# "--file-prefix PREFIX", replaced here by a prefix of this run) in the background,
# reads its rates from its telemetry socket (dpdk-peer rate), stops it with SIGINT. A
# run that fails is said so and recorded as unavailable.
dpdk_peer() {
    local case=$1 rep=$2; shift 2
    local prefix="ibpoll-bench-$case-$$" o="$tmp/dpdk_${case}_r$rep.out" r="$tmp/dpdk_${case}_r$rep.rate"
    local args=() a
    for a in "$@"; do args+=("${a//PREFIX/$prefix}"); done
    echo "\$ (cd $tmp && ${args[*]} &)" >> "$log"
    (cd "$tmp" && exec "${args[@]}") < /dev/null > "$o" 2>&1 &
    local pid=$! ok=1 i sig
    "$bin/dpdk-peer" rate --file-prefix "$prefix" --pid "$pid" --wait 60 \
        --warmup "$peer_warmup" --duration "$peer_duration" --json - > "$r" 2>&1 || ok=0
    # SIGINT as DPDK's examples expect (they catch it, stop their ports and clean up);
    # then SIGTERM, then SIGKILL, 5 s apart.
    for sig in INT TERM KILL; do
        kill -"$sig" "$pid" 2>/dev/null || break
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.1; done
    done
    wait "$pid" 2>/dev/null || true
    rm -rf "/var/run/dpdk/$prefix" "/tmp/dpdk/$prefix" ${XDG_RUNTIME_DIR:+"$XDG_RUNTIME_DIR/dpdk/$prefix"}
    if [ "$ok" = 1 ]; then
        record dpdk "$case" 64 32 "$rep" "$r"
    else
        echo "bench.sh: DPDK $case did not run; recorded as unavailable. dpdk-peer said:" >&2
        tail -n 3 "$r" >&2
        echo "bench.sh: the program's last lines ($o):" >&2
        tail -n 8 "$o" >&2
        unavailable dpdk "$case" 64 32 "$rep" "the run failed: $(grep -v '^{' "$r" | tail -n 1)"
    fi
}

# run_peers REP: the same-run peers, back to back.
run_peers() {
    local rep=$1 o
    if [ -n "$l3fwd_bin" ]; then
        # shellcheck disable=SC2086 # the command is a list of words without spaces
        dpdk_peer l3fwd "$rep" $l3fwd_cmd
    else
        unavailable dpdk l3fwd 64 32 "$rep" "$l3fwd_why"
    fi
    o="$tmp/ipoib_fwd_replay_r$rep.out"
    run_to "$o" "$bin/ipoib-fwd" --pmd replay --cores 1 --cpus "$fwd_cpu" --size 64 --flows "$peer_flows" \
        --burst 32 --duration "$peer_duration" --json -
    record ipoib-fwd replay_1lcore 64 32 "$rep" "$o"
    if [ -n "$testpmd_bin" ]; then
        # shellcheck disable=SC2086
        dpdk_peer testpmd_io "$rep" $testpmd_cmd
    else
        unavailable dpdk testpmd_io 64 32 "$rep" "$testpmd_why"
    fi
    o="$tmp/pktgen_direct_ring_r$rep.out"
    run_to "$o" "$bin/pktgen" --fabric ring --topology direct --size 64 --burst 32 \
        --mcast-groups 0 --duration "$peer_duration" --json -
    record pktgen direct_ring 64 32 "$rep" "$o"
    o="$tmp/pktgen_pingpong_ring_r$rep.out"
    run_to "$o" "$bin/pktgen" --pingpong --fabric ring --topology direct --size 64 \
        --duration "$pp_duration" --json -
    record pktgen pingpong_direct_ring 64 1 "$rep" "$o"
}
if [ "$peers" = 1 ]; then
    find_dpdk
fi

# ---- throughput and latency, alternating ------------------------------------------------
n_runs=$((reps * (${#sizes[@]} * ${#bursts[@]} * 3 + 3 + 1 + 5 * peers)))
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
    if [ "$peers" = 1 ]; then
        run_peers "$rep"
    fi
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
    if [ "$peers" = 1 ]; then
        say "callgrind: scripts/fwd-ir.sh --bursts \"1 8 32\" --durations \"$fwd_ir_durations\" (ipoib-fwd's forwarder over the replay PMD)"
        echo "\$ scripts/fwd-ir.sh --bursts \"1 8 32\" --durations \"$fwd_ir_durations\" --json $tmp/fwd_ir.json" >> "$log"
        # Not fatal: on a crowded machine the longer run may forward no more packets than
        # the shorter one (fwd-ir.sh then refuses to divide); the figure is then null.
        if ! scripts/fwd-ir.sh --bursts "1 8 32" --durations "$fwd_ir_durations" \
            --json "$tmp/fwd_ir.json" > "$tmp/fwd_ir.out" 2>&1; then
            why=$(grep '^fwd-ir.sh:' "$tmp/fwd_ir.out" | tail -n 1 || true)
            echo "bench.sh: scripts/fwd-ir.sh failed, forwarder_ir_per_packet will be null: ${why:-see $tmp/fwd_ir.out}" >&2
            printf '{"unavailable":%s}\n' "$(json_str "${why:-scripts/fwd-ir.sh failed}")" > "$tmp/fwd_ir.json"
        fi
    fi
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
{"mode":"$([ "$quick" = 1 ] && echo quick || echo full)","quick":$([ "$quick" = 1 ] && echo true || echo false),"repetitions":$reps,"loadavg_at_start":"$load_start","cpus":$(nproc),"peers":$([ "$peers" = 1 ] && echo true || echo false),"peer_duration_s":$peer_duration,"peer_warmup_s":$peer_warmup,"peer_flows":$peer_flows,"dpdk_version":$(json_str "$dpdk_version"),"dpdk_memory":$(json_str "$dpdk_memory"),"ipoib_fwd_cpus":"$fwd_cpu","dpdk_l3fwd_command":$(json_str "$l3fwd_cmd"),"dpdk_l3fwd_unavailable":$(json_str "$l3fwd_why"),"dpdk_testpmd_command":$(json_str "$testpmd_cmd"),"dpdk_testpmd_unavailable":$(json_str "$testpmd_why"),"fwd_ir_durations_s":[${fwd_ir_durations// /,}],"throughput_duration_s":$duration,"pingpong_duration_s":$pp_duration,"callgrind_count":$cg_count,"callgrind_counts":[$cg_count,$((2 * cg_count))],"callgrind_rate_pps":$cg_rate,"callgrind_idle_sleep_us":$cg_idle_sleep_us,"callgrind_duration_limit_s":$cg_limit,"started_at":"$started","finished_at":"$finished","elapsed_s":$elapsed,"rustc":"$rustc_v","perf_instructions_supported":$perf_ok,"callgrind":$cg_ok,"snapshot_read_source":"$snapshot_src","loadavg_at_end":"$(cut -d' ' -f1-3 /proc/loadavg)","instructions_method":"callgrind (--separate-threads) of pktgen --cores 1 --size 64 --burst 32 --mcast-groups 0 --rate $cg_rate --idle-sleep-us $cg_idle_sleep_us, twice per topology: --count $cg_count and --count $((2 * cg_count)) run packets. Marginal Ir per packet per thread role = (Ir(2N) - Ir(N)) / (packets(2N) - packets(N)), set-up and shutdown cancelling out: generator (TX and the simulated fabric) per packet sent, forwarder core and sink (RX) per packet received at the sink. The rate keeps the forwarder from being overrun under valgrind (at full rate most packets die in its receive queue); idle lcores sleep $cg_idle_sleep_us us per idle iteration instead of spinning, so that the run's spare time is not counted as idle polls; the idle wake-ups and the controller's polls still in the figures are shown as loop iterations per packet. The forwarder core's Ir is split by inclusive call costs (calls= lines of the callgrind files) into the simulated NIC (SimRxQueue::rx_burst and SimTxQueue::tx_burst, outside the controller), the controller (CtlHost::poll, its own sends included) and the rest (the stack and ipoib-fwd); 'excluding the simulated NIC' leaves out the NIC part, which a real HCA does in hardware. Single-run figures (set-up and shutdown included) are reported too"}
EOF

say "aggregating"
"$bin/bench-report" --input "$tmp" --out "$out" --criterion target/criterion
if [ "$keep" = 1 ]; then
    say "raw runs kept in $tmp"
fi
say "done in ${elapsed} s: $out/latest.json, $out/throughput.svg, $out/latency_cdf.svg"
