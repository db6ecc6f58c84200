//! How a controller is built: bounds and timings.

use std::path::PathBuf;

use ibpoll_dev::Nanos;
use ibpoll_wire::ipoib::McastScope;
use ibpoll_wire::PKey;

use crate::Error;

/// Bounds and timings of a [`Controller`](crate::Controller). Every table and queue has
/// a fixed bound here; a flood beyond it costs a counter, not memory.
#[derive(Debug, Clone)]
pub struct CtrlConfig {
    /// The partition of the interface (its broadcast group is `ff12:401b:<pkey>::ffff:ffff`).
    pub pkey: PKey,
    /// The scope of IPv4 multicast MGIDs.
    pub scope: McastScope,
    /// The interface's IPv4 address (ARP answers and gratuitous ARP), if any.
    pub ipv4: Option<[u8; 4]>,
    /// The interface's IPv6 address, if any: the interface joins the all-nodes group
    /// (`ff02::1`) and the address's solicited-node group as a full member, answers
    /// Neighbor Solicitations for it, and resolves IPv6 next hops by neighbour discovery
    /// from it (RFC 4861 over IPoIB, RFC 4391 section 9.1). Without one, packets for
    /// IPv6 next hops are dropped (counted `nd_no_address`).
    pub ipv6: Option<[u8; 16]>,
    /// Data cores: one snapshot reader and one request ring each. 1..=64.
    pub data_cores: usize,
    /// Slots of each data core's request ring (a power of two is not required). >= 1.
    pub ring_size: usize,
    /// Requests taken from each ring per poll.
    pub requests_per_poll: usize,
    /// Multicast groups known at once (broadcast included). >= 1.
    pub groups_max: usize,
    /// Packets queued per group that is not Joined yet (DESIGN rule 4: 64).
    pub mcast_queue_max: usize,
    /// Neighbours known at once.
    pub neigh_max: usize,
    /// Packets waiting per unresolved neighbour (DESIGN rule 9: 3).
    pub neigh_queue_max: usize,
    /// SA transactions in flight at once (the reregister storm bound). >= 1.
    pub sa_window: usize,
    /// How long an SA transaction may take before it counts as lost.
    pub sa_timeout: Nanos,
    /// Tries of a leave (DESIGN rule 6: 3).
    pub leave_tries: u8,
    /// The longest backoff between join retries in seconds (DESIGN rule 3: 16).
    pub backoff_s_max: u64,
    /// Failures after which a send-only group drops its queue and waits for the next
    /// packet (DESIGN rule 3: 2).
    pub sendonly_failures_max: u32,
    /// A send-only group unused this long is left and removed (DESIGN rule 7).
    pub sendonly_idle: Nanos,
    /// A flush gives up waiting after this long (only reached when the SA is silent and
    /// the window must be cycled many times).
    pub flush_max: Nanos,
    /// A neighbour unused this long is removed.
    pub neigh_idle: Nanos,
    /// ARP requests (IPv6: Neighbor Solicitations) per resolution before the
    /// neighbour's queue is dropped.
    pub arp_tries: u8,
    /// Time between ARP requests (Neighbor Solicitations) of one resolution.
    pub arp_interval: Nanos,
    /// Packets the control core keeps when its send queue is full.
    pub tx_backlog_max: usize,
    /// Where the port's owner lock lives (see [`PortClaim`](crate::PortClaim)): on an
    /// InfiniBand port the controller claims the port before it talks to the SA, and a
    /// port another process drives is refused. `None` claims nothing: for ports no
    /// other process can reach (the in-process simulated fabric). A stack on a real HCA
    /// sets [`default_owner_lock_dir`](crate::default_owner_lock_dir).
    pub owner_lock_dir: Option<PathBuf>,
    /// Before its first join, look up at the SA the memberships this port holds in the
    /// interface's partition (left by an earlier instance that was killed) and leave
    /// them. Only sound when nothing else on the port joins in this partition: what the
    /// owner lock ensures for ibpoll processes (the kernel's IPoIB interface of the
    /// same partition must be down). No effect on RoCE (no SA).
    pub sa_cleanup: bool,
    /// The startup cleanup gives up after this long (the SA silent or refusing).
    pub cleanup_max: Nanos,
}

impl Default for CtrlConfig {
    fn default() -> Self {
        CtrlConfig {
            pkey: PKey::DEFAULT,
            scope: McastScope::LINK_LOCAL,
            ipv4: None,
            ipv6: None,
            data_cores: 1,
            ring_size: 1024,
            requests_per_poll: 256,
            groups_max: 1024,
            mcast_queue_max: 64,
            neigh_max: 1024,
            neigh_queue_max: 3,
            sa_window: 64,
            sa_timeout: Nanos::from_secs(1),
            leave_tries: 3,
            backoff_s_max: 16,
            sendonly_failures_max: 2,
            sendonly_idle: Nanos::from_secs(60),
            flush_max: Nanos::from_secs(60),
            neigh_idle: Nanos::from_secs(300),
            arp_tries: 3,
            arp_interval: Nanos::from_secs(1),
            tx_backlog_max: 256,
            owner_lock_dir: None,
            sa_cleanup: true,
            cleanup_max: Nanos::from_secs(10),
        }
    }
}

impl CtrlConfig {
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |field, value: usize, fix| {
            Err(Error::BadConfig {
                field,
                value: value as u64,
                fix,
            })
        };
        if !(1..=ibpoll_rcu::READERS_MAX).contains(&self.data_cores) {
            return bad("data_cores", self.data_cores, "must be 1..=64");
        }
        if self.ring_size == 0 {
            return bad("ring_size", 0, "must be at least 1");
        }
        if self.requests_per_poll == 0 {
            return bad("requests_per_poll", 0, "must be at least 1");
        }
        if self.groups_max == 0 {
            return bad("groups_max", 0, "must be at least 1 (the broadcast group)");
        }
        if self.sa_window == 0 {
            return bad("sa_window", 0, "must be at least 1");
        }
        if self.leave_tries == 0 {
            return bad("leave_tries", 0, "must be at least 1");
        }
        if self.sa_timeout == Nanos::ZERO {
            return bad("sa_timeout", 0, "must be longer than zero");
        }
        if self.backoff_s_max < 2 {
            return bad(
                "backoff_s_max",
                self.backoff_s_max as usize,
                "must be at least 2",
            );
        }
        if let Some(a) = &self.ipv6 {
            if ibpoll_wire::ipv6::is_multicast(a) || ibpoll_wire::ipv6::is_unspecified(a) {
                return bad(
                    "ipv6",
                    0,
                    "must be a unicast address (not :: and not in ff00::/8)",
                );
            }
            if self.groups_max < 3 {
                return bad(
                    "groups_max",
                    self.groups_max,
                    "must be at least 3 with an IPv6 address (broadcast, all-nodes and \
                     solicited-node groups)",
                );
            }
        }
        if self.pkey.base() == 0 {
            return bad("pkey", 0, "P_Key 0 is the invalid partition");
        }
        Ok(())
    }
}
