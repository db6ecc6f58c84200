//! The control plane fed arbitrary input: the body of the `ctrl` fuzz target
//! (`fuzz/fuzz_targets/ctrl.rs`), kept here so that the workspace builds it and a stable
//! test runs its seed corpus (`tests/ctrl_fuzz.rs`).
//!
//! One controller runs on a port of the simulated fabric (real QP, address handles,
//! attachments, port state), but its SA is the input: every MAD the controller sends is
//! noted, and the input decides what comes back, when, how often and how mangled.
//! [`run`] decodes the input as a sequence of operations, one byte of opcode and a few
//! bytes of arguments each (running out of input reads zeros and ends the run):
//!
//! * answer a request the controller sent (status, MLID, Q_Key, MTU, JoinState, MGID
//!   and TID drawn from the input; sometimes twice), or some bytes of it mangled;
//! * a raw 256-byte MAD from the input;
//! * a port event: the fabric's port down or up, a subnet-manager restart, a new P_Key
//!   table or LID, or an event with nothing behind it;
//! * time passing (from nothing to 20 s);
//! * an ARP packet to the control core, built (any operation, addresses and hardware
//!   address) or raw bytes;
//! * subscriptions, unsubscriptions, interface up and down;
//! * packets from a data core for a group or a next hop.
//!
//! After each operation the controller polls until idle (its events handled as the stack
//! would), and [`Harness::check`] asserts: the published snapshot equals one built from
//! scratch (`Controller::check_snapshot`); no group is Joined that the input did not
//! grant (an OK answer to a join of that MGID with the join's TID); the link is up only
//! while the broadcast group is Joined (or a light flush keeps it); every table, queue
//! and the SA window within its bound. At the end every buffer is back in its pool.
//! Nothing may panic but these asserts.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_ctrl::{
    Controller, CtrlConfig, CtrlEvent, DataCore, FlushLevel, GroupAddr, GroupPhase, Poll, Request,
};
use ibpoll_dev::{Clock, Device, Error, Mad, MadAddr, MadChannel, Nanos, Port, PortEvent};
use ibpoll_mem::Mempool;
use ibpoll_pmd_sim::{FabricConfig, PortId};
use ibpoll_testkit::data::{self, Direct, IpoibQp};
use ibpoll_testkit::host::Net;
use ibpoll_wire::ipoib::{self, EtherType, HwAddr};
use ibpoll_wire::mad::{Method, Status, MAD_LEN};
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{arp, path_record, Gid, IbMtu, Lid, PKey, QKey, Qpn, Rate};

/// Groups the input can name (besides the broadcast group).
const GROUPS: u8 = 12;
/// Polls per operation at most (a poll does bounded work; idle comes long before).
const POLLS_MAX: usize = 200;
/// The harness's own bound on what it keeps of the controller's requests.
const SENT_MAX: usize = 4096;

/// What the fake SA has seen and has to deliver.
#[derive(Debug, Default)]
struct FakeSa {
    /// Every request the controller sent, in order (the last `SENT_MAX`).
    sent: VecDeque<SaMad>,
    /// Answers waiting for the controller's next `recv`.
    inbox: VecDeque<Mad>,
    /// Events waiting for the controller's next `poll_event`, before the fabric's.
    events: VecDeque<PortEvent>,
    /// MGIDs the input granted: an OK answer to a join of that MGID with its TID.
    granted: BTreeSet<Gid>,
}

impl FakeSa {
    /// Queues `mad` for the controller and notes what it grants.
    fn deliver(&mut self, mad: Mad) {
        if let Ok(m) = SaMad::parse(&mad) {
            let h = &m.header.mad;
            if let Attribute::McMember(rec) = &m.attribute {
                let joined =
                    h.method == Method::GET_RESP && h.status.is_ok() && self.sent.iter().any(|s| {
                        // The SA client matches the low 32 bits (the transport owns
                        // the high ones, as umad does).
                        s.header.mad.transaction_id as u32 == h.transaction_id as u32
                            && s.header.mad.method == Method::SET
                            && matches!(&s.attribute, Attribute::McMember(r) if r.mgid == rec.mgid)
                    });
                if joined {
                    self.granted.insert(rec.mgid);
                }
            }
        }
        self.inbox.push_back(mad);
    }
}

fn lock(sa: &Mutex<FakeSa>) -> MutexGuard<'_, FakeSa> {
    sa.lock().unwrap_or_else(|e| e.into_inner())
}

