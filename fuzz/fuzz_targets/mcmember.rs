//! Parses arbitrary bytes as an MCMemberRecord; when that succeeds, emits the Repr and
//! parses it again. Every defined bit must survive.
#![no_main]

use ibpoll_wire::mcmember::{Packet, Repr, RECORD_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = packet.reserved();
    let repr = Repr::parse(&packet).expect("a checked record always parses");
    let bytes = repr.to_bytes();
    assert_eq!(Repr::parse(&Packet::new_unchecked(&bytes[..])), Ok(repr));
    assert_eq!(&bytes[..49], &data[..49]);
    assert_eq!(bytes[49] & 0x80, data[49] & 0x80);
    assert_eq!(bytes.len(), RECORD_LEN);
});
