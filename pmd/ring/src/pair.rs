//! What the two ports share: the registry of QPs, address handles and multicast
//! attachments their wrappers keep (control path, under one mutex), the links (one
//! SPSC ring from a sending QP to a receiving QP), the route generation every send
//! queue checks once per burst, and the drop counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{AhAttr, Device, Error, Port, RxCounters};
use ibpoll_mem::{Mbuf, Mempool};
use ibpoll_ring::SpscRing;
use ibpoll_wire::{Gid, QKey, Qpn};

use crate::port::RingPort;

/// One of the pair's two ports: 0 or 1.
pub(crate) type Side = usize;

/// A QP of the pair: its side and QPN.
pub(crate) type QpId = (Side, u32);

ibpoll_dev::counters! {
    /// The pair's drop counters (any thread may add: [`Counter::add_shared`]).
    ///
    /// [`Counter::add_shared`]: ibpoll_dev::Counter::add_shared
    #[repr(C, align(64))]
    pub(crate) struct RingCounters;
    /// What a [`RingPair`] dropped (or copied), summed over both ports, by reason.
    pub struct RingStats {
        /// Unicast to a LID neither port has.
        unknown_lid,
        /// Unicast to a QPN the destination port does not have.
        unknown_qpn,
        /// The receiving QP's Q_Key is not the send's.
        qkey,
        /// The receiving QP's partition does not match the sender's.
        pkey,
        /// The sending or receiving port is not Active.
        port_down,
        /// The receiving QP has no receive queue (a send-only QP).
        no_receive_queue,
        /// Not a drop: multicast to a group no QP of either port receives (as a switch
        /// forwards it nowhere: e.g. a host's first ARP, before its peer attached).
        no_receiver,
        /// A multicast copy for a ring that was full: a group with more receivers than
        /// a burst reserves ring slots for (8) reserves for its first one only. (Below
        /// that, a full ring is back-pressure, not a drop.)
        overrun,
        /// A multicast copy for which the receiver's pool had no buffer.
        nombuf,
        /// Send error: longer than the path MTU.
        too_long,
        /// Send error: shorter than the IPoIB header.
        malformed,
        /// Send error: a destroyed or unknown address handle, or multicast without
        /// global routing.
        bad_ah,
        /// Send error: fewer than 40 bytes of headroom before the data (no room for
        /// the GRH area the receiver is owed).
        no_headroom,
        /// Left in a ring when its receiving QP went.
        receiver_gone,
        /// Not a drop: multicast copies made for receivers beyond the first.
        mcast_copies,
    }
    drops: [
        unknown_lid, unknown_qpn, qkey, pkey, port_down, no_receive_queue, overrun, nombuf,
        too_long, malformed, bad_ah, no_headroom, receiver_gone,
    ]
}

/// The receiving end of a QP: what the links into it and its receive queue share.
#[derive(Debug)]
pub(crate) struct RxEnd {
    /// Every link into this QP (including those whose sender is gone but which still
    /// hold packets): the receive queue copies it when `links_gen` moves.
    pub(crate) links: Mutex<Vec<Arc<Link>>>,
    /// Bumped (under `links`) whenever `links` changes.
    pub(crate) links_gen: AtomicU64,
    /// The receive queue's counters.
    pub(crate) counters: Arc<RxCounters>,
    /// Slots of each link's ring (the QP's `rx_ring_size`).
    pub(crate) ring_size: usize,
    /// The QP's pool: multicast copies for it come from here.
    pub(crate) pool: Mempool,
    /// The port number stamped on what it receives.
    pub(crate) port_num: u16,
}

impl RxEnd {
    fn lock_links(&self) -> MutexGuard<'_, Vec<Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One sending QP's ring into one receiving QP.
#[derive(Debug)]
pub(crate) struct Link {
    /// Producer: the sending QP's send queue (its owner lcore). Consumer: the receiving
    /// QP's receive queue, or the control path while that queue is parked.
    pub(crate) ring: SpscRing<Mbuf>,
    /// The receiving QP's end (pool and port number for multicast copies, counters).
    pub(crate) to: Arc<RxEnd>,
    /// Set when the sending QP is gone: nothing is pushed any more.
    sender_gone: AtomicBool,
    stats: Arc<RingCounters>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no producer or consumer is left.
        let n = unsafe { self.ring.clear() };
        if n > 0 {
            self.stats.receiver_gone.add_shared(n as u64);
        }
    }
}

