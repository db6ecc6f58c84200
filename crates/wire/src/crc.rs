//! The two link-layer CRCs of an InfiniBand packet (IBA vol 1, 7.8).
//!
//! A packet on the wire is `LRH [GRH] BTH [ETHs] payload ICRC VCRC`:
//!
//! - **ICRC** (invariant CRC, 4 bytes, IBA 7.8.1): CRC-32 with the Ethernet polynomial
//!   (0x04C11DB7, processed LSB-first, i.e. reflected 0xEDB88320; seed 0xFFFF_FFFF; result
//!   complemented) over the packet from the first byte of the LRH to the last byte of the
//!   payload (pad bytes included), with the fields that switches and routers may rewrite
//!   replaced by 1s. It is checked end to end. Raw packets (LNH 0 and 1) carry none.
//! - **VCRC** (variant CRC, 2 bytes, IBA 7.8.2): CRC-16 with polynomial 0x100B (processed
//!   LSB-first, i.e. reflected 0xD008; seed 0xFFFF; result complemented) over every byte from
//!   the LRH through the ICRC, nothing masked. Every link hop recomputes it.
//!
//! Fields replaced by 1s for the ICRC (IBA 7.8.1, as quoted in Shanley, *InfiniBand Network
//! Architecture*, ch. 25 "Packet CRCs", and the IBA text quoted on the NVIDIA developer
//! forum thread "How to calculate the CRC32 for BF2 RDMA"):
//!
//! - local packet (LNH = 2, no GRH): LRH.VL (4 bits) and BTH.Resv8a (8 bits);
//! - global packet (LNH = 3, GRH present): the **whole** LRH (a router rebuilds it: new
//!   LIDs, SL, VL), GRH.TClass, GRH.FlowLabel, GRH.HopLmt and BTH.Resv8a.
//!
//! The global rule is the one RoCE inherited: Linux rxe (`drivers/infiniband/sw/rxe/
//! rxe_icrc.c`) seeds its CRC with 0xDEBB20E3, "the result of computing a CRC with a seed of
//! 0xffffffff and 8 bytes of 0xff representing a masked LRH", then masks TClass, FlowLabel,
//! HopLimit and `bth.resv8a`; scapy's `contrib/roce.py` (`BTH.compute_icrc`) does the same.
//!
//! The polynomial, seed and final complement of the VCRC are those of Endace's
//! `dagcrc_infiniband_vcrc16_r` (DAG capture tools, `dagcrc.c`: table from reflected 0xD008,
//! `c = crc ^ 0xffff` ... `return c ^ 0xffff`).
//!
//! # Byte order on the wire
//!
//! Both CRCs are computed LSB-first (like Ethernet's FCS), and the complemented register is
//! sent least-significant byte first: the wire bytes are `value.to_le_bytes()`. Evidence for
//! the ICRC: rxe stores `~crc32_le(..)` as a CPU-order `u32` (little-endian on the x86 hosts
//! it interoperates with ConnectX NICs from), scapy packs `struct.pack("!I", crc)[::-1]`, and
//! the ConnectX-4 Lx capture in scapy's `test/contrib/roce.uts` ends in `82 fd 00 2a` for
//! CRC value 0x2A00FD82 (see the tests). The VCRC follows the same bit-order rule; no public
//! native-IB capture was found to confirm it byte for byte.
//!
//! # Speed
//!
//! The ICRC is the CRC-32 of IEEE 802.3 (zlib's) over the masked headers and the
//! payload, so it runs on `crc32fast` (PCLMULQDQ folding where the CPU has it and the
//! `std` feature lets it look, slice-by-16 tables otherwise), fed the masked header as
//! a prefix. The VCRC has no such library: it runs slice-by-8 tables (eight bytes per
//! step), checked against the byte-at-a-time definition.

use crate::{lrh, Error, Result};

/// Bytes of the ICRC.
pub const ICRC_LEN: usize = 4;
/// Bytes of the VCRC.
pub const VCRC_LEN: usize = 2;

/// The Ethernet CRC-32 polynomial 0x04C11DB7, bit-reversed for LSB-first processing (the
/// definition `crc32fast` is checked against in the tests).
#[cfg(test)]
const CRC32_POLY_REFLECTED: u32 = 0xEDB8_8320;
/// The VCRC polynomial 0x100B (x^16 + x^12 + x^3 + x + 1), bit-reversed.
const VCRC_POLY_REFLECTED: u16 = 0xD008;

