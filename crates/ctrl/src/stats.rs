//! Counters: every drop has a name.

/// What a controller has done and dropped, by name. A copy taken by
/// [`Controller::stats`](crate::Controller::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CtrlStats {
    /// Polls that did some work.
    pub polls_busy: u64,
    /// Polls that found nothing to do.
    pub polls_idle: u64,
    /// Requests taken from the data cores' rings.
    pub requests: u64,
    /// Requests a data core could not queue because its ring was full (handed back to it).
    pub ring_full: u64,

    /// MCMemberRecord Set (join) requests sent.
    pub sa_joins_sent: u64,
    /// MCMemberRecord Delete (leave) requests sent, retries included.
    pub sa_leaves_sent: u64,
    /// PathRecord Get requests sent.
    pub sa_paths_sent: u64,
    /// MADs the channel refused to send (the transaction then times out).
    pub sa_send_errors: u64,
    /// Answers matched to a transaction in flight.
    pub sa_answers: u64,
    /// Answers with a non-zero MAD status.
    pub sa_error_answers: u64,
    /// Transactions that reached their deadline without an answer.
    pub sa_timeouts: u64,
    /// Answers to a transaction that had already timed out (ignored).
    pub sa_late_answers: u64,
    /// Second answers to a transaction already answered (ignored).
    pub sa_duplicate_answers: u64,
    /// Answers whose TID this controller never used (ignored).
    pub sa_unknown_answers: u64,
    /// MADs that did not parse, were not responses, or did not fit their transaction.
    pub sa_malformed: u64,
    /// Times a transaction had to wait because the window was full.
    pub sa_window_full: u64,

    /// Joins the SA granted.
    pub joins_ok: u64,
    /// Joins refused or timed out.
    pub joins_failed: u64,
    /// Leaves the SA answered (with any status: the membership is gone either way).
    pub leaves_done: u64,
    /// Leaves given up for now after every try timed out or was refused; the
    /// obligation stays (an `Unconfirmed` token) and the leave is tried again later.
    pub leaves_abandoned: u64,
    /// Leaves sent for joins whose answer never came ("the SA may hold it").
    pub leaves_unconfirmed: u64,

    /// Packets queued for a group that is not Joined yet.
    pub mcast_queued: u64,
    /// Packets dropped because their group's queue held `mcast_queue_max`.
    pub mcast_queue_full: u64,
    /// Packets dropped because the group table held `groups_max` groups.
    pub mcast_table_full: u64,
    /// Packets dropped from a send-only group's queue after repeated join failures.
    pub mcast_sendonly_dropped: u64,
    /// Packets dropped because a flush or a down link removed their group.
    pub mcast_flush_dropped: u64,
    /// Queued multicast packets sent once their group was Joined.
    pub mcast_sent_from_queue: u64,
    /// Send-only groups left and removed after going unused.
    pub mcast_expired: u64,
    /// Multicast requests with an MGID outside this interface's partition.
    pub mcast_bad_group: u64,

    /// Light flushes (ClientReregister).
    pub flushes_light: u64,
    /// Normal flushes (port Error/Active/LidChange, interface down).
    pub flushes_normal: u64,
    /// Heavy flushes (PkeyChange).
    pub flushes_heavy: u64,
    /// Flushes that hit `flush_max` with transactions still open.
    pub flush_abandoned: u64,
    /// Heavy flushes that found the P_Key gone from the port's table.
    pub pkey_missing: u64,

    /// Packets dropped because the neighbour table held `neigh_max` entries.
    pub neigh_table_full: u64,
    /// Packets dropped because their neighbour already had `neigh_queue_max` waiting.
    pub neigh_queue_full: u64,
    /// Packets dropped because their neighbour could not be resolved.
    pub neigh_unresolved_dropped: u64,
    /// Queued unicast packets sent once their neighbour was resolved.
    pub neigh_sent_from_queue: u64,
    /// Neighbours removed after going unused.
    pub neigh_expired: u64,
    /// ARP requests sent (gratuitous ones included).
    pub arp_requests_sent: u64,
    /// ARP replies sent.
    pub arp_replies_sent: u64,
    /// ARP packets that did not parse (counted and dropped).
    pub arp_malformed: u64,
    /// Valid ARP packets neither for us nor about a known neighbour.
    pub arp_ignored: u64,
    /// Path records received.
    pub paths_ok: u64,
    /// Path queries refused or timed out.
    pub paths_failed: u64,

    /// Packets the control core sent.
    pub tx_sent: u64,
    /// Packets dropped because the control core's send backlog was full.
    pub tx_backlog_full: u64,
    /// Packets the control core could not build (buffer pool empty).
    pub tx_nombuf: u64,

    /// Snapshots published.
    pub publishes: u64,
    /// Publishes deferred because readers held back reclamation.
    pub publish_full: u64,
    /// Snapshots allocated (a publish found none reclaimed to rewrite).
    pub snapshots_built: u64,
    /// Snapshots whose group table was refilled whole (a flush started or ended, a new
    /// snapshot, or one older than the change log reaches) instead of patched.
    pub snapshot_rebuilds: u64,
    /// Address handles created.
    pub ah_created: u64,
    /// Address-handle creations that failed.
    pub ah_errors: u64,
    /// Address handles destroyed (after every snapshot holding them was reclaimed and
    /// every send that could name them completed).
    pub ah_destroyed: u64,
    /// Multicast attach/detach or Q_Key changes that failed, and QPs that went to the
    /// error state.
    pub qp_errors: u64,
    /// Fatal device errors reported by the port (the interface stays down).
    pub device_fatal: u64,
}
