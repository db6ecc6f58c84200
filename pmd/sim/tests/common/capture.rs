//! Reading the fabric's pcap tap back: the pcap and ERF framing checked byte by byte,
//! each frame's CRCs and headers checked with the wire crate, and the whole file decoded
//! by tshark when it is installed.

use std::path::Path;
use std::process::Command;

use ibpoll_wire::{bth, crc, deth, grh, lrh};

/// pcap link type of ERF records.
pub const LINKTYPE_ERF: u32 = 197;
/// ERF record type of a native InfiniBand frame.
pub const ERF_TYPE_INFINIBAND: u8 = 21;
const PCAP_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
const ERF_HEADER_LEN: usize = 16;

/// Reads a capture of the fabric: checks the pcap global header (magic, version,
/// link type 197) and every record's ERF header (type 21, rlen and wlen consistent with
/// the record length), and returns the InfiniBand frames in order.
pub fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("the capture file can be read");
    assert!(bytes.len() >= PCAP_HEADER_LEN, "no pcap global header");
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes(b[at..at + 2].try_into().unwrap());
    assert_eq!(
        le32(&bytes, 0),
        0xa1b2_c3d4,
        "pcap magic (microseconds, LE)"
    );
    assert_eq!(
        (le16(&bytes, 4), le16(&bytes, 6)),
        (2, 4),
        "pcap version 2.4"
    );
    let snaplen = le32(&bytes, 16) as usize;
    assert_eq!(le32(&bytes, 20), LINKTYPE_ERF, "link type ERF (197)");

    let mut frames = Vec::new();
    let mut at = PCAP_HEADER_LEN;
    while at < bytes.len() {
        assert!(
            at + RECORD_HEADER_LEN <= bytes.len(),
            "truncated record header at byte {at}"
        );
        let incl = le32(&bytes, at + 8) as usize;
        let orig = le32(&bytes, at + 12) as usize;
        assert_eq!(incl, orig, "record at byte {at} was cut by the snap length");
        assert!(incl <= snaplen, "record longer than the snap length");
        let rec = &bytes[at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + incl];
        assert!(rec.len() > ERF_HEADER_LEN, "record without an ERF header");
        assert_eq!(rec[8], ERF_TYPE_INFINIBAND, "ERF type of record at {at}");
        let rlen = usize::from(be16(rec, 10));
        let lctr = be16(rec, 12);
        let wlen = usize::from(be16(rec, 14));
        assert_eq!(rlen, incl, "ERF rlen = the whole record (header included)");
        assert_eq!(
            wlen,
            incl - ERF_HEADER_LEN,
            "ERF wlen = the frame on the wire"
        );
        assert_eq!(lctr, 0, "ERF loss counter");
        frames.push(rec[ERF_HEADER_LEN..].to_vec());
        at += RECORD_HEADER_LEN + incl;
    }
    frames
}

/// One InfiniBand UD frame, taken apart.
#[derive(Debug, Clone)]
pub struct Frame {
    pub lrh: lrh::Repr,
    pub grh: Option<grh::Repr>,
    pub bth: bth::Repr,
    pub deth: deth::Repr,
    /// The payload without the pad.
    pub payload: Vec<u8>,
}

