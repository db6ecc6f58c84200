//! A test and interop device: a [`Port`] whose management side is a node of an ibsim
//! fabric, with OpenSM as its subnet manager and administrator, and whose data side is a
//! port of an in-process [`SimFabric`] (ibsim carries no data traffic).
//!
//! **Data goes over the simulated fabric; management MADs go to the real subnet
//! manager.** It exists so that the real control plane (`ibpoll-ctrl`) can be driven
//! against OpenSM end to end: joins, leaves and path queries are answered by OpenSM,
//! while the ARP and IPoIB packets they lead to travel between simulated ports. It is not
//! a production driver.
//!
//! What comes from where:
//!
//! | [`Port`] method | source |
//! |---|---|
//! | [`attr`](Port::attr) | ibsim's NodeInfo/PortInfo/P_Key table for the node (what OpenSM wrote: LID, SM LID, GID prefix, state); the state is the simulated port's when that one is not Active |
//! | [`open_mad_channel`](Port::open_mad_channel) | a new [`IbsimMadChannel`] to the node (an ibsim client slot, at most 10 per ibsim), or what the [`MadOpener`] given to [`HybridFabric::open_port_with`] opens (libibumad under umad2sim), teeing requests to the simulated SA (see below) |
//! | [`poll_event`](Port::poll_event) | the simulated port (ibsim has no asynchronous events; OpenSM's changes of LID or a client reregister are not reported) |
//! | `create_ud_qp`, `set_qp_qkey`, `set_qp_pkey_index`, `attach_mcast`, `detach_mcast`, `destroy_ah` | the simulated port, unchanged |
//! | [`create_ah`](Port::create_ah) | the simulated port, with LIDs translated (below) |
//!
//! [`attr`](Port::attr) makes three blocking control calls to ibsim (each bounded by
//! [`DEFAULT_CTL_TIMEOUT`](crate::DEFAULT_CTL_TIMEOUT)); the controller calls it only when
//! it is built and on port events, never per packet.
//!
//! The two fabrics must name the same ports: the ibsim topology gives each host the
//! node GUID of its [`SimDevice`] (a `caguid=0x...` line before the node's `Hca` line;
//! both derive the port GUID as node GUID + port number) and both use the same subnet
//! prefix. [`HybridFabric::open_port`] refuses a port whose GIDs differ.
//!
//! LIDs and MLIDs are the two fabrics' own and may differ. An address handle names a
//! destination by OpenSM's LID (from a PathRecord) or MLID (from an MCMemberRecord), so
//! [`create_ah`](Port::create_ah) translates: a unicast DLID through the map of the
//! ports opened on the same [`HybridFabric`] (OpenSM's LID -> the simulated port's LID,
//! refreshed by every [`attr`](Port::attr)), a multicast DLID through the simulated
//! SA's group of the handle's MGID. A DLID that neither knows is passed on as it is and
//! counted ([`HybridCounters::ah_untranslated`]).
//!
//! The simulated switch replicates multicast by its own SA's groups, so the MAD channel
//! sends every SA request it sends to OpenSM to the simulated SA as well (the *mirror*,
//! on by default): memberships exist on both, and multicast data flows on the simulated
//! fabric. Only OpenSM's answers reach the caller; the mirror's are read, matched by TID
//! (its low 32 bits: the transport owns the rest) and their MAD status compared with OpenSM's
//! ([`HybridCounters::mirror_agreed`] / [`mirror_disagreed`](HybridCounters::mirror_disagreed),
//! the disagreements logged with `tracing`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{
    AddressHandle, AhAttr, Counter, Device, Error as DevError, Mad, MadAddr, MadChannel, Port,
    PortAttr, PortState,
};
use ibpoll_pmd_sim::{SimDevice, SimFabric};
use ibpoll_wire::{Lid, QKey, Qpn};

use crate::{Error, IbsimMadChannel, IbsimPort};

/// MAD byte 1: management class; byte 3: method (bit 7: response); bytes 4..6: status;
/// bytes 8..16: TransactionID.
const MGMT_CLASS: usize = 1;
const METHOD: usize = 3;
const RESPONSE_BIT: u8 = 0x80;
const MGMT_CLASS_SA: u8 = 0x03;
/// Mirror answers remembered for matching (as many as an SA window's worth).
const MIRROR_HISTORY: usize = 256;

