//! Parses arbitrary bytes as a GRH; when that succeeds, emits the Repr into a fresh
//! buffer and parses it again: the result must be the same Repr.
#![no_main]

ibpoll_wire_fuzz::header_roundtrip_target!(ibpoll_wire::grh, ibpoll_wire::grh::HEADER_LEN);
