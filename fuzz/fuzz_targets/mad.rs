//! Parses arbitrary bytes as a MAD common header; when that succeeds, emits the Repr and
//! parses it again. The error answer built from any 256 bytes must never panic either.
#![no_main]

use ibpoll_wire::mad::{error_response, Packet, Repr, Status, HEADER_LEN, MAD_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mad) = <&[u8; MAD_LEN]>::try_from(data) {
        if let Some(resp) = error_response(mad, Status::ERR_REQ_INVALID) {
            assert!(Packet::new_unchecked(&resp[..]).method().is_response());
            assert_eq!(&resp[8..16], &mad[8..16]);
        }
    }
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.reserved(), packet.data().len());
    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    let mut buf = [0u8; HEADER_LEN];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])), Ok(repr));
    // Everything but the reserved field comes back byte for byte.
    assert_eq!(&buf[..18], &data[..18]);
    assert_eq!(&buf[20..], &data[20..HEADER_LEN]);
});
