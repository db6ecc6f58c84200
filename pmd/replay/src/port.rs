//! [`ReplayPort`] (the wrapper, control side), its device, its streams and their
//! controls, and its statistics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ibpoll_dev::{Device, Error, Parked, Port, RxQueue, TxQueue, UdQp, UdQpConfig};
use ibpoll_mem::MbufMeta;
use ibpoll_wire::{Lid, PKey, QKey, Qpn};

use crate::frames::Frames;
use crate::rx::{ReplayRxQueue, StreamCursor};
use crate::tx::ReplayTxQueue;

ibpoll_dev::counters! {
    /// One queue's replay counters (its owner lcore writes them).
    #[repr(C, align(64))]
    pub(crate) struct QueueCounters;
    /// What a [`ReplayPort`]'s queues did, summed over every queue.
    pub struct ReplayStats {
        /// Frames replayed into receive bursts.
        replayed,
        /// Their bytes (from the IPoIB header on).
        replayed_bytes,
        /// Frames not replayed because the QP's pool had no buffer.
        nombuf,
        /// IP packets sent and freed.
        freed,
        /// Their bytes.
        freed_bytes,
        /// Control packets (not IP: ARP) passed to the wrapped port.
        to_inner,
        /// Control packets the wrapped port's send queue refused (freed).
        inner_refused,
    }
}

/// How many frames a stream may still replay: `u64::MAX` is no limit.
const UNLIMITED: u64 = u64::MAX;

/// The frames one partition's receive queues replay, and who they seem to come from.
/// Build it with [`Stream::new`]; [`Stream::control`] gives a handle to start and stop it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stream {
    /// The partition: every QP with a receive queue at this P_Key's index replays the
    /// stream (each with its own position in the list).
    pub pkey: PKey,
    /// The frames, replayed in order, over and over.
    pub frames: Arc<Frames>,
    /// The source QPN the received frames carry.
    pub src_qpn: Qpn,
    /// The source LID the received frames carry.
    pub slid: Lid,
    /// The most frames one `rx_burst` replays (the caller's room bounds it too).
    pub burst: usize,
    budget: Arc<AtomicU64>,
}

impl Stream {
    /// A stream of `frames` on partition `pkey`, running (no limit), from QPN 0x1234 at
    /// LID 0x0777, filling each burst's room, unless set otherwise.
    pub fn new(pkey: PKey, frames: Frames) -> Stream {
        Stream {
            pkey,
            frames: Arc::new(frames),
            src_qpn: Qpn::from_bits(0x1234),
            slid: Lid(0x0777),
            burst: usize::MAX,
            budget: Arc::new(AtomicU64::new(UNLIMITED)),
        }
    }

    /// The stream's handle.
    pub fn control(&self) -> StreamControl {
        StreamControl {
            budget: self.budget.clone(),
        }
    }
}

/// Starts, limits and stops a [`Stream`] from any thread (the queues read it once per
/// burst).
#[derive(Debug, Clone)]
pub struct StreamControl {
    budget: Arc<AtomicU64>,
}

impl StreamControl {
    /// Replays without a limit.
    pub fn run(&self) {
        // Relaxed: a plain flag-like value; the queues act on whatever they read next.
        self.budget.store(UNLIMITED, Ordering::Relaxed);
    }

    /// Replays `n` more frames (over all of the stream's queues), then stops.
    pub fn run_for(&self, n: u64) {
        self.budget.store(n.min(UNLIMITED - 1), Ordering::Relaxed);
    }

    /// Stops replaying (the queues still return what the wrapped port received).
    pub fn pause(&self) {
        self.budget.store(0, Ordering::Relaxed);
    }
}

/// A port wrapper: receive queues of a stream's partition return, after what the
/// wrapped port received, a full burst of replayed frames; send queues free IP packets
/// and pass the rest to the wrapped port. See the crate docs.
#[derive(Debug)]
pub struct ReplayPort {
    inner: Arc<dyn Port>,
    streams: Vec<Stream>,
    queues: Mutex<Vec<Arc<QueueCounters>>>,
}

impl ReplayPort {
    /// Wraps `inner` with `streams`.
    pub fn new(inner: Arc<dyn Port>, streams: Vec<Stream>) -> Arc<ReplayPort> {
        Arc::new(ReplayPort {
            inner,
            streams,
            queues: Mutex::new(Vec::new()),
        })
    }

