//! ARP over IPoIB and the neighbour table: IP address -> hardware address -> PathRecord
//! -> address handle, with at most `neigh_queue_max` packets waiting per unresolved
//! neighbour and ageing of unused entries. IPv4 neighbours are resolved by ARP, IPv6
//! ones by neighbour discovery (`nd`); from the hardware address on both are the same.
//!
//! ```text
//! Incomplete { tries, next_arp_at }   ARP request sent to the broadcast group (IPv6: a
//!                                     Neighbor Solicitation to the solicited-node group)
//! Resolving  { hwaddr, tid, old }     hardware address known; path resolution (tid)
//! Reachable  { entry }                published: remote QPN + address handle
//! ```
//!
//! All requests for one destination arrive on the control core, one after another, so
//! two data cores asking for the same new destination at once make one entry. A
//! ClientReregister revalidates every path (Reachable -> Resolving with the old entry
//! still published until the new path replaces it); a normal or heavy flush drops the
//! table.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

use ibpoll_dev::{AhAttr, Nanos};
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipoib::{self, HwAddr};
use ibpoll_wire::{arp, QKey};

use crate::controller::{Controller, FlushLevel};
use crate::link::Tid;
use crate::nh::NhSlot;
use crate::snapshot::Neighbour;

/// The resolution state of one neighbour.
#[derive(Debug)]
pub(crate) enum NeighState {
    Incomplete {
        tries: u8,
        next_arp_at: Nanos,
    },
    Resolving {
        hwaddr: HwAddr,
        tid: Option<Tid>,
        old: Option<Arc<Neighbour>>,
    },
    Reachable {
        entry: Arc<Neighbour>,
    },
}

/// One neighbour of the table.
#[derive(Debug)]
pub(crate) struct Neigh {
    pub(crate) state: NeighState,
    pub(crate) queue: VecDeque<Mbuf>,
    pub(crate) last_used: Nanos,
    /// What the snapshot published for it at the last `NeighTable::reindex` (the entry's
    /// address, identity only).
    pub(crate) published: Option<usize>,
}

impl Neigh {
    fn incomplete(now: Nanos) -> Neigh {
        Neigh {
            state: NeighState::Incomplete {
                tries: 0,
                next_arp_at: now,
            },
            queue: VecDeque::new(),
            last_used: now,
            published: None,
        }
    }

    /// Reachable -> Resolving with the entry in use kept: the path is queried again.
    fn revalidate(&mut self) {
        if let NeighState::Reachable { entry } = &self.state {
            self.state = NeighState::Resolving {
                hwaddr: entry.hwaddr,
                tid: None,
                old: Some(entry.clone()),
            };
        }
    }
}

impl Controller {
    fn bcast_qkey(&self) -> QKey {
        self.bcast_record.map_or(QKey::IPOIB_DEFAULT, |r| r.qkey)
    }

    fn path_allowed(&self) -> bool {
        self.port_active && self.flush.is_none()
    }

    /// A packet for a next hop the data core had no neighbour for.
    pub(crate) fn resolve_request(&mut self, ip: IpAddr, mbuf: Mbuf, now: Nanos) {
        let qmax = self.cfg.neigh_queue_max;
        let sendable = match self.neighbours.get(&ip).map(|n| &n.state) {
            Some(NeighState::Reachable { entry })
            | Some(NeighState::Resolving {
                old: Some(entry), ..
            }) if self.flush.is_none_or(|f| f.level == FlushLevel::Light) => Some(entry.clone()),
            _ => None,
        };
        if let Some(entry) = sendable {
            self.snapshot().mark_used(entry.nh());
            self.send_unicast(&entry, mbuf);
            return;
        }
        if !self.neighbours.contains_key(&ip) {
            if self.neighbours.len() >= self.cfg.neigh_max {
                self.stats.neigh_table_full += 1;
                return;
            }
            self.neighbours.insert(ip, Neigh::incomplete(now));
        }
        let n = self.neighbours.get_mut(&ip).expect("present");
        n.last_used = now;
        if n.queue.len() >= qmax {
            self.stats.neigh_queue_full += 1;
            return;
        }
        n.queue.push_back(mbuf);
    }

