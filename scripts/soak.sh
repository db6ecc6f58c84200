#!/usr/bin/env bash
# The soak: stacks exchanging traffic on the embedded simulated fabric under continuous
# churn, measured every minute for growth and for packets unaccounted for.
#
#   scripts/soak.sh [--minutes N] [ibpoll-soak flags...]
#
# Builds ibpoll-soak (release) and runs it for N minutes of traffic (default 10), with a
# measurement every minute (every quarter of the run when it is shorter than 3 minutes;
# --interval overrides). The report is printed and kept with the JSON result under
# bench/results/soak/ (soak-<UTC time>.txt and .json) unless --json is given. Exits with
# ibpoll-soak's status: 0 passed, 1 failed, 2 refused flags.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

minutes=10
args=()
has_json=0
has_interval=0
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes)
            [ $# -ge 2 ] || { echo "soak.sh: error: --minutes needs a value" >&2; exit 2; }
            minutes="$2"; shift 2 ;;
        --minutes=*) minutes="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        --json|--json=*) has_json=1; args+=("$1"); shift ;;
        --interval|--interval=*) has_interval=1; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done

if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] \
    || ! awk -v m="$minutes" 'BEGIN { exit !(m > 0 && m <= 1440) }'; then
    echo "soak.sh: error: --minutes: $minutes is not a duration: give minutes above 0 (at most 1440)" >&2
    exit 2
fi
secs=$(awk -v m="$minutes" 'BEGIN { printf "%.3f", m * 60 }')

cargo build --release --quiet -p ibpoll-bench --bin ibpoll-soak

run=(target/release/ibpoll-soak --duration "$secs")
if [ "$has_interval" = 0 ]; then
    if awk -v m="$minutes" 'BEGIN { exit !(m >= 3) }'; then
        run+=(--interval 60)
    else
        run+=(--interval "$(awk -v s="$secs" 'BEGIN { printf "%.3f", s / 4 }')")
    fi
fi

if [ "$has_json" = 1 ]; then
    exec "${run[@]}" ${args[@]+"${args[@]}"}
fi
dir=bench/results/soak
mkdir -p "$dir"
base="$dir/soak-$(date -u +%Y%m%dT%H%M%SZ)"
set +e
"${run[@]}" --json "$base.json" ${args[@]+"${args[@]}"} | tee "$base.txt"
status=${PIPESTATUS[0]}
set -e
echo "soak.sh: report in $base.txt, result in $base.json" >&2
exit "$status"
