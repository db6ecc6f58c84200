//! OpenSM as the judge of ibpoll's subnet administrator.
//!
//! Starts `ibsim` with a four-node fabric (sm, Switch1, hostA, hostB) and OpenSM under
//! `libumad2sim.so` as the SM on node "sm", attaches to hostA and hostB with
//! [`IbsimMadChannel`], and sends SA requests to OpenSM. Each request is also handed, as
//! the same bytes, to the simulated SA of `ibpoll-pmd-sim` ([`SubnetAdmin::handle`],
//! with the requesting port's GID, LID and P_Key table and the fabric's ports as the
//! path oracle), and the two answers are printed and compared: status, SA header and
//! record must be the same bytes. The one exception, printed for the record, is our
//! SA with `send_only_full_member = false` (the IBA 1.2 rules).
//!
//! A second test drives the real controller of `ibpoll-ctrl` against OpenSM: hostA and
//! hostB each run a [`Controller`] on a [`HybridPort`] (SA transactions to OpenSM through
//! ibsim, packets over a [`SimFabric`] whose hosts have the GUIDs the ibsim topology gives
//! them). It checks the broadcast join (Q_Key 0x0B1B, MLID 0xC000), a full-member join
//! and leave of 239.1.1.1, a send-only join started by a packet, path records asked for
//! after ARP between the two controllers, and that after both interfaces went down OpenSM
//! holds no membership of either port, each time with raw MCMemberRecord Gets to OpenSM.
//!
//! A third test checks one owner per port and the startup cleanup against OpenSM: a
//! child process owns hostA's port and joins; a second controller on the port is refused
//! with the owner's PID; after `kill -9` of the child the next controller finds the
//! dead one's memberships at OpenSM (GetTable by PortGID) and leaves them before it
//! joins, so that OpenSM lists only what the new one joined.
//!
//! Skipped (with the reason printed) when ibsim, opensm or libumad2sim.so is missing,
//! unless the environment variable `CI` is set: then a missing tool fails the test.
//!
//! ibsim's socket names are global to the machine, so one fabric runs at a time: every
//! test that starts one holds [`FABRIC`] (and they are all in this one test binary).

include!("support/opensm.rs");

#[test]
fn opensm_judges_the_simulated_sa() {
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = tools_or_skip("opensm_judges_the_simulated_sa") else {
        return;
    };
    let t0 = Instant::now();
    let mut fabric = Fabric::start(&tools);

    // A node the topology lacks is refused, and ibsim stays up.
    match IbsimMadChannel::connect("nosuchhost") {
        Err(e @ Error::ConnectRefused { .. }) => println!("as expected: {e}"),
        other => panic!("attaching to an unknown node: {other:?}"),
    }

    // The hosts are ibsim clients (OpenSM's answers reach them through ibsim); their
    // ports are Active once OpenSM's first sweep is done.
    let mut host_a = IbsimMadChannel::connect("hostA").expect("attach to ibsim as hostA");
    let mut host_b = IbsimMadChannel::connect("hostB").expect("attach to ibsim as hostB");
    let a = host_a
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    let b = host_b
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    println!(
        "hostA: LID {} GID {} P_Keys {:?}; hostB: LID {} GID {}; SM LID {}",
        a.lid.0,
        a.gid(),
        a.pkeys,
        b.lid.0,
        b.gid(),
        a.sm_lid.0
    );
    assert_ne!(a.lid, b.lid);
    assert_eq!(a.sm_lid, b.sm_lid);

    let mut osm_a = OpenSm::new(host_a);
    let bcast = wait_for_broadcast(&mut osm_a, &mut fabric);
    println!(
        "subnet up after {:?}; broadcast group {bcast:?}",
        t0.elapsed()
    );

    // Our SA as SimFabric sets it up, which is OpenSM's defaults: default partition,
    // 2048 MTU, 10 Gb/s, subnet_timeout 18, SendOnlyFullMember supported.
    let ours = SubnetAdmin::new(SaConfig {
        subnet_prefix: a.gid_prefix,
        send_only_full_member: true,
        ..SaConfig::default()
    });
    let requester = |p: &IbsimPort| Requester {
        port_gid: p.gid(),
        lid: p.lid,
        pkeys: path_end(p).pkeys,
    };
    let hosts = vec![
        Host {
            name: "hostA",
            osm: osm_a,
            requester: requester(&a),
        },
        Host {
            name: "hostB",
            osm: OpenSm::new(host_b),
            requester: requester(&b),
        },
    ];
    let ends = vec![(a.gid(), path_end(&a)), (b.gid(), path_end(&b))];
    let mut judge = Judge {
        hosts,
        fabric: &mut fabric,
        ours,
        ends,
        table: Vec::new(),
    };

    request_table(&mut judge, &a, &b, &bcast);
    for h in &judge.hosts {
        println!("{} channel: {:?}", h.name, h.osm.ch);
        assert_eq!(
            h.osm.unmatched, 0,
            "{}: a MAD that answered nothing",
            h.name
        );
    }
    println!("total {:?}", t0.elapsed());
}

