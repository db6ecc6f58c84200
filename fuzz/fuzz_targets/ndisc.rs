//! Parses arbitrary bytes as an IPv6 packet carrying a Neighbor Solicitation or
//! Advertisement (the IPv6 header, then the message with its options, as the control
//! core reads them after the IPoIB header). When the header parses, it is emitted and
//! parsed again; when the message parses, it is emitted for the same addresses into a
//! fresh buffer (checksum included) and must parse back to the same Repr. The option
//! parser runs on the first bytes after the header by itself too.
#![no_main]

use ibpoll_wire::{ipv6, ndisc, ndisc_option};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    let mut h = [0u8; ipv6::HEADER_LEN];
    hdr.emit(&mut ipv6::Packet::new_unchecked(&mut h[..]));
    assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_unchecked(&h[..])), Ok(hdr));
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
