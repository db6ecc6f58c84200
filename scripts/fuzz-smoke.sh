#!/usr/bin/env bash
# The fuzz smoke test (CI): builds every cargo-fuzz target once, then runs each for a few
# seconds from its committed seed corpus, fuzz/seeds/<target> (read only: new inputs go
# to a scratch directory), and prints the executions per target and the new inputs
# found. A crash, a leak, an input that runs past 10 s or a target without seeds fails
# it.
#
#   scripts/fuzz-smoke.sh [SECONDS]     (default 5 per target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-5}"
case "$secs" in
'' | *[!0-9]*)
    echo "fuzz-smoke: SECONDS must be a whole number of seconds, not '$secs'" >&2
    exit 2
    ;;
esac
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    exit 2
fi

targets=$(cargo +nightly fuzz list)
start=$(date +%s)
cargo +nightly fuzz build
echo "fuzz-smoke: built $(echo "$targets" | wc -l) targets in $(($(date +%s) - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf '%-12s %12s %10s %8s\n' target executions exec/s new
for t in $targets; do
    seeds="fuzz/seeds/$t"
    if [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
        echo "fuzz-smoke: $t has no seed corpus in $seeds" >&2
        exit 1
    fi
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    if ! cargo +nightly fuzz run "$t" "$scratch/$t" "$seeds" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz-smoke: $t failed (the input is in fuzz/artifacts/$t)" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    found=$(ls -A "$scratch/$t" | wc -l)
    printf '%-12s %12s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$found"
done