/// A QP as the registry knows it.
#[derive(Debug)]
pub(crate) struct QpState {
    pub(crate) qkey: QKey,
    pub(crate) pkey_index: u16,
    /// The QP asked the HCA to block its own multicast loopback.
    pub(crate) block_lb: bool,
    /// `None`: a send-only QP.
    pub(crate) rx: Option<Arc<RxEnd>>,
}

/// The registry: everything the data path's routes are resolved from.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) qps: HashMap<(Side, u32), QpState>,
    /// Address handles by (side, raw value), with what they were created from.
    pub(crate) ahs: HashMap<(Side, u32), AhAttr>,
    /// Attached QPs per (side, MGID).
    pub(crate) attach: HashMap<(Side, Gid), Vec<Qpn>>,
    /// Links by (sending side and QPN, receiving side and QPN).
    links: HashMap<(QpId, QpId), Arc<Link>>,
}

/// The pair's shared state.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The wrapped ports.
    pub(crate) ports: [Arc<dyn Port>; 2],
    ctl: Mutex<Control>,
    /// Bumped by every control operation that could change a route (QPs, Q_Keys,
    /// P_Key indexes, address handles, attachments, port events).
    route_gen: AtomicU64,
    pub(crate) stats: Arc<RingCounters>,
}

impl Pair {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Control> {
        // The registry is consistent at every unlock; a panic elsewhere does not spoil it.
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current route generation.
    #[inline]
    pub(crate) fn route_gen(&self) -> u64 {
        // Acquire: pairs with the Release in `routes_changed`: a send queue that sees the
        // new generation resolves again under the registry's lock.
        self.route_gen.load(Ordering::Acquire)
    }

    /// Invalidates every send queue's cached routes.
    pub(crate) fn routes_changed(&self) {
        // Release: pairs with the Acquire in `route_gen`.
        self.route_gen.fetch_add(1, Ordering::Release);
    }

    /// The link from `from` to `to` (whose receiving end is `end`), made on first use
    /// and announced to the receiving queue.
    pub(crate) fn link(
        &self,
        ctl: &mut Control,
        from: QpId,
        to: QpId,
        end: &Arc<RxEnd>,
    ) -> Arc<Link> {
        if let Some(l) = ctl.links.get(&(from, to)) {
            return l.clone();
        }
        let link = Arc::new(Link {
            ring: SpscRing::new(end.ring_size),
            to: end.clone(),
            sender_gone: AtomicBool::new(false),
            stats: self.stats.clone(),
        });
        ctl.links.insert((from, to), link.clone());
        let mut list = end.lock_links();
        prune(&mut list);
        list.push(link.clone());
        // Relaxed: the list itself is read under its mutex; the counter only says when
        // to take it.
        end.links_gen.fetch_add(1, Ordering::Relaxed);
        link
    }

