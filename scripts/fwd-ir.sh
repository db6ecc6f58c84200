#!/usr/bin/env bash
# Instructions per forwarded packet of ipoib-fwd's forwarding lcore over the replay NIC
# (callgrind), at several receive bursts: the figure of issue 9's "forwarder <= 150
# instructions per packet at burst 32, NIC excluded".
#
#   scripts/fwd-ir.sh                 bursts 1 8 32, durations 2 and 4 s (about a minute)
#   scripts/fwd-ir.sh --bursts "32" --durations "2 4" --json out.json
#
# Method: for each burst B, `ipoib-fwd --pmd replay --cores 1 --burst B` runs under
# `valgrind --tool=callgrind --separate-threads=yes` twice, for D1 and D2 seconds. The
# forwarding lcore is the thread with the most instructions. Per packet forwarded,
# marginal over the two runs (set-up, warm-up and shutdown cancel out):
#   lcore      = (Ir(D2) - Ir(D1)) / (forwarded(D2) - forwarded(D1))
#   nic        = the same of the inclusive Ir of ReplayRxQueue::rx_burst and
#                ReplayTxQueue::tx_burst (the software NIC: bulk alloc, frame copy, free)
#   controller = the same of CtlHost::poll (the control core, polled from the lcore every
#                20 us of wall-clock time: under valgrind's slowdown it is charged to far
#                fewer packets than natively, so it is shown apart)
#   forwarder  = lcore - nic - controller: the stack and ipoib-fwd.
# Counts do not depend on the machine's load; the packets per run do.
set -euo pipefail
cd "$(dirname "$0")/.."

bursts="1 8 32"
durations="2 4"
json=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bursts) bursts="$2"; shift ;;
        --durations) durations="$2"; shift ;;
        --json) json="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "fwd-ir.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
read -r d1 d2 rest <<< "$durations"
if [ -z "${d2:-}" ] || [ -n "${rest:-}" ]; then
    echo "fwd-ir.sh: --durations takes two durations, e.g. \"2 4\"" >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "fwd-ir.sh: valgrind is not installed" >&2; exit 3; }
cargo build --release -q -p ipoib-fwd
bin="$(pwd)/target/release/ipoib-fwd"
tmp=$(mktemp -d /tmp/fwd-ir.XXXXXX)
[ -n "${FWD_IR_KEEP:-}" ] && echo "== fwd-ir.sh: keeping $tmp" || trap 'rm -rf "$tmp"' EXIT

# inclusive FILE PATTERN: the inclusive Ir of the function whose name contains PATTERN
# (its line of its own object file), 0 if it never ran. Run outside the source tree:
# where callgrind_annotate finds the sources (relative paths) it splits a function's
# costs by file differently, and the line it prints is no longer the inclusive total.
inclusive() {
    (cd "$tmp" && callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null) |
        grep -F -- "$2" | grep -F '[/' | head -n 1 |
        awk '{gsub(",", "", $1); printf "%.0f\n", $1} END {if (NR == 0) print 0}' | head -n 1
}

# run B D: "forwarded lcore_ir nic_ir controller_ir" of one callgrind run.
run() {
    local f="$tmp/cg.b$1.d$2" out
    out=$(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$f" \
        "$bin" --pmd replay --cores 1 --duration "$2" --burst "$1" --json - 2>&1) || {
        echo "fwd-ir.sh: ipoib-fwd --burst $1 --duration $2 failed under valgrind:" >&2
        echo "$out" | tail -n 20 >&2
        exit 1
    }
    local fwd t
    fwd=$(echo "$out" | grep '^{' | tail -n 1 | sed 's/.*"forwarded":\([0-9]*\).*/\1/')
    t=$(for x in "$f"-*; do
        echo "$(awk '/^summary:/ {print $2; exit}' "$x") $x"
    done | sort -n | tail -n 1 | cut -d' ' -f2)
    echo "$fwd $(awk '/^summary:/ {print $2; exit}' "$t")" \
        "$(( $(inclusive "$t" 'ReplayRxQueue as ibpoll_dev::queue::RxQueue>::rx_burst') + \
             $(inclusive "$t" 'ReplayTxQueue as ibpoll_dev::queue::TxQueue>::tx_burst') ))" \
        "$(inclusive "$t" 'ibpoll::lcore::CtlHost::poll')"
}

echo "== fwd-ir.sh: load $(cut -d' ' -f1-3 /proc/loadavg); bursts $bursts; durations $d1 and $d2 s"
printf '%6s %10s %10s %8s %8s %11s %10s\n' burst packets lcore nic ctrl forwarder "fwd+ctrl"
obj_fwd=""; obj_ctl=""; obj_nic=""; obj_lcore=""
for b in $bursts; do
    read -r p1 i1 n1 c1 <<< "$(run "$b" "$d1")"
    read -r p2 i2 n2 c2 <<< "$(run "$b" "$d2")"
    line=$(awk -v p1="$p1" -v p2="$p2" -v i1="$i1" -v i2="$i2" -v n1="$n1" -v n2="$n2" \
        -v c1="$c1" -v c2="$c2" 'BEGIN {
            dp = p2 - p1; if (dp <= 0) { print "x"; exit }
            l = (i2 - i1) / dp; n = (n2 - n1) / dp; c = (c2 - c1) / dp
            printf "%.1f %.1f %.1f %.1f %.1f", l, n, c, l - n - c, l - n
        }')
    if [ "$line" = x ]; then
        echo "fwd-ir.sh: burst $b: the longer run forwarded no more packets ($p1, $p2)" >&2
        exit 1
    fi
    read -r lcore nic ctl fwd fwdctl <<< "$line"
    printf '%6s %10s %10s %8s %8s %11s %10s\n' "$b" "$p1/$p2" "$lcore" "$nic" "$ctl" "$fwd" "$fwdctl"
    sep=${obj_fwd:+,}
    obj_fwd="$obj_fwd$sep\"$b\":$fwd"; obj_ctl="$obj_ctl$sep\"$b\":$fwdctl"
    obj_nic="$obj_nic$sep\"$b\":$nic"; obj_lcore="$obj_lcore$sep\"$b\":$lcore"
done
result="{\"forwarder_ir_per_packet\":{$obj_fwd},\"forwarder_ir_per_packet_with_controller\":{$obj_ctl},\"nic_ir_per_packet\":{$obj_nic},\"lcore_ir_per_packet\":{$obj_lcore},\"durations_s\":[$d1,$d2],\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"method\":\"callgrind --separate-threads=yes of ipoib-fwd --pmd replay --cores 1 --burst B, marginal over --duration $d1 and $d2; forwarder = lcore - replay NIC (ReplayRxQueue::rx_burst + ReplayTxQueue::tx_burst, inclusive) - controller (CtlHost::poll, inclusive)\"}"
echo "$result"
if [ -n "$json" ]; then
    printf '%s\n' "$result" > "$json.tmp" && mv "$json.tmp" "$json"
fi
