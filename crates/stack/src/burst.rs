//! The receive side of a burst: [`classify`] one packet, [`classify_burst`] a received
//! burst in place. Free functions over plain data (STYLE rule 11), public so that
//! benchmarks and applications driving a lane run the very same code.

use ibpoll_ctrl::{Request, RequestSender};
use ibpoll_mem::{Mbuf, MbufArray, MBUF_F_MCAST};
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::ndisc;

use crate::stats::LcoreStats;

/// What a received packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// IPv4 (version 4, IHL >= 5, at least 20 bytes) or IPv6 (version 6, at least 40
    /// bytes): for the application, after stripping [`ipoib::HEADER_LEN`] bytes.
    Ip,
    /// ARP over IPoIB: for the control core.
    Arp,
    /// An IPv6 Neighbor Solicitation or Advertisement (next header ICMPv6, hop limit
    /// 255, ICMPv6 type 135 or 136: RFC 4861): for the control core.
    Nd,
    /// Too short for its IPoIB header, or an IP header that does not fit its ethertype.
    Malformed,
    /// An ethertype IPoIB does not carry here.
    Unknown,
}

/// Classifies a received packet by its IPoIB header (`d`: the data from the IPoIB
/// header on).
#[inline]
pub fn classify(d: &[u8]) -> Class {
    let Ok(h) = ipoib::Packet::new_checked(d) else {
        return Class::Malformed;
    };
    let ip = h.payload();
    match h.ethertype() {
        EtherType::IPV4 => {
            if ip.len() >= 20 && ip[0] >> 4 == 4 && ip[0] & 0x0f >= 5 {
                Class::Ip
            } else {
                Class::Malformed
            }
        }
        EtherType::IPV6 => {
            if ip.len() >= 40 && ip[0] >> 4 == 6 {
                if ndisc::is_neighbor_discovery(ip) {
                    return Class::Nd;
                }
                Class::Ip
            } else {
                Class::Malformed
            }
        }
        EtherType::ARP => Class::Arp,
        _ => Class::Unknown,
    }
}

/// Who "we" are on an interface, to recognise our own multicast looped back by the HCA:
/// the port's LID and the QPNs of every QP of the interface (each lcore sends from a QP
/// of its own).
#[derive(Debug, Clone, Copy)]
pub struct Own<'a> {
    /// The port's LID.
    pub lid: u16,
    /// The interface's QPNs.
    pub qpns: &'a [u32],
}

impl Own<'_> {
    /// Whether `m` is multicast we sent.
    #[inline]
    fn looped_back(&self, m: &Mbuf) -> bool {
        let meta = m.meta();
        meta.flags & MBUF_F_MCAST != 0 && meta.slid == self.lid && self.qpns.contains(&meta.src_qpn)
    }
}

/// Classifies `pkts[from..]` (just received, data from the IPoIB header on) in place:
/// IP packets stay, in order, with the IPoIB header stripped; ARP and IPv6 neighbour
/// discovery go to the control core through `requests`; our own looped-back multicast (when `own` is given: the HCA
/// does not block it), malformed packets and unknown ethertypes are moved to `trash`
/// (freed in bulk by the caller). Everything is counted in `st`.
#[inline]
pub fn classify_burst(
    pkts: &mut MbufArray,
    from: usize,
    own: Option<Own<'_>>,
    requests: &mut RequestSender,
    st: &mut LcoreStats,
    trash: &mut MbufArray,
) {
    classify_burst_with(pkts, from, own, requests, st, trash, Some);
}

/// [`classify_burst`], with each IP packet (IPoIB header stripped) passed through `ip`,
/// which keeps it (returns it) or takes it over (`None`: the software fan-out hands it
/// to another lane); `app_rx` counts what is kept. One pass over the burst.
#[inline]
pub(crate) fn classify_burst_with(
    pkts: &mut MbufArray,
    from: usize,
    own: Option<Own<'_>>,
    requests: &mut RequestSender,
    st: &mut LcoreStats,
    trash: &mut MbufArray,
    mut ip: impl FnMut(Mbuf) -> Option<Mbuf>,
) {
    let n = pkts.len() - from;
    st.rx_packets += n as u64;
    let mut bytes = 0u64;
    pkts.filter_map_from(from, |mut m| {
        bytes += m.len() as u64;
        if own.is_some_and(|o| o.looped_back(&m)) {
            st.rx_loopback += 1;
            return discard(trash, m);
        }
        match classify(m.data()) {
            Class::Ip => {
                // Cannot fail: classify checked the length.
                m.adj(ipoib::HEADER_LEN);
                let kept = ip(m);
                st.app_rx += u64::from(kept.is_some());
                kept
            }
            Class::Arp => match requests.send(Request::Arp { mbuf: m }) {
                Ok(()) => {
                    st.rx_arp += 1;
                    None
                }
                Err(req) => ctrl_full(st, trash, req),
            },
            Class::Nd => match requests.send(Request::Nd { mbuf: m }) {
                Ok(()) => {
                    st.rx_nd += 1;
                    None
                }
                Err(req) => ctrl_full(st, trash, req),
            },
            Class::Malformed => {
                st.rx_malformed += 1;
                discard(trash, m)
            }
            Class::Unknown => {
                st.rx_unknown_ethertype += 1;
                discard(trash, m)
            }
        }
    });
    st.rx_bytes += bytes;
}

/// A request the control core's ring refused: its packet to `trash`, counted; `None`.
#[cold]
fn ctrl_full(st: &mut LcoreStats, trash: &mut MbufArray, req: Request) -> Option<Mbuf> {
    st.rx_ctrl_full += 1;
    match req {
        Request::Arp { mbuf } | Request::Nd { mbuf } => discard(trash, mbuf),
        _ => None,
    }
}

/// Moves a dropped packet to `trash` (freed at once if it is full); always `None`.
#[inline]
fn discard(trash: &mut MbufArray, m: Mbuf) -> Option<Mbuf> {
    if let Err(m) = trash.push(m) {
        drop(m);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_ethertype_and_version() {
        let mut v4 = [0u8; 24];
        v4[..2].copy_from_slice(&[0x08, 0x00]);
        v4[4] = 0x45;
        assert_eq!(classify(&v4), Class::Ip);
        v4[4] = 0x65;
        assert_eq!(classify(&v4), Class::Malformed);
        assert_eq!(classify(&v4[..10]), Class::Malformed);
        assert_eq!(classify(&[0x08]), Class::Malformed);
        let mut v6 = [0u8; 44];
        v6[..2].copy_from_slice(&[0x86, 0xdd]);
        v6[4] = 0x60;
        assert_eq!(classify(&v6), Class::Ip);
        assert_eq!(classify(&[0x08, 0x06, 0, 0]), Class::Arp);
        // ICMPv6 (58) at hop limit 255, type 135: a Neighbor Solicitation.
        let mut nd = [0u8; 4 + 40 + 24];
        nd[..2].copy_from_slice(&[0x86, 0xdd]);
        nd[4] = 0x60;
        nd[4 + 6] = 58;
        nd[4 + 7] = 255;
        nd[44] = 135;
        assert_eq!(classify(&nd), Class::Nd);
        nd[44] = 136;
        assert_eq!(classify(&nd), Class::Nd);
        // An echo request, or a solicitation that crossed a router: the application's.
        nd[44] = 128;
        assert_eq!(classify(&nd), Class::Ip);
        nd[44] = 135;
        nd[4 + 7] = 254;
        assert_eq!(classify(&nd), Class::Ip);
        assert_eq!(classify(&[0x88, 0xcc, 0, 0]), Class::Unknown);
    }
}
