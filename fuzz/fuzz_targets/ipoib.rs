//! Parses arbitrary bytes as an IPoIB header; when that succeeds, emits the Repr into a fresh
//! buffer and parses it again: the result must be the same Repr.
#![no_main]

ibpoll_wire_fuzz::header_roundtrip_target!(ibpoll_wire::ipoib, ibpoll_wire::ipoib::HEADER_LEN);
