//! Address handles outlive every snapshot that named them.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_pmd_sim::FaultConfig;

#[test]
fn ah_destroyed_only_after_readers_move_on() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    let g = GroupAddr::Ipv4([224, 9, 9, 9]);
    a.ctl.join_group(g);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.group_phase(g) == Some(GroupPhase::Joined)
    });
    let mgid = a.ctl.mgid_of(g).unwrap();
    assert!(a.cores[0].reader.get().group(&mgid).is_some());
    let destroyed = a.ctl.stats().ah_destroyed;

    // The data core is in the middle of a burst, holding the snapshot and the group's
    // entry; meanwhile the group is left.
    let held = a.cores[0].reader.get();
    let entry = held.group(&mgid).expect("joined");
    a.ctl.leave_group(g);
    for _ in 0..50 {
        a.ctl.poll();
        net.clock.advance(ms(10));
    }
    assert_eq!(a.ctl.group_phase(g), None);
    assert!(
        a.ctl.snapshot().group(&mgid).is_none(),
        "published without it"
    );
    assert_eq!(entry.mgid, mgid);
    assert_eq!(
        a.ctl.stats().ah_destroyed,
        destroyed,
        "destroyed under a reader"
    );

    // The reader passes a quiescent point: now the handle can go.
    a.cores[0].reader.quiescent();
    assert!(a.cores[0].reader.get().group(&mgid).is_none());
    a.ctl.poll();
    assert_eq!(a.ctl.stats().ah_destroyed, destroyed + 1);
}
