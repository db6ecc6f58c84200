#!/bin/sh
# /init of the VM that scripts/vm-test.sh boots (busybox sh; not run on the host).
#
# Sets up soft-RoCE: rxe0 on lo, with the addresses the ibpoll stacks use on lo so that
# rxe0's GID table holds their IPv4-mapped GIDs (RoCE v2 needs one per interface
# address): 10.0.0.1 and 10.0.0.2 (udp_echo's server and client, pktgen's generator
# and sink, mcast_feed's publisher), 10.0.1.1-2 (mcast_feed's subscribers). Then runs
# the steps named in /etc/vm.conf (STEPS), each bounded by STEP_TIMEOUT seconds, and
# reports on the console in lines the host parses:
#   @@AT step uptime          @@FAIL what            @@GID addr index
#   @@TEST bin rc=N           @@SUMMARY bin: test result: ...
#   @@PINGPONG round <ibv_ud_pingpong's "iters in" line>
#   @@E2E name rc=N           @@JSON name {...}      @@DONE status=N
export PATH=/usr/bin:/usr/sbin
. /etc/vm.conf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
stamp() { echo "@@AT $1 $(cut -d' ' -f1 /proc/uptime)"; }
fail() { echo "@@FAIL $*"; status=1; }
status=0
stamp init

# ------------------------------------------------------------------ soft-RoCE on lo
for ko in $(cat /etc/modules); do insmod "$ko" || fail "insmod $ko"; done
ip link set lo up
ip link set lo multicast on
for a in $ADDRS; do ip addr add "$a/32" dev lo || fail "ip addr add $a"; done
rdma link add rxe0 type rxe netdev lo || fail "rdma link add"
stamp rxe
gid_index() { # "GID[  1]:		::ffff:127.0.0.1, RoCE v2" -> 1
    re="::ffff:$(echo "$1" | sed 's/\./\\./g')(,|\$)"
    ibv_devinfo -v -d rxe0 | grep 'GID\[' | grep -iE "$re" | head -n 1 |
        sed 's/.*GID\[ *\([0-9]*\)\].*/\1/'
}
# The GID table is filled by a kernel worker after the link is added: wait for it.
for a in 127.0.0.1 $ADDRS; do
    i=0
    while [ -z "$(gid_index "$a")" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    echo "@@GID ::ffff:$a index $(gid_index "$a")"
    [ -n "$(gid_index "$a")" ] || fail "no GID ::ffff:$a in rxe0's table"
done
GIDX=$(gid_index 127.0.0.1)

bounded() { timeout "$STEP_TIMEOUT" "$@"; }

# Waits (bounded) until file $1 holds the text $2, or the process $3 ended.
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        kill -0 "$3" 2>/dev/null || return 1
        [ $i -lt $((STEP_TIMEOUT * 10)) ] || return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# ------------------------------------------------------------------ steps
# The driver's tests: every pmd/verbs test binary, on rxe0 (IBPOLL_RXE=1: they fail
# rather than skip without it).
step_tests() {
    cd /tests
    for t in $(cat /etc/tests); do
        IBPOLL_RXE=1 IBPOLL_RXE_EVENTS=1 IBPOLL_SKIP_OPENSM=1 RUST_BACKTRACE=1 \
            bounded ./"$t" --test-threads=1 --nocapture > /tmp/out 2>&1
        rc=$?
        cat /tmp/out
        echo "@@TEST $t rc=$rc"
        echo "@@SUMMARY ${t%-*}: $(grep '^test result:' /tmp/out | tail -n 1) (rc=$rc)"
        [ $rc = 0 ] || status=1
    done
    cd /
}

# Two ibpoll processes on rxe0: unicast request/response (udp_echo), then multicast
# (mcast_feed). The servers start first and say when they are ready.
e2e_pair() { # name, server's ready text, server command, client command
    name=$1 ready=$2 server=$3 client=$4
    echo "---- $name server: $server"
    bounded $server > /tmp/$name.server 2>&1 &
    spid=$!
    if wait_for /tmp/$name.server "$ready" $spid; then
        echo "---- $name client: $client"
        bounded $client > /tmp/$name.client 2>&1
        crc=$?
        # A client that failed leaves the server waiting for requests: stop it.
        if [ $crc != 0 ]; then sleep 2; kill -TERM $spid 2>/dev/null; fi
    else
        crc=99
        echo "$name: the server was not ready in time"
        kill -TERM $spid 2>/dev/null
    fi
    wait $spid
    src=$?
    cat /tmp/$name.server
    cat /tmp/$name.client 2>/dev/null
    echo "@@E2E $name-server rc=$src"
    echo "@@E2E $name-client rc=$crc"
    [ $src = 0 ] && [ $crc = 0 ] || status=1
}

step_e2e() {
    B=/opt/ibpoll
    e2e_pair udp_echo "server ready" \
        "$B/udp_echo --device verbs:rxe0 --role server --count $ECHO_COUNT --size 256 --duration 120" \
        "$B/udp_echo --device verbs:rxe0 --role client --count $ECHO_COUNT --size 256 --duration 120 --reply-timeout-ms 2000"
    e2e_pair mcast_feed "subscribers ready" \
        "$B/mcast_feed --device verbs:rxe0 --role subscribers --subscribers 2 --groups 4 --count $FEED_COUNT --rate 5000 --duration 120" \
        "$B/mcast_feed --device verbs:rxe0 --role publisher --subscribers 2 --groups 4 --count $FEED_COUNT --rate 5000 --duration 120"
}

# pktgen over rxe0: a stream, then PP_ROUNDS rounds of rdma-core's ibv_ud_pingpong and
# pktgen's ping-pong, back to back at the same UD message size (pktgen's IP packet + the
# 4-byte IPoIB header): the host compares them round by round (the emulated CPUs are
# shared with the host's other work, so one round alone says little).
pktgen_run() { # name, flags...
    name=$1
    shift
    echo "---- pktgen $*"
    bounded /opt/ibpoll/pktgen --fabric verbs:rxe0 --topology direct --json /tmp/$name.json "$@" \
        > /tmp/$name.out 2>&1
    rc=$?
    cat /tmp/$name.out
    echo "@@E2E pktgen-$name rc=$rc"
    [ $rc = 0 ] || status=1
    [ -s /tmp/$name.json ] && echo "@@JSON $name $(tr -d '\n' < /tmp/$name.json)"
}

ibv_pingpong() { # round
    ibv_ud_pingpong -d rxe0 -g "${GIDX:-1}" -n "$ITERS" -s "$SIZE" > /tmp/pp-server 2>&1 &
    ppid=$!
    sleep 1
    if bounded ibv_ud_pingpong -d rxe0 -g "${GIDX:-1}" -n "$ITERS" -s "$SIZE" 127.0.0.1 > /tmp/pp-client 2>&1; then
        echo "@@PINGPONG $1 $(grep 'iters in' /tmp/pp-client)"
    else
        echo "@@PINGPONG $1 failed"
        cat /tmp/pp-client /tmp/pp-server
        status=1
    fi
    wait $ppid
}

step_pktgen() {
    pktgen_run stream --duration "$STREAM_S" --mcast-groups 2
    r=1
    while [ $r -le "$PP_ROUNDS" ]; do
        ibv_pingpong $r
        pktgen_run pingpong$r --pingpong --count "$ITERS" --size $((SIZE - 4)) --duration 120
        r=$((r + 1))
    done
}

for s in $STEPS; do
    stamp "start-$s"
    "step_$s"
    stamp "$s"
done
echo "@@DONE status=$status"
poweroff -f
