//! What the simulator sees of the fabric: every call a controller makes on its port, and
//! a ledger of what the subnet administrator did, by cause.
//!
//! Each controller is given an [`ObsPort`] that wraps its simulated port. It passes every
//! call through and records:
//! - multicast attach/detach per (QPN, MGID): a second attach of an attached QP or a
//!   detach of one not attached is a violation (the kernel's double attach/detach of the
//!   broadcast group during a light flush);
//! - every MAD the controller sends: right after the SA has acted on it, the SA's
//!   memberships of every simulated port are diffed against the ledger, and each change
//!   must be explained by that MAD (a Set from that port for that group may add the bits
//!   it asked for; a Delete may remove them) or by a subnet-manager restart the
//!   simulator made ([`Obs::sync_wipe`]). Anything else is a violation. Grants and
//!   removals are counted per (port, MGID, JoinState bit), so "granted and left exactly
//!   once" is a count at the end;
//! - rule 1 at the SA: a join of any group other than the broadcast group is only sent
//!   while the SA holds this port's full membership of the broadcast group;
//! - the queues of every QP it creates, wrapped so that no packet is received across
//!   partitions ([`crate::partition`]).
//!
//! The SA acts on a request when it is sent (answers are delayed, not requests), so the
//! diff right after `send` is exactly that request's effect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{
    Error, Mad, MadAddr, MadChannel, Nanos, Parked, Port, PortEvent, RxQueue, UdQp, UdQpConfig,
};
use ibpoll_pmd_sim::{PortId, SimFabric};
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{Gid, Lid, Qpn};

use crate::partition::{ObsRx, ObsTx, Partitions};
use crate::trace::Fnv;

/// What changed the SA's memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A request MAD from host `host`.
    Request {
        host: usize,
        method: Method,
        mgid: Gid,
        join_state: JoinState,
    },
    /// A subnet-manager restart made by the simulator.
    Wipe,
    /// Nothing the simulator knows of.
    Nothing,
}

/// Per (host, MGID, JoinState bit) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BitLedger {
    /// Times the SA granted the bit.
    pub granted: u64,
    /// Times a Delete from the port removed it.
    pub left: u64,
    /// Times a subnet-manager restart removed it.
    pub wiped: u64,
}

/// What became of the MCMemberRecord requests (joins and leaves) one port sent for one
/// group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLedger {
    /// Requests sent.
    pub sent: u64,
    /// Joins (Sets) among them.
    pub joins: u64,
    /// Requests the SA never acted on because of the fault schedule: lost on the way,
    /// refused by an injected error, or not sent at all (the port was not Active).
    pub unreached: u64,
    /// Requests the SA received whose answer did not reach the port before the
    /// transaction's deadline (lost, or delayed past `sa_timeout`): the controller could
    /// not learn what they did.
    pub unanswered: u64,
    /// Requests that changed the port's JoinState bits at the SA.
    pub acted: u64,
}

impl RequestLedger {
    /// Requests that failed, as far as the port could tell, because of the fault
    /// schedule.
    pub fn failed(&self) -> u64 {
        self.unreached + self.unanswered
    }
}

/// The shared observation state of one simulated run.
#[derive(Debug)]
pub struct Obs {
    fabric: SimFabric,
    /// Port GIDs of the hosts, by host index.
    gids: Vec<Gid>,
    bcast: Gid,
    /// What the SA holds, as last seen: (host, MGID) -> bits.
    held: BTreeMap<(usize, Gid), JoinState>,
    /// Grant and removal counts.
    pub bits: BTreeMap<(usize, Gid, u8), BitLedger>,
    /// (host, QPN, MGID) attached.
    attached: BTreeSet<(usize, u32, Gid)>,
    /// Hosts whose path queries the simulator drops (an SA that never answers them).
    pub drop_path_queries: Vec<bool>,
    /// Counters for the verbose report.
    pub mads_sent: u64,
    /// Deletes the SA acted on nothing for (unconfirmed leaves, leaves after a wipe).
    pub deletes_noop: u64,
    /// Path queries dropped by the simulator.
    pub paths_dropped: u64,
    /// Everything the SA did, folded in order.
    pub hash: Fnv,
    /// The partition check of every packet received.
    pub partitions: Arc<Mutex<Partitions>>,
    /// What became of every MCMemberRecord request, per (host, MGID).
    pub requests: BTreeMap<(usize, Gid), RequestLedger>,
    /// Requests the SA received and whose answer has not come yet: (host, TID) -> (MGID,
    /// when it was sent).
    awaiting: BTreeMap<(usize, u64), (Option<Gid>, Nanos)>,
    /// The controllers' `sa_timeout`, by host.
    sa_timeouts: Vec<Nanos>,
    /// Per host, how long (in all) some SA transaction of the host was running that the
    /// fault schedule made fail (any request: joins, leaves, path queries): the union of
    /// their `[sent, sent + sa_timeout]` spans, so far.
    pub sa_failing: Vec<Nanos>,
    /// Per host, where that union ends.
    failing_until: Vec<Nanos>,
}

