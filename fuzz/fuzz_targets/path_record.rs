//! Parses arbitrary bytes as a PathRecord; when that succeeds, emits the Repr and parses
//! it again. Every defined bit must survive.
#![no_main]

use ibpoll_wire::path_record::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (packet.reserved(), packet.reserved0());
    let repr = Repr::parse(&packet).expect("a checked record always parses");
    let bytes = repr.to_bytes();
    assert_eq!(Repr::parse(&Packet::new_unchecked(&bytes[..])), Ok(repr));
    assert_eq!(&bytes[..44], &data[..44]);
    assert_eq!(bytes[44], data[44] & 0x8F);
    assert_eq!(&bytes[45..58], &data[45..58]);
});
