//! Wire formats on the data and control paths, per packet or per MAD:
//!
//! * `ud_headers/parse`: LRH + GRH + BTH + DETH of a multicast UD frame (checked views
//!   and `Repr::parse` of each), what a receive path reads per packet;
//! * `ud_headers/emit`: the same four headers written;
//! * `ipoib/parse`: the 4-byte IPoIB header (checked view + `Repr::parse`);
//! * `sa_mad/mcmember_parse` and `sa_mad/mcmember_emit`: a whole 256-byte SA MAD carrying
//!   an MCMemberRecord, what the controller does per join answer and per join request;
//! * `icrc_vs_copy/64/icrc` and `icrc_vs_copy/2048/icrc`: the ICRC of a 64-byte and a
//!   2 KiB local UD frame, against the baseline `.../copy` (a plain copy of the same
//!   bytes).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ibpoll_wire::ipoib::{self, EtherType, McastScope};
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{bth, crc, deth, grh, lrh, Gid, Lid, PKey, QKey, Qpn};

/// Bytes after the DETH: IPoIB header and a 60-byte IPv4 packet.
const DATA_LEN: usize = 64;
const HEADERS_LEN: usize = lrh::HEADER_LEN + grh::HEADER_LEN + bth::HEADER_LEN + deth::HEADER_LEN;
const FRAME_LEN: usize = HEADERS_LEN + DATA_LEN + crc::ICRC_LEN + crc::VCRC_LEN;

fn port_gid() -> Gid {
    Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001)
}

fn group_mgid() -> Gid {
    ipoib::ipv4_mcast_mgid([239, 1, 2, 3], PKey::DEFAULT, McastScope::LINK_LOCAL)
}

struct Headers {
    lrh: lrh::Repr,
    grh: grh::Repr,
    bth: bth::Repr,
    deth: deth::Repr,
}

fn headers() -> Headers {
    let after_grh = bth::HEADER_LEN + deth::HEADER_LEN + DATA_LEN;
    Headers {
        lrh: lrh::Repr {
            vl: 0,
            sl: 0,
            lnh: lrh::Lnh::IbaGlobal,
            dlid: Lid(0xC001),
            slid: Lid(1),
            payload_len: grh::HEADER_LEN + after_grh,
        },
        grh: grh::Repr {
            traffic_class: 0,
            flow_label: 0,
            payload_len: (after_grh + crc::ICRC_LEN) as u16,
            next_header: grh::NXT_HDR_IBA,
            hop_limit: 0,
            sgid: port_gid(),
            dgid: group_mgid(),
        },
        bth: bth::Repr::ud_send_only(PKey::DEFAULT, Qpn::MULTICAST, 7, DATA_LEN),
        deth: deth::Repr {
            qkey: QKey::IPOIB_DEFAULT,
            src_qpn: Qpn::from_bits(0x48),
        },
    }
}

fn emit_headers(h: &Headers, buf: &mut [u8]) {
    let (l, rest) = buf.split_at_mut(lrh::HEADER_LEN);
    h.lrh.emit(&mut lrh::Packet::new_unchecked(l));
    let (g, rest) = rest.split_at_mut(grh::HEADER_LEN);
    h.grh.emit(&mut grh::Packet::new_unchecked(g));
    let (b, rest) = rest.split_at_mut(bth::HEADER_LEN);
    h.bth.emit(&mut bth::Packet::new_unchecked(b));
    h.deth.emit(&mut deth::Packet::new_unchecked(
        &mut rest[..deth::HEADER_LEN],
    ));
}

/// A whole multicast UD frame carrying an IPoIB datagram, CRCs included.
fn frame() -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    emit_headers(&headers(), &mut f);
    ipoib::Repr {
        ethertype: EtherType::IPV4,
    }
    .emit(&mut ipoib::Packet::new_unchecked(&mut f[HEADERS_LEN..]));
    let len = crc::append_crcs(&mut f, HEADERS_LEN + DATA_LEN).expect("room for the CRCs");
    assert_eq!(len, FRAME_LEN);
    f
}