    fn send_unicast(&mut self, entry: &Arc<Neighbour>, mbuf: Mbuf) {
        self.tx_push(mbuf, entry.tx_dst(), entry.ah.clone());
    }

    /// A received ARP packet (data from the IPoIB header on).
    pub(crate) fn arp_input(&mut self, mbuf: Mbuf, now: Nanos) {
        let Some(a) = parse_arp(mbuf.data()) else {
            self.stats.arp_malformed += 1;
            return;
        };
        drop(mbuf);
        if a.source_hwaddr == self.hwaddr() || a.source_hwaddr.is_multicast() {
            self.stats.arp_ignored += 1;
            return;
        }
        let for_us = a.operation == arp::Operation::Request && self.cfg.ipv4 == Some(a.target_ip);
        let source = IpAddr::from(a.source_ip);
        if !for_us && !self.neighbours.contains_key(&source) {
            self.stats.arp_ignored += 1;
            return;
        }
        if !self.learn_from(source, a.source_hwaddr, now) {
            return;
        }
        if a.source_ip == a.target_ip {
            // A gratuitous ARP: the sender came (back) up, perhaps at another LID after
            // a flush, with the same hardware address. Its path is asked again; the
            // old one serves until the answer.
            self.revalidate(source);
        }
        if for_us {
            let reply = arp::Repr {
                operation: arp::Operation::Reply,
                source_hwaddr: self.hwaddr(),
                source_ip: a.target_ip,
                target_hwaddr: a.source_hwaddr,
                target_ip: a.source_ip,
            };
            let Some(m) = self.build_arp(&reply) else {
                return;
            };
            self.stats.arp_replies_sent += 1;
            self.resolve_request(source, m, now);
        }
    }

    /// A neighbour's hardware address, from a packet it sent (an ARP request for us, a
    /// Neighbor Solicitation): the neighbour is added if it is not in the table. False
    /// when the table is full (counted).
    pub(crate) fn learn_from(&mut self, ip: IpAddr, hwaddr: HwAddr, now: Nanos) -> bool {
        if !self.neighbours.contains_key(&ip) {
            if self.neighbours.len() >= self.cfg.neigh_max {
                self.stats.neigh_table_full += 1;
                return false;
            }
            self.neighbours.insert(ip, Neigh::incomplete(now));
        }
        self.learn(ip, hwaddr);
        true
    }

    /// A neighbour's hardware address, from an ARP packet or a neighbour advertisement.
    pub(crate) fn learn(&mut self, ip: IpAddr, hwaddr: HwAddr) {
        let Some(n) = self.neighbours.get_mut(&ip) else {
            return;
        };
        let next = match &n.state {
            NeighState::Incomplete { .. } => Some(NeighState::Resolving {
                hwaddr,
                tid: None,
                old: None,
            }),
            NeighState::Resolving { hwaddr: h, .. } if *h == hwaddr => None,
            NeighState::Resolving { old, .. } => Some(NeighState::Resolving {
                hwaddr,
                tid: None,
                old: old.clone(),
            }),
            NeighState::Reachable { entry } if entry.hwaddr == hwaddr => None,
            NeighState::Reachable { entry } => Some(NeighState::Resolving {
                hwaddr,
                tid: None,
                old: Some(entry.clone()),
            }),
        };
        if let Some(s) = next {
            n.state = s;
        }
    }