/// Drives `ibpoll-ctrl`'s real [`Controller`] against OpenSM: two controllers, hostA and
/// hostB, on [`HybridPort`]s (OpenSM through ibsim for every SA transaction, a
/// [`SimFabric`] with the same port GUIDs for the packets), checked against OpenSM's own
/// view with raw MCMemberRecord Gets from separate ibsim clients.
#[test]
fn opensm_answers_the_real_controller() {
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = tools_or_skip("opensm_answers_the_real_controller") else {
        return;
    };
    let t0 = Instant::now();

    // The data side first: its hosts' node GUIDs go into the ibsim topology.
    let sim = SimFabric::new(FabricConfig::default());
    let dev_a = sim.add_node("hostA", 1);
    let dev_b = sim.add_node("hostB", 1);
    let mut fabric = Fabric::start_with(
        &tools,
        &topology_with_guids(dev_a.node_guid(), dev_b.node_guid()),
    );

    // The test's own clients of OpenSM, one per host (requests about a port's
    // membership are made from that port).
    let mut raw_a = IbsimMadChannel::connect("hostA").expect("attach to ibsim as hostA");
    let mut raw_b = IbsimMadChannel::connect("hostB").expect("attach to ibsim as hostB");
    let a = raw_a
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    let b = raw_b
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    let mut raw_a = OpenSm::new(raw_a);
    let mut raw_b = OpenSm::new(raw_b);
    let bcast_osm = wait_for_broadcast(&mut raw_a, &mut fabric);
    println!(
        "subnet up after {:?}: hostA LID {} GID {}, hostB LID {} GID {}, SM LID {}",
        t0.elapsed(),
        a.lid.0,
        a.gid(),
        b.lid.0,
        b.gid(),
        a.sm_lid.0
    );

    let hybrid = HybridFabric::new(sim.clone());
    let port_a = hybrid
        .open_port("hostA", &dev_a, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let port_b = hybrid
        .open_port("hostB", &dev_b, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let (attr_a, sim_a) = (port_a.attr(), port_a.sim_port().attr());
    println!(
        "hostA hybrid port: LID {} (simulated {}), GID {} (simulated {})",
        attr_a.lid.0, sim_a.lid.0, attr_a.gid, sim_a.gid
    );
    assert_eq!((attr_a.lid, attr_a.gid), (a.lid, a.gid()));
    assert_eq!(attr_a.gid, sim_a.gid, "the two sides are the same port");

    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let mut ha = CtlHost::new(
        "hostA",
        [10, 0, 0, 1],
        &dev_a,
        port_a.clone(),
        clock.clone(),
    );
    let mut hb = CtlHost::new("hostB", [10, 0, 0, 2], &dev_b, port_b.clone(), clock);
    ha.ctl.set_admin_up(true);
    hb.ctl.set_admin_up(true);

    // (1) The broadcast join, answered by OpenSM: Q_Key 0x0B1B, MLID 0xC000.
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(1) both links up (broadcast group Joined)",
        LINK_UP_TIMEOUT,
        |h| h.iter().all(|h| h.ctl.link_up()),
    );
    let bcast_mgid = broadcast_mgid(PKey::DEFAULT);
    for (h, raw) in [(&ha, &mut raw_a), (&hb, &mut raw_b)] {
        let r = *h.ctl.broadcast_record().expect("the link is up");
        println!(
            "    {}: broadcast record Q_Key {:#x} MLID {:#06x} MTU code {} rate {:?}",
            h.name, r.qkey.0, r.mlid.0, r.mtu, r.rate
        );
        assert_eq!(r.qkey, QKey(0x0B1B));
        assert_eq!(r.mlid, Lid(0xC000));
        assert_eq!(r.mlid, bcast_osm.mlid);
        let snap = h.ctl.snapshot();
        assert!(snap.link_up);
        assert_eq!(snap.broadcast().map(|e| e.mlid), Some(Lid(0xC000)));
        membership(
            raw,
            &mut fabric,
            bcast_mgid,
            h.gid,
            Some(JoinState::FULL_MEMBER),
        )
        .unwrap_or_else(|s| {
            panic!(
                "OpenSM has no FullMember broadcast membership of {}: {s}",
                h.name
            )
        });
        println!(
            "    OpenSM: {} is a FullMember of the broadcast group",
            h.name
        );
    }

    // (2) 239.1.1.1: both join as full members, hostA's packet reaches hostB over the
    // simulated fabric, then both leave.
    let g1 = GroupAddr::Ipv4([239, 1, 1, 1]);
    let g1_mgid = ipv4_mcast_mgid([239, 1, 1, 1], PKey::DEFAULT, McastScope::LINK_LOCAL);
    assert_eq!(ha.ctl.mgid_of(g1), Some(g1_mgid));
    assert!(ha.ctl.join_group(g1));
    assert!(hb.ctl.join_group(g1));
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(2) 239.1.1.1 Joined by both",
        STEP_TIMEOUT,
        |h| {
            h.iter()
                .all(|h| h.ctl.group_phase(g1) == Some(GroupPhase::Joined))
        },
    );
    let g1_mlid = {
        let snap = ha.ctl.snapshot();
        let e = snap.group(&g1_mgid).expect("Joined groups are published");
        assert!(!e.send_only);
        assert_eq!(e.qkey, QKey(0x0B1B));
        e.mlid
    };
    for (h, raw) in [(&ha, &mut raw_a), (&hb, &mut raw_b)] {
        let m = membership(
            raw,
            &mut fabric,
            g1_mgid,
            h.gid,
            Some(JoinState::FULL_MEMBER),
        )
        .unwrap_or_else(|s| {
            panic!(
                "OpenSM has no FullMember 239.1.1.1 membership of {}: {s}",
                h.name
            )
        });
        println!(
            "    OpenSM: {} is a FullMember of 239.1.1.1 ({}), MLID {:#06x}, Q_Key {:#x}",
            h.name, g1_mgid, m.mlid.0, m.qkey.0
        );
        assert_eq!(m.mlid, g1_mlid);
        assert_eq!(m.qkey, QKey(0x0B1B));
    }
    ha.step();
    ha.send_mcast(g1_mgid, 11);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(2) hostB receives hostA's packet to 239.1.1.1 (simulated data path)",
        STEP_TIMEOUT,
        |h| h[1].received.contains(&11),
    );
    ha.ctl.leave_group(g1);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(2) hostA left 239.1.1.1",
        STEP_TIMEOUT,
        |h| h[0].ctl.group_phase(g1).is_none() && h[0].ctl.sa_in_flight() == 0,
    );
    let gone = membership(&mut raw_a, &mut fabric, g1_mgid, ha.gid, None)
        .expect_err("OpenSM still lists hostA in 239.1.1.1 after its leave");
    println!("    OpenSM: hostA's 239.1.1.1 membership after the leave: {gone}");
    membership(&mut raw_b, &mut fabric, g1_mgid, hb.gid, None)
        .expect("hostB is still a member of 239.1.1.1");
    hb.ctl.leave_group(g1);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(2) hostB left 239.1.1.1",
        STEP_TIMEOUT,
        |h| h[1].ctl.group_phase(g1).is_none() && h[1].ctl.sa_in_flight() == 0,
    );
    let gone = membership(&mut raw_b, &mut fabric, g1_mgid, hb.gid, None)
        .expect_err("OpenSM still lists hostB in 239.1.1.1 after its leave");
    let group = status(&raw_a.call(&mut get_group_request(g1_mgid), &mut fabric));
    println!(
        "    OpenSM: hostB's 239.1.1.1 membership after the leave: {gone}; the group: {group}"
    );
    assert!(!group.is_ok(), "OpenSM keeps 239.1.1.1 without members");

    // (3) A send-only join: the data core hands the controller a packet for a group
    // nobody has joined (Request::Mcast).
    let g9 = GroupAddr::Ipv4([239, 1, 1, 9]);
    let g9_mgid = ipv4_mcast_mgid([239, 1, 1, 9], PKey::DEFAULT, McastScope::LINK_LOCAL);
    let pkt = ha.packet(21);
    ha.request(Request::Mcast {
        group: g9,
        mbuf: pkt,
    });
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(3) 239.1.1.9 published send-only",
        STEP_TIMEOUT,
        |h| {
            h[0].ctl
                .snapshot()
                .group(&g9_mgid)
                .is_some_and(|e| e.send_only)
        },
    );
    assert_eq!(ha.ctl.group_phase(g9), Some(GroupPhase::Joined));
    assert_eq!(ha.ctl.stats().mcast_sent_from_queue, 1);
    let m = membership(
        &mut raw_a,
        &mut fabric,
        g9_mgid,
        ha.gid,
        Some(JoinState::SEND_ONLY_FULL_MEMBER),
    )
    .unwrap_or_else(|s| {
        panic!("OpenSM has no SendOnlyFullMember 239.1.1.9 membership of hostA: {s}")
    });
    let full = membership(
        &mut raw_a,
        &mut fabric,
        g9_mgid,
        ha.gid,
        Some(JoinState::FULL_MEMBER),
    );
    println!(
        "    OpenSM: hostA is a SendOnlyFullMember of 239.1.1.9 (MLID {:#06x}); as a \
         FullMember: {}",
        m.mlid.0,
        full.as_ref()
            .map_or_else(|s| s.to_string(), |_| "yes".into())
    );
    assert!(full.is_err(), "hostA holds 239.1.1.9 as a FullMember");

    // (4) Path records: hostA sends to hostB's address; the controllers resolve each
    // other by ARP over the simulated fabric and ask OpenSM for the paths.
    let pkt = ha.packet(31);
    ha.request(Request::Resolve {
        next_hop: hb.ip,
        mbuf: pkt,
    });
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(4) hostB receives hostA's unicast packet (ARP, then OpenSM's path records)",
        STEP_TIMEOUT,
        |h| h[1].received.contains(&31),
    );
    {
        let snap = ha.ctl.snapshot();
        let n = snap
            .neighbour(&hb.ip)
            .expect("hostB is a neighbour of hostA");
        assert_eq!((n.hwaddr.gid(), n.qpn()), (hb.gid, hb.qpn));
        let snap = hb.ctl.snapshot();
        let n = snap
            .neighbour(&ha.ip)
            .expect("hostA is a neighbour of hostB");
        assert_eq!((n.hwaddr.gid(), n.qpn()), (ha.gid, ha.qpn));
    }
    for h in [&ha, &hb] {
        let s = h.ctl.stats();
        println!(
            "    {}: path queries sent {}, answered OK {}, failed {}",
            h.name, s.sa_paths_sent, s.paths_ok, s.paths_failed
        );
        assert_eq!((s.paths_ok, s.paths_failed), (1, 0));
    }
    let path = raw_a.call(
        &mut SaMad::request(
            Method::GET,
            0,
            prm::SGID | prm::DGID,
            Attribute::PathRecord(path_record::Repr {
                sgid: ha.gid,
                dgid: hb.gid,
                ..path_record::Repr::default()
            }),
        )
        .to_bytes(),
        &mut fabric,
    );
    let Attribute::PathRecord(p) = SaMad::parse(&path).expect("an SA MAD").attribute else {
        panic!("not a PathRecord");
    };
    println!(
        "    OpenSM path hostA -> hostB: SLID {} DLID {} MTU code {} rate {:?}; hostA's \
         address handle DLID {} -> simulated LID {}",
        p.slid.0,
        p.dlid.0,
        p.mtu,
        p.rate,
        p.dlid.0,
        dev_b.open_port(1).expect("port").attr().lid.0
    );
    assert_eq!((p.slid, p.dlid), (a.lid, b.lid));
    assert!(port_a.counters().ah_unicast_translated >= 1);
    assert!(port_b.counters().ah_unicast_translated >= 1);

    // (5) Interface down on both: the flush leaves everything, and OpenSM holds no
    // membership of either port.
    ha.ctl.set_admin_up(false);
    hb.ctl.set_admin_up(false);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "(5) both flushes ended",
        STEP_TIMEOUT,
        |h| {
            h.iter()
                .all(|h| !h.ctl.is_flushing() && h.ctl.sa_in_flight() == 0)
        },
    );
    for (h, raw) in [(&ha, &mut raw_a), (&hb, &mut raw_b)] {
        assert!(!h.ctl.link_up());
        for (what, mgid) in [
            ("broadcast", bcast_mgid),
            ("239.1.1.1", g1_mgid),
            ("239.1.1.9", g9_mgid),
        ] {
            match membership(raw, &mut fabric, mgid, h.gid, None) {
                Ok(m) => panic!(
                    "after the flush OpenSM still lists {} in {what}: {m:?}",
                    h.name
                ),
                Err(s) => println!("    OpenSM after the flush: {} in {what}: {s}", h.name),
            }
        }
    }

    println!();
    for h in [&ha, &hb] {
        let s = h.ctl.stats();
        println!(
            "{}: joins sent {} ok {} failed {}; leaves sent {} done {} abandoned {}; SA \
             timeouts {}, answers late {} unknown {}",
            h.name,
            s.sa_joins_sent,
            s.joins_ok,
            s.joins_failed,
            s.sa_leaves_sent,
            s.leaves_done,
            s.leaves_abandoned,
            s.sa_timeouts,
            s.sa_late_answers,
            s.sa_unknown_answers
        );
        let c = h.port.counters();
        println!("{}: hybrid port {c:?}", h.name);
        assert_eq!(s.joins_failed, 0);
        assert_eq!((s.leaves_abandoned, s.sa_timeouts), (0, 0));
        assert_eq!(s.leaves_done, s.sa_leaves_sent);
        assert_eq!(
            (c.mirror_disagreed, c.mirror_unmatched, c.mirror_send_errors),
            (0, 0, 0),
            "the simulated SA answered {} as OpenSM did",
            h.name
        );
    }
    println!("simulated fabric: {:?}", sim.stats());
    for (name, raw) in [("hostA", &raw_a), ("hostB", &raw_b)] {
        println!("{name} raw channel: {:?}", raw.ch);
        assert_eq!(raw.unmatched, 0, "{name}: a MAD that answered nothing");
    }
    println!("total {:?}", t0.elapsed());
}

