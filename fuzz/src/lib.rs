//! Shared pieces of the fuzz targets.

pub use libfuzzer_sys;

/// A fuzz target for a fixed-size header module of `ibpoll-wire` (one with `Packet`,
/// `Repr` and a length constant): arbitrary bytes go through `Packet::new_checked` and
/// `Repr::parse`, which must never panic; when they succeed, the `Repr` is emitted into
/// a fresh buffer and parsed again, and must come back unchanged.
#[macro_export]
macro_rules! header_roundtrip_target {
    ($module:path, $max_len:expr) => {
        use $module as wire_module;
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            use wire_module::{Packet, Repr};
            let Ok(packet) = Packet::new_checked(data) else {
                return;
            };
            let Ok(repr) = Repr::parse(&packet) else {
                return;
            };
            let mut buf = [0u8; $max_len];
            let len = repr.buffer_len();
            repr.emit(&mut Packet::new_unchecked(&mut buf[..len]));
            let again = Packet::new_checked(&buf[..len]).expect("emitted bytes must check");
            assert_eq!(Repr::parse(&again), Ok(repr));
        });
    };
}