impl Obs {
    /// An observer of `fabric` with no host yet.
    pub fn new(fabric: SimFabric, bcast: Gid) -> Arc<Mutex<Obs>> {
        Arc::new(Mutex::new(Obs {
            gids: Vec::new(),
            bcast,
            held: BTreeMap::new(),
            bits: BTreeMap::new(),
            attached: BTreeSet::new(),
            drop_path_queries: Vec::new(),
            mads_sent: 0,
            deletes_noop: 0,
            paths_dropped: 0,
            hash: Fnv::new(),
            partitions: Arc::new(Mutex::new(Partitions::new(fabric.clone()))),
            requests: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            sa_timeouts: Vec::new(),
            sa_failing: Vec::new(),
            failing_until: Vec::new(),
            fabric,
        }))
    }

    /// Registers a host's port (its controller times SA transactions out after
    /// `sa_timeout`); its index is the host's.
    pub fn add_host(&mut self, gid: Gid, sa_timeout: Nanos) -> usize {
        self.gids.push(gid);
        self.sa_timeouts.push(sa_timeout);
        self.sa_failing.push(Nanos::ZERO);
        self.failing_until.push(Nanos::ZERO);
        self.drop_path_queries.push(false);
        self.gids.len() - 1
    }

    /// The memberships the SA holds for host `host`, as last seen.
    pub fn held_by(&self, host: usize) -> Vec<(Gid, JoinState)> {
        self.held
            .iter()
            .filter(|((h, _), _)| *h == host)
            .map(|((_, g), js)| (*g, *js))
            .collect()
    }

    /// Whether the SA holds any membership of `host` in `mgid`.
    pub fn holds(&self, host: usize, mgid: &Gid) -> bool {
        self.held.contains_key(&(host, *mgid))
    }

    /// The MGIDs QP `qpn` of host `host` is attached to.
    pub fn attached_of(&self, host: usize, qpn: Qpn) -> Vec<Gid> {
        self.attached
            .iter()
            .filter(|(h, q, _)| *h == host && *q == qpn.get())
            .map(|(_, _, g)| *g)
            .collect()
    }

    fn read_sa(&self) -> BTreeMap<(usize, Gid), JoinState> {
        let gids = &self.gids;
        self.fabric.with_sa(|sa| {
            let mut m = BTreeMap::new();
            for (h, gid) in gids.iter().enumerate() {
                for (mgid, js) in sa.memberships_of(gid) {
                    m.insert((h, mgid), js);
                }
            }
            m
        })
    }

    fn sync(&mut self, cause: Cause) {
        let now = self.read_sa();
        let keys: BTreeSet<(usize, Gid)> = self.held.keys().chain(now.keys()).copied().collect();
        let mut changed = false;
        for key in keys {
            let old = self.held.get(&key).copied().unwrap_or(JoinState::NONE);
            let new = now.get(&key).copied().unwrap_or(JoinState::NONE);
            if old == new {
                continue;
            }
            changed = true;
            let (host, mgid) = key;
            let added = new.difference(old);
            let removed = old.difference(new);
            self.hash.u64(host as u64);
            self.hash.bytes(&mgid.0);
            self.hash
                .u64(u64::from(added.bits()) << 8 | u64::from(removed.bits()));
            if debug_on() {
                let t = self.fabric.clock().now().as_duration();
                eprintln!("{t:?} SA host {host} {mgid} {old:?} -> {new:?} by {cause:?}");
            }
            let explained_add = added.is_empty()
                || matches!(cause, Cause::Request { host: h, method, mgid: g, join_state }
                    if h == host && method == Method::SET && g == mgid && join_state.contains(added));
            let explained_remove = removed.is_empty()
                || cause == Cause::Wipe
                || matches!(cause, Cause::Request { host: h, method, mgid: g, join_state }
                    if h == host && method == Method::DELETE && g == mgid && join_state.contains(removed));
            assert!(
                explained_add && explained_remove,
                "SA membership of host {host} in {mgid} changed {old:?} -> {new:?}, cause {cause:?}"
            );
            for bit in 0..4u8 {
                let b = JoinState::from_bits_truncate(1 << bit);
                let e = self.bits.entry((host, mgid, 1 << bit)).or_default();
                if added.contains(b) {
                    e.granted += 1;
                }
                if removed.contains(b) {
                    if cause == Cause::Wipe {
                        e.wiped += 1;
                    } else {
                        e.left += 1;
                    }
                }
                // Granted and removed alternate: never removed more often than granted,
                // never granted twice without a removal in between.
                assert!(
                    e.granted >= e.left + e.wiped && e.granted <= e.left + e.wiped + 1,
                    "host {host} {mgid} bit {b:?}: {e:?}"
                );
            }
        }
        if !changed {
            if let Cause::Request {
                method: Method::DELETE,
                ..
            } = cause
            {
                self.deletes_noop += 1;
            }
        }
        self.held = now;
    }

