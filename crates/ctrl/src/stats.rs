//! Counters: every drop has a name.

ibpoll_dev::counters! {
    /// What a controller has done and dropped, by name. A copy taken by
    /// [`Controller::stats`](crate::Controller::stats); `+=` sums interfaces, `fields()`
    /// lists every counter by name and `drops()` the packets dropped, by reason.
    #[non_exhaustive]
    pub struct CtrlStats {
        /// Polls that did some work.
        polls_busy,
        /// Polls that found nothing to do.
        polls_idle,
        /// Requests taken from the data cores' rings.
        requests,
        /// Requests a data core could not queue because its ring was full (handed back to it).
        ring_full,

        /// MCMemberRecord Set (join) requests sent.
        sa_joins_sent,
        /// MCMemberRecord Delete (leave) requests sent, retries included.
        sa_leaves_sent,
        /// PathRecord Get requests sent.
        sa_paths_sent,
        /// MCMemberRecord GetTable requests sent (listings of this port's memberships).
        sa_lists_sent,
        /// MADs the channel refused to send (the transaction then times out).
        sa_send_errors,
        /// Answers matched to a transaction in flight.
        sa_answers,
        /// Answers with a non-zero MAD status.
        sa_error_answers,
        /// Transactions that reached their deadline without an answer.
        sa_timeouts,
        /// Answers to a transaction that had already timed out (ignored).
        sa_late_answers,
        /// Second answers to a transaction already answered (ignored).
        sa_duplicate_answers,
        /// Answers whose TID this controller never used (ignored).
        sa_unknown_answers,
        /// MADs that did not parse, were not responses, or did not fit their transaction.
        sa_malformed,
        /// Times a transaction had to wait because the window was full.
        sa_window_full,

        /// Joins the SA granted.
        joins_ok,
        /// Joins refused or timed out.
        joins_failed,
        /// Leaves the SA answered (with any status: the membership is gone either way).
        leaves_done,
        /// Leaves given up for now after every try timed out or was refused; the
        /// obligation stays (an `Unconfirmed` token) and the leave is tried again later.
        leaves_abandoned,
        /// Leaves sent for joins whose answer never came ("the SA may hold it").
        leaves_unconfirmed,

        /// Startup cleanups run (an earlier instance's memberships looked for at the SA).
        cleanup_runs,
        /// Memberships an earlier instance left that the cleanup found and handed to
        /// the multicast state machine to leave (or to absorb into its own join).
        cleanup_found,
        /// What the cleanup could not do: a listing never answered, a cleanup out of
        /// time, a group still listed after every IPoIB JoinState bit was left.
        cleanup_failed,

        /// Packets queued for a group that is not Joined yet.
        mcast_queued,
        /// Packets dropped because their group's queue held `mcast_queue_max`.
        mcast_queue_full,
        /// Packets dropped because the group table held `groups_max` groups.
        mcast_table_full,
        /// Packets dropped from a send-only group's queue after repeated join failures.
        mcast_sendonly_dropped,
        /// Packets dropped because a flush or a down link removed their group.
        mcast_flush_dropped,
        /// Queued multicast packets sent once their group was Joined.
        mcast_sent_from_queue,
        /// Send-only groups left and removed after going unused.
        mcast_expired,
        /// Multicast requests with an MGID outside this interface's partition.
        mcast_bad_group,
        /// Subscriptions of the data cores' sockets taken (`Request::Subscribe`).
        subscriptions,
        /// Subscriptions ended (`Request::Unsubscribe`).
        unsubscriptions,
        /// Subscriptions refused: not a group of the partition, or the group table full.
        subscriptions_refused,

        /// Light flushes (ClientReregister).
        flushes_light,
        /// Normal flushes (port Error/Active/LidChange, interface down).
        flushes_normal,
        /// Heavy flushes (PkeyChange).
        flushes_heavy,
        /// Flushes that hit `flush_max` with transactions still open.
        flush_abandoned,
        /// Heavy flushes that found the P_Key gone from the port's table.
        pkey_missing,

        /// Packets dropped because the neighbour table held `neigh_max` entries.
        neigh_table_full,
        /// Packets dropped because their neighbour already had `neigh_queue_max` waiting.
        neigh_queue_full,
        /// Packets dropped because their neighbour could not be resolved.
        neigh_unresolved_dropped,
        /// Queued unicast packets sent once their neighbour was resolved.
        neigh_sent_from_queue,
        /// Neighbours removed after going unused.
        neigh_expired,
        /// ARP requests sent (gratuitous ones included).
        arp_requests_sent,
        /// ARP replies sent.
        arp_replies_sent,
        /// ARP packets that did not parse (counted and dropped).
        arp_malformed,
        /// Valid ARP packets neither for us nor about a known neighbour.
        arp_ignored,
        /// IPv6 Neighbor Solicitations sent (to the target's solicited-node group).
        nd_solicits_sent,
        /// IPv6 Neighbor Advertisements sent (answers, unicast; to all-nodes for
        /// another node's duplicate address detection).
        nd_adverts_sent,
        /// Neighbour-discovery packets that failed the checks of RFC 4861 section 7.1
        /// (hop limit, checksum, lengths, options; counted and dropped).
        nd_malformed,
        /// Valid neighbour-discovery packets for another address, about an unknown
        /// neighbour, without a link-layer address to answer to, or received without an
        /// IPv6 address of our own.
        nd_ignored,
        /// Packets for IPv6 next hops dropped because the interface has no IPv6 address
        /// to resolve them from.
        nd_no_address,
        /// Path records received.
        paths_ok,
        /// Path queries refused or timed out.
        paths_failed,

        /// Packets the control core sent.
        tx_sent,
        /// Packets dropped because the control core's send backlog was full.
        tx_backlog_full,
        /// Packets the control core could not build (buffer pool empty).
        tx_nombuf,

        /// Snapshots published.
        publishes,
        /// Publishes deferred because readers held back reclamation.
        publish_full,
        /// Snapshots allocated (a publish found none reclaimed to rewrite).
        snapshots_built,
        /// Snapshots whose group table was refilled whole (a flush started or ended, a new
        /// snapshot, or one older than the change log reaches) instead of patched.
        snapshot_rebuilds,
        /// Address handles created.
        ah_created,
        /// Address-handle creations that failed.
        ah_errors,
        /// Address handles destroyed (after every snapshot holding them was reclaimed
        /// and every send that could name them completed).
        ah_destroyed,
        /// Multicast attach/detach or Q_Key changes that failed, and QPs that went to
        /// the error state.
        qp_errors,
        /// Fatal device errors reported by the port (the interface stays down).
        device_fatal,
    }
    drops: [
        mcast_queue_full,
        mcast_table_full,
        mcast_sendonly_dropped,
        mcast_flush_dropped,
        mcast_bad_group,
        neigh_table_full,
        neigh_queue_full,
        neigh_unresolved_dropped,
        nd_no_address,
        tx_backlog_full,
    ]
}
