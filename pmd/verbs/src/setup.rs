//! Queue-pair creation, the P_Key index move of a parked QP, and teardown: the control
//! side of the queues (`rx.rs` and `tx.rs` move packets).
//!
//! A QP's state is one [`QpShared`], held by its receive queue and its send queue; the
//! device's registry holds it weakly (for `set_qp_qkey`, multicast and moves by QPN).
//! The receive state is touched only by the receive queue, the send state only by the
//! send queue, and both by a P_Key move while the [`Parked`] proof says neither queue is
//! called. When the last queue goes, the QP is destroyed first and every buffer it still
//! names goes home after.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use ibpoll_dev::{
    Error as DevError, LinkLayer, Parked, RxCounters, RxQueue, TxCounters, UdQp, UdQpConfig,
};
use ibpoll_mem::{Mbuf, MbufArray, Mempool};
use ibpoll_wire::Qpn;

use crate::device::{DevShared, QpEntry};
use crate::ffi::{self, Cq, QpHandle, RecvQueue, RecvWr, SelfMcastLoopback, SendQueue, Wc};
use crate::roce::GRH_AREA;
use crate::rx::VerbsRxQueue;
use crate::tx::VerbsTxQueue;

/// Completions polled and work requests posted per call.
pub const BURST: usize = 32;

/// A driver error as the contract's, naming the operation.
pub(crate) fn driver(op: &'static str) -> impl FnOnce(crate::Error) -> DevError {
    move |e| DevError::Driver {
        op,
        source: Box::new(e),
    }
}

/// The receive side of a QP: its posted buffers, where fresh ones come from.
pub(crate) struct RxState {
    pub(crate) rq: RecvQueue,
    pub(crate) pool: Mempool,
    pub(crate) lkey: u32,
    /// Buffers kept posted.
    pub(crate) ring_size: usize,
    pub(crate) wc: [Wc; BURST],
    pub(crate) refill: MbufArray,
    pub(crate) counters: Arc<RxCounters>,
    /// RoCE: the GRH area holds an IP header to rewrite into a GRH.
    pub(crate) roce: bool,
    pub(crate) port_num: u16,
    /// The QP went to the Error state (flushed receives): no more reposting until a
    /// move brings it back.
    pub(crate) dead: bool,
}

impl RxState {
    /// Posts fresh buffers up to the ring size, a burst at a time; what the pool cannot
    /// give is counted in `nombuf`.
    pub(crate) fn refill(&mut self) {
        let need = self.ring_size.saturating_sub(self.rq.posted());
        if need == 0 || self.dead {
            return;
        }
        let want = need.min(BURST);
        let got = self.pool.alloc_bulk_into(&mut self.refill, want);
        if got < want {
            self.counters.nombuf.add((want - got) as u64);
        }
        let RxState {
            rq, refill, lkey, ..
        } = self;
        let lkey = *lkey;
        let wr = |i: usize| {
            let m = &refill.as_slice()[i];
            // The GRH area is the 40 bytes before the data window (the headroom is at
            // least 44 bytes: `HEADROOM_MIN`), so the IPoIB header lands where the
            // data starts.
            let start = m.data_offset() - GRH_AREA;
            RecvWr {
                wr_id: m.as_raw() as u64,
                addr: (m.buf_addr() + start) as u64,
                len: (m.buf_len() - start) as u32,
                lkey,
            }
        };
        // SAFETY: each buffer is in the pool registered as `lkey`; its handle is given
        // up (into_raw) right below for the posted ones, and comes back through from_raw
        // exactly once: when its completion is polled, or when a reset or the QP's
        // destruction hands its id back.
        let posted = unsafe { rq.post_with(got, wr) };
        for m in refill.drain_front(posted) {
            let _ = m.into_raw();
        }
        refill.clear();
    }

    /// Fills the whole ring (at creation and after a move).
    pub(crate) fn fill(&mut self) {
        while self.rq.posted() < self.ring_size && !self.dead {
            let before = self.rq.posted();
            self.refill();
            if self.rq.posted() == before {
                break;
            }
        }
    }
}

/// The send side of a QP.
pub(crate) struct TxState {
    pub(crate) sq: SendQueue,
    pub(crate) wc: [Wc; BURST],
    /// By pool id: the pool's lkey with [`LKEY_KNOWN`], [`LKEY_FAILED`], or 0.
    pub(crate) lkeys: Vec<u64>,
    pub(crate) sends: Vec<ffi::RawSend>,
    pub(crate) counters: Arc<TxCounters>,
    /// `sq.completed()` as last published in `counters.completed`.
    pub(crate) published: u64,
}

