#!/usr/bin/env python3
"""Merges what scripts/vm-test.sh's VM printed into one results file.

Reads the guest's console: `@@JSON NAME {...}` lines (pktgen's --json reports: `stream`,
then `pingpong1`..`pingpongN`) and `@@PINGPONG R <ibv_ud_pingpong's "N iters in S
seconds = U usec/iter" line>` (round R, run just before `pingpongR`). Writes RESULTS:
the stream report, and the ping-pong report of the round whose ratio is the median,
with `peers.ibv_ud_pingpong` (that round's rtt_us = usec/iter: one iteration of
ibv_ud_pingpong is one round trip) and `ratios.pktgen_rtt_vs_ibv_ud_pingpong` (pktgen's
mean round trip over it; `..._p50_...` with pktgen's median); every round's figures in
`pingpong_rounds`. Prints the figures. Exits 1 when a report or a figure is missing, a
pktgen run is not on a verbs device or not conserved, or buffers were still out after
its stop.
"""

import argparse
import datetime
import json
import re
import sys

ITERS_IN = re.compile(r"(\d+) iters in ([0-9.]+) seconds = ([0-9.]+) usec/iter")


def parse(console):
    """pktgen reports by name, ibv_ud_pingpong figures by round."""
    reports, peers = {}, {}
    with open(console, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("@@JSON "):
                _, name, body = line.rstrip("\n").split(" ", 2)
                try:
                    reports[name] = json.loads(body)
                except json.JSONDecodeError as e:
                    print(f"vm-results: pktgen {name}: bad JSON: {e}", file=sys.stderr)
            elif line.startswith("@@PINGPONG "):
                parts = line.split(" ", 2)
                m = ITERS_IN.search(line)
                if m and len(parts) == 3 and parts[1].isdigit():
                    peers[int(parts[1])] = {
                        "iters": int(m.group(1)),
                        "seconds": float(m.group(2)),
                        "rtt_us": float(m.group(3)),
                    }
    return reports, peers


def check(name, report, problems):
    """A pktgen report's own verdict: conserved, every buffer back."""
    if report is None:
        problems.append(f"no pktgen {name} report on the console")
        return
    if not str(report.get("fabric", "")).startswith("verbs:"):
        problems.append(f"pktgen {name}: ran on {report.get('fabric')!r}, not a verbs device")
    if not report.get("conserved"):
        problems.append(f"pktgen {name}: not conserved")
    if report.get("pool_in_use_after_stop", 0) != 0:
        problems.append(f"pktgen {name}: {report['pool_in_use_after_stop']} buffers out after stop")


def rounds(reports, peers, n, problems):
    """Each round's figures: pktgen's round trip against ibv_ud_pingpong's."""
    out = []
    for r in range(1, n + 1):
        pp, peer = reports.get(f"pingpong{r}"), peers.get(r)
        check(f"pingpong{r}", pp, problems)
        if peer is None:
            problems.append(f"round {r}: no ibv_ud_pingpong figure on the console")
        lat = (pp or {}).get("latency_ns") or {}
        if pp is not None and not lat.get("mean"):
            problems.append(f"pktgen pingpong{r}: no round-trip latency in its report")
        if peer is None or not lat.get("mean") or peer["rtt_us"] <= 0:
            continue
        out.append({
            "round": r,
            "ibv_ud_pingpong_rtt_us": peer["rtt_us"],
            "pktgen_rtt_mean_us": lat["mean"] / 1000,
            "pktgen_rtt_p50_us": lat["p50"] / 1000,
            "pktgen_rtt_min_us": lat["min"] / 1000,
            "ratio_mean": round(lat["mean"] / 1000 / peer["rtt_us"], 3),
            "ratio_p50": round(lat["p50"] / 1000 / peer["rtt_us"], 3),
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("console")
    ap.add_argument("results")
    ap.add_argument("--kernel", default="")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--size", type=int, required=True,
                    help="ibv_ud_pingpong's message size (UD payload bytes)")
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()

    reports, peers = parse(a.console)
    problems = []
    st = reports.get("stream")
    check("stream", st, problems)
    per_round = rounds(reports, peers, a.rounds, problems)

    pp = None
    if per_round:
        median = sorted(per_round, key=lambda x: x["ratio_mean"])[(len(per_round) - 1) // 2]
        r = median["round"]
        pp = reports[f"pingpong{r}"]
        peer = dict(peers[r], size=a.size, round=r,
                    command=f"ibv_ud_pingpong -d rxe0 -g <index of ::ffff:127.0.0.1> "
                            f"-n {a.iters} -s {a.size} [127.0.0.1]")
        pp["peers"] = {"ibv_ud_pingpong": peer}
        pp["ratios"] = {
            "pktgen_rtt_vs_ibv_ud_pingpong": median["ratio_mean"],
            "pktgen_rtt_p50_vs_ibv_ud_pingpong": median["ratio_p50"],
        }

    out = {
        "what": "ibpoll over real verbs: the kernel's soft-RoCE (rdma_rxe, RoCE v2) on lo "
                "in a QEMU VM with software emulation; pktgen --fabric verbs:rxe0 "
                "--topology direct (a stream, then ping-pong rounds), each ping-pong right "
                "after rdma-core's ibv_ud_pingpong in the same boot",
        "command": "scripts/vm-test.sh",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "vm": {"accel": a.accel, "smp": a.smp, "guest_kernel": a.kernel},
        "message_size": {
            "ud_payload_bytes": a.size,
            "pktgen_ip_packet_bytes": a.size - 4,
            "note": "pktgen's --size is the IP packet; it follows the 4-byte IPoIB header, "
                    "so both tools send UD messages of the same size",
        },
        "stream": st,
        "pingpong": pp,
        "pingpong_rounds": per_round,
    }
    with open(a.results, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, sort_keys=True)
        f.write("\n")

    if st:
        print(f"figures: stream {st['rx_pps'] / 1e6:.4f} Mpps received "
              f"({st['tx_packets']} sent, {st['rx_packets']} received, "
              f"{st['rx_mcast_packets']} of them multicast, {st['size']}-byte packets, "
              f"conserved {str(st['conserved']).lower()})")
    for x in per_round:
        print(f"figures: round {x['round']}: ibv_ud_pingpong {x['ibv_ud_pingpong_rtt_us']:.1f} "
              f"us/iter; pktgen round trip mean {x['pktgen_rtt_mean_us']:.1f} us, p50 "
              f"{x['pktgen_rtt_p50_us']:.1f} us, min {x['pktgen_rtt_min_us']:.1f} us; "
              f"ratio {x['ratio_mean']} (p50 {x['ratio_p50']})")
    if pp is not None:
        print(f"figures: pktgen_rtt_vs_ibv_ud_pingpong {pp['ratios']['pktgen_rtt_vs_ibv_ud_pingpong']} "
              f"(median of {len(per_round)} rounds, {a.size}-byte UD messages)")
    for p in problems:
        print(f"vm-results: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
