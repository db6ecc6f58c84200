//! The captures DPDK's l3fwd replays (`net_pcap`, `rx_pcap=FILE,infinite_rx=1`): the IP
//! packets of `ipoib-fwd --pmd replay` ([`Frames::ipv4_udp`]: valid IPv4 header
//! checksum, TTL 64, UDP source ports 10000 upwards, one per flow, to port 9000) behind
//! an Ethernet II header, written as a classic pcap file (link type 1, Ethernet).
//!
//! l3fwd's built-in LPM table (`lpm_default_v4.cfg` in 22.11) routes 198.18.N.0/24 to
//! port N, so port 0's input goes to 198.18.1.0/24 (out of port 1) and port 1's to
//! 198.18.0.0/24 (out of port 0): every packet is forwarded, like ipoib-fwd's two
//! replayed streams (10.1.0.2 -> 10.2.0.2 on interface 0, 10.2.0.2 -> 10.1.0.2 on 1).

use ibpoll_pmd_replay::{Frames, FramesError};
use ibpoll_wire::ipoib;

/// Source and destination of each port's input: port 0 receives packets for port 1's
/// network, port 1 for port 0's.
pub const L3FWD_FLOWS: [([u8; 4], [u8; 4]); 2] = [
    ([198, 18, 0, 2], [198, 18, 1, 2]),
    ([198, 18, 1, 2], [198, 18, 0, 2]),
];

/// The Ethernet header's destination and source (locally administered; net_pcap and
/// l3fwd's LPM path do not look at them, l3fwd rewrites them when forwarding).
const ETH_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ETH_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// An Ethernet II header without the frame check sequence (pcap files hold none).
pub const ETH_HEADER_LEN: usize = 14;

/// pcap's classic file header: magic, version 2.4, GMT offset 0, accuracy 0, snapshot
/// length, link type 1 (LINKTYPE_ETHERNET), little-endian.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const PCAP_SNAPLEN: u32 = 65_535;
const LINKTYPE_ETHERNET: u32 = 1;

/// `flows` Ethernet frames of `size`-byte IPv4/UDP packets (`size` counts the IPv4 and
/// UDP headers, as ipoib-fwd's `--size` does) from `src` to `dst`, TTL 64.
pub fn ethernet_ipv4_udp(
    src: [u8; 4],
    dst: [u8; 4],
    size: usize,
    flows: u16,
) -> Result<Vec<Vec<u8>>, FramesError> {
    let frames = Frames::ipv4_udp(src, dst, size, flows, 64)?;
    Ok((0..frames.len())
        .map(|i| {
            let ip = &frames.get(i)[ipoib::HEADER_LEN..];
            let mut f = Vec::with_capacity(ETH_HEADER_LEN + ip.len());
            f.extend_from_slice(&ETH_DST);
            f.extend_from_slice(&ETH_SRC);
            f.extend_from_slice(&ETHERTYPE_IPV4);
            f.extend_from_slice(ip);
            f
        })
        .collect())
}

/// A pcap file holding `frames`, one microsecond apart (net_pcap's `infinite_rx`
/// ignores the timestamps).
pub fn pcap_file(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.len()).sum::<usize>());
    out.extend_from_slice(&PCAP_MAGIC.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&PCAP_SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&u32::try_from(i % 1_000_000).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The two captures of l3fwd's ports ([`L3FWD_FLOWS`]): port 0's, then port 1's.
pub fn l3fwd_inputs(size: usize, flows: u16) -> Result<[Vec<u8>; 2], FramesError> {
    let [(s0, d0), (s1, d1)] = L3FWD_FLOWS;
    Ok([
        pcap_file(&ethernet_ipv4_udp(s0, d0, size, flows)?),
        pcap_file(&ethernet_ipv4_udp(s1, d1, size, flows)?),
    ])
}

/// The frames of a pcap file written by [`pcap_file`] (little-endian classic pcap), or
/// why it is not one.
pub fn read_pcap(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    if u32_at(0)? != PCAP_MAGIC {
        return Err(String::from("not a little-endian microsecond pcap file"));
    }
    if u32_at(20)? != LINKTYPE_ETHERNET {
        return Err(String::from("link type is not Ethernet"));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let len = u32_at(at + 8)? as usize;
        let body = data
            .get(at + 16..at + 16 + len)
            .ok_or_else(|| format!("record at byte {at} runs past the end"))?;
        frames.push(body);
        at += 16 + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_pmd_replay::ipv4_header_checksum;

    #[test]
    fn frames_carry_the_replay_pmds_ip_packets_behind_ethernet() {
        let eth = ethernet_ipv4_udp([198, 18, 0, 2], [198, 18, 1, 2], 64, 4).unwrap();
        let replay = Frames::ipv4_udp([198, 18, 0, 2], [198, 18, 1, 2], 64, 4, 64).unwrap();
        assert_eq!(eth.len(), 4);
        for (i, f) in eth.iter().enumerate() {
            assert_eq!(f.len(), ETH_HEADER_LEN + 64);
            assert_eq!(&f[12..14], &[0x08, 0x00], "EtherType IPv4");
            assert_eq!(&f[ETH_HEADER_LEN..], &replay.get(i)[ipoib::HEADER_LEN..]);
            assert_eq!(ipv4_header_checksum(&f[14..34]), 0, "valid header checksum");
            assert_eq!(&f[30..34], &[198, 18, 1, 2], "destination");
        }
    }

    #[test]
    fn a_pcap_file_reads_back() {
        let [p0, p1] = l3fwd_inputs(64, 16).unwrap();
        let f0 = read_pcap(&p0).unwrap();
        let f1 = read_pcap(&p1).unwrap();
        assert_eq!((f0.len(), f1.len()), (16, 16));
        assert_eq!(
            &f0[3][30..34],
            &[198, 18, 1, 2],
            "port 0's input goes to port 1"
        );
        assert_eq!(
            &f1[3][30..34],
            &[198, 18, 0, 2],
            "port 1's input goes to port 0"
        );
        assert_eq!(p0.len(), 24 + 16 * (16 + 78));
        assert!(read_pcap(&p0[..30]).is_err());
        assert!(read_pcap(b"not a capture at all, no").is_err());
    }

    #[test]
    fn bad_sizes_are_typed_errors() {
        assert!(matches!(
            l3fwd_inputs(20, 1),
            Err(FramesError::PacketSize { size: 20 })
        ));
        assert!(matches!(l3fwd_inputs(64, 0), Err(FramesError::NoFlow)));
    }
}
