//! Queue-pair creation and teardown (the control side of the queues; `rx.rs` and
//! `tx.rs` move packets).

use std::sync::Arc;

use ibpoll_dev::{Error, RxCounters, RxQueue, TxCounters, UdQp, UdQpConfig};
use ibpoll_wire::Qpn;

use crate::fabric::{qp_per_port_max, Fabric, QpData, RxRing};
use crate::ring::InboxRing;
use crate::rx::SimRxQueue;
use crate::tx::SimTxQueue;

/// Lives as long as any queue of its QP; removes the QP from the switch when the last
/// one goes (resources own their parents: every queue holds the fabric).
#[derive(Debug)]
pub(crate) struct QpGuard {
    pub(crate) fabric: Arc<Fabric>,
    pub(crate) port: usize,
    pub(crate) qpn: Qpn,
}

impl Drop for QpGuard {
    fn drop(&mut self) {
        self.fabric.lock().destroy_qp(self.port, self.qpn);
    }
}

pub(crate) fn create_ud_qp(
    fabric: &Arc<Fabric>,
    port: usize,
    port_num: u8,
    cfg: &UdQpConfig,
) -> Result<UdQp, Error> {
    let mut ctl = fabric.lock();
    cfg.check(&ctl.ud_caps)?;
    if !ctl.pkey_index_valid(port, cfg.pkey_index) {
        return Err(Error::PkeyIndex {
            port: port_num,
            index: cfg.pkey_index,
        });
    }
    if ctl.qp_count(port) >= qp_per_port_max() {
        return Err(Error::Exhausted {
            what: "UD QPs on this port",
            limit: qp_per_port_max(),
        });
    }
    let qpn = Qpn::from_bits(ctl.alloc_qpn());
    let rx_queues = if cfg.rx_ring_size == 0 {
        0
    } else {
        cfg.rx_queues
    };
    let rings: Vec<Arc<RxRing>> = (0..rx_queues)
        .map(|queue_id| {
            Arc::new(RxRing {
                inbox: InboxRing::new(cfg.rx_ring_size as usize),
                pool: cfg.pool.clone(),
                counters: Arc::new(RxCounters::default()),
                queue_id,
                port_num,
            })
        })
        .collect();
    ctl.routes_changed();
    ctl.qps.insert(
        (port, qpn.get()),
        QpData {
            qkey: cfg.qkey,
            pkey_index: cfg.pkey_index,
            block_mcast_lb: cfg.block_self_mcast_lb,
            rx: rings.clone(),
            attached: 0,
        },
    );
    let seed = ctl.next_tx_seed();
    drop(ctl);

    let guard = Arc::new(QpGuard {
        fabric: fabric.clone(),
        port,
        qpn,
    });
    let rx = rings
        .into_iter()
        .map(|ring| {
            Box::new(SimRxQueue {
                ring,
                _qp: guard.clone(),
            }) as Box<dyn RxQueue>
        })
        .collect();
    let tx = Box::new(SimTxQueue {
        qp: guard.clone(),
        counters: Arc::new(TxCounters::default()),
        completed: 0,
        rng: crate::rng::SimRng::seed_from_u64(seed),
        held: Vec::with_capacity(cfg.tx_ring_size as usize),
        routes: (0..crate::tx::ROUTE_SLOTS)
            .map(|_| crate::tx::Route::default())
            .collect(),
        routes_gen: 0,
    });
    Ok(UdQp::new(qpn, rx, tx))
}
