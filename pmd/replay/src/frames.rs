//! [`Frames`]: the prebuilt packets a stream replays, in one flat buffer, and the
//! IPv4/UDP frames of a benchmark ([`Frames::ipv4_udp`]).

use ibpoll_wire::ipoib;

/// The largest frame: the IPoIB MTU of a 4096-byte IB MTU plus the IPoIB header.
pub const FRAME_LEN_MAX: usize = 4096;
/// The most frames one stream holds.
pub const FRAMES_MAX: usize = 1 << 16;
/// The smallest IPv4/UDP packet [`Frames::ipv4_udp`] builds: the two headers.
pub const UDP_PACKET_MIN: usize = 28;

/// Why frames could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramesError {
    /// No frame at all.
    #[error("a replay stream needs at least one frame")]
    Empty,
    /// Too many frames.
    #[error("{count} frames are too many for one stream: give at most {FRAMES_MAX}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A frame shorter than its IPoIB header or longer than the largest IPoIB frame.
    #[error(
        "frame {index} is {len} bytes: a frame (from the IPoIB header on) is 4 to \
         {FRAME_LEN_MAX} bytes"
    )]
    FrameLen {
        /// Which frame.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// An IPv4/UDP packet size out of range.
    #[error(
        "{size} bytes is not an IPv4/UDP packet size here: give {UDP_PACKET_MIN} to {}",
        FRAME_LEN_MAX - ipoib::HEADER_LEN
    )]
    PacketSize {
        /// The IP packet size asked for.
        size: usize,
    },
    /// No flow.
    #[error("an IPv4/UDP stream needs at least one flow")]
    NoFlow,
}

/// A list of frames (data from the IPoIB header on), stored back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    data: Box<[u8]>,
    /// (offset, length) of each frame in `data`.
    spans: Box<[(u32, u32)]>,
    len_max: usize,
}

impl Frames {
    /// Frames from a list, each from its IPoIB header on.
    pub fn new<B: AsRef<[u8]>>(frames: &[B]) -> Result<Frames, FramesError> {
        if frames.is_empty() {
            return Err(FramesError::Empty);
        }
        if frames.len() > FRAMES_MAX {
            return Err(FramesError::TooMany {
                count: frames.len(),
            });
        }
        let mut data = Vec::new();
        let mut spans = Vec::with_capacity(frames.len());
        for (index, f) in frames.iter().enumerate() {
            let f = f.as_ref();
            if !(ipoib::HEADER_LEN..=FRAME_LEN_MAX).contains(&f.len()) {
                return Err(FramesError::FrameLen {
                    index,
                    len: f.len(),
                });
            }
            spans.push((data.len() as u32, f.len() as u32));
            data.extend_from_slice(f);
        }
        let len_max = spans.iter().map(|s| s.1 as usize).max().unwrap_or(0);
        Ok(Frames {
            data: data.into(),
            spans: spans.into(),
            len_max,
        })
    }

    /// `flows` IPv4/UDP frames of `size`-byte IP packets (`size` counts the IPv4 and UDP
    /// headers, not the IPoIB one) from `src` to `dst`, TTL `ttl`, valid header
    /// checksum, UDP source ports 10000, 10001, ... (one per flow) to port 9000, zero
    /// payload and UDP checksum 0 (none, as RFC 768 allows over IPv4). The 64-byte
    /// packets of the DPDK benchmarks, over IPoIB.
    pub fn ipv4_udp(
        src: [u8; 4],
        dst: [u8; 4],
        size: usize,
        flows: u16,
        ttl: u8,
    ) -> Result<Frames, FramesError> {
        if !(UDP_PACKET_MIN..=FRAME_LEN_MAX - ipoib::HEADER_LEN).contains(&size) {
            return Err(FramesError::PacketSize { size });
        }
        if flows == 0 {
            return Err(FramesError::NoFlow);
        }
        let frames: Vec<Vec<u8>> = (0..flows)
            .map(|i| ipv4_udp_frame(src, dst, size, 10_000u16.wrapping_add(i), ttl))
            .collect();
        Frames::new(&frames)
    }

    /// How many frames there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none (never: [`new`](Self::new) refuses an empty list).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The longest frame's length.
    pub fn len_max(&self) -> usize {
        self.len_max
    }

    /// Frame `i` (`i < len()`).
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let (off, len) = self.spans[i];
        &self.data[off as usize..(off + len) as usize]
    }
}

/// One IPoIB + IPv4 + UDP frame (see [`Frames::ipv4_udp`]).
fn ipv4_udp_frame(src: [u8; 4], dst: [u8; 4], size: usize, sport: u16, ttl: u8) -> Vec<u8> {
    let mut f = vec![0u8; ipoib::HEADER_LEN + size];
    f[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
    let ip = &mut f[ipoib::HEADER_LEN..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    ip[8] = ttl;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = ipv4_header_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&9000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    f
}

/// The Internet checksum of an IPv4 header whose checksum field is zero (RFC 1071).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_matches_a_published_example() {
        // The IPv4 header of Wikipedia's "Internet checksum" example (and of many
        // tutorials): 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
    }

    #[test]
    fn ipv4_udp_frames_are_what_they_say() {
        let f = Frames::ipv4_udp([10, 1, 0, 2], [10, 2, 0, 2], 64, 4, 64).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f.len_max(), 68);
        for i in 0..4 {
            let d = f.get(i);
            assert_eq!(d.len(), 68);
            assert_eq!(&d[..4], &[0x08, 0x00, 0, 0], "IPoIB header, IPv4");
            let ip = &d[4..];
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 64, "total length");
            assert_eq!((ip[8], ip[9]), (64, 17), "TTL, UDP");
            assert_eq!(
                ipv4_header_checksum(&ip[..20]),
                0,
                "a valid header sums to 0"
            );
            assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), 10_000 + i as u16);
            assert_eq!(u16::from_be_bytes([ip[24], ip[25]]), 44, "UDP length");
        }
        assert_ne!(f.get(0), f.get(1), "flows differ");
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let none: [&[u8]; 0] = [];
        assert_eq!(Frames::new(&none), Err(FramesError::Empty));
        assert_eq!(
            Frames::new(&[&[0u8; 3][..]]),
            Err(FramesError::FrameLen { index: 0, len: 3 })
        );
        assert_eq!(
            Frames::ipv4_udp([0; 4], [0; 4], 27, 1, 64),
            Err(FramesError::PacketSize { size: 27 })
        );
        assert_eq!(
            Frames::ipv4_udp([0; 4], [0; 4], 64, 0, 64),
            Err(FramesError::NoFlow)
        );
        let e = Frames::ipv4_udp([0; 4], [0; 4], 5000, 1, 64).unwrap_err();
        assert!(e.to_string().contains("give 28 to 4092"), "{e}");
    }
}