/// The TransactionID bits the requester owns: the transport (ibsim) rewrites bits
/// 32..63 of OpenSM's copy, not of the mirror's.
fn tid(m: &Mad) -> u32 {
    u32::from_be_bytes([m[12], m[13], m[14], m[15]])
}

fn status(m: &Mad) -> u16 {
    u16::from_be_bytes([m[4], m[5]])
}

/// What a hybrid port and its MAD channels have counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HybridCounters {
    /// SA requests also sent to the simulated SA.
    pub mirrored: u64,
    /// Mirror sends the simulated SA refused (e.g. its port is down).
    pub mirror_send_errors: u64,
    /// OpenSM answers whose MAD status the simulated SA's answer matched.
    pub mirror_agreed: u64,
    /// OpenSM answers whose MAD status differed from the simulated SA's answer.
    pub mirror_disagreed: u64,
    /// OpenSM answers for which no mirror answer was found.
    pub mirror_unmatched: u64,
    /// Unicast address handles whose DLID was translated to a simulated LID.
    pub ah_unicast_translated: u64,
    /// Multicast address handles whose MLID was translated to the simulated SA's.
    pub ah_mcast_translated: u64,
    /// Address handles created with a DLID neither map knew (passed on unchanged).
    pub ah_untranslated: u64,
    /// `attr` calls that could not reach ibsim and answered from the last query.
    pub attr_stale: u64,
}

#[derive(Debug, Default)]
struct Stats {
    mirrored: Counter,
    mirror_send_errors: Counter,
    mirror_agreed: Counter,
    mirror_disagreed: Counter,
    mirror_unmatched: Counter,
    ah_unicast_translated: Counter,
    ah_mcast_translated: Counter,
    ah_untranslated: Counter,
    attr_stale: Counter,
}

impl Stats {
    fn get(&self) -> HybridCounters {
        HybridCounters {
            mirrored: self.mirrored.get(),
            mirror_send_errors: self.mirror_send_errors.get(),
            mirror_agreed: self.mirror_agreed.get(),
            mirror_disagreed: self.mirror_disagreed.get(),
            mirror_unmatched: self.mirror_unmatched.get(),
            ah_unicast_translated: self.ah_unicast_translated.get(),
            ah_mcast_translated: self.ah_mcast_translated.get(),
            ah_untranslated: self.ah_untranslated.get(),
            attr_stale: self.attr_stale.get(),
        }
    }
}

/// OpenSM's LID of each opened port -> the simulated port's LID.
type LidMap = Mutex<BTreeMap<Lid, Lid>>;