    /// Forgets QP `qpn` of `side`: its attachments, the links from it (they stay with
    /// their receivers until drained) and the links into it (freed with what they
    /// hold, counted as `receiver_gone`, once the senders' caches let go).
    pub(crate) fn remove_qp(&self, side: Side, qpn: Qpn) {
        let mut ctl = self.lock();
        let me = (side, qpn.get());
        // The links into it hold its end, and its end their list: break the cycle, and
        // take back what they hold now (what a sender pushes before it sees the new
        // route generation is counted when its link goes).
        let into_me = ctl
            .qps
            .remove(&me)
            .and_then(|q| q.rx)
            .map(|end| std::mem::take(&mut *end.lock_links()))
            .unwrap_or_default();
        for link in &into_me {
            // SAFETY: the QP's receive queue, the rings' only consumer, is gone (this
            // runs when the last of its queues drops), so this thread is their consumer.
            let n = unsafe { link.ring.clear() };
            self.stats.receiver_gone.add_shared(n as u64);
        }
        for (&(p, _), list) in ctl.attach.iter_mut() {
            if p == side {
                list.retain(|q| *q != qpn);
            }
        }
        ctl.attach.retain(|_, list| !list.is_empty());
        let gone: Vec<_> = ctl
            .links
            .keys()
            .filter(|(from, to)| *from == me || *to == me)
            .copied()
            .collect();
        for key in gone {
            let Some(link) = ctl.links.remove(&key) else {
                continue;
            };
            if key.0 == me {
                // Relaxed: read under the receiver's `links` mutex, which this store
                // precedes (the prune below or a later one takes it).
                link.sender_gone.store(true, Ordering::Relaxed);
                let mut list = link.to.lock_links();
                prune(&mut list);
                link.to.links_gen.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(ctl);
        drop(into_me);
        self.routes_changed();
    }

    /// Takes back what waits in every ring into QP `qpn` of `side`, whose receive queue
    /// is parked, and counts it there as flushed; how many.
    pub(crate) fn flush_parked(&self, ctl: &Control, side: Side, qpn: Qpn) -> usize {
        let Some(end) = ctl.qps.get(&(side, qpn.get())).and_then(|q| q.rx.as_ref()) else {
            return 0;
        };
        let list = end.lock_links();
        let mut n = 0;
        for link in list.iter() {
            // SAFETY: the caller holds a `Parked` for this QP: its receive queue, the
            // rings' consumer, is not called until the token goes, so this thread is
            // their only consumer meanwhile; the park handshake that made the token
            // true orders the queue's last `rx_burst` before this, and the resume its
            // next one after.
            n += unsafe { link.ring.clear() };
        }
        // The owner is parked: no other writer of its counters runs now.
        end.counters.flushed.add_shared(n as u64);
        n
    }
}

/// Drops from a receiver's list the links whose sender is gone and which are empty
/// (nothing can be pushed into them any more).
fn prune(list: &mut Vec<Arc<Link>>) {
    // Relaxed: `sender_gone` was stored before the registry's lock was released by the
    // thread that removed the sender, and this runs under that lock (or after it); the
    // sender's last pushes happened before its QP was removed, so an empty ring stays
    // empty.
    list.retain(|l| !(l.sender_gone.load(Ordering::Relaxed) && l.ring.is_empty()));
}

/// Two ports joined by rings. Build it from two devices (their port 1) or two ports.
#[derive(Debug, Clone)]
pub struct RingPair {
    pair: Arc<Pair>,
    ports: [Arc<RingPort>; 2],
    devices: [Arc<RingDevice>; 2],
}

impl RingPair {
    /// Joins port 1 of `a` and port 1 of `b`.
    pub fn new(a: &Arc<dyn Device>, b: &Arc<dyn Device>) -> Result<RingPair, Error> {
        let ports = [a.open_port(1)?, b.open_port(1)?];
        let names = [a.name(), b.name()].map(|n| format!("ring:{n}"));
        let guids = [a.node_guid(), b.node_guid()];
        Ok(RingPair::build(ports, names, guids))
    }

    /// Joins two ports.
    pub fn from_ports(a: Arc<dyn Port>, b: Arc<dyn Port>) -> RingPair {
        let guids = [&a, &b].map(|p| p.attr().gid.guid());
        RingPair::build([a, b], ["ring0".into(), "ring1".into()], guids)
    }

    fn build(ports: [Arc<dyn Port>; 2], names: [String; 2], guids: [u64; 2]) -> RingPair {
        let pair = Arc::new(Pair {
            ports,
            ctl: Mutex::new(Control::default()),
            route_gen: AtomicU64::new(0),
            stats: Arc::new(RingCounters::default()),
        });
        let ports = [0, 1].map(|side| Arc::new(RingPort::new(pair.clone(), side)));
        let mut names = names.into_iter();
        let devices = [0, 1].map(|side| {
            Arc::new(RingDevice {
                name: names.next().unwrap_or_default(),
                guid: guids[side],
                port: ports[side].clone(),
            })
        });
        RingPair {
            pair,
            ports,
            devices,
        }
    }

    /// Port `side` (0 or 1; anything else is taken as 1).
    pub fn port(&self, side: usize) -> Arc<dyn Port> {
        self.ports[side.min(1)].clone()
    }

    /// A one-port device whose port 1 is [`port(side)`](Self::port), for a stack's
    /// builder (`.device(pair.device(0), 1)`).
    pub fn device(&self, side: usize) -> Arc<dyn Device> {
        self.devices[side.min(1)].clone()
    }

    /// What the pair dropped so far, by reason.
    pub fn stats(&self) -> RingStats {
        self.pair.stats.read()
    }
}

/// A device with one port: one side of a [`RingPair`].
#[derive(Debug)]
pub struct RingDevice {
    name: String,
    guid: u64,
    port: Arc<RingPort>,
}

impl Device for RingDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn node_guid(&self) -> u64 {
        self.guid
    }

    fn port_count(&self) -> u8 {
        1
    }

    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, Error> {
        if port_num != 1 {
            return Err(Error::NoSuchPort {
                device: self.name.clone(),
                port: port_num,
                count: 1,
            });
        }
        Ok(self.port.clone())
    }
}