    /// ARP retries, path queries and the gratuitous ARP. Scans the table only when a
    /// neighbour was written since the last scan or the earliest timer it found is due.
    pub(crate) fn neigh_timers(&mut self, now: Nanos) -> usize {
        let mut work = 0;
        if self.gratuitous_arp {
            let bcast = self.snapshot_bcast();
            if let (Some(ip), Some(_)) = (self.cfg.ipv4, &bcast) {
                self.gratuitous_arp = false;
                self.send_arp_request(ip, ip);
                work += 1;
            } else if self.cfg.ipv4.is_none() {
                self.gratuitous_arp = false;
            }
        }
        if !self.neighbours.scan_due(now) {
            return work;
        }
        let bcast = self.snapshot_bcast();
        // The earliest time a timer is due; `now` (the next poll) while one waits for the
        // link, the SA window or the end of a flush.
        let mut scan_at = Nanos(u64::MAX);
        let mut cursor = self.neighbours.keys().next().copied();
        while let Some(ip) = cursor {
            cursor = self
                .neighbours
                .range((Bound::Excluded(ip), Bound::Unbounded))
                .next()
                .map(|(k, _)| *k);
            let Some(n) = self.neighbours.get(&ip) else {
                continue;
            };
            match n.state {
                NeighState::Incomplete { next_arp_at, .. } if next_arp_at > now => {
                    scan_at = scan_at.min(next_arp_at);
                }
                NeighState::Incomplete { tries, .. } => {
                    if bcast.is_none() || !self.link_up {
                        scan_at = now;
                        continue;
                    }
                    if tries >= self.cfg.arp_tries {
                        let n = self
                            .neighbours
                            .remove(&ip, &mut self.changes)
                            .expect("present");
                        self.stats.neigh_unresolved_dropped += n.queue.len() as u64;
                        work += 1;
                        continue;
                    }
                    let next_arp_at = now.saturating_add(self.cfg.arp_interval);
                    scan_at = scan_at.min(next_arp_at);
                    self.neighbours.get_mut(&ip).expect("present").state = NeighState::Incomplete {
                        tries: tries + 1,
                        next_arp_at,
                    };
                    match ip {
                        IpAddr::V4(target) => {
                            let src = self.cfg.ipv4.unwrap_or([0; 4]);
                            self.send_arp_request(src, target.octets());
                        }
                        IpAddr::V6(target) => self.send_solicitation(target.octets(), now),
                    }
                    work += 1;
                }
                NeighState::Resolving {
                    hwaddr, tid: None, ..
                } => {
                    if !self.path_allowed() || !self.link.txns().has_room() {
                        scan_at = now;
                        continue;
                    }
                    // A PathRecord query on InfiniBand, computed from GIDs on RoCE.
                    if let Some((t, _)) =
                        self.link.start_path(now, ip, hwaddr.gid(), &mut self.stats)
                    {
                        if let Some(NeighState::Resolving { tid, .. }) =
                            self.neighbours.get_mut(&ip).map(|n| &mut n.state)
                        {
                            *tid = Some(t);
                        }
                        work += 1;
                    } else {
                        scan_at = now;
                    }
                }
                _ => {}
            }
        }
        self.neighbours.scanned(scan_at);
        work
    }

    pub(crate) fn snapshot_bcast(&self) -> Option<Arc<crate::snapshot::McastEntry>> {
        match self.groups.get(&self.bcast_mgid).map(|g| &g.state) {
            Some(crate::mcast::GroupState::Joined { entry, .. }) => Some(entry.clone()),
            _ => None,
        }
    }

    fn send_arp_request(&mut self, src_ip: [u8; 4], target_ip: [u8; 4]) {
        let Some(bcast) = self.snapshot_bcast() else {
            return;
        };
        let req = arp::Repr {
            operation: arp::Operation::Request,
            source_hwaddr: self.hwaddr(),
            source_ip: src_ip,
            target_hwaddr: HwAddr::default(),
            target_ip,
        };
        if let Some(m) = self.build_arp(&req) {
            self.stats.arp_requests_sent += 1;
            self.send_mcast(&bcast, m);
        }
    }

    fn build_arp(&mut self, a: &arp::Repr) -> Option<Mbuf> {
        let Some(mut m) = self.pool.alloc() else {
            self.stats.tx_nombuf += 1;
            return None;
        };
        let Some(d) = m.append(ipoib::HEADER_LEN + arp::PACKET_LEN) else {
            self.stats.tx_nombuf += 1;
            return None;
        };
        ipoib::Repr {
            ethertype: ipoib::EtherType::ARP,
        }
        .emit(&mut ipoib::Packet::new_unchecked(
            &mut d[..ipoib::HEADER_LEN],
        ));
        a.emit(&mut arp::Packet::new_unchecked(&mut d[ipoib::HEADER_LEN..]));
        Some(m)
    }

