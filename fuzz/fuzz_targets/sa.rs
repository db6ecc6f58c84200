//! Parses arbitrary bytes as a whole SA MAD (headers and, for MCMemberRecord and
//! PathRecord, the record); when that succeeds, emits it and parses it again.
#![no_main]

use ibpoll_wire::sa::{Packet, Repr, SaMad};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        let _ = (packet.reserved(), packet.data().len(), Repr::parse(&packet));
    }
    let Ok(m) = SaMad::parse(data) else {
        return;
    };
    let bytes = m.to_bytes();
    assert_eq!(SaMad::parse(&bytes), Ok(m));
    // The headers come back byte for byte, reserved fields aside.
    assert_eq!(&bytes[..18], &data[..18]);
    assert_eq!(&bytes[20..46], &data[20..46]);
    assert_eq!(&bytes[48..56], &data[48..56]);
});
