//! A P_Key table change under a running stack (the heavy flush): the interface's
//! partition moves to another index of the port's table, the controller leaves every
//! group, the stack moves its UD QP to the new index in place (same QPN, same queues),
//! and after the rejoin traffic flows both ways again. With the partition gone from the
//! table the interface stays down, and comes back when the partition does.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll_wire::PKey;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

#[test]
fn the_qp_follows_its_partition_to_a_new_pkey_index() {
    let _serial = serial();
    let fabric = fabric();
    let dev_a = fabric.add_node("a", 1);
    let port_a = dev_a.port_id(1);
    let pa = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    // Each sender keeps at most 256 datagrams in flight: no receive ring overflows.
    let a_host = host(&fabric, "a", A_IP, 0)
        .device(dev_a.clone(), 1)
        .clock(fabric.clock());
    let a = start_unicast(a_host, &pa, &pb, (A_IP, B_IP), 256);
    let b = start_unicast(host(&fabric, "b", B_IP, 1), &pb, &pa, (B_IP, A_IP), 256);
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    let qpn = a.qpn();
    send(&pa, &pb, 500, "a to b");

    // The default partition moves from index 0 to index 1 of a's table; index 0 is now
    // another partition, which a QP left at index 0 would send in (and b would drop).
    fabric.set_pkeys(port_a, vec![PKey(0x8001), PKey::DEFAULT]);
    wait_for("a's heavy flush", T, || {
        a.ctrl_stats().unwrap().flushes_heavy == 1
    });
    assert!(
        a.wait_link_up(T).unwrap(),
        "a: link not back after the flush"
    );
    assert_eq!(a.qpn(), qpn, "the QP is modified in place, not replaced");

    send(&pa, &pb, 1500, "a to b after the move");
    send(&pb, &pa, 500, "b to a after the move");
    assert_eq!(
        fabric.stats().drop_count("pkey_mismatch"),
        0,
        "{:?}",
        fabric.stats()
    );

    // The partition leaves the table: a stays down (its sends are counted drops)...
    fabric.set_pkeys(port_a, vec![PKey(0x8001)]);
    wait_for("a's second heavy flush", T, || {
        a.ctrl_stats().unwrap().flushes_heavy == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!a.link_up().unwrap(), "a: link up without its partition");
    assert_eq!(a.ctrl_stats().unwrap().pkey_missing, 1);
    // ... and comes back with it, at yet another index.
    fabric.set_pkeys(port_a, vec![PKey(0x8001), PKey(0x8002), PKey::DEFAULT]);
    assert!(
        a.wait_link_up(T).unwrap(),
        "a: link not back with its partition"
    );
    send(&pa, &pb, 1000, "a to b with the partition back");
    assert_eq!(fabric.stats().drop_count("pkey_mismatch"), 0);

    let (ga, gb) = (a.hwaddr().gid(), b.hwaddr().gid());
    let ra = a.stop().expect("stop a");
    assert_conserved(&ra);
    let rb = b.stop().expect("stop b");
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(pa.foreign.get() + pb.foreign.get(), 0);
    for gid in [ga, gb] {
        assert_eq!(
            fabric.with_sa(|sa| sa.memberships_of(&gid).count()),
            0,
            "memberships left at the SA"
        );
    }
}

/// `from` sends `n` more datagrams and `to` receives every one. Three go first: on first
/// contact (and after a flush that forgot the neighbour) at most three wait for ARP and
/// the path record; the rest follows once they arrived.
fn send(from: &Probe, to: &Probe, n: u64, what: &str) {
    let (sent, received) = (from.sent.get(), to.received.get());
    from.allow(sent + 3);
    wait_for(what, T, || to.received.get() == received + 3);
    from.allow(sent + n);
    wait_for(what, T, || to.received.get() == received + n);
}