/// What a receive path reads: every header checked and parsed.
fn parse_ud(frame: &[u8]) -> ibpoll_wire::Result<(lrh::Repr, grh::Repr, bth::Repr, deth::Repr)> {
    let l = lrh::Packet::new_checked(frame)?;
    let lr = lrh::Repr::parse(&l)?;
    let g = grh::Packet::new_checked(l.payload())?;
    let gr = grh::Repr::parse(&g)?;
    let b = bth::Packet::new_checked(g.payload())?;
    let br = bth::Repr::parse(&b)?;
    let d = deth::Packet::new_checked(b.payload())?;
    let dr = deth::Repr::parse(&d)?;
    Ok((lr, gr, br, dr))
}

fn ud_headers(c: &mut Criterion) {
    let f = frame();
    crc::verify_crcs(&f).expect("the fixture's CRCs");
    let (_, gr, _, dr) = parse_ud(&f).expect("the fixture parses");
    assert_eq!((gr.dgid, dr.qkey), (group_mgid(), QKey::IPOIB_DEFAULT));

    let mut g = c.benchmark_group("ud_headers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| b.iter(|| parse_ud(black_box(&f[..]))));
    let h = headers();
    let mut out = [0u8; HEADERS_LEN];
    g.bench_function("emit", |b| {
        b.iter(|| {
            emit_headers(black_box(&h), black_box(&mut out[..]));
        })
    });
    g.finish();

    let data = &f[HEADERS_LEN..HEADERS_LEN + DATA_LEN];
    c.bench_function("ipoib/parse", |b| {
        b.iter(|| {
            let p = ipoib::Packet::new_checked(black_box(data))?;
            ipoib::Repr::parse(&p)
        })
    });
}

fn sa_mad(c: &mut Criterion) {
    let record = mcmember::Repr {
        mgid: group_mgid(),
        port_gid: port_gid(),
        qkey: QKey::IPOIB_DEFAULT,
        mlid: Lid(0xC001),
        mtu: 4,
        pkey: PKey::DEFAULT,
        rate: ibpoll_wire::Rate::GBPS_10,
        sl: 0,
        scope: 2,
        join_state: JoinState::FULL_MEMBER,
        ..mcmember::Repr::default()
    };
    let mad = SaMad::request(
        Method::SET,
        0x1234_5678,
        mcmember::CREATE_MASK,
        Attribute::McMember(record),
    );
    let bytes = mad.to_bytes();
    assert_eq!(SaMad::parse(&bytes).expect("the MAD parses"), mad);

    let mut g = c.benchmark_group("sa_mad");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mcmember_parse", |b| {
        b.iter(|| SaMad::parse(black_box(&bytes[..])))
    });
    let mut out = [0u8; ibpoll_wire::mad::MAD_LEN];
    g.bench_function("mcmember_emit", |b| {
        b.iter(|| black_box(&mad).emit(black_box(&mut out[..])))
    });
    g.finish();
}

/// A local UD frame (LRH, BTH, DETH, payload; no GRH, as unicast IPoIB sends) of `len`
/// bytes without its CRCs. A 64-byte frame has no room for a GRH (the four headers
/// take 68 bytes), so both sizes are local and compare like with like.
fn crc_frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let h = headers();
    let lrh = lrh::Repr {
        lnh: lrh::Lnh::IbaLocal,
        dlid: Lid(2),
        payload_len: len - lrh::HEADER_LEN,
        ..h.lrh
    };
    let (l, rest) = f.split_at_mut(lrh::HEADER_LEN);
    lrh.emit(&mut lrh::Packet::new_unchecked(l));
    let (b, rest) = rest.split_at_mut(bth::HEADER_LEN);
    h.bth.emit(&mut bth::Packet::new_unchecked(b));
    h.deth.emit(&mut deth::Packet::new_unchecked(
        &mut rest[..deth::HEADER_LEN],
    ));
    f
}

fn icrc(c: &mut Criterion) {
    for len in [64usize, 2048] {
        let f = crc_frame(len);
        let mut dst = vec![0u8; len];
        let mut g = c.benchmark_group(format!("icrc_vs_copy/{len}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("icrc", |b| b.iter(|| crc::icrc(black_box(&f[..]))));
        g.bench_function("copy", |b| {
            b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&f[..])))
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = ud_headers, sa_mad, icrc
}
criterion_main!(benches);