/// Checks a frame's VCRC and ICRC and parses LRH, GRH (if LNH says so), BTH and DETH
/// with the wire crate; PktLen, PadCnt and GRH PayLen must agree with the frame's length.
pub fn parse_frame(f: &[u8]) -> Frame {
    let body_len = crc::verify_crcs(f).expect("ICRC and VCRC are right");
    let lp = lrh::Packet::new_checked(f).expect("LRH");
    let lrh = lrh::Repr::parse(&lp).expect("LRH parses");
    assert_eq!(
        usize::from(lp.pkt_len()) * 4,
        f.len() - crc::VCRC_LEN,
        "PktLen covers LRH to ICRC"
    );
    let mut at = lrh::HEADER_LEN;
    let grh = match lrh.lnh {
        lrh::Lnh::IbaGlobal => {
            let gp = grh::Packet::new_checked(&f[at..]).expect("GRH");
            let g = grh::Repr::parse(&gp).expect("GRH parses");
            at += grh::HEADER_LEN;
            assert_eq!(g.next_header, grh::NXT_HDR_IBA);
            assert_eq!(
                usize::from(g.payload_len),
                f.len() - crc::VCRC_LEN - at,
                "GRH PayLen covers BTH to ICRC"
            );
            Some(g)
        }
        lrh::Lnh::IbaLocal => None,
        other => panic!("unexpected LNH {other:?}"),
    };
    let bp = bth::Packet::new_checked(&f[at..]).expect("BTH");
    let bth = bth::Repr::parse(&bp).expect("BTH parses");
    assert_eq!(bth.opcode, bth::OpCode::UD_SEND_ONLY);
    at += bth::HEADER_LEN;
    let dp = deth::Packet::new_checked(&f[at..]).expect("DETH");
    let deth = deth::Repr::parse(&dp).expect("DETH parses");
    at += deth::HEADER_LEN;
    let end = body_len - usize::from(bth.pad_count);
    assert!(end >= at, "pad longer than the payload");
    Frame {
        lrh,
        grh,
        bth,
        deth,
        payload: f[at..end].to_vec(),
    }
}

/// The fields asked of tshark, in this order.
pub const TSHARK_FIELDS: [&str; 11] = [
    "infiniband.lrh.dlid",
    "infiniband.bth.destqp",
    "infiniband.deth.q_key",
    "infiniband.deth.srcqp",
    "arp.hw.type",
    "arp.hw.size",
    "ip.dst",
    "infiniband.mad.method",
    "infiniband.mcmemberrecord.mgid",
    "infiniband.mcmemberrecord.joinstate",
    "infiniband.sa.componentmask",
];

/// One frame as tshark decoded it (the fields of [`TSHARK_FIELDS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    pub dlid: u64,
    pub dest_qp: u64,
    pub qkey: u64,
    pub src_qp: u64,
    pub arp_hw_type: Option<u64>,
    pub arp_hw_size: Option<u64>,
    pub ip_dst: Option<String>,
    pub mad_method: Option<u64>,
    pub mgid: Option<String>,
    pub join_state: Option<u64>,
    pub component_mask: Option<u64>,
}

/// A tshark number: hexadecimal with `0x`, else decimal.
pub fn number(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("tshark printed {s:?}, not a number: {e}"))
}

fn is_on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(program);
            p.is_file()
                && std::fs::metadata(&p).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// Decodes the capture with tshark, one [`Decoded`] per frame. Without tshark on PATH
/// this fails the test when the environment variable CI is set (CI must install it) and
/// otherwise prints why the check is skipped and returns `None`.
pub fn tshark(path: &Path) -> Option<Vec<Decoded>> {
    if !is_on_path("tshark") {
        if std::env::var_os("CI").is_some() {
            panic!(
                "tshark is not on PATH, and CI is set: CI must install tshark (Debian/Ubuntu \
                 package `tshark`) so that the pcap tap is checked by a real dissector"
            );
        }
        eprintln!(
            "SKIPPED the tshark half of this test: tshark is not on PATH (install the \
             `tshark` package to run it; with CI set this is a failure)"
        );
        return None;
    }
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields"]);
    for f in TSHARK_FIELDS {
        cmd.args(["-e", f]);
    }
    cmd.args(["-E", "separator=,"]);
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("tshark prints UTF-8");
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let rows = text
        .lines()
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            assert_eq!(c.len(), TSHARK_FIELDS.len(), "tshark line {line:?}");
            Decoded {
                dlid: number(c[0]),
                dest_qp: number(c[1]),
                qkey: number(c[2]),
                src_qp: number(c[3]),
                arp_hw_type: opt(c[4]).map(|s| number(&s)),
                arp_hw_size: opt(c[5]).map(|s| number(&s)),
                ip_dst: opt(c[6]),
                mad_method: opt(c[7]).map(|s| number(&s)),
                mgid: opt(c[8]),
                join_state: opt(c[9]).map(|s| number(&s)),
                component_mask: opt(c[10]).map(|s| number(&s)),
            }
        })
        .collect();
    Some(rows)
}