/// Opens a port's MAD channel to OpenSM: ibsim's sockets by default, or another
/// transport (libibumad under ibsim's umad2sim preload, in pmd/verbs' tests).
pub type MadOpener = Arc<dyn Fn() -> Result<Box<dyn MadChannel>, DevError> + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic elsewhere (a failing
    // test) must not cascade.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pairs an ibsim fabric (running OpenSM) with a [`SimFabric`] and opens
/// [`HybridPort`]s on them. See the module docs.
#[derive(Debug, Clone)]
pub struct HybridFabric {
    sim: SimFabric,
    lids: Arc<LidMap>,
    mirror_sa: bool,
}

impl HybridFabric {
    /// Pairs ibsim (found through its abstract sockets when a port is opened) with
    /// `sim`, mirroring SA requests to `sim`'s SA.
    pub fn new(sim: SimFabric) -> HybridFabric {
        HybridFabric {
            sim,
            lids: Arc::new(Mutex::new(BTreeMap::new())),
            mirror_sa: true,
        }
    }

    /// Whether MAD channels opened from now on tee SA requests to the simulated SA
    /// (default true). Without it, no multicast group exists on the simulated switch and
    /// multicast data is dropped there.
    pub fn with_mirror_sa(mut self, on: bool) -> HybridFabric {
        self.mirror_sa = on;
        self
    }

    /// The simulated fabric (the data side).
    pub fn sim(&self) -> &SimFabric {
        &self.sim
    }

    /// Opens the port made of ibsim node `node` and port `port_num` of `dev` (a node of
    /// this fabric's [`SimFabric`]). The ibsim port must be Active (OpenSM has swept it)
    /// and have the same GID as the simulated one.
    pub fn open_port(
        &self,
        node: &str,
        dev: &SimDevice,
        port_num: u8,
    ) -> Result<Arc<HybridPort>, Error> {
        self.open_port_with(node, dev, port_num, None)
    }

    /// [`open_port`](Self::open_port) whose MAD channels to OpenSM `mad` opens (`None`:
    /// ibsim's sockets as the node). The mirror to the simulated SA is as configured.
    pub fn open_port_with(
        &self,
        node: &str,
        dev: &SimDevice,
        port_num: u8,
        mad: Option<MadOpener>,
    ) -> Result<Arc<HybridPort>, Error> {
        let sim = dev.open_port(port_num).map_err(Error::Device)?;
        let mut ctl = IbsimMadChannel::connect(node)?;
        let ib = ctl.port_info()?;
        let sim_attr = sim.attr();
        if !ib.is_active() {
            return Err(Error::NotActive {
                node: node.to_owned(),
            });
        }
        if ib.gid() != sim_attr.gid {
            return Err(Error::Mismatch {
                node: node.to_owned(),
                ibsim: ib.gid(),
                sim: sim_attr.gid,
            });
        }
        lock(&self.lids).insert(ib.lid, sim_attr.lid);
        Ok(Arc::new(HybridPort {
            node: node.to_owned(),
            sim,
            sim_fabric: self.sim.clone(),
            ctl: Mutex::new(ctl),
            last: Mutex::new(ib),
            lids: self.lids.clone(),
            mirror_sa: self.mirror_sa,
            mad: mad.map(Opener),
            stats: Arc::new(Stats::default()),
        }))
    }
}

/// A port whose management side is ibsim/OpenSM and whose data side is a simulated port.
/// A test and interop device; see the module docs.
#[derive(Debug)]
pub struct HybridPort {
    node: String,
    sim: Arc<dyn Port>,
    sim_fabric: SimFabric,
    /// ibsim control calls (port info); not used for MADs.
    ctl: Mutex<IbsimMadChannel>,
    last: Mutex<IbsimPort>,
    lids: Arc<LidMap>,
    mirror_sa: bool,
    /// Opens the MAD channels to OpenSM (`None`: ibsim's sockets).
    mad: Option<Opener>,
    stats: Arc<Stats>,
}

/// A [`MadOpener`] in a port (shown by name only).
struct Opener(MadOpener);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MadOpener")
    }
}

impl HybridPort {
    /// The ibsim node this port is attached to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The ibsim port as last queried.
    pub fn ibsim_port(&self) -> IbsimPort {
        lock(&self.last).clone()
    }

    /// The simulated port (the data side).
    pub fn sim_port(&self) -> &Arc<dyn Port> {
        &self.sim
    }

    /// What the port and its MAD channels have counted.
    pub fn counters(&self) -> HybridCounters {
        self.stats.get()
    }

    fn translate(&self, attr: &AhAttr) -> AhAttr {
        let mut out = *attr;
        if attr.dlid.is_multicast() {
            let mgid = attr.grh.map(|g| g.dgid);
            let mlid = mgid.and_then(|m| {
                self.sim_fabric
                    .with_sa(|sa| sa.group_by_mgid(&m).map(|g| g.mlid))
            });
            match mlid {
                Some(l) => {
                    out.dlid = l;
                    self.stats.ah_mcast_translated.add_shared(1);
                }
                None => self.stats.ah_untranslated.add_shared(1),
            }
        } else {
            match lock(&self.lids).get(&attr.dlid) {
                Some(&l) => {
                    out.dlid = l;
                    self.stats.ah_unicast_translated.add_shared(1);
                }
                None => self.stats.ah_untranslated.add_shared(1),
            }
        }
        out
    }
}

impl Port for HybridPort {
    fn port_num(&self) -> u8 {
        self.sim.port_num()
    }

    fn attr(&self) -> PortAttr {
        let ib = match lock(&self.ctl).port_info() {
            Ok(p) => {
                *lock(&self.last) = p.clone();
                p
            }
            Err(e) => {
                self.stats.attr_stale.add_shared(1);
                tracing::debug!(node = %self.node, error = %e, "ibsim port info: using the last answer");
                lock(&self.last).clone()
            }
        };
        let sim = self.sim.attr();
        if ib.lid != Lid(0) {
            lock(&self.lids).insert(ib.lid, sim.lid);
        }
        let mut a = ib.port_attr();
        a.port_num = sim.port_num;
        if a.pkeys.is_empty() {
            a.pkeys = sim.pkeys;
        }
        if sim.state != PortState::Active {
            a.state = sim.state;
        }
        a
    }