    /// A path resolution ended: the address handle to make, or `None`.
    pub(crate) fn on_path(&mut self, tid: Tid, ip: IpAddr, path: Option<AhAttr>, _now: Nanos) {
        let qkey = self.bcast_qkey();
        let Some(n) = self.neighbours.get_mut(&ip) else {
            return;
        };
        let NeighState::Resolving {
            hwaddr,
            tid: Some(t),
            old,
        } = &n.state
        else {
            return;
        };
        if *t != tid {
            return;
        }
        let (hwaddr, old) = (*hwaddr, old.clone());
        let route = path.map(|a| (a.dlid, a.sl));
        let ah = path.and_then(|attr| {
            self.port
                .create_ah(&attr)
                .map_err(|_| self.stats.ah_errors += 1)
                .ok()
        });
        let slot = ah.and_then(|ah| {
            self.stats.ah_created += 1;
            let guard = self.ah_guard(ah);
            // Without a next-hop slot the handle is retired again at once.
            let slot = NhSlot::new(&self.nh).map(|slot| (guard, slot));
            if slot.is_none() {
                self.stats.neigh_table_full += 1;
            }
            slot
        });
        let entry = match (slot.zip(route), old) {
            (Some(((guard, slot), route)), _) => {
                self.stats.paths_ok += 1;
                Arc::new(Neighbour::new(ip, hwaddr, qkey, route, guard, slot))
            }
            (None, Some(old)) => {
                self.stats.paths_failed += 1;
                old
            }
            (None, None) => {
                self.stats.paths_failed += 1;
                let n = self
                    .neighbours
                    .remove(&ip, &mut self.changes)
                    .expect("present");
                self.stats.neigh_unresolved_dropped += n.queue.len() as u64;
                return;
            }
        };
        let n = self.neighbours.get_mut(&ip).expect("present");
        n.state = NeighState::Reachable {
            entry: entry.clone(),
        };
        let queue = std::mem::take(&mut n.queue);
        self.dirty = true;
        for m in queue {
            self.stats.neigh_sent_from_queue += 1;
            self.send_unicast(&entry, m);
        }
    }

    /// Removes neighbours unused for `neigh_idle`.
    pub(crate) fn neigh_expire(&mut self, now: Nanos) -> usize {
        let idle = self.cfg.neigh_idle;
        let nh = self.nh.clone();
        let mut expired = 0;
        self.neighbours.retain(&mut self.changes, |_, n| {
            if let NeighState::Reachable { entry } = &n.state {
                if nh.take_used(entry.nh()) {
                    n.last_used = now;
                } else if now.saturating_sub(n.last_used) >= idle {
                    expired += 1;
                    return false;
                }
            }
            true
        });
        if expired > 0 {
            self.stats.neigh_expired += expired;
            self.dirty = true;
        }
        expired as usize
    }

    /// What the snapshot publishes for neighbour `ip`.
    pub(crate) fn neigh_published(&self, ip: &IpAddr) -> Option<&Arc<Neighbour>> {
        match &self.neighbours.get(ip)?.state {
            NeighState::Reachable { entry }
            | NeighState::Resolving {
                old: Some(entry), ..
            } => Some(entry),
            _ => None,
        }
    }

    /// A normal or heavy flush: every neighbour goes (queued packets counted).
    pub(crate) fn drop_neighbours(&mut self) {
        let queued: usize = self.neighbours.values().map(|n| n.queue.len()).sum();
        self.stats.neigh_unresolved_dropped += queued as u64;
        if !self.neighbours.is_empty() {
            self.dirty = true;
        }
        self.neighbours.clear(&mut self.changes);
    }

    /// A light flush (ClientReregister): query every path again; the old entry serves
    /// until the new one replaces it.
    pub(crate) fn revalidate_neighbours(&mut self) {
        for n in self.neighbours.values_mut() {
            n.revalidate();
        }
    }

    /// Queries the path to neighbour `ip` again, if it is Reachable.
    fn revalidate(&mut self, ip: IpAddr) {
        if let Some(n) = self.neighbours.get_mut(&ip) {
            n.revalidate();
        }
    }
}

/// Parses an IPoIB ARP packet; `None` when anything is wrong with it.
pub(crate) fn parse_arp(data: &[u8]) -> Option<arp::Repr> {
    let hdr = ipoib::Packet::new_checked(data).ok()?;
    if ipoib::Repr::parse(&hdr).ok()?.ethertype != ipoib::EtherType::ARP {
        return None;
    }
    let p = arp::Packet::new_checked(hdr.payload()).ok()?;
    arp::Repr::parse(&p).ok()
}
