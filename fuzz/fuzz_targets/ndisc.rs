//! Parses arbitrary bytes as an IPv6 packet carrying a Neighbor Solicitation or
//! Advertisement (the IPv6 header, then the message with its options, as the control
//! core reads them after the IPoIB header). When the header parses, it is emitted and
//! must give the same bytes back; when the message parses, it is emitted for the same addresses into a
//! fresh buffer (checksum included) and must parse back to the same Repr. The option
//! parser runs on the first bytes after the header by itself too.
#![no_main]

use ibpoll_wire::{ipv6, ndisc, ndisc_option};
use libfuzzer_sys::fuzz_target;


/// `data` with the ICMPv6 checksum made right, when the lowest traffic-class bit of the
/// first byte asks for it (so that mutations of valid messages get past the checksum and
/// reach the message checks; inputs without the bit test the checksum check itself).
fn with_checksum(data: &[u8]) -> Option<Vec<u8>> {
    if data.first().is_none_or(|b| b & 0x01 == 0) {
        return None;
    }
    let ip = ipv6::Packet::new_checked(data).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let end = ipv6::HEADER_LEN + ip.payload().len();
    let mut owned = data.to_vec();
    let msg = owned.get_mut(ipv6::HEADER_LEN..end)?;
    if msg.len() < 4 {
        return None;
    }
    ndisc::Packet::new_unchecked(msg).fill_checksum(&src, &dst);
    Some(owned)
}

fuzz_target!(|data: &[u8]| {
    let fixed = with_checksum(data);
    let data = fixed.as_deref().unwrap_or(data);
    if let Ok(opt) = ndisc_option::Packet::new_checked(data.get(ipv6::HEADER_LEN..).unwrap_or(&[])) {
        let _ = opt.link_layer_addr();
        if let Ok(r) = ndisc_option::Repr::parse(&opt) {
            assert!(r.buffer_len() <= opt.option_len());
        }
    }
    let Ok(ip) = ipv6::Packet::new_checked(data) else {
        return;
    };
    let Ok(hdr) = ipv6::Repr::parse(&ip) else {
        return;
    };
    // Emitted, the header comes back byte for byte but for traffic class and flow
    // label (the Repr does not keep them: 0).
    let mut h = [0u8; ipv6::HEADER_LEN];
    hdr.emit(&mut ipv6::Packet::new_unchecked(&mut h[..]));
    assert_eq!(h[..4], [0x60, 0, 0, 0]);
    assert_eq!(h[4..], data[4..ipv6::HEADER_LEN]);
    let Ok(msg) = ndisc::Packet::new_checked(ip.payload()) else {
        return;
    };
    let Ok(repr) = ndisc::Repr::parse(&hdr.src_addr, &hdr.dst_addr, &msg) else {
        return;
    };
    let mut buf = [0u8; 48];
    let len = repr.buffer_len();
    repr.emit(
        &hdr.src_addr,
        &hdr.dst_addr,
        &mut ndisc::Packet::new_unchecked(&mut buf[..len]),
    );
    let again = ndisc::Packet::new_checked(&buf[..len]).expect("emitted bytes must check");
    assert_eq!(
        ndisc::Repr::parse(&hdr.src_addr, &hdr.dst_addr, &again),
        Ok(repr)
    );
});