/// `TxState::lkeys`: the entry holds a key.
pub(crate) const LKEY_KNOWN: u64 = 1 << 32;
/// `TxState::lkeys`: the pool could not be registered; its sends are dropped.
pub(crate) const LKEY_FAILED: u64 = 1 << 33;

/// One QP's state, shared by its queues (see the module docs).
pub(crate) struct QpShared {
    pub(crate) dev: Arc<DevShared>,
    pub(crate) port: u8,
    pub(crate) qpn: Qpn,
    pub(crate) handle: Arc<QpHandle>,
    pub(crate) qkey: AtomicU32,
    pub(crate) pkey_index: AtomicU16,
    rx: Option<UnsafeCell<RxState>>,
    tx: UnsafeCell<TxState>,
}

// SAFETY: the cells are reached only as the module docs say: `rx` by the one receive
// queue (or a move under `Parked`), `tx` by the one send queue (or a move under
// `Parked`); each queue is `Send + !Sync`, so each cell has one user at a time. The rest
// is Send + Sync (Arcs, atomics, the QP handle).
unsafe impl Sync for QpShared {}
// SAFETY: as above; the states own their buffers (raw ids) and are moved with the QP.
unsafe impl Send for QpShared {}

impl std::fmt::Debug for QpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpShared")
            .field("device", &self.dev.ctx.name())
            .field("port", &self.port)
            .field("qpn", &self.qpn)
            .finish()
    }
}

impl QpShared {
    /// The receive state.
    ///
    /// # Safety
    /// The caller is the QP's receive queue, or holds a [`Parked`] for the QP; no other
    /// reference from this function is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rx(&self) -> Option<&mut RxState> {
        // SAFETY: per the caller.
        self.rx.as_ref().map(|c| unsafe { &mut *c.get() })
    }

    /// The send state.
    ///
    /// # Safety
    /// The caller is the QP's send queue, or holds a [`Parked`] for the QP; no other
    /// reference from this function is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn tx(&self) -> &mut TxState {
        // SAFETY: per the caller.
        unsafe { &mut *self.tx.get() }
    }

    /// Moves the parked QP to P_Key index `pkey_index` through Reset: every buffer
    /// posted or filled is returned to its pool (counted in `RxCounters::flushed`), every
    /// send outstanding is completed (unfinished ones counted as errors), and the
    /// receive ring is filled again. Returns how many receive buffers came back.
    pub(crate) fn move_pkey_index(
        &self,
        _parked: &Parked,
        pkey_index: u16,
    ) -> Result<usize, DevError> {
        self.handle.reset().map_err(driver("move_qp_pkey_index"))?;
        let mut returned = 0;
        // SAFETY: `_parked` says no thread calls this QP's queues: we are the only user
        // of both states until it is dropped, after this call.
        if let Some(rx) = unsafe { self.rx() } {
            let (done, unused) = rx.rq.drain();
            returned = done.len() + unused.len();
            free(done.iter().map(Wc::wr_id).chain(unused));
            rx.counters.flushed.add_shared(returned as u64);
            rx.dead = false;
        }
        // SAFETY: as above.
        let tx = unsafe { self.tx() };
        let (done, unfinished) = tx.sq.drain();
        let errors = done.iter().filter(|w| !w.is_ok()).count() + unfinished.len();
        free(done.iter().map(Wc::wr_id).chain(unfinished));
        tx.counters.errors.add_shared(errors as u64);
        let completed = tx.sq.completed();
        tx.counters.completed.add_shared(completed - tx.published);
        tx.published = completed;

        let qkey = self.qkey.load(Ordering::Relaxed);
        self.handle
            .bring_up(pkey_index, qkey)
            .map_err(driver("move_qp_pkey_index"))?;
        self.pkey_index.store(pkey_index, Ordering::Relaxed);
        // SAFETY: as above.
        if let Some(rx) = unsafe { self.rx() } {
            rx.fill();
        }
        Ok(returned)
    }
}

/// Returns the buffers behind `ids` (`Mbuf::into_raw` words) to their pools.
fn free(ids: impl Iterator<Item = u64>) {
    for id in ids {
        if id != ffi::UNPOSTED {
            // SAFETY: every id in a queue's ring is an into_raw word of a buffer the
            // queue owns (given up when posted); the caller took it out of the ring, so
            // it is taken back exactly once.
            drop(unsafe { Mbuf::from_raw(id as usize) });
        }
    }
}