    ibpoll_dev::delegate_port!(sim: events, qp, mcast);

    fn ud_caps(&self) -> ibpoll_dev::UdCaps {
        self.sim.ud_caps()
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, DevError> {
        self.sim.create_ah(&self.translate(attr))
    }

    #[allow(unsafe_code)] // forwarding the caller's precondition
    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), DevError> {
        // SAFETY: the caller's guarantee is the simulated port's precondition too.
        unsafe { self.sim.destroy_ah(ah) }
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, DevError> {
        let osm: Box<dyn MadChannel> = match &self.mad {
            Some(open) => (open.0)()?,
            None => Box::new(
                IbsimMadChannel::connect(&self.node).map_err(|e| DevError::Io {
                    op: "attaching a MAD channel to ibsim",
                    source: std::io::Error::other(e),
                })?,
            ),
        };
        let mirror = if self.mirror_sa {
            let sim_attr = self.sim.attr();
            let to = MadAddr {
                lid: sim_attr.sm_lid,
                qpn: Qpn::GSI,
                qkey: QKey::GSI,
                sl: sim_attr.sm_sl,
                pkey_index: 0,
            };
            Some((self.sim.open_mad_channel()?, to))
        } else {
            None
        };
        Ok(Box::new(HybridMadChannel {
            node: self.node.clone(),
            osm,
            mirror,
            answers: VecDeque::with_capacity(MIRROR_HISTORY),
            stats: self.stats.clone(),
        }))
    }
}

/// QP1 of a [`HybridPort`]: OpenSM through ibsim, SA requests teed to the simulated SA.
#[derive(Debug)]
struct HybridMadChannel {
    node: String,
    osm: Box<dyn MadChannel>,
    mirror: Option<(Box<dyn MadChannel>, MadAddr)>,
    /// (TID, status) of the mirror's recent answers, oldest first.
    answers: VecDeque<(u32, u16)>,
    stats: Arc<Stats>,
}

impl HybridMadChannel {
    fn drain_mirror(&mut self) {
        let Some((m, _)) = &mut self.mirror else {
            return;
        };
        while let Some((a, _)) = m.recv() {
            if self.answers.len() == MIRROR_HISTORY {
                self.answers.pop_front();
            }
            self.answers.push_back((tid(&a), status(&a)));
        }
    }
}

impl MadChannel for HybridMadChannel {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), DevError> {
        self.osm.send(mad, to)?;
        let is_sa_request = mad[MGMT_CLASS] == MGMT_CLASS_SA && mad[METHOD] & RESPONSE_BIT == 0;
        if let (Some((m, sim_sa)), true) = (&mut self.mirror, is_sa_request) {
            self.stats.mirrored.add_shared(1);
            if m.send(mad, *sim_sa).is_err() {
                self.stats.mirror_send_errors.add_shared(1);
            }
        }
        Ok(())
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        self.drain_mirror();
        let (m, from) = self.osm.recv()?;
        if self.mirror.is_some() && m[MGMT_CLASS] == MGMT_CLASS_SA && m[METHOD] & RESPONSE_BIT != 0
        {
            let t = tid(&m);
            match self.answers.iter().position(|(x, _)| *x == t) {
                Some(i) => {
                    let (_, ours) = self.answers.remove(i).expect("found above");
                    if ours == status(&m) {
                        self.stats.mirror_agreed.add_shared(1);
                    } else {
                        self.stats.mirror_disagreed.add_shared(1);
                        tracing::warn!(
                            node = %self.node,
                            tid = format_args!("{t:#x}"),
                            attribute = format_args!("{:#06x}", u16::from_be_bytes([m[16], m[17]])),
                            method = format_args!("{:#04x}", m[METHOD]),
                            opensm = format_args!("{:#06x}", status(&m)),
                            simulated = format_args!("{ours:#06x}"),
                            "the simulated SA answered with another status than OpenSM"
                        );
                    }
                }
                None => self.stats.mirror_unmatched.add_shared(1),
            }
        }
        Some((m, from))
    }
}
