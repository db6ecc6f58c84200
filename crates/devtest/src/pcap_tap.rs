//! [`PcapTap`]: a port wrapper that writes every frame the port sends and receives, and
//! every MAD on its channel to the subnet administrator, to a capture file of native
//! InfiniBand frames (see [`capture`](crate::capture)) that tshark decodes; for any
//! driver (smoltcp's `phy::PcapWriter`, for the driver contract).
//!
//! A UD completion does not carry everything a frame on the link did, so the tap
//! rebuilds each frame from what the port knows:
//! - sends: the address handle's attributes (the tap remembers them from `create_ah`),
//!   the port's LID and GIDs, the sending QP's P_Key (from its `pkey_index`, remembered
//!   from `create_ud_qp` and `move_qp_pkey_index`) and Q_Key (a controlled Q_Key in the
//!   destination means the QP's own, remembered from `create_ud_qp` and `set_qp_qkey`).
//!   A send is written when the driver takes it; one longer than the port's active MTU
//!   never reaches the link and is not written;
//! - receives: the source LID and QPN from the completion, the GRH from the buffer's GRH
//!   area when there is one, the receiving QP's P_Key and Q_Key, and for multicast the
//!   group's MLID (remembered from `attach_mcast`). The SL and PSN of the original are
//!   unknown: SL 0 and the tap's own PSN count stand in for them.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{
    AddressHandle, AhAttr, Clock, Error, Mad, MadAddr, MadChannel, MonotonicClock, Parked, Port,
    PortAttr, RxCounters, RxQueue, TxCounters, TxDst, TxQueue, UdQp, UdQpConfig,
};
use ibpoll_mem::{Mbuf, MbufArray, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{bth, grh, Gid, Lid, PKey, QKey, Qpn};

use crate::capture::{CaptureError, CaptureStatus, CaptureWriter, FrameGrh, UdFrame};

/// How a [`PcapTap`] writes. Build it with [`PcapTapConfig::new`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PcapTapConfig {
    /// The most bytes the file may take; frames past it are counted, not written.
    pub max_bytes: u64,
    /// Where frame timestamps come from.
    pub clock: Arc<dyn Clock>,
}

impl PcapTapConfig {
    /// At most 1 GiB, stamped by the monotonic clock.
    pub fn new() -> PcapTapConfig {
        PcapTapConfig {
            max_bytes: 1 << 30,
            clock: Arc::new(MonotonicClock::new()),
        }
    }
}

impl Default for PcapTapConfig {
    fn default() -> Self {
        PcapTapConfig::new()
    }
}

/// What the tap knows about one QP.
#[derive(Debug, Clone, Copy)]
struct QpView {
    pkey_index: u16,
    qkey: QKey,
}

/// The capture file: being written, or finished with its last status.
#[derive(Debug)]
enum Capture {
    Running(CaptureWriter),
    Finished(CaptureStatus),
}

#[derive(Debug)]
struct TapState {
    capture: Capture,
    ahs: HashMap<u32, AhAttr>,
    qps: HashMap<u32, QpView>,
    /// MLIDs of the groups QPs were attached to, by MGID.
    mlids: HashMap<Gid, Lid>,
    psn: u32,
}

#[derive(Debug)]
struct TapShared {
    inner: Arc<dyn Port>,
    clock: Arc<dyn Clock>,
    state: Mutex<TapState>,
}

impl TapShared {
    fn state(&self) -> MutexGuard<'_, TapState> {
        // Consistent at every unlock: a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TapState {
    fn next_psn(&mut self) -> u32 {
        let psn = self.psn;
        self.psn = (self.psn + 1) & bth::PSN_MAX;
        psn
    }

    fn qp(&self, qpn: Qpn) -> QpView {
        self.qps.get(&qpn.get()).copied().unwrap_or(QpView {
            pkey_index: 0,
            qkey: QKey::IPOIB_DEFAULT,
        })
    }