/// The simulated port, its SA and its extra events replaced by the input.
#[derive(Debug)]
struct FuzzPort {
    inner: Arc<dyn Port>,
    sa: Arc<Mutex<FakeSa>>,
}

impl Port for FuzzPort {
    ibpoll_dev::delegate_port!(inner: info, qp, ah, mcast);

    fn poll_event(&self) -> Option<PortEvent> {
        let fake = lock(&self.sa).events.pop_front();
        fake.or_else(|| self.inner.poll_event())
    }
    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        Ok(Box::new(FuzzMad {
            sa: self.sa.clone(),
            from: MadAddr {
                lid: self.inner.attr().sm_lid,
                qpn: Qpn::GSI,
                qkey: QKey::GSI,
                sl: 0,
                pkey_index: 0,
            },
        }))
    }
}

/// QP1 with the input at the other end.
#[derive(Debug)]
struct FuzzMad {
    sa: Arc<Mutex<FakeSa>>,
    from: MadAddr,
}

impl MadChannel for FuzzMad {
    fn send(&mut self, mad: &Mad, _to: MadAddr) -> Result<(), Error> {
        let m = SaMad::parse(mad).expect("the controller sends well-formed SA MADs");
        let mut sa = lock(&self.sa);
        if sa.sent.len() == SENT_MAX {
            sa.sent.pop_front();
        }
        sa.sent.push_back(m);
        Ok(())
    }
    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        lock(&self.sa).inbox.pop_front().map(|m| (m, self.from))
    }
}

/// The input, read a byte at a time; zeros once it runs out.
#[derive(Debug)]
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// One controller, its port, its data core's queues and the fake SA.
#[derive(Debug)]
struct Harness {
    net: Net,
    port_id: PortId,
    port: Arc<dyn Port>,
    /// Every QPN of the interface.
    own: Vec<Qpn>,
    /// The data cores' send and receive queues.
    tx: Box<dyn ibpoll_dev::TxQueue>,
    rx: Box<dyn ibpoll_dev::RxQueue>,
    ctl: Controller,
    cores: Vec<DataCore>,
    pool: Mempool,
    cfg: CtrlConfig,
    sa: Arc<Mutex<FakeSa>>,
    known: Vec<Gid>,
    next_lid: u16,
    seq: u32,
    /// From the start of a light flush until the broadcast group is Joined again (or the
    /// link goes down): the link stays up by design (DESIGN rule 8) meanwhile.
    light_window: bool,
}

/// Our IPv4 address.
const OUR_IP: [u8; 4] = [10, 0, 0, 1];

fn config(b: u8) -> CtrlConfig {
    let pick = |xs: &[usize], shift: u8| xs[usize::from(b >> shift) % xs.len()];
    CtrlConfig {
        ipv4: Some(OUR_IP),
        data_cores: 1 + usize::from(b & 1),
        ring_size: pick(&[4, 64], 1),
        groups_max: pick(&[4, 8, 64], 2),
        neigh_max: pick(&[2, 16], 4),
        sa_window: pick(&[1, 2, 8, 64], 5),
        flush_max: Nanos::from_secs(if b & 0x80 != 0 { 10 } else { 60 }),
        ..CtrlConfig::default()
    }
}

impl Harness {
    fn new(cfg_byte: u8) -> Harness {
        let net = Net::with(FabricConfig::default());
        let dev = net.fabric.add_node("fuzz", 1);
        let sa = Arc::new(Mutex::new(FakeSa::default()));
        let port: Arc<dyn Port> = Arc::new(FuzzPort {
            inner: dev.open_port(1).expect("port 1"),
            sa: sa.clone(),
        });
        let cfg = config(cfg_byte);
        let pool = data::pool("ctrlfuzz", 256);
        let pkey_index = port.attr().pkey_index(cfg.pkey).expect("default partition");
        let IpoibQp {
            qpn: _,
            ctl: ctl_qps,
            tx,
            rx,
            own,
        } = data::ipoib_qp(&*port, pkey_index, &pool, 32);
        let clock: Arc<dyn Clock> = net.clock.clone();
        let (ctl, cores) = Controller::new(cfg.clone(), port.clone(), ctl_qps, pool.clone(), clock)
            .expect("controller");
        let mut known = vec![ipoib::broadcast_mgid(cfg.pkey)];
        known.extend((0..GROUPS).filter_map(|i| ctl.mgid_of(group(i))));
        Harness {
            port_id: dev.port_id(1),
            net,
            port,
            own,
            tx,
            rx,
            ctl,
            cores,
            pool,
            cfg,
            sa,
            known,
            next_lid: 0x200,
            seq: 0,
            light_window: false,
        }
    }

