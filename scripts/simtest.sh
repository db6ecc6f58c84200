#!/usr/bin/env bash
# Runs many seeds through ibpoll's deterministic simulator (crates/simtest).
# Usage: scripts/simtest.sh [FIRST [END]]   (default seeds 0..5000)
# Each failing seed is printed with the command that replays it; the last line is
# "N passed, M failed" and the exit status is non-zero when M > 0.
set -euo pipefail
first=${1:-0}
end=${2:-5000}
cd "$(dirname "$0")/.."
exec cargo run --release -p ibpoll-simtest -- --seeds "${first}..${end}"