#[test]
fn errors_name_the_fix() {
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let long = "x".repeat(32);
    match IbsimMadChannel::connect(&long) {
        Err(e @ Error::NodeName { .. }) => assert!(e.to_string().contains("31 bytes"), "{e}"),
        other => panic!("a 32-byte node name: {other:?}"),
    }
    if ibsim_listening() {
        eprintln!("SKIPPED the not-running check: an ibsim is running on this machine");
        return;
    }
    match IbsimMadChannel::connect("hostA") {
        Err(e @ Error::NotRunning { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("ibsim -s net.topo"), "{msg}");
        }
        other => panic!("attaching without ibsim: {other:?}"),
    }
    let sim = SimFabric::new(FabricConfig::default());
    let dev = sim.add_node("hostA", 1);
    match HybridFabric::new(sim.clone()).open_port("hostA", &dev, 1) {
        Err(Error::NotRunning { .. }) => {}
        other => panic!("a hybrid port without ibsim: {other:?}"),
    }
}

// ------------------------------------------------------------------ one owner per port

/// Set in the child process of [`opensm_cleans_up_after_a_killed_owner`].
const OWNER_CHILD: &str = "IBPOLL_OWNER_CHILD";
/// The owner-lock directory the child and the parent share.
const OWNER_DIR: &str = "IBPOLL_OWNER_DIR";