    /// What every queue made through this port did so far.
    pub fn stats(&self) -> ReplayStats {
        let mut total = ReplayStats::default();
        for q in self.queues.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            total += q.read();
        }
        total
    }

    /// The stream for a QP at `pkey_index`, if one is configured for its partition.
    fn stream_for(&self, pkey_index: u16) -> Option<&Stream> {
        let pkey = *self.inner.attr().pkeys.get(usize::from(pkey_index))?;
        self.streams
            .iter()
            .find(|s| s.pkey.base() != 0 && s.pkey.base() == pkey.base())
    }

    fn queue_counters(&self) -> Arc<QueueCounters> {
        let c = Arc::new(QueueCounters::default());
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        c
    }
}

impl Port for ReplayPort {
    ibpoll_dev::delegate_port!(inner: info, events, ah, mcast, mad);

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        let stream = match (cfg.rx_ring_size, self.stream_for(cfg.pkey_index)) {
            (0, _) | (_, None) => None,
            (_, Some(s)) => Some(s),
        };
        if let Some(s) = stream {
            // A fresh buffer's room after the headroom (a probe; with the pool empty now,
            // the least headroom a pool has).
            let room = cfg.pool.alloc().map_or_else(
                || cfg.pool.buf_len() - ibpoll_mem::HEADROOM_MIN as usize,
                |m| m.tailroom(),
            );
            if s.frames.len_max() > room {
                return Err(Error::QpConfig {
                    field: "pool",
                    value: s.frames.len_max() as u64,
                    fix: "the replayed frames do not fit the pool's buffers: give the pool \
                          a larger data room, or replay shorter frames",
                });
            }
        }
        let qp = self.inner.create_ud_qp(cfg)?;
        let counters = self.queue_counters();
        let qpn = qp.qpn;
        let rx: Vec<Box<dyn RxQueue>> = qp
            .rx
            .into_iter()
            .map(|inner| {
                let cursor = stream.map(|s| StreamCursor {
                    frames: s.frames.clone(),
                    next: 0,
                    budget: s.budget.clone(),
                    burst: s.burst.max(1),
                    meta: MbufMeta {
                        src_qpn: s.src_qpn.get(),
                        slid: s.slid.0,
                        port: u16::from(self.inner.port_num()),
                        ..MbufMeta::default()
                    },
                });
                Box::new(ReplayRxQueue::new(
                    inner,
                    cursor,
                    cfg.pool.clone(),
                    counters.clone(),
                )) as Box<dyn RxQueue>
            })
            .collect();
        let tx: Box<dyn TxQueue> = Box::new(ReplayTxQueue::new(qp.tx, counters));
        Ok(UdQp::new(qpn, rx, tx))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), Error> {
        self.inner.set_qp_qkey(qpn, qkey)
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        // Replayed frames are made at each burst: nothing of theirs is held to return.
        self.inner.move_qp_pkey_index(parked, pkey_index)
    }
}

/// A device whose port `port` (1-based) is wrapped in a [`ReplayPort`] with the given
/// streams; its other ports are the wrapped device's.
#[derive(Debug)]
pub struct ReplayDevice {
    inner: Arc<dyn Device>,
    port_num: u8,
    streams: Vec<Stream>,
    opened: Mutex<Option<Arc<ReplayPort>>>,
}

impl ReplayDevice {
    /// Wraps port `port_num` of `inner`.
    pub fn new(inner: Arc<dyn Device>, port_num: u8, streams: Vec<Stream>) -> Arc<ReplayDevice> {
        Arc::new(ReplayDevice {
            inner,
            port_num,
            streams,
            opened: Mutex::new(None),
        })
    }

    /// The wrapped port, once opened.
    pub fn port(&self) -> Option<Arc<ReplayPort>> {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Device for ReplayDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn node_guid(&self) -> u64 {
        self.inner.node_guid()
    }

    fn port_count(&self) -> u8 {
        self.inner.port_count()
    }

    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, Error> {
        let inner = self.inner.open_port(port_num)?;
        if port_num != self.port_num {
            return Ok(inner);
        }
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = opened.as_ref() {
            return Ok(p.clone());
        }
        let p = ReplayPort::new(inner, self.streams.clone());
        *opened = Some(p.clone());
        Ok(p)
    }
}