/// A byte-at-a-time table for a reflected (LSB-first) 32-bit CRC.
#[cfg(test)]
const fn crc32_table(poly_reflected: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ poly_reflected
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

/// A byte-at-a-time table for a reflected (LSB-first) 16-bit CRC.
const fn crc16_table(poly_reflected: u16) -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ poly_reflected
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

#[cfg(test)]
static CRC32_TABLE: [u32; 256] = crc32_table(CRC32_POLY_REFLECTED);
static VCRC_TABLE: [u16; 256] = crc16_table(VCRC_POLY_REFLECTED);

/// Slice-by-8 tables for a reflected 16-bit CRC: `t[k][n]` is the register after byte
/// `n` and then `k` zero bytes, from a zero register.
const fn crc16_slice8(poly_reflected: u16) -> [[u16; 256]; 8] {
    let t0 = crc16_table(poly_reflected);
    let mut t = [[0u16; 256]; 8];
    t[0] = t0;
    let mut k = 1;
    while k < 8 {
        let mut n = 0;
        while n < 256 {
            let prev = t[k - 1][n];
            t[k][n] = (prev >> 8) ^ t0[(prev & 0xFF) as usize];
            n += 1;
        }
        k += 1;
    }
    t
}

static VCRC_SLICE8: [[u16; 256]; 8] = crc16_slice8(VCRC_POLY_REFLECTED);

/// [`crc16_update`] eight bytes at a time (the VCRC's engine).
#[inline]
fn vcrc_update(mut reg: u16, data: &[u8]) -> u16 {
    let t = &VCRC_SLICE8;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x =
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ u64::from(reg);
        reg = t[7][(x & 0xFF) as usize]
            ^ t[6][((x >> 8) & 0xFF) as usize]
            ^ t[5][((x >> 16) & 0xFF) as usize]
            ^ t[4][((x >> 24) & 0xFF) as usize]
            ^ t[3][((x >> 32) & 0xFF) as usize]
            ^ t[2][((x >> 40) & 0xFF) as usize]
            ^ t[1][((x >> 48) & 0xFF) as usize]
            ^ t[0][(x >> 56) as usize];
    }
    crc16_update(&VCRC_TABLE, reg, chunks.remainder())
}

/// Runs a reflected 16-bit CRC register over `data` (no seed or final xor applied here).
#[inline]
fn crc16_update(table: &[u16; 256], mut reg: u16, data: &[u8]) -> u16 {
    for &b in data {
        reg = table[usize::from((reg as u8) ^ b)] ^ (reg >> 8);
    }
    reg
}

/// An incremental CRC-32 (the Ethernet/zlib CRC, catalogue name CRC-32/ISO-HDLC), the
/// engine under the ICRC (`crc32fast`). Feed the masked bytes in order and call
/// [`Crc32::finish`].
///
/// Exposed so a framing without an LRH (RoCEv2, where the masked pseudo-header is built from
/// IP and UDP headers) can reuse the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc32 {
    /// The CRC of what was fed so far (the complemented register; 0 for nothing).
    crc: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A CRC seeded with 0xFFFF_FFFF.
    pub const fn new() -> Crc32 {
        Crc32 { crc: 0 }
    }

    /// Feeds `data`.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        let mut h = crc32fast::Hasher::new_with_initial(self.crc);
        h.update(data);
        self.crc = h.finalize();
    }

    /// The CRC of everything fed so far (the complemented register).
    #[inline]
    pub const fn finish(&self) -> u32 {
        self.crc
    }

    /// The register (before the final complement), for residue checks.
    #[cfg(test)]
    fn reg(&self) -> u32 {
        !self.crc
    }
}

/// CRC-32 (Ethernet polynomial, reflected, seed and final xor 0xFFFF_FFFF) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

/// Bits forced to 1 in a local packet: LRH.VL (byte 0, high nibble) and BTH.Resv8a
/// (byte 4 of the BTH that follows the 8-byte LRH).
const LOCAL_MASK: [u8; 20] = {
    let mut m = [0u8; 20];
    m[0] = 0xF0;
    m[8 + 4] = 0xFF;
    m
};

/// Bits forced to 1 in a global packet: the whole LRH; GRH.TClass (low nibble of GRH byte 0
/// and high nibble of byte 1), GRH.FlowLabel (low nibble of byte 1, bytes 2-3), GRH.HopLmt
/// (byte 7); BTH.Resv8a (byte 4 of the BTH after the 40-byte GRH).
const GLOBAL_MASK: [u8; 60] = {
    let mut m = [0u8; 60];
    let mut i = 0;
    while i < 8 {
        m[i] = 0xFF;
        i += 1;
    }
    m[8] = 0x0F;
    m[9] = 0xFF;
    m[10] = 0xFF;
    m[11] = 0xFF;
    m[8 + 7] = 0xFF;
    m[48 + 4] = 0xFF;
    m
};

