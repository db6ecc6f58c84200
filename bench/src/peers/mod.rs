//! DPDK as a peer measured in the same run (`scripts/bench.sh`, `dpdk-peer`), and the
//! figures that stand beside it in `latest.json`.
//!
//! * [`pcap`]: the capture files DPDK's `net_pcap` replays to l3fwd (`infinite_rx=1`):
//!   the same 64-byte IPv4/UDP packets `ipoib-fwd --pmd replay` replays
//!   (`ibpoll_pmd_replay::Frames::ipv4_udp`), behind an Ethernet header instead of the
//!   IPoIB one, addressed so that l3fwd's built-in LPM table sends port 0's input to
//!   port 1 and port 1's to port 0.
//! * [`telemetry`]: a client of DPDK's telemetry socket (`dpdk_telemetry.v2`, a
//!   `SOCK_SEQPACKET` Unix socket): l3fwd prints no rates, so both peers' rates are read
//!   from `/ethdev/stats,<port>`, sampled twice.
//! * [`figures`]: `bench-report`'s part for the peers: `peers.*`, `ipoib_fwd_1lcore`,
//!   `direct_ring`, `forwarder_ir_per_packet`, the ratios against the peers and the
//!   targets of issue 9.
//!
//! The recipe and its gotchas (checksum offload in l3fwd 22.11, `--total-num-mbufs` for
//! testpmd, no `tx_drop` in net_pcap 22.11) are in bench/README.md.

pub mod figures;
pub mod pcap;
pub mod telemetry;
