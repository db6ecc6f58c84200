//! Parses arbitrary bytes as a GRH; when that succeeds, emits the Repr into a fresh
//! buffer and parses it again: the result must be the same Repr.
#![no_main]

use ibpoll_wire::grh::{self, Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    let mut buf = [0u8; grh::HEADER_LEN];
    let len = repr.buffer_len();
    repr.emit(&mut Packet::new_unchecked(&mut buf[..len]));
    let again = Packet::new_checked(&buf[..len]).expect("emitted bytes must check");
    assert_eq!(Repr::parse(&again), Ok(repr));
});