/// The groups the killed owner joins: two subscriptions and a send-only group.
const OWNER_GROUPS: [[u8; 4]; 2] = [[239, 2, 0, 1], [239, 2, 0, 2]];
const OWNER_SEND_ONLY: [u8; 4] = [239, 2, 0, 3];

fn ipv4_group_mgid(g: [u8; 4]) -> Gid {
    ipv4_mcast_mgid(g, PKey::DEFAULT, McastScope::LINK_LOCAL)
}

/// The child: hostA's controller, owning the port (lock in `$IBPOLL_OWNER_DIR`), joins
/// the broadcast group, two groups and a send-only one against OpenSM, says so, and
/// keeps polling until it is killed (it never leaves anything).
#[test]
fn child_owner_joins_and_waits_to_be_killed() {
    let Some(dir) = std::env::var_os(OWNER_CHILD).and(std::env::var_os(OWNER_DIR)) else {
        return;
    };
    // The same simulated node GUIDs as the parent's (nodes added in the same order).
    let sim = SimFabric::new(FabricConfig::default());
    let dev_a = sim.add_node("hostA", 1);
    let _dev_b = sim.add_node("hostB", 1);
    let port = HybridFabric::new(sim.clone())
        .open_port("hostA", &dev_a, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = CtrlConfig {
        owner_lock_dir: Some(PathBuf::from(dir)),
        ..CtrlConfig::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let mut h = CtlHost::with_config("child", [10, 0, 0, 1], &dev_a, port, clock, cfg);
    for g in OWNER_GROUPS {
        assert!(h.ctl.join_group(GroupAddr::Ipv4(g)));
    }
    let pkt = h.packet(1);
    h.request(Request::Mcast {
        group: GroupAddr::Ipv4(OWNER_SEND_ONLY),
        mbuf: pkt,
    });
    let start = Instant::now();
    let all: Vec<GroupAddr> = OWNER_GROUPS
        .iter()
        .chain([&OWNER_SEND_ONLY])
        .map(|g| GroupAddr::Ipv4(*g))
        .collect();
    while !(h.ctl.link_up()
        && all
            .iter()
            .all(|g| h.ctl.group_phase(*g) == Some(GroupPhase::Joined)))
    {
        assert!(
            start.elapsed() < STEP_TIMEOUT,
            "child: not joined: {:?}",
            h.ctl
        );
        h.step();
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("OWNER READY {}", std::process::id());
    // Until killed (bounded, in case the parent died).
    while start.elapsed() < Duration::from_secs(120) {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SA memberships belong to a port: while one process drives hostA's port, a second is
/// refused, naming the first's PID; once the first is killed (`kill -9`: it leaves
/// nothing at the SA), a new controller on the port takes it over, finds at OpenSM the
/// memberships the dead one left (GetTable by PortGID) and leaves them before it joins;
/// afterwards OpenSM lists only what the new one joined, and after its flush nothing.
#[test]
fn opensm_cleans_up_after_a_killed_owner() {
    if std::env::var_os(OWNER_CHILD).is_some() {
        return;
    }
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = tools_or_skip("opensm_cleans_up_after_a_killed_owner") else {
        return;
    };
    let sim = SimFabric::new(FabricConfig::default());
    let dev_a = sim.add_node("hostA", 1);
    let dev_b = sim.add_node("hostB", 1);
    let mut fabric = Fabric::start_with(
        &tools,
        &topology_with_guids(dev_a.node_guid(), dev_b.node_guid()),
    );
    let mut raw = IbsimMadChannel::connect("hostA").expect("attach to ibsim as hostA");
    let a = raw
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    let mut raw = OpenSm::new(raw);
    wait_for_broadcast(&mut raw, &mut fabric);
    let lock_dir = fabric.dir.join("run");
    let bcast = broadcast_mgid(PKey::DEFAULT);
    let theirs: Vec<Gid> = std::iter::once(bcast)
        .chain(OWNER_GROUPS.iter().map(|g| ipv4_group_mgid(*g)))
        .chain([ipv4_group_mgid(OWNER_SEND_ONLY)])
        .collect();

    // (1) The first owner: a child process that joins and waits.
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "child_owner_joins_and_waits_to_be_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_CHILD, "1")
        .env(OWNER_DIR, &lock_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child owner");
    let child_pid = wait_for_owner(&mut child, &mut fabric);
    println!("(1) child owner {child_pid} joined {} groups", theirs.len());
    let listed = listed_groups(&mut raw, &mut fabric, a.gid());
    println!("    OpenSM lists hostA in {listed:?}");
    assert_eq!(listed.len(), 3, "a GetTable answer holds three records");
    for g in &theirs {
        membership(&mut raw, &mut fabric, *g, a.gid(), None)
            .unwrap_or_else(|s| panic!("OpenSM has no membership of hostA in {g}: {s}"));
    }

    // (2) A second controller on the port is refused, and the message names the owner.
    let hybrid = HybridFabric::new(sim.clone());
    let port_a = hybrid
        .open_port("hostA", &dev_a, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = CtrlConfig {
        ipv4: Some([10, 0, 0, 1]),
        owner_lock_dir: Some(lock_dir.clone()),
        ..CtrlConfig::default()
    };
    let (qp, pool) = ctl_qp("second", &port_a);
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    match ibpoll_ctrl::Controller::new(cfg.clone(), port_a.clone(), qp.ctl, pool, clock.clone()) {
        Err(e @ ibpoll_ctrl::Error::PortOwned { pid, .. }) => {
            println!("(2) as expected: {e}");
            assert_eq!(pid, Some(child_pid));
            assert!(e.to_string().contains(&child_pid.to_string()), "{e}");
        }
        other => panic!("a second controller on an owned port: {other:?}"),
    }

    // (3) kill -9: the lock goes with the process, the memberships stay at the SA.
    child.kill().expect("SIGKILL the child owner");
    let status = child.wait().expect("reap the child");
    println!("(3) child owner killed ({status})");
    for g in &theirs {
        membership(&mut raw, &mut fabric, *g, a.gid(), None)
            .unwrap_or_else(|s| panic!("after kill -9 OpenSM lost hostA in {g}: {s}"));
    }

    // (4) The next owner cleans up before it joins.
    let mut h = CtlHost::with_config("next", [10, 0, 0, 1], &dev_a, port_a, clock, cfg);
    drive(
        &mut [&mut h],
        &mut fabric,
        "(4) the new owner's link up (after its cleanup)",
        LINK_UP_TIMEOUT,
        |h| h[0].ctl.link_up(),
    );
    let s = h.ctl.stats();
    println!(
        "    cleanup: runs {} found {} failed {}; GetTables {}, Deletes {} ({} memberships left bit by bit)",
        s.cleanup_runs,
        s.cleanup_found,
        s.cleanup_failed,
        s.sa_lists_sent,
        s.sa_leaves_sent,
        s.leaves_unconfirmed
    );
    assert_eq!((s.cleanup_runs, s.cleanup_failed), (1, 0));
    assert_eq!(s.cleanup_found, theirs.len() as u64);
    assert_eq!(s.leaves_unconfirmed, theirs.len() as u64);
    assert_eq!(
        s.sa_leaves_sent,
        2 * theirs.len() as u64,
        "FullMember and SendOnlyFullMember, one Delete each"
    );
    assert!(s.sa_lists_sent >= 2, "more groups than one answer holds");
    let listed = listed_groups(&mut raw, &mut fabric, a.gid());
    println!("    OpenSM lists hostA in {listed:?}");
    assert_eq!(
        listed,
        vec![bcast],
        "only the new owner's own broadcast join"
    );
    for g in &theirs[1..] {
        membership(&mut raw, &mut fabric, *g, a.gid(), None)
            .expect_err("the dead owner's membership is gone");
    }

    // (5) What it joins itself is all OpenSM holds of the port; after its flush, nothing.
    let g5 = GroupAddr::Ipv4([239, 2, 0, 5]);
    assert!(h.ctl.join_group(g5));
    drive(
        &mut [&mut h],
        &mut fabric,
        "(5) 239.2.0.5 joined",
        STEP_TIMEOUT,
        |h| h[0].ctl.group_phase(g5) == Some(GroupPhase::Joined),
    );
    let mut listed = listed_groups(&mut raw, &mut fabric, a.gid());
    listed.sort();
    let mut want = vec![bcast, ipv4_group_mgid([239, 2, 0, 5])];
    want.sort();
    assert_eq!(listed, want);
    h.ctl.set_admin_up(false);
    drive(
        &mut [&mut h],
        &mut fabric,
        "(5) the flush ended",
        STEP_TIMEOUT,
        |h| !h[0].ctl.is_flushing() && h[0].ctl.sa_in_flight() == 0,
    );
    let listed = listed_groups(&mut raw, &mut fabric, a.gid());
    assert!(listed.is_empty(), "OpenSM still lists hostA in {listed:?}");
    println!("(5) after the flush OpenSM lists hostA in nothing");
    // The simulated SA this process mirrors to never saw the dead owner's joins (the
    // child had its own): exactly the Deletes OpenSM acted on disagree, one held bit
    // per group.
    let c = h.port.counters();
    assert_eq!(
        (c.mirror_disagreed, c.mirror_unmatched),
        (theirs.len() as u64, 0),
        "{c:?}"
    );
}

/// Reads the child's stdout until it says it owns the port and joined; its PID.
fn wait_for_owner(child: &mut Child, fabric: &mut Fabric) -> u32 {
    use std::io::BufRead as _;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            // The harness writes "test <name> ... " before the test's own output.
            if let Some((_, pid)) = line.split_once("OWNER READY ") {
                let _ = tx.send(pid.trim().parse::<u32>().ok());
            }
        }
    });
    let start = Instant::now();
    loop {
        if let Ok(pid) = rx.recv_timeout(Duration::from_millis(100)) {
            return pid.expect("the child's PID");
        }
        if let Some(status) = child.try_wait().expect("the child") {
            panic!("the child owner exited ({status}):\n{}", fabric.logs());
        }
        assert!(
            start.elapsed() < STEP_TIMEOUT * 3,
            "the child owner did not join:\n{}",
            fabric.logs()
        );
        fabric.check_alive();
    }
}
