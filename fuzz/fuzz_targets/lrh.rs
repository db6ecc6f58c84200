//! Parses arbitrary bytes as an LRH (and the PktLen bytes it announces); when that
//! succeeds, emits the Repr into a buffer of the announced length and parses it again.
//! The same bytes also go through the ICRC/VCRC check, which must never panic.
#![no_main]

use ibpoll_wire::crc;
use ibpoll_wire::lrh::{Packet, Repr, PKT_LEN_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = crc::verify_crcs(data);
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = packet.payload();
    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    assert_eq!(repr.packet_len(), packet.packet_len());
    let mut buf = [0u8; PKT_LEN_MAX as usize * 4];
    let len = repr.packet_len();
    let mut out = Packet::new_unchecked(&mut buf[..len]);
    repr.emit(&mut out);
    let again = Packet::new_checked(&buf[..len]).expect("emitted header must check");
    assert_eq!(Repr::parse(&again), Ok(repr));
});