    /// Requests whose answer has not come by their deadline count as unanswered.
    pub fn expire_requests(&mut self, now: Nanos) {
        let late: Vec<_> = self
            .awaiting
            .iter()
            .filter(|((host, _), (_, sent))| now.saturating_sub(*sent) > self.sa_timeouts[*host])
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((host, tid), (mgid, sent)) in late {
            self.awaiting.remove(&(host, tid));
            self.failed(host, mgid, sent);
        }
    }

    /// A transaction of `host` sent at `sent` (for group `mgid`, if any) failed by the
    /// fault schedule.
    fn failed(&mut self, host: usize, mgid: Option<Gid>, sent: Nanos) {
        if let Some(mgid) = mgid {
            self.requests.entry((host, mgid)).or_default().unanswered += 1;
        }
        let end = sent.saturating_add(self.sa_timeouts[host]);
        let from = sent.max(self.failing_until[host]);
        self.sa_failing[host] = self.sa_failing[host].saturating_add(end.saturating_sub(from));
        self.failing_until[host] = self.failing_until[host].max(end);
    }

    /// The simulator restarted the subnet manager: every change since is the wipe's.
    pub fn sync_wipe(&mut self) {
        self.sync(Cause::Wipe);
    }

    /// Asserts that the SA changed nothing since the last sync.
    pub fn sync_nothing(&mut self) {
        self.sync(Cause::Nothing);
    }

    /// Checks at the end: every grant was removed exactly once.
    pub fn check_balanced(&self) {
        for ((host, mgid, bit), e) in &self.bits {
            assert_eq!(
                e.granted,
                e.left + e.wiped,
                "host {host}: membership {mgid} bit {bit:#x} granted {} times, left {}, wiped {}",
                e.granted,
                e.left,
                e.wiped
            );
        }
    }
}

fn lock(obs: &Mutex<Obs>) -> MutexGuard<'_, Obs> {
    obs.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_parts(p: &Mutex<Partitions>) -> MutexGuard<'_, Partitions> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port that records what its controller does with it.
#[derive(Debug)]
pub struct ObsPort {
    inner: Arc<dyn Port>,
    host: usize,
    port_id: PortId,
    obs: Arc<Mutex<Obs>>,
}

impl ObsPort {
    /// Wraps `inner`, the port `port_id` of host `host`.
    pub fn new(
        inner: Arc<dyn Port>,
        host: usize,
        port_id: PortId,
        obs: Arc<Mutex<Obs>>,
    ) -> ObsPort {
        ObsPort {
            inner,
            host,
            port_id,
            obs,
        }
    }
}

impl Port for ObsPort {
    ibpoll_dev::delegate_port!(inner: info, ah);