    fn write(&mut self, frame: &UdFrame<'_>, ts_ns: u64) {
        if let Capture::Running(w) = &mut self.capture {
            w.write(frame, ts_ns);
        }
    }
}

/// The P_Key at `index` of the port's table (the invalid P_Key if there is none).
fn pkey_at(attr: &PortAttr, index: u16) -> PKey {
    attr.pkeys
        .get(usize::from(index))
        .copied()
        .unwrap_or(PKey::INVALID)
}

/// A port wrapper writing a capture of everything it sends and receives (see the
/// module docs).
#[derive(Debug)]
pub struct PcapTap {
    inner: Arc<dyn Port>,
    shared: Arc<TapShared>,
}

impl PcapTap {
    /// Wraps `inner`, writing to a new file at `path`.
    pub fn create(
        inner: Arc<dyn Port>,
        path: &Path,
        cfg: PcapTapConfig,
    ) -> Result<Arc<PcapTap>, CaptureError> {
        let file = std::fs::File::create(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        PcapTap::new(inner, Box::new(BufWriter::new(file)), path, cfg)
    }

    /// Wraps `inner`, writing to `out`, which `name` names in statuses and errors.
    pub fn new(
        inner: Arc<dyn Port>,
        out: Box<dyn std::io::Write + Send>,
        name: impl Into<PathBuf>,
        cfg: PcapTapConfig,
    ) -> Result<Arc<PcapTap>, CaptureError> {
        let writer = CaptureWriter::new(out, name, cfg.max_bytes)?;
        Ok(Arc::new(PcapTap {
            shared: Arc::new(TapShared {
                inner: inner.clone(),
                clock: cfg.clock,
                state: Mutex::new(TapState {
                    capture: Capture::Running(writer),
                    ahs: HashMap::new(),
                    qps: HashMap::new(),
                    mlids: HashMap::new(),
                    psn: 0,
                }),
            }),
            inner,
        }))
    }

    /// Where the capture stands (its final status once finished).
    pub fn status(&self) -> CaptureStatus {
        match &self.shared.state().capture {
            Capture::Running(w) => w.status(),
            Capture::Finished(s) => s.clone(),
        }
    }

    /// Flushes and closes the capture; the traffic goes on, unrecorded. A write error
    /// (now or earlier) is the error, and stays in the status. Finishing again gives
    /// the final status.
    pub fn finish(&self) -> Result<CaptureStatus, CaptureError> {
        let mut st = self.shared.state();
        let mut last = match &st.capture {
            Capture::Running(w) => w.status(),
            Capture::Finished(s) => return Ok(s.clone()),
        };
        let Capture::Running(w) =
            std::mem::replace(&mut st.capture, Capture::Finished(last.clone()))
        else {
            return Ok(last);
        };
        let result = w.finish();
        match &result {
            Ok(s) => last = s.clone(),
            Err(e) => last.error = Some(e.to_string()),
        }
        st.capture = Capture::Finished(last);
        result
    }
}

impl Port for PcapTap {
    ibpoll_dev::delegate_port!(inner: info, events);

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        let UdQp { qpn, rx, tx, .. } = self.inner.create_ud_qp(cfg)?;
        let view = QpView {
            pkey_index: cfg.pkey_index,
            qkey: cfg.qkey,
        };
        self.shared.state().qps.insert(qpn.get(), view);
        let rx = rx
            .into_iter()
            .map(|inner| {
                Box::new(TapRx {
                    inner,
                    shared: self.shared.clone(),
                    qpn,
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = Box::new(TapTx {
            inner: tx,
            shared: self.shared.clone(),
            copies: Vec::new(),
        });
        Ok(UdQp::new(qpn, rx, tx))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), Error> {
        self.inner.set_qp_qkey(qpn, qkey)?;
        if let Some(v) = self.shared.state().qps.get_mut(&qpn.get()) {
            v.qkey = qkey;
        }
        Ok(())
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        let n = self.inner.move_qp_pkey_index(parked, pkey_index)?;
        if let Some(v) = self.shared.state().qps.get_mut(&parked.qpn().get()) {
            v.pkey_index = pkey_index;
        }
        Ok(n)
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error> {
        let ah = self.inner.create_ah(attr)?;
        self.shared.state().ahs.insert(ah.raw(), *attr);
        Ok(ah)
    }

    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error> {
        // SAFETY: the caller's guarantee is the wrapped port's precondition too.
        unsafe { self.inner.destroy_ah(ah) }?;
        self.shared.state().ahs.remove(&ah.raw());
        Ok(())
    }

    fn attach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        self.inner.attach_mcast(qpn, mgid, mlid)?;
        self.shared.state().mlids.insert(*mgid, mlid);
        Ok(())
    }

    fn detach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        // The MLID stays known: another QP may still be attached to the group.
        self.inner.detach_mcast(qpn, mgid, mlid)
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        Ok(Box::new(TapMad {
            inner: self.inner.open_mad_channel()?,
            shared: self.shared.clone(),
        }))
    }
}

/// A send queue whose sends the tap writes as the driver takes them.
#[derive(Debug)]
struct TapTx {
    inner: Box<dyn TxQueue>,
    shared: Arc<TapShared>,
    /// The payloads of the burst being offered (reused): the driver takes the mbufs.
    copies: Vec<Vec<u8>>,
}

impl TxQueue for TapTx {
    fn src_qpn(&self) -> Qpn {
        self.inner.src_qpn()
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let n = pkts.len().min(dst.len());
        if self.copies.len() < n {
            self.copies.resize_with(n, Vec::new);
        }
        for (copy, m) in self.copies.iter_mut().zip(pkts.as_slice()) {
            copy.clear();
            copy.extend_from_slice(m.data());
        }
        let taken = self.inner.tx_burst(pkts, dst);
        if taken > 0 {
            let attr = self.shared.inner.attr();
            let now = self.shared.clock.now().0;
            let src_qpn = self.inner.src_qpn();
            let mut st = self.shared.state();
            let qp = st.qp(src_qpn);
            for (payload, d) in self.copies[..taken].iter().zip(dst) {
                write_send(&mut st, &attr, qp, src_qpn, d, payload, now);
            }
        }
        taken
    }

    fn completed(&mut self) -> u64 {
        self.inner.completed()
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.inner.counters()
    }
}

/// Writes one send the driver took.
fn write_send(
    st: &mut TapState,
    attr: &PortAttr,
    qp: QpView,
    src_qpn: Qpn,
    d: &TxDst,
    payload: &[u8],
    now: u64,
) {
    let Some(ah) = st.ahs.get(&d.ah.raw()).copied() else {
        // A handle the tap never saw created (or destroyed): no path to write.
        return;
    };
    if payload.len() > attr.active_mtu.bytes() {
        // Longer than the link's MTU: the HCA fails it locally, it is never on the link.
        return;
    }
    let sgid = |i: u8| attr.gids.get(usize::from(i)).copied().unwrap_or(attr.gid);
    let frame = UdFrame {
        sl: ah.sl,
        dlid: ah.dlid,
        slid: attr.lid,
        grh: ah.grh.map(|g| FrameGrh {
            traffic_class: g.traffic_class,
            flow_label: g.flow_label,
            hop_limit: g.hop_limit,
            sgid: sgid(g.sgid_index),
            dgid: g.dgid,
        }),
        pkey: pkey_at(attr, qp.pkey_index),
        dest_qpn: d.qpn,
        psn: st.next_psn(),
        qkey: if d.qkey.is_controlled() {
            qp.qkey
        } else {
            d.qkey
        },
        src_qpn,
        payload,
    };
    st.write(&frame, now);
}

/// A receive queue whose packets the tap writes as the caller gets them.
#[derive(Debug)]
struct TapRx {
    inner: Box<dyn RxQueue>,
    shared: Arc<TapShared>,
    qpn: Qpn,
}

impl RxQueue for TapRx {
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        let first = pkts.len();
        let n = self.inner.rx_burst(pkts);
        if n > 0 {
            let attr = self.shared.inner.attr();
            let now = self.shared.clock.now().0;
            let mut st = self.shared.state();
            let qp = st.qp(self.qpn);
            // What the driver appended (nothing, if it broke the contract and did not).
            let got = pkts.as_slice().get(first..first + n).unwrap_or(&[]);
            for m in got {
                write_receive(&mut st, &attr, qp, self.qpn, m, now);
            }
        }
        n
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.inner.counters()
    }
}

/// The GRH in the 40 bytes before a received packet's data, if the completion says
/// there is one.
fn received_grh(m: &Mbuf) -> Option<grh::Repr> {
    if m.meta().flags & MBUF_F_GRH == 0 {
        return None;
    }
    let off = m.data_offset();
    let area = m.buf().get(off.checked_sub(grh::HEADER_LEN)?..off)?;
    grh::Repr::parse(&grh::Packet::new_checked(area).ok()?).ok()
}

/// Writes one packet a receive queue handed to its caller.
fn write_receive(st: &mut TapState, attr: &PortAttr, qp: QpView, qpn: Qpn, m: &Mbuf, now: u64) {
    let meta = m.meta();
    let g = received_grh(m);
    let mcast = meta.flags & MBUF_F_MCAST != 0;
    let dlid = match (&g, mcast) {
        (Some(g), true) => st.mlids.get(&g.dgid).copied().unwrap_or(attr.lid),
        _ => attr.lid,
    };
    let frame = UdFrame {
        sl: 0,
        dlid,
        slid: Lid(meta.slid),
        grh: g.map(|g| FrameGrh {
            traffic_class: g.traffic_class,
            flow_label: g.flow_label,
            hop_limit: g.hop_limit,
            sgid: g.sgid,
            dgid: g.dgid,
        }),
        pkey: pkey_at(attr, qp.pkey_index),
        dest_qpn: if mcast { Qpn::MULTICAST } else { qpn },
        psn: st.next_psn(),
        qkey: qp.qkey,
        src_qpn: Qpn::from_bits(meta.src_qpn),
        payload: m.data(),
    };
    st.write(&frame, now);
}

/// The port's MAD channel, its MADs written both ways.
#[derive(Debug)]
struct TapMad {
    inner: Box<dyn MadChannel>,
    shared: Arc<TapShared>,
}

impl TapMad {
    /// Writes one MAD between this port's QP1 and `peer`.
    fn write(&self, mad: &Mad, peer: &MadAddr, outgoing: bool) {
        let attr = self.shared.inner.attr();
        let now = self.shared.clock.now().0;
        let (slid, dlid) = if outgoing {
            (attr.lid, peer.lid)
        } else {
            (peer.lid, attr.lid)
        };
        let (src_qpn, dest_qpn) = if outgoing {
            (Qpn::GSI, peer.qpn)
        } else {
            (peer.qpn, Qpn::GSI)
        };
        let mut st = self.shared.state();
        let frame = UdFrame {
            sl: peer.sl,
            dlid,
            slid,
            grh: None,
            pkey: pkey_at(&attr, peer.pkey_index),
            dest_qpn,
            psn: st.next_psn(),
            qkey: peer.qkey,
            src_qpn,
            payload: mad,
        };
        st.write(&frame, now);
    }
}

impl MadChannel for TapMad {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), Error> {
        self.inner.send(mad, to)?;
        self.write(mad, &to, true);
        Ok(())
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        let (mad, from) = self.inner.recv()?;
        self.write(&mad, &from, false);
        Some((mad, from))
    }
}
