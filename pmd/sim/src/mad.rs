//! The MAD channel: QP1 of a port, with the subnet administrator at the other end.
//! Requests are answered when sent; answers wait in the channel's inbox until their
//! (possibly injected) delay has passed on the fabric's clock.

use std::collections::VecDeque;
use std::sync::Arc;

use ibpoll_dev::{Error, Mad, MadAddr, MadChannel, Nanos, PortState};
use ibpoll_wire::{mad, QKey, Qpn};

use crate::fabric::{Control, Fabric, SM_LID};
use crate::sa::{PathEnd, Requester};

/// Answers waiting for delivery on one channel, in delivery order.
#[derive(Debug, Default)]
pub(crate) struct MadInbox {
    /// (due time, sequence number, answer); kept sorted by (due, seq). Taken from the
    /// front, added mostly at the back (answers fall due in the order they were made).
    pending: VecDeque<(Nanos, u64, Mad)>,
    seq: u64,
}

impl MadInbox {
    fn push(&mut self, due: Nanos, m: Mad) {
        self.seq += 1;
        let key = (due, self.seq);
        let at = self.pending.partition_point(|(d, s, _)| (*d, *s) <= key);
        self.pending.insert(at, (due, self.seq, m));
    }
}

/// Where the SA's answers come from.
const SA_ADDR: MadAddr = MadAddr {
    lid: SM_LID,
    qpn: Qpn::GSI,
    qkey: QKey::GSI,
    sl: 0,
    pkey_index: 0,
};

/// A simulated port's QP1.
#[derive(Debug)]
pub(crate) struct SimMadChannel {
    fabric: Arc<Fabric>,
    port: usize,
    id: usize,
    /// When the first answer in this channel's inbox is due (`None`: the inbox is
    /// empty). Only this channel fills and drains its inbox, so it can keep this copy
    /// and answer `recv` without the fabric lock while nothing is due.
    next_due: Option<Nanos>,
}

impl SimMadChannel {
    pub(crate) fn open(fabric: Arc<Fabric>, port: usize) -> SimMadChannel {
        let id = {
            let mut ctl = fabric.lock();
            ctl.mad_inboxes.push(Some(MadInbox::default()));
            ctl.mad_inboxes.len() - 1
        };
        SimMadChannel {
            fabric,
            port,
            id,
            next_due: None,
        }
    }
}

impl Drop for SimMadChannel {
    fn drop(&mut self) {
        self.fabric.lock().mad_inboxes[self.id] = None;
    }
}

impl MadChannel for SimMadChannel {
    fn send(&mut self, m: &Mad, to: MadAddr) -> Result<(), Error> {
        let now = self.fabric.clock.now();
        let mut ctl = self.fabric.lock();
        let port = &ctl.ports[self.port];
        if port.state != PortState::Active {
            return Err(Error::PortNotActive {
                port: port.num,
                state: port.state,
                op: "sending a MAD",
            });
        }
        if to.lid != SM_LID || to.qpn != Qpn::GSI {
            return Err(Error::MadSend {
                dlid: to.lid,
                dqpn: to.qpn,
                reason: "only the subnet administrator (the SM's LID, QP1) answers here",
            });
        }
        ctl.stats.sa_requests += 1;
        if ctl.pcap.is_some() {
            ctl.clock_now = now;
            let lid = ctl.ports[self.port].lid;
            capture_gsi(&mut ctl, lid, SM_LID, m);
        }
        let answer = sa_answer(&mut ctl, self.port, m);
        let Some(answer) = answer else {
            return Ok(());
        };
        ctl.stats.sa_answers += 1;
        let f = ctl.faults;
        if f.sa_answer_loss > 0.0 && ctl.rng.chance(f.sa_answer_loss) {
            ctl.stats.sa_answers_lost += 1;
            return Ok(());
        }
        let delay = if f.sa_delay_max > f.sa_delay_min {
            Nanos(ctl.rng.range_inclusive(f.sa_delay_min.0, f.sa_delay_max.0))
        } else {
            f.sa_delay_min
        };
        let due = now.saturating_add(delay);
        let dup = f.sa_duplicate > 0.0 && ctl.rng.chance(f.sa_duplicate);
        let inbox = ctl.mad_inboxes[self.id]
            .as_mut()
            .expect("a channel's inbox lives as long as the channel");
        inbox.push(due, answer);
        if dup {
            inbox.push(due, answer);
        }
        self.next_due = inbox.pending.front().map(|(d, _, _)| *d);
        if dup {
            ctl.stats.sa_answers_duplicated += 1;
        }
        Ok(())
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        let now = self.fabric.clock.now();
        match self.next_due {
            Some(due) if due <= now => {}
            _ => return None,
        }
        let mut ctl = self.fabric.lock();
        let inbox = ctl.mad_inboxes[self.id].as_mut()?;
        match inbox.pending.front() {
            Some((due, _, _)) if *due <= now => {
                let (_, _, m) = inbox.pending.pop_front()?;
                self.next_due = inbox.pending.front().map(|(d, _, _)| *d);
                if ctl.pcap.is_some() {
                    ctl.clock_now = now;
                    let lid = ctl.ports[self.port].lid;
                    capture_gsi(&mut ctl, SM_LID, lid, &m);
                }
                Some((m, SA_ADDR))
            }
            _ => None,
        }
    }
}

/// Writes a MAD between a port's QP1 and the SA's to the capture.
fn capture_gsi(ctl: &mut Control, slid: ibpoll_wire::Lid, dlid: ibpoll_wire::Lid, m: &Mad) {
    let ah = ibpoll_dev::AhAttr {
        dlid,
        sl: 0,
        src_path_bits: 0,
        static_rate: ctl.rate,
        grh: None,
    };
    let gid = ibpoll_wire::Gid::default();
    crate::pcap::capture(
        ctl,
        slid,
        Qpn::GSI,
        ibpoll_wire::PKey::DEFAULT,
        &gid,
        &ah,
        Qpn::GSI,
        QKey::GSI,
        m,
    );
}

/// Runs a request past the fault injector and the SA; the answer, if any.
fn sa_answer(ctl: &mut Control, port: usize, m: &Mad) -> Option<Mad> {
    let f = ctl.faults;
    if f.sa_request_loss > 0.0 && ctl.rng.chance(f.sa_request_loss) {
        ctl.stats.sa_requests_lost += 1;
        return None;
    }
    if f.sa_error > 0.0 && ctl.rng.chance(f.sa_error) {
        ctl.stats.sa_errors_injected += 1;
        return mad::error_response(m, f.sa_error_status);
    }
    let requester = Requester {
        port_gid: ctl.port_gid(port),
        lid: ctl.ports[port].lid,
        pkeys: ctl.ports[port].pkeys.clone(),
    };
    let Control {
        sa,
        ports,
        subnet_prefix,
        rate,
        ..
    } = ctl;
    let oracle = |gid: &ibpoll_wire::Gid| {
        if gid.subnet_prefix() != *subnet_prefix {
            return None;
        }
        ports
            .iter()
            .find(|p| p.guid == gid.guid() && p.state == PortState::Active)
            .map(|p| PathEnd {
                lid: p.lid,
                mtu: p.mtu,
                rate: *rate,
                pkeys: p.pkeys.clone(),
            })
    };
    let answer = sa.handle(m, &requester, &oracle);
    ctl.mft_dirty = true;
    ctl.routes_changed();
    answer
}
