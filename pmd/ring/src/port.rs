//! [`RingPort`]: one side of a pair, a wrapper of its port that keeps the control path
//! and replaces the queues (the control side of them: creation, Q_Key and P_Key
//! changes, address handles, attachments).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use ibpoll_dev::{
    AddressHandle, AhAttr, Error, MadChannel, Parked, Port, PortAttr, PortEvent, RxQueue, TxQueue,
    UdCaps, UdQp, UdQpConfig,
};
use ibpoll_wire::{Gid, Lid, QKey, Qpn};

use crate::pair::{Pair, QpState, RxEnd, Side};
use crate::rx::RingRxQueue;
use crate::tx::RingTxQueue;

/// One port of a [`RingPair`](crate::RingPair).
#[derive(Debug)]
pub struct RingPort {
    pair: Arc<Pair>,
    side: Side,
}

/// Lives as long as any queue of its QP; forgets the QP in the registry when the last
/// one goes, then lets the wrapped port's QP go (resources own their parents).
#[derive(Debug)]
pub(crate) struct QpGuard {
    pub(crate) pair: Arc<Pair>,
    pub(crate) side: Side,
    pub(crate) qpn: Qpn,
    /// The wrapped port's QP (send-only: it gives the QPN and keeps it taken), kept
    /// alive by its send queue, never called.
    _inner: Mutex<Box<dyn TxQueue>>,
}

impl Drop for QpGuard {
    fn drop(&mut self) {
        self.pair.remove_qp(self.side, self.qpn);
    }
}

impl RingPort {
    pub(crate) fn new(pair: Arc<Pair>, side: Side) -> RingPort {
        RingPort { pair, side }
    }

    fn inner(&self) -> &Arc<dyn Port> {
        &self.pair.ports[self.side]
    }

    fn no_qp(&self, qpn: Qpn) -> Error {
        Error::NoSuchQp {
            port: self.port_num(),
            qpn,
        }
    }
}

impl Port for RingPort {
    fn port_num(&self) -> u8 {
        self.inner().port_num()
    }

    fn attr(&self) -> PortAttr {
        self.inner().attr()
    }

    fn ud_caps(&self) -> UdCaps {
        let mut caps = self.inner().ud_caps();
        caps.rx_queues_per_qpn = 1;
        caps.send_qps_share_qpn = false;
        caps.block_self_mcast_lb = true;
        caps
    }

    fn poll_event(&self) -> Option<PortEvent> {
        let ev = self.inner().poll_event();
        if ev.is_some() {
            // The port's state, LID or P_Keys may have changed: resolve again.
            self.pair.routes_changed();
        }
        ev
    }

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        cfg.check(&self.ud_caps())?;
        let mut send_only = cfg.clone();
        send_only.rx_ring_size = 0;
        send_only.block_self_mcast_lb = false;
        let inner = self.inner().create_ud_qp(&send_only)?;
        let qpn = inner.qpn;
        let end = (cfg.rx_ring_size > 0).then(|| {
            Arc::new(RxEnd {
                links: Mutex::new(Vec::new()),
                links_gen: AtomicU64::new(0),
                counters: Arc::default(),
                ring_size: cfg.rx_ring_size as usize,
                pool: cfg.pool.clone(),
                port_num: u16::from(self.port_num()),
            })
        });
        self.pair.lock().qps.insert(
            (self.side, qpn.get()),
            QpState {
                qkey: cfg.qkey,
                pkey_index: cfg.pkey_index,
                block_lb: cfg.block_self_mcast_lb,
                rx: end.clone(),
            },
        );
        self.pair.routes_changed();
        let guard = Arc::new(QpGuard {
            pair: self.pair.clone(),
            side: self.side,
            qpn,
            _inner: Mutex::new(inner.tx),
        });
        let rx: Vec<Box<dyn RxQueue>> = end
            .into_iter()
            .map(|end| Box::new(RingRxQueue::new(end, guard.clone())) as Box<dyn RxQueue>)
            .collect();
        Ok(UdQp::new(qpn, rx, Box::new(RingTxQueue::new(guard))))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), Error> {
        self.inner().set_qp_qkey(qpn, qkey)?;
        match self.pair.lock().qps.get_mut(&(self.side, qpn.get())) {
            Some(qp) => qp.qkey = qkey,
            None => return Err(self.no_qp(qpn)),
        }
        self.pair.routes_changed();
        Ok(())
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        let qpn = parked.qpn();
        // The wrapped port checks the index and moves its (send-only) QP.
        let inner = self.inner().move_qp_pkey_index(parked, pkey_index)?;
        let mut ctl = self.pair.lock();
        match ctl.qps.get_mut(&(self.side, qpn.get())) {
            Some(qp) => qp.pkey_index = pkey_index,
            None => return Err(self.no_qp(qpn)),
        }
        let flushed = self.pair.flush_parked(&ctl, self.side, qpn);
        drop(ctl);
        self.pair.routes_changed();
        Ok(inner + flushed)
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error> {
        let ah = self.inner().create_ah(attr)?;
        self.pair.lock().ahs.insert((self.side, ah.raw()), *attr);
        Ok(ah)
    }

    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error> {
        // SAFETY: the caller's guarantee (no posted or future send names `ah`) is the
        // wrapped port's precondition too; this wrapper's sends complete when posted.
        unsafe { self.inner().destroy_ah(ah) }?;
        self.pair.lock().ahs.remove(&(self.side, ah.raw()));
        self.pair.routes_changed();
        Ok(())
    }

    fn attach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        self.inner().attach_mcast(qpn, mgid, mlid)?;
        let mut ctl = self.pair.lock();
        let list = ctl.attach.entry((self.side, *mgid)).or_default();
        if !list.contains(&qpn) {
            list.push(qpn);
        }
        drop(ctl);
        self.pair.routes_changed();
        Ok(())
    }

    fn detach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        self.inner().detach_mcast(qpn, mgid, mlid)?;
        let mut ctl = self.pair.lock();
        if let Some(list) = ctl.attach.get_mut(&(self.side, *mgid)) {
            list.retain(|q| *q != qpn);
            if list.is_empty() {
                ctl.attach.remove(&(self.side, *mgid));
            }
        }
        drop(ctl);
        self.pair.routes_changed();
        Ok(())
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        self.inner().open_mad_channel()
    }
}