    /// One operation from the input.
    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % 10 {
            0 | 1 => self.answer(input, false),
            2 => self.answer(input, true),
            3 => {
                let mut mad = [0u8; MAD_LEN];
                let n = usize::from(input.u8());
                for (i, b) in input.bytes(n).into_iter().enumerate() {
                    mad[i % MAD_LEN] = b;
                }
                lock(&self.sa).deliver(mad);
            }
            4 => self.port_change(input),
            5 => {
                const DT_MS: [u64; 8] = [0, 1, 10, 100, 500, 1000, 5000, 20_000];
                let dt = DT_MS[usize::from(input.u8() % 8)];
                self.net.clock.advance(Nanos::from_millis(dt));
            }
            6 => self.arp(input),
            7 => {
                let g = group(input.u8() % GROUPS);
                match input.u8() % 3 {
                    0 => {
                        self.ctl.join_group(g);
                    }
                    1 => self.ctl.leave_group(g),
                    _ => self.ctl.set_admin_up(input.u8() & 1 == 0),
                }
            }
            _ => self.data_core_send(input),
        }
    }

    /// Answers one of the requests the controller sent (`mangle`: then flips some bytes).
    fn answer(&mut self, input: &mut Input<'_>, mangle: bool) {
        let mut sa = lock(&self.sa);
        if sa.sent.is_empty() {
            return;
        }
        // Mostly the latest requests: that is where the transactions in flight are.
        let back = usize::from(input.u8() % 16).min(sa.sent.len() - 1);
        let mut m = sa.sent[sa.sent.len() - 1 - back];
        const STATUS: [u16; 8] = [0, 0, 0, 0, 0x0200, 0x0100, 0x0001, 0x0c00];
        let s = input.u8();
        m.header.mad.status = Status(if s < 0xf0 {
            STATUS[usize::from(s % 8)]
        } else {
            input.u16()
        });
        m.header.mad.method = match m.header.mad.method {
            Method::DELETE => Method::DELETE_RESP,
            // The startup cleanup's listing (echoed: no records).
            Method::GET_TABLE => Method::GET_TABLE_RESP,
            _ => Method::GET_RESP,
        };
        if input.u8() & 0x0f == 0 {
            m.header.mad.transaction_id ^= u64::from(input.u8());
        }
        match &mut m.attribute {
            Attribute::McMember(r) => {
                r.mlid = Lid(0xC000 | u16::from(input.u8()));
                let q = input.u8();
                if q & 3 == 0 {
                    r.qkey = QKey(input.u32());
                } else if r.qkey.0 == 0 {
                    r.qkey = QKey::IPOIB_DEFAULT;
                }
                let mtu = input.u8();
                r.mtu = if mtu < 0xf0 { 1 + mtu % 5 } else { mtu & 0x3f };
                r.rate = Rate(2 + input.u8() % 16);
                let js = input.u8();
                if js & 0xf0 == 0xf0 {
                    r.join_state = JoinState::from_bits_truncate(js);
                }
                if input.u8() == 0xff {
                    r.mgid = self.known[usize::from(input.u8()) % self.known.len()];
                }
            }
            Attribute::PathRecord(p) => {
                let dgid = p.dgid;
                *p = path_record::Repr {
                    dgid,
                    sgid: p.sgid,
                    dlid: Lid(input.u16()),
                    slid: Lid(1),
                    pkey: PKey(if input.u8() & 7 == 0 {
                        input.u16()
                    } else {
                        0xffff
                    }),
                    mtu: 1 + input.u8() % 5,
                    rate: Rate(2 + input.u8() % 16),
                    sl: input.u8() & 0x0f,
                    ..path_record::Repr::default()
                };
            }
            Attribute::Other => {}
        }
        let mut bytes = m.to_bytes();
        if mangle {
            for _ in 0..1 + input.u8() % 4 {
                let at = usize::from(input.u8());
                bytes[at] ^= input.u8() | 1;
            }
        }
        let twice = input.u8() & 7 == 0;
        sa.deliver(bytes);
        if twice {
            sa.deliver(bytes);
        }
    }

    fn port_change(&mut self, input: &mut Input<'_>) {
        let f = &self.net.fabric;
        match input.u8() % 8 {
            0 => f.set_port_up(self.port_id, false),
            1 => f.set_port_up(self.port_id, true),
            2 => f.restart_sm(
                [None, Some(IbMtu::Mtu1024), Some(IbMtu::Mtu4096)][usize::from(input.u8() % 3)],
            ),
            3 => {
                let other = PKey(0x8001);
                let t = match input.u8() % 4 {
                    0 => vec![self.cfg.pkey],
                    1 => vec![self.cfg.pkey, other],
                    2 => vec![other, self.cfg.pkey],
                    _ => vec![other],
                };
                f.set_pkeys(self.port_id, t);
            }
            4 => {
                self.next_lid = self.next_lid.wrapping_add(1).max(1);
                f.set_lid(self.port_id, Lid(self.next_lid));
            }
            _ => {
                const EVENTS: [PortEvent; 6] = [
                    PortEvent::Active,
                    PortEvent::Error,
                    PortEvent::LidChange,
                    PortEvent::PkeyChange,
                    PortEvent::ClientReregister,
                    PortEvent::SmChange,
                ];
                let ev = EVENTS[usize::from(input.u8() % 6)];
                lock(&self.sa).events.push_back(ev);
            }
        }
    }

    /// An ARP packet for the control core, from a data core's ring.
    fn arp(&mut self, input: &mut Input<'_>) {
        let Some(mut m) = self.pool.alloc() else {
            return;
        };
        let kind = input.u8();
        if kind & 3 == 0 {
            let n = usize::from(input.u8() % 96);
            let bytes = input.bytes(n);
            if let Some(d) = m.append(n) {
                d.copy_from_slice(&bytes);
            }
        } else {
            let d = m
                .append(ipoib::HEADER_LEN + arp::PACKET_LEN)
                .expect("a buffer holds an ARP packet");
            ipoib::Repr {
                ethertype: EtherType::ARP,
            }
            .emit(&mut ipoib::Packet::new_unchecked(
                &mut d[..ipoib::HEADER_LEN],
            ));
            let gid = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, u64::from(input.u8()));
            let source_ip = [10, 0, input.u8() & 1, input.u8() % 8];
            let target_ip = if input.u8() & 3 == 0 {
                [10, 0, 0, input.u8()]
            } else {
                OUR_IP
            };
            let repr = arp::Repr {
                operation: if kind & 4 == 0 {
                    arp::Operation::Request
                } else {
                    arp::Operation::Reply
                },
                source_hwaddr: HwAddr::new(
                    input.u8() & 0x80,
                    Qpn::new(input.u32() & 0xff_ffff).unwrap_or(Qpn::GSI),
                    gid,
                ),
                source_ip,
                target_hwaddr: HwAddr::new(0, Qpn::GSI, Gid([0; 16])),
                target_ip,
            };
            repr.emit(&mut arp::Packet::new_unchecked(&mut d[ipoib::HEADER_LEN..]));
        }
        let core = usize::from(input.u8()) % self.cores.len();
        // A full ring hands the request back; the data core frees the packet.
        let _ = self.cores[core].requests.send(Request::Arp { mbuf: m });
    }

    /// A data core's packet: through its snapshot if it has the destination, else to the
    /// control core.
    fn data_core_send(&mut self, input: &mut Input<'_>) {
        self.seq = self.seq.wrapping_add(1);
        let Some(m) = data::seq_packet(&self.pool, self.seq) else {
            return;
        };
        let core = usize::from(input.u8()) % self.cores.len();
        let b = input.u8();
        let g = group((b >> 1) % GROUPS);
        let hop = [10, 0, 0, (b >> 1) % 8];
        let c = &mut self.cores[core];
        let tx = &mut *self.tx;
        let left = if b & 1 == 0 {
            let Some(mgid) = self.ctl.mgid_of(g) else {
                return;
            };
            data::send_direct(c, tx, Direct::Group(&mgid), m)
                .map_err(|mbuf| Request::Mcast { group: g, mbuf })
        } else {
            data::send_direct(c, tx, Direct::NextHop(&hop), m).map_err(|mbuf| Request::Resolve {
                next_hop: hop,
                mbuf,
            })
        };
        if let Err(req) = left {
            // A full ring hands the request back; the data core frees the packet.
            let _ = c.requests.send(req);
        }
    }

    /// Polls until idle, handling events as the stack does.
    fn settle(&mut self) {
        for _ in 0..POLLS_MAX {
            let busy = self.ctl.poll() == Poll::Busy;
            self.note_light_window();
            for c in &mut self.cores {
                c.reader.quiescent();
            }
            while let Some(ev) = self.ctl.take_event() {
                if let CtrlEvent::RebuildQp { pkey_index } = ev {
                    let mut ok = true;
                    for &qpn in &self.own {
                        // SAFETY: the harness plays the lane and the control core; no
                        // queue of the QP is in use during the call.
                        let parked = unsafe { ibpoll_dev::Parked::assume(qpn) };
                        ok &= self.port.move_qp_pkey_index(&parked, pkey_index).is_ok();
                    }
                    self.ctl.qps_moved(ok);
                }
            }
            if !busy {
                break;
            }
        }
        data::drain_rx(&mut *self.rx, &self.own, |_, m| drop(m));
    }

    fn note_light_window(&mut self) {
        if self.ctl.flush_level() == Some(FlushLevel::Light) {
            self.light_window = true;
        }
        let bcast = GroupAddr::Mgid(self.known[0]);
        let bcast_joined = self.ctl.group_phase(bcast) == Some(GroupPhase::Joined);
        if !self.ctl.link_up() || (!self.ctl.is_flushing() && bcast_joined) {
            self.light_window = false;
        }
    }

    /// The invariants, after every operation.
    fn check(&mut self) {
        if let Err(e) = self.ctl.check_snapshot() {
            panic!("the published snapshot differs from a fresh build: {e}");
        }
        let bcast = GroupAddr::Mgid(self.known[0]);
        let bcast_joined = self.ctl.group_phase(bcast) == Some(GroupPhase::Joined);
        if self.ctl.link_up() {
            assert!(
                bcast_joined || self.light_window,
                "link up without the broadcast group Joined"
            );
        }
        let granted = &lock(&self.sa).granted;
        for mgid in &self.known {
            let g = GroupAddr::Mgid(*mgid);
            if self.ctl.group_phase(g) == Some(GroupPhase::Joined) {
                assert!(
                    granted.contains(mgid),
                    "{mgid} Joined without a granted join"
                );
            }
            assert!(self.ctl.group_queued(g) <= self.cfg.mcast_queue_max);
        }
        let cfg = &self.cfg;
        assert!(self.ctl.group_count() <= cfg.groups_max, "groups");
        assert!(self.ctl.neighbour_count() <= cfg.neigh_max, "neighbours");
        assert!(self.ctl.sa_in_flight() <= cfg.sa_window, "SA window");
        assert!(
            self.ctl.mcast_queued() <= cfg.groups_max * cfg.mcast_queue_max,
            "multicast queues"
        );
        assert!(
            self.ctl.neigh_queued() <= cfg.neigh_max * cfg.neigh_queue_max,
            "neighbour queues"
        );
        for c in &self.cores {
            assert!(c.requests.len() <= cfg.ring_size, "request ring");
        }
    }
}