    fn poll_event(&self) -> Option<PortEvent> {
        self.inner.poll_event()
    }

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        let qp = self.inner.create_ud_qp(cfg)?;
        let qpn = qp.qpn;
        let parts = lock(&self.obs).partitions.clone();
        let id = lock_parts(&parts).add_qp(self.host, self.port_id, qpn.get(), cfg.pkey_index);
        let rx = qp
            .rx
            .into_iter()
            .map(|inner| {
                Box::new(ObsRx {
                    inner,
                    qp: id,
                    parts: parts.clone(),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = Box::new(ObsTx {
            inner: qp.tx,
            qp: id,
            parts: parts.clone(),
        });
        Ok(UdQp::new(qpn, rx, tx))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: ibpoll_wire::QKey) -> Result<(), Error> {
        self.inner.set_qp_qkey(qpn, qkey)
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        let n = self.inner.move_qp_pkey_index(parked, pkey_index)?;
        let parts = lock(&self.obs).partitions.clone();
        lock_parts(&parts).set_pkey_index(self.host, parked.qpn().get(), pkey_index);
        Ok(n)
    }

    fn attach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        let fresh = lock(&self.obs)
            .attached
            .insert((self.host, qpn.get(), *mgid));
        assert!(
            fresh,
            "host {}: QP {qpn:?} attached twice to {mgid}",
            self.host
        );
        self.inner.attach_mcast(qpn, mgid, mlid)
    }

    fn detach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        let was = lock(&self.obs)
            .attached
            .remove(&(self.host, qpn.get(), *mgid));
        assert!(
            was,
            "host {}: QP {qpn:?} detached from {mgid} it was not attached to",
            self.host
        );
        self.inner.detach_mcast(qpn, mgid, mlid)
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        Ok(Box::new(ObsMad {
            inner: self.inner.open_mad_channel()?,
            host: self.host,
            obs: self.obs.clone(),
        }))
    }
}

/// A MAD channel that checks and records every request.
#[derive(Debug)]
struct ObsMad {
    inner: Box<dyn MadChannel>,
    host: usize,
    obs: Arc<Mutex<Obs>>,
}

impl MadChannel for ObsMad {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), Error> {
        let parsed = SaMad::parse(mad).ok();
        let mut obs = lock(&self.obs);
        obs.mads_sent += 1;
        obs.sync_nothing();
        let mut cause = Cause::Nothing;
        if let Some(m) = &parsed {
            let method = m.header.mad.method;
            match &m.attribute {
                Attribute::McMember(r) => {
                    if method == Method::SET && r.mgid != obs.bcast {
                        let b = obs.bcast;
                        let held = obs.held.get(&(self.host, b)).copied();
                        assert!(
                            held.is_some_and(|js| js.contains(JoinState::FULL_MEMBER)),
                            "host {}: join of {} sent while the SA holds no broadcast membership ({held:?})",
                            self.host,
                            r.mgid
                        );
                    }
                    cause = Cause::Request {
                        host: self.host,
                        method,
                        mgid: r.mgid,
                        join_state: r.join_state,
                    };
                }
                Attribute::PathRecord(_) if obs.drop_path_queries[self.host] => {
                    obs.paths_dropped += 1;
                    let now = obs.fabric.clock().now();
                    obs.failed(self.host, None, now);
                    return Ok(());
                }
                _ => {}
            }
        }
        if debug_on() {
            let t = obs.fabric.clock().now().as_duration();
            eprintln!("{t:?} MAD host {} {cause:?}", self.host);
        }
        let before = obs.fabric.stats();
        drop(obs);
        let r = self.inner.send(mad, to);
        let mut obs = lock(&self.obs);
        let held_before = match cause {
            Cause::Request { host, mgid, .. } => obs.held.get(&(host, mgid)).copied(),
            _ => None,
        };
        obs.sync(cause);
        let after = obs.fabric.stats();
        let now = obs.fabric.clock().now();
        let unreached = r.is_err()
            || after.sa_requests_lost > before.sa_requests_lost
            || after.sa_errors_injected > before.sa_errors_injected;
        let mut group = None;
        if let Cause::Request {
            host, mgid, method, ..
        } = cause
        {
            group = Some(mgid);
            let acted = obs.held.get(&(host, mgid)).copied() != held_before;
            let e = obs.requests.entry((host, mgid)).or_default();
            e.sent += 1;
            if method == Method::SET {
                e.joins += 1;
            }
            if acted {
                e.acted += 1;
            }
            if unreached {
                e.unreached += 1;
            }
        }
        if unreached {
            obs.failed(self.host, None, now);
        } else if let Some(m) = &parsed {
            obs.awaiting
                .insert((self.host, m.header.mad.transaction_id), (group, now));
        }
        r
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        let got = self.inner.recv();
        if let Some((mad, _)) = &got {
            if let Ok(m) = SaMad::parse(mad) {
                let tid = m.header.mad.transaction_id;
                let mut obs = lock(&self.obs);
                if let Some((mgid, sent)) = obs.awaiting.remove(&(self.host, tid)) {
                    let now = obs.fabric.clock().now();
                    if now.saturating_sub(sent) > obs.sa_timeouts[self.host] {
                        obs.failed(self.host, mgid, sent);
                    }
                }
            }
        }
        got
    }
}

/// `SIMTEST_DEBUG=1` prints every change of the SA's memberships (for replaying a seed).
pub(crate) fn debug_on() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SIMTEST_DEBUG").is_some())
}
