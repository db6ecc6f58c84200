//! Queue-pair creation and teardown (the control side of the queues; `rx.rs` and
//! `tx.rs` move packets).

use std::sync::Arc;

use ibpoll_dev::{Error, RxCounters, RxQueue, TxCounters, TxQueue, UdQp, UdQpConfig};
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

fn check_ring(field: &'static str, v: u32) -> Result<(), Error> {
    if !(32..=32768).contains(&v) || !v.is_power_of_two() {
        return Err(Error::QpConfig {
            field,
            value: u64::from(v),
            fix: "use a power of two from 32 to 32768",
        });
    }
    Ok(())
}

fn check_queues(field: &'static str, v: u16) -> Result<(), Error> {
    if !(1..=64).contains(&v) {
        return Err(Error::QpConfig {
            field,
            value: u64::from(v),
            fix: "use 1 to 64 queues",
        });
    }
    Ok(())
}

pub(crate) fn create_ud_qp(
    fabric: &Arc<Fabric>,
    port: usize,
    port_num: u8,
    cfg: &UdQpConfig,
) -> Result<UdQp, Error> {
    check_queues("rx_queues", cfg.rx_queues)?;
    check_queues("tx_queues", cfg.tx_queues)?;
    check_ring("rx_ring_size", cfg.rx_ring_size)?;
    check_ring("tx_ring_size", cfg.tx_ring_size)?;
    let mut ctl = fabric.lock();
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
    let rings: Vec<Arc<RxRing>> = (0..cfg.rx_queues)
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
            rx: rings.clone(),
            attached: 0,
        },
    );
    let seeds: Vec<u64> = (0..cfg.tx_queues).map(|_| ctl.next_tx_seed()).collect();
    drop(ctl);

    let guard = Arc::new(QpGuard {
        fabric: fabric.clone(),
        port,
        qpn,
    });
    let rx = rings
        .into_iter()
        .enumerate()
        .map(|(i, ring)| {
            Box::new(SimRxQueue {
                ring,
                queue_id: i as u16,
                _qp: guard.clone(),
            }) as Box<dyn RxQueue>
        })
        .collect();
    let tx = seeds
        .into_iter()
        .enumerate()
        .map(|(i, seed)| {
            Box::new(SimTxQueue {
                qp: guard.clone(),
                queue_id: i as u16,
                counters: Arc::new(TxCounters::default()),
                rng: crate::rng::SimRng::seed_from_u64(seed),
                held: Vec::with_capacity(cfg.tx_ring_size as usize),
                routes: (0..crate::tx::ROUTE_SLOTS)
                    .map(|_| crate::tx::Route::default())
                    .collect(),
                routes_gen: 0,
            }) as Box<dyn TxQueue>
        })
        .collect();
    Ok(UdQp { qpn, rx, tx })
}
