#!/usr/bin/env bash
# Reserves N 2 MiB hugepages (default 256 = 512 MiB) for ibpoll's buffer pools.
# Needs root. Prints what the kernel actually granted.
set -euo pipefail
want=${1:-256}
f=/proc/sys/vm/nr_hugepages
have=$(cat "$f")
if [ "$have" -lt "$want" ]; then
    echo "$want" > "$f"
fi
got=$(cat "$f")
echo "hugepages: $got x 2 MiB reserved (asked for $want)"
[ "$got" -ge "$want" ]
