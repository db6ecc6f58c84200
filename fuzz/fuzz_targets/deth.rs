//! Parses arbitrary bytes as a DETH; when that succeeds, emits the Repr into a fresh
//! buffer and parses it again: the result must be the same Repr.
#![no_main]

ibpoll_wire_fuzz::header_roundtrip_target!(ibpoll_wire::deth, ibpoll_wire::deth::HEADER_LEN);
