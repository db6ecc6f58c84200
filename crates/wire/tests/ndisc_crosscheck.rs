//! Neighbour discovery over IPoIB as built by this crate, read back by two parsers we
//! did not write: smoltcp's IPv6 and ICMPv6 views (header fields, checksum over the
//! pseudo-header, message type), and tshark's ICMPv6 dissector (checksum status, option type
//! and length, the 20-byte link-layer address behind its 2 reserved bytes).

use std::path::{Path, PathBuf};
use std::process::Command;

use ibpoll_wire::ipoib::HwAddr;
use ibpoll_wire::ndisc::{self, NeighborFlags};
use ibpoll_wire::{ipv6, Gid, Qpn};

const A: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
];
const B: [u8; 16] = [0xfd, 0x00, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x02];

fn hw(qpn: u32, guid: u64) -> HwAddr {
    HwAddr::new(
        HwAddr::FLAG_CONNECTED_MODE,
        Qpn::new(qpn).unwrap(),
        Gid::new(Gid::DEFAULT_SUBNET_PREFIX, guid),
    )
}

/// An IPv6 packet (header and neighbour-discovery message) from `src` to `dst`.
fn packet(src: [u8; 16], dst: [u8; 16], r: &ndisc::Repr) -> Vec<u8> {
    let len = r.buffer_len();
    let mut b = vec![0u8; ipv6::HEADER_LEN + len];
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ipv6::NEXT_HEADER_ICMPV6,
        payload_len: len as u16,
        hop_limit: ndisc::HOP_LIMIT,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
    r.emit(
        &src,
        &dst,
        &mut ndisc::Packet::new_unchecked(&mut b[ipv6::HEADER_LEN..]),
    );
    b
}

fn solicitation() -> Vec<u8> {
    packet(
        A,
        ipv6::solicited_node(&B),
        &ndisc::Repr::NeighborSolicit {
            target_addr: B,
            lladdr: Some(hw(0x48, 0x0002_c903_0000_0001)),
        },
    )
}

fn advertisement() -> Vec<u8> {
    packet(
        B,
        A,
        &ndisc::Repr::NeighborAdvert {
            flags: NeighborFlags::SOLICITED.union(NeighborFlags::OVERRIDE),
            target_addr: B,
            lladdr: Some(hw(0x4a, 0x0002_c903_0000_0002)),
        },
    )
}

#[test]
fn smoltcp_reads_what_we_emit() {
    use smoltcp::wire::{Icmpv6Message, Icmpv6Packet, IpAddress, Ipv6Address, Ipv6Packet};
    for (bytes, msg, dst) in [
        (
            solicitation(),
            Icmpv6Message::NeighborSolicit,
            ipv6::solicited_node(&B),
        ),
        (advertisement(), Icmpv6Message::NeighborAdvert, A),
    ] {
        let ip = Ipv6Packet::new_checked(&bytes[..]).expect("smoltcp: IPv6 header");
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(u8::from(ip.next_header()), 58);
        assert_eq!(ip.dst_addr(), Ipv6Address::from(dst));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("smoltcp: ICMPv6");
        assert!(
            icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()),
            "smoltcp refuses our ICMPv6 checksum"
        );
        assert_eq!(icmp.msg_type(), msg);
        assert_eq!(icmp.msg_code(), 0);
    }
    // And a UDP checksum of ours (upper_layer_checksum) is one smoltcp accepts.
    let mut udp = [0u8; 20];
    udp[..8].copy_from_slice(&[0x27, 0x10, 0x23, 0x28, 0, 20, 0, 0]);
    udp[8..].copy_from_slice(b"IBpg and some bytes"[..12].as_ref());
    let c = ipv6::upper_layer_checksum(&A, &B, ipv6::NEXT_HEADER_UDP, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let p = smoltcp::wire::UdpPacket::new_checked(&udp[..]).unwrap();
    assert!(p.verify_checksum(
        &IpAddress::Ipv6(Ipv6Address::from(A)),
        &IpAddress::Ipv6(Ipv6Address::from(B))
    ));
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A pcap file (link type 229, LINKTYPE_IPV6: raw IPv6 packets) of `packets`.
fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&229u32.to_le_bytes());
    for p in packets {
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    std::fs::write(path, f).expect("write the capture");
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ibpoll-wire-{}-{name}", std::process::id()))
}

#[test]
fn tshark_decodes_the_20_byte_option() {
    if !on_path("tshark") {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is not on PATH and CI is set: CI installs it (.ci/run)"
        );
        eprintln!("SKIPPED: tshark is not on PATH");
        return;
    }
    let path = scratch("nd.pcap");
    write_pcap(&path, &[solicitation(), advertisement()]);
    let fields = [
        "icmpv6.type",
        "icmpv6.code",
        "icmpv6.checksum.status",
        "ipv6.hlim",
        "ipv6.dst",
        "icmpv6.nd.ns.target_address",
        "icmpv6.nd.na.target_address",
        "icmpv6.nd.na.flag.s",
        "icmpv6.nd.na.flag.o",
        "icmpv6.opt.type",
        "icmpv6.opt.length",
        "icmpv6.opt.linkaddr",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    // tshark shows the option's data after type and length: the 2 reserved bytes, then
    // the 20-byte IPoIB address.
    let ns = &rows[0];
    assert_eq!(
        ns[..7],
        [
            "135",
            "0",
            "1",
            "255",
            "ff02::1:ff00:2",
            "fd00:0:0:1::2",
            ""
        ]
    );
    assert_eq!(
        ns[9..],
        ["1", "3", "000080000048fe800000000000000002c90300000001"]
    );
    let na = &rows[1];
    assert_eq!(
        na[..9],
        [
            "136",
            "0",
            "1",
            "255",
            "fe80::2:c903:0:1",
            "",
            "fd00:0:0:1::2",
            "1",
            "1"
        ]
    );
    assert_eq!(
        na[9..],
        ["2", "3", "00008000004afe800000000000000002c90300000002"]
    );
}