impl Drop for QpShared {
    fn drop(&mut self) {
        // The QP first: once it is destroyed the HCA writes into none of the buffers
        // still posted, and they can go home.
        self.handle.destroy();
        if let Some(rx) = self.rx.as_mut() {
            free(rx.get_mut().rq.take_all().into_iter());
        }
        free(self.tx.get_mut().sq.take_all().into_iter());
        let mut st = self.dev.lock();
        let qpn = self.qpn.get();
        if st.qps.get(&qpn).is_some_and(|e| e.qp.strong_count() == 0) {
            st.qps.remove(&qpn);
        }
        let netdev = self.dev.netdev(&mut st, self.port);
        st.ports[usize::from(self.port) - 1]
            .groups
            .forget_qp(qpn, netdev);
    }
}

/// `Port::create_ud_qp` of port `port`.
pub(crate) fn create_ud_qp(
    dev: &Arc<DevShared>,
    port: u8,
    cfg: &UdQpConfig,
) -> Result<UdQp, DevError> {
    cfg.check(&dev.caps)?;
    let attr = dev.port_attr(port);
    let pkey_ok = attr
        .pkeys
        .get(usize::from(cfg.pkey_index))
        .is_some_and(|p| p.base() != 0);
    if !pkey_ok {
        return Err(DevError::PkeyIndex {
            port,
            index: cfg.pkey_index,
        });
    }
    let lkey = dev
        .lkey(&cfg.pool)
        .map_err(driver("registering the receive pool"))?;
    let rx_size = cfg.rx_ring_size as usize;
    let ctx = &dev.ctx;
    let send_cq = Cq::new(ctx, cfg.tx_ring_size).map_err(driver("create_ud_qp"))?;
    let recv_cq = Cq::new(ctx, cfg.rx_ring_size.max(1)).map_err(driver("create_ud_qp"))?;
    let fcfg = ffi::UdQpConfig {
        port_num: port,
        pkey_index: cfg.pkey_index,
        qkey: cfg.qkey.0,
        max_send_wr: cfg.tx_ring_size,
        max_recv_wr: cfg.rx_ring_size.max(1),
        max_inline: u32::from(dev.caps.max_inline),
        burst_max: BURST,
        self_mcast: if cfg.block_self_mcast_lb {
            SelfMcastLoopback::Block
        } else {
            SelfMcastLoopback::Allow
        },
    };
    let handle =
        QpHandle::create(&dev.pd, &send_cq, &recv_cq, &fcfg).map_err(driver("create_ud_qp"))?;
    handle
        .bring_up(cfg.pkey_index, cfg.qkey.0)
        .map_err(driver("create_ud_qp"))?;
    let qpn = Qpn::from_bits(handle.qpn());
    let rx = (rx_size > 0).then(|| {
        let mut st = RxState {
            rq: RecvQueue::new(&handle, rx_size, BURST),
            pool: cfg.pool.clone(),
            lkey,
            ring_size: rx_size,
            wc: [Wc::default(); BURST],
            refill: MbufArray::with_capacity(BURST),
            counters: Arc::new(RxCounters::default()),
            roce: attr.link_layer == LinkLayer::Ethernet,
            port_num: u16::from(port),
            dead: false,
        };
        st.fill();
        UnsafeCell::new(st)
    });
    let tx = TxState {
        sq: SendQueue::new(&handle, cfg.tx_ring_size as usize, BURST),
        wc: [Wc::default(); BURST],
        lkeys: Vec::new(),
        sends: Vec::with_capacity(BURST),
        counters: Arc::new(TxCounters::default()),
        published: 0,
    };
    let shared = Arc::new(QpShared {
        dev: dev.clone(),
        port,
        qpn,
        handle,
        qkey: AtomicU32::new(cfg.qkey.0),
        pkey_index: AtomicU16::new(cfg.pkey_index),
        rx,
        tx: UnsafeCell::new(tx),
    });
    dev.lock().qps.insert(
        qpn.get(),
        QpEntry {
            port,
            qp: Arc::downgrade(&shared),
        },
    );
    let rx: Vec<Box<dyn RxQueue>> = if rx_size > 0 {
        vec![Box::new(VerbsRxQueue::new(shared.clone()))]
    } else {
        Vec::new()
    };
    Ok(UdQp::new(qpn, rx, Box::new(VerbsTxQueue::new(shared))))
}