/// The ICRC of a native InfiniBand packet: `frame_without_crcs` runs from the first byte of
/// the LRH to the last byte of the payload (pad bytes included, no ICRC, no VCRC).
///
/// The LNH in LRH byte 1 selects the local or global masking (see the module docs). The
/// function never panics; on a buffer too short to hold the headers it masks what is there.
/// For raw packets (LNH 0 or 1), which carry no ICRC, the value is meaningless.
pub fn icrc(frame_without_crcs: &[u8]) -> u32 {
    let frame = frame_without_crcs;
    let global = frame.len() > 1 && lrh::Lnh::from_bits(frame[1]) == lrh::Lnh::IbaGlobal;
    let mask: &[u8] = if global { &GLOBAL_MASK } else { &LOCAL_MASK };
    let n = frame.len().min(mask.len());
    let mut head = [0u8; GLOBAL_MASK.len()];
    for i in 0..n {
        head[i] = frame[i] | mask[i];
    }
    let mut c = Crc32::new();
    c.update(&head[..n]);
    c.update(&frame[n..]);
    c.finish()
}

/// The VCRC of `frame_with_icrc`: every byte from the first of the LRH through the last of
/// the ICRC (or of the payload, for a raw packet). Nothing is masked.
pub fn vcrc(frame_with_icrc: &[u8]) -> u16 {
    !vcrc_update(0xFFFF, frame_with_icrc)
}

/// The wire bytes of an ICRC value (least-significant byte first; see the module docs).
pub const fn icrc_bytes(icrc: u32) -> [u8; ICRC_LEN] {
    icrc.to_le_bytes()
}

/// The wire bytes of a VCRC value (least-significant byte first; see the module docs).
pub const fn vcrc_bytes(vcrc: u16) -> [u8; VCRC_LEN] {
    vcrc.to_le_bytes()
}

/// Whether the packet starting with this LRH carries an ICRC (LNH 2 or 3).
fn has_icrc(frame: &[u8]) -> bool {
    lrh::Lnh::from_bits(frame[1]).has_icrc()
}

/// Completes a packet built in `buf[..frame_len]` (LRH through payload and pad): writes the
/// ICRC (unless LNH says raw) and then the VCRC right after it, and returns the length of
/// the whole packet on the wire.
///
/// Returns `Err(Truncated)` if `frame_len` does not cover an LRH or `buf` has no room for
/// the CRCs; `buf` is left untouched then.
pub fn append_crcs(buf: &mut [u8], frame_len: usize) -> Result<usize> {
    if frame_len < lrh::HEADER_LEN || frame_len > buf.len() {
        return Err(Error::Truncated);
    }
    let icrc_len = if has_icrc(buf) { ICRC_LEN } else { 0 };
    let total = frame_len + icrc_len + VCRC_LEN;
    if buf.len() < total {
        return Err(Error::Truncated);
    }
    if icrc_len != 0 {
        let v = icrc(&buf[..frame_len]);
        buf[frame_len..frame_len + ICRC_LEN].copy_from_slice(&icrc_bytes(v));
    }
    let end = frame_len + icrc_len;
    let v = vcrc(&buf[..end]);
    buf[end..total].copy_from_slice(&vcrc_bytes(v));
    Ok(total)
}