/// The group `i` the input names.
fn group(i: u8) -> GroupAddr {
    GroupAddr::Ipv4([239, 2, 0, i])
}

/// How far one input got (for tests that check a corpus reaches something).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Operations run.
    pub ops: u64,
    /// The link was up after some operation.
    pub link_up: bool,
    /// The most groups Joined at once, broadcast included.
    pub joined_max: usize,
    /// The most neighbours with a published entry at once.
    pub neighbours_max: usize,
    /// Flushes started.
    pub flushes: u64,
    /// Packets the controller sent.
    pub tx_sent: u64,
}

/// Runs one input (see the module docs); panics when an invariant breaks.
pub fn run(data: &[u8]) -> Reached {
    let mut input = Input { data, pos: 0 };
    let mut h = Harness::new(input.u8());
    let mut r = Reached::default();
    while !input.done() {
        h.op(&mut input);
        h.settle();
        h.check();
        r.ops += 1;
        r.link_up |= h.ctl.link_up();
        let joined = h
            .known
            .iter()
            .filter(|m| h.ctl.group_phase(GroupAddr::Mgid(**m)) == Some(GroupPhase::Joined))
            .count();
        r.joined_max = r.joined_max.max(joined);
        r.neighbours_max = r.neighbours_max.max(h.ctl.snapshot().neighbour_count());
    }
    let s = h.ctl.stats();
    r.flushes = s.flushes_light + s.flushes_normal + s.flushes_heavy;
    r.tx_sent = s.tx_sent;
    let pool = h.pool.clone();
    drop(h);
    assert_eq!(pool.in_use(), 0, "buffers never came back");
    r
}