/// Checks the CRCs at the end of a whole packet as received (LRH through VCRC) and returns
/// the length without them.
///
/// `Err(Truncated)` if the packet cannot hold an LRH and its CRCs; `Err(Malformed)` if the
/// VCRC or the ICRC does not match.
pub fn verify_crcs(frame_with_crcs: &[u8]) -> Result<usize> {
    let frame = frame_with_crcs;
    if frame.len() < lrh::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let icrc_len = if has_icrc(frame) { ICRC_LEN } else { 0 };
    let Some(body_len) = frame.len().checked_sub(icrc_len + VCRC_LEN) else {
        return Err(Error::Truncated);
    };
    if body_len < lrh::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let end = body_len + icrc_len;
    if frame[end..] != vcrc_bytes(vcrc(&frame[..end])) {
        return Err(Error::Malformed);
    }
    if icrc_len != 0 && frame[body_len..end] != icrc_bytes(icrc(&frame[..body_len])) {
        return Err(Error::Malformed);
    }
    Ok(body_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Runs a reflected CRC-16 with the given seed and final xor, for catalogue checks.
    fn crc16_reflected(poly_reflected: u16, init: u16, xorout: u16, data: &[u8]) -> u16 {
        crc16_update(&crc16_table(poly_reflected), init, data) ^ xorout
    }

    fn reflect16(mut v: u16) -> u16 {
        let mut r = 0;
        for _ in 0..16 {
            r = (r << 1) | (v & 1);
            v >>= 1;
        }
        r
    }

    #[test]
    fn crc32_catalogue_check_value() {
        // CRC RevEng catalogue, CRC-32/ISO-HDLC: check = 0xCBF43926 for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn masked_lrh_seed_matches_rxe() {
        // rxe_icrc.c: "This seed is the result of computing a CRC with a seed of 0xffffffff
        // and 8 bytes of 0xff representing a masked LRH" -> 0xdebb20e3.
        let mut c = Crc32::new();
        c.update(&[0xFF; 8]);
        assert_eq!(c.reg(), 0xDEBB_20E3);
    }

    #[test]
    fn crc16_engine_matches_catalogue() {
        // The VCRC runs the same reflected table engine as these CRC RevEng catalogue
        // entries (check values for "123456789"):
        // CRC-16/IBM-SDLC: poly 0x1021 refl, init 0xFFFF, xorout 0xFFFF -> 0x906E.
        assert_eq!(
            crc16_reflected(reflect16(0x1021), 0xFFFF, 0xFFFF, b"123456789"),
            0x906E
        );
        // CRC-16/ARC: poly 0x8005 refl, init 0, xorout 0 -> 0xBB3D.
        assert_eq!(
            crc16_reflected(reflect16(0x8005), 0, 0, b"123456789"),
            0xBB3D
        );
        // CRC-16/MODBUS: poly 0x8005 refl, init 0xFFFF, xorout 0 -> 0x4B37.
        assert_eq!(
            crc16_reflected(reflect16(0x8005), 0xFFFF, 0, b"123456789"),
            0x4B37
        );
        // IBA 7.8.2 polynomial 0x100B; Endace dagcrc.c builds its VCRC table from 0xD008.
        assert_eq!(reflect16(0x100B), VCRC_POLY_REFLECTED);
        assert_eq!(
            vcrc(b"123456789"),
            crc16_reflected(0xD008, 0xFFFF, 0xFFFF, b"123456789")
        );
    }

    #[test]
    fn tables_match_bitwise_definition() {
        // Entry 1 and 128 of the standard CRC-32 table (zlib, Endace ppp_fcs32_table).
        assert_eq!(CRC32_TABLE[1], 0x7707_3096);
        assert_eq!(CRC32_TABLE[128], 0xEDB8_8320);
        assert_eq!(CRC32_TABLE[255], 0x2D02_EF8D);
        assert_eq!(VCRC_TABLE[128], 0xD008);
    }

    /// The RoCEv2 ICRC pseudo-packet of rxe/scapy: 8 x 0xFF for the absent LRH, then the
    /// IPv4 header with TOS, TTL and checksum set to 1s, the UDP header with checksum 1s,
    /// the BTH with Resv8a 1s, then the payload.
    fn rocev2_icrc(ipv4: &[u8], udp: &[u8], bth: &[u8], payload: &[u8]) -> u32 {
        let mut ip: Vec<u8> = ipv4.to_vec();
        ip[1] = 0xFF; // TOS
        ip[8] = 0xFF; // TTL
        ip[10] = 0xFF; // header checksum
        ip[11] = 0xFF;
        let mut u = udp.to_vec();
        u[6] = 0xFF;
        u[7] = 0xFF;
        let mut b = bth.to_vec();
        b[4] = 0xFF;
        let mut c = Crc32::new();
        c.update(&[0xFF; 8]);
        c.update(&ip);
        c.update(&u);
        c.update(&b);
        c.update(payload);
        c.finish()
    }

    #[test]
    fn icrc_matches_connectx4_capture() {
        // scapy test/contrib/roce.uts, "RoCE CNP captured on ConnectX-4 Lx":
        // 0x0000:  e41d 2dab 2bc2 7cfe 9064 3b32 0800 45c2
        // 0x0010:  003c 718c 4000 4011 9161 0a00 1101 0a00
        // 0x0020:  1201 0000 12b7 0028 0000 8100 ffff 4000
        // 0x0030:  0118 0000 0000 0000 0000 0000 0000 0000
        // 0x0040:  0000 0000 0000 82fd 002a
        let ipv4 = [
            0x45, 0xc2, 0x00, 0x3c, 0x71, 0x8c, 0x40, 0x00, 0x40, 0x11, 0x91, 0x61, 0x0a, 0x00,
            0x11, 0x01, 0x0a, 0x00, 0x12, 0x01,
        ];
        let udp = [0x00, 0x00, 0x12, 0xb7, 0x00, 0x28, 0x00, 0x00];
        let bth = [0x81, 0x00, 0xff, 0xff, 0x40, 0x00, 0x01, 0x18, 0, 0, 0, 0];
        let payload = [0u8; 16];
        let v = rocev2_icrc(&ipv4, &udp, &bth, &payload);
        assert_eq!(icrc_bytes(v), [0x82, 0xfd, 0x00, 0x2a]);
    }

    #[test]
    fn icrc_matches_scapy_uc_example() {
        // scapy test/contrib/roce.uts, "RoCE layer": UC SEND only, IPv4 192.168.0.7 ->
        // 192.168.0.7, tos 1, id 1144, DF, ttl 64, len 64; UDP 49152 -> 4791 len 44; BTH
        // opcode 0x24, migreq 1, padcount 2, pkey 0xffff, dqpn 211, psn 13571856; 20-byte
        // payload; `pkt[BTH].icrc == 0x78f353f3` (wire bytes 78 f3 53 f3).
        let ipv4 = [
            0x45, 0x01, 0x00, 0x40, 0x04, 0x78, 0x40, 0x00, 0x40, 0x11, 0xb4, 0xd5, 192, 168, 0, 7,
            192, 168, 0, 7,
        ];
        let udp = [0xc0, 0x00, 0x12, 0xb7, 0x00, 0x2c, 0xac, 0xa2];
        let bth = [
            0x24, 0x60, 0xff, 0xff, 0x00, 0x00, 0x00, 0xd3, 0x00, 0xcf, 0x17, 0x10,
        ];
        let payload = b"F0\x81\x8b\xe2\x895\xd9\x0e\x9a\x95PT\x01\xbe\x88^P\x00\x00";
        let v = rocev2_icrc(&ipv4, &udp, &bth, payload);
        assert_eq!(icrc_bytes(v), [0x78, 0xf3, 0x53, 0xf3]);
    }

    /// A local UD packet: LRH (VL 0, SL 0, LNH 2, DLID 0xC000, SLID 1) BTH DETH payload.
    fn local_frame() -> Vec<u8> {
        let mut f = std::vec![
            0x00, 0x02, 0xc0, 0x00, 0x00, 0x0b, 0x00, 0x01, // LRH, PktLen 11 words
            0x64, 0x00, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, // BTH
            0x00, 0x00, 0x0b, 0x1b, 0x00, 0x00, 0x00, 0x48, // DETH
        ];
        f.extend_from_slice(&[0x08, 0x06, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
        f
    }

    #[test]
    fn icrc_local_masks_vl_and_resv8a_only() {
        let f = local_frame();
        let base = icrc(&f);
        let mut g = f.clone();
        g[0] = 0xF0 | (g[0] & 0x0F); // VL
        g[12] = 0xA5; // BTH.Resv8a
        assert_eq!(icrc(&g), base);
        // Equal to CRC-32 over the frame with those fields set to 1s.
        let mut m = f.clone();
        m[0] |= 0xF0;
        m[12] = 0xFF;
        assert_eq!(base, crc32(&m));
        // SL, LIDs and everything else are covered.
        for i in [1usize, 2, 3, 6, 7, 8, 9, 10, 11, 13, 20, 30, 39] {
            let mut h = f.clone();
            h[i] ^= 0x10;
            assert_ne!(icrc(&h), base, "byte {i} must be covered");
        }
    }

    #[test]
    fn icrc_global_masks_whole_lrh_and_grh_variant_fields() {
        let mut f = std::vec![0x00, 0x03, 0xc0, 0x00, 0x00, 0x15, 0x00, 0x01];
        // GRH: IPVer 6, TClass 0, FlowLabel 0, PayLen 32, NxtHdr 0x1B, HopLmt 0
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x00, 0x20, 0x1b, 0x00]);
        f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0xc9, 3, 0, 0, 0, 1]);
        f.extend_from_slice(&[
            0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        f.extend_from_slice(&local_frame()[8..]);
        let base = icrc(&f);
        let mut g = f.clone();
        for b in &mut g[..8] {
            *b = 0x5A; // every LRH byte
        }
        g[1] = 0x53; // keep LNH = 3
        g[8] = 0x6F; // TClass high nibble
        g[9] = 0x12; // TClass low nibble, FlowLabel
        g[10] = 0x34;
        g[11] = 0x56;
        g[15] = 0x40; // HopLmt
        g[52] = 0x01; // BTH.Resv8a
        assert_eq!(icrc(&g), base);
        for i in [8usize, 12, 13, 14, 16, 40, 48, 49, 53, 70] {
            let mut h = f.clone();
            h[i] ^= 0x20;
            assert_ne!(icrc(&h), base, "byte {i} must be covered");
        }
    }

    #[test]
    fn append_then_verify() {
        let f = local_frame();
        let mut buf = f.clone();
        buf.resize(f.len() + 6, 0);
        assert_eq!(append_crcs(&mut buf, f.len()), Ok(f.len() + 6));
        assert_eq!(&buf[f.len()..f.len() + 4], &icrc_bytes(icrc(&f)));
        assert_eq!(verify_crcs(&buf), Ok(f.len()));
        // Residues: a reflected CRC over data followed by its LSB-first complemented value
        // always leaves the same register, which is why LSB-first is the natural byte order.
        let mut masked = f.clone();
        masked[0] |= 0xF0;
        masked[12] = 0xFF;
        let mut c = Crc32::new();
        c.update(&masked);
        c.update(&buf[f.len()..f.len() + 4]);
        assert_eq!(c.reg(), 0xDEBB_20E3);
        // A switch may rewrite VL: the ICRC survives, the VCRC must be recomputed.
        buf[0] = 0x70;
        assert_eq!(verify_crcs(&buf), Err(Error::Malformed));
        let n = append_crcs(&mut buf, f.len()).unwrap();
        assert_eq!(&buf[f.len()..f.len() + 4], &icrc_bytes(icrc(&f)));
        assert_eq!(verify_crcs(&buf[..n]), Ok(f.len()));
        buf[20] ^= 1;
        assert_eq!(verify_crcs(&buf), Err(Error::Malformed));
        // Too small a buffer.
        let mut small = f.clone();
        assert_eq!(append_crcs(&mut small, f.len()), Err(Error::Truncated));
        assert_eq!(small, f);
        assert_eq!(append_crcs(&mut small, 4), Err(Error::Truncated));
        assert_eq!(verify_crcs(&[0u8; 9]), Err(Error::Truncated));
    }

    #[test]
    fn raw_packet_gets_vcrc_only() {
        let mut buf = std::vec![0x00, 0x01, 0x00, 0x05, 0x00, 0x05, 0x00, 0x01];
        buf.extend_from_slice(&[0xAB; 12]);
        buf.resize(22, 0);
        assert_eq!(append_crcs(&mut buf, 20), Ok(22));
        assert_eq!(&buf[20..], &vcrc_bytes(vcrc(&buf[..20])));
        assert_eq!(verify_crcs(&buf), Ok(20));
    }

    /// The definitions the fast engines must equal: byte-at-a-time tables.
    fn crc32_bytewise(data: &[u8]) -> u32 {
        let mut reg = 0xFFFF_FFFFu32;
        for &b in data {
            reg = CRC32_TABLE[usize::from((reg as u8) ^ b)] ^ (reg >> 8);
        }
        !reg
    }

    proptest! {
        #[test]
        fn fast_engines_equal_the_bytewise_definitions(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            split in 0usize..300,
        ) {
            prop_assert_eq!(crc32(&data), crc32_bytewise(&data));
            prop_assert_eq!(vcrc(&data), !crc16_update(&VCRC_TABLE, 0xFFFF, &data));
            // Fed in two pieces, the same CRC.
            let at = split.min(data.len());
            let mut c = Crc32::new();
            c.update(&data[..at]);
            c.update(&data[at..]);
            prop_assert_eq!(c.finish(), crc32_bytewise(&data));
        }

        #[test]
        fn crc_functions_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = icrc(&data);
            let _ = vcrc(&data);
            let _ = verify_crcs(&data);
            let mut buf = data.clone();
            buf.resize(data.len() + 6, 0);
            if let Ok(n) = append_crcs(&mut buf, data.len()) {
                prop_assert_eq!(verify_crcs(&buf[..n]), Ok(data.len()));
            }
        }
    }
}
