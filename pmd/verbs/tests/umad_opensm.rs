#![allow(unused_imports)]
//! The umad MAD channel against OpenSM: the real libibumad, dlopen()ed, talking to
//! OpenSM on ibsim through ibsim's umad2sim preload (the libibumad code path a real HCA
//! uses; umad2sim replaces the kernel's /dev/infiniband/umad* underneath it).
//!
//! umad2sim attaches a process to one ibsim node (SIM_HOST) once, so each test starts
//! ibsim and OpenSM itself (pmd/ibsim's tests/support/opensm.rs) and runs its umad half
//! in a child: this test binary again, under `LD_PRELOAD=libumad2sim.so SIM_HOST=...`,
//! running only the `child_*` test named (a `child_*` test does nothing unless
//! `IBPOLL_UMAD_CHILD` is set).
//!
//! Two real controllers run against OpenSM as well
//! ([`umad_two_controllers_leave_nothing_at_opensm`]): hostA's SA transactions over
//! libibumad, hostB's over ibsim's sockets (pmd/ibsim), on hybrid ports whose data side
//! is a simulated fabric; they join, leave and go down, and OpenSM then holds no
//! membership of either port (its GetTable by PortGID, and `saquery --smkey 1 -m`).
//!
//! These tests run in CI and do not skip there: a missing tool (ibsim, opensm,
//! libumad2sim.so, saquery, libibumad) fails them. They skip only with
//! `IBPOLL_SKIP_OPENSM=1` (set inside scripts/vm-test.sh's VM, which has no OpenSM).
#![allow(dead_code)]

include!("../../ibsim/tests/support/opensm.rs");

use ibpoll_pmd_verbs::{MadEvent, UmadChannel, UmadConfig, UmadLibrary};

const CHILD: &str = "IBPOLL_UMAD_CHILD";
const DIR: &str = "IBPOLL_FABRIC_DIR";
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The tools, or `None` when `IBPOLL_SKIP_OPENSM=1`; a missing tool fails the test.
fn opensm_tools(test: &str) -> Option<Tools> {
    if std::env::var_os("IBPOLL_SKIP_OPENSM").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: IBPOLL_SKIP_OPENSM=1");
        return None;
    }
    let tools = find_tools().unwrap_or_else(|missing| {
        panic!(
            "{missing} missing: install the Debian packages opensm, ibsim-utils and \
             infiniband-diags (or set IBPOLL_SKIP_OPENSM=1 to skip)"
        )
    });
    assert!(
        which("saquery").is_some(),
        "saquery missing: apt install infiniband-diags"
    );
    if let Err(e) = UmadLibrary::load() {
        panic!("{e}");
    }
    Some(tools)
}

/// Runs `test` of this binary as SIM_HOST `host` under umad2sim; returns its output.
fn spawn_child(tools: &Tools, fabric: &Fabric, host: &str, test: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_PRELOAD", &tools.umad2sim)
        .env("SIM_HOST", host)
        .env(CHILD, "1")
        .env(DIR, &fabric.dir)
        // umad2sim writes its fake sysfs under ./sys-<pid>.
        .current_dir(&fabric.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test")
}

/// Waits for a child (bounded); returns (success, stdout + stderr).
fn wait_child(mut c: Child, fabric: &mut Fabric) -> (bool, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = c.try_wait().expect("wait for the child") {
            let mut out = String::new();
            let _ = c.stdout.take().unwrap().read_to_string(&mut out);
            let _ = c.stderr.take().unwrap().read_to_string(&mut out);
            return (status.success(), out);
        }
        if t0.elapsed() > CHILD_TIMEOUT {
            let _ = c.kill();
            let _ = c.wait();
            panic!(
                "the child test ran past {CHILD_TIMEOUT:?}:\n{}",
                fabric.logs()
            );
        }
        fabric.check_alive();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `saquery` as SIM_HOST `host`: its output.
fn saquery(tools: &Tools, fabric: &Fabric, host: &str, args: &[&str]) -> String {
    let out = Command::new(which("saquery").expect("saquery"))
        .args(args)
        .env("LD_PRELOAD", &tools.umad2sim)
        .env("SIM_HOST", host)
        .current_dir(&fabric.dir)
        .output()
        .expect("run saquery");
    assert!(
        out.status.success(),
        "saquery {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn umad_channel() -> UmadChannel {
    let lib = UmadLibrary::load().unwrap_or_else(|e| panic!("{e}"));
    UmadChannel::open(&lib, &UmadConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn umad_request_table_against_opensm() {
    if is_child() {
        return;
    }
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = opensm_tools("umad_request_table_against_opensm") else {
        return;
    };
    let mut fabric = Fabric::start(&tools);
    let child = spawn_child(&tools, &fabric, "hostA", "child_request_table");
    let (ok, out) = wait_child(child, &mut fabric);
    println!("{out}");
    assert!(ok, "the umad half failed:\n{}", fabric.logs());
    assert!(out.contains("umad timeout surfaced"), "{out}");
}

/// The umad half: hostA's requests go through libibumad (umad2sim), hostB's through
/// pmd/ibsim's socket channel; the same table as pmd/ibsim's OpenSM test.
#[test]
fn child_request_table() {
    if !is_child() {
        return;
    }
    let mut fabric = Fabric::attach(PathBuf::from(
        std::env::var_os(DIR).expect("IBPOLL_FABRIC_DIR"),
    ));
    let mut ib_a = IbsimMadChannel::connect("hostA").expect("attach to ibsim as hostA");
    let mut ib_b = IbsimMadChannel::connect("hostB").expect("attach to ibsim as hostB");
    let a = ib_a
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let b = ib_b
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    // A request nobody can answer comes back as the transport's timeout (ibsim returns it
    // undeliverable with status ETIMEDOUT, as the kernel does after its retries).
    {
        let mut ch = umad_channel();
        let info = ch.port_info().unwrap_or_else(|e| panic!("{e}"));
        println!("umad port: {info:?}");
        assert_eq!(
            (info.lid, info.sm_lid, info.port_guid),
            (a.lid.0, a.sm_lid.0, a.port_guid)
        );
        let mut req = get_group_request(broadcast_mgid(PKey::DEFAULT));
        req[8..16].copy_from_slice(&0x1234_5678u64.to_be_bytes());
        let nowhere = MadAddr {
            lid: Lid(0x0999),
            ..ib_a.sa_addr()
        };
        ch.send(&req, nowhere).expect("umad_send");
        let t0 = Instant::now();
        let tid = loop {
            match ch.poll() {
                Some(MadEvent::Timeout { tid }) => break tid,
                Some(other) => panic!("expected a timeout, got {other:?}"),
                None => assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "no timeout reported"
                ),
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(
            tid as u32, 0x1234_5678,
            "the timed-out request's TID (low 32 bits)"
        );
        // Through the MadChannel trait: not an answer, kept for take_timeout.
        req[12..16].copy_from_slice(&0x1234_5679u32.to_be_bytes());
        ch.send(&req, nowhere).expect("umad_send");
        let t0 = Instant::now();
        let tid = loop {
            assert!(ch.recv().is_none(), "a timeout is not an answer");
            if let Some(t) = ch.take_timeout() {
                break t;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no timeout reported"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(tid as u32, 0x1234_5679);
        println!("umad timeout surfaced: TID {tid:#x}; {:?}", ch.counters());
    }

    let sa = MadAddr {
        lid: a.sm_lid,
        sl: a.sm_sl,
        ..ib_a.sa_addr()
    };
    let mut osm_a = OpenSm::over(Box::new(umad_channel()), sa);
    let bcast = wait_for_broadcast(&mut osm_a, &mut fabric);
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
            name: "hostA (umad)",
            osm: osm_a,
            requester: requester(&a),
        },
        Host {
            name: "hostB (ibsim socket)",
            osm: OpenSm::new(ib_b),
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
}

// ------------------------------------------------------------------ two controllers

/// Set (to the fabric's directory) for the child of [`umad_two_controllers_leave_nothing_at_opensm`].
const TWO: &str = "IBPOLL_UMAD_TWO";

/// Two real controllers against OpenSM: hostA's SA transactions go through libibumad
/// (umad2sim underneath), hostB's through ibsim's sockets; they join and leave groups,
/// exchange multicast over the simulated data side, and go down. Afterwards OpenSM
/// holds no membership of either port, by its own GetTable and by saquery.
#[test]
fn umad_two_controllers_leave_nothing_at_opensm() {
    if is_child() {
        return;
    }
    let _one_fabric = FABRIC.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = opensm_tools("umad_two_controllers_leave_nothing_at_opensm") else {
        return;
    };
    // The child makes its simulated nodes the same way: same GUIDs.
    let sim = SimFabric::new(FabricConfig::default());
    let (a, b) = (sim.add_node("hostA", 1), sim.add_node("hostB", 1));
    let mut fabric = Fabric::start_with(&tools, &topology_with_guids(a.node_guid(), b.node_guid()));
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "child_two_controllers",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", &tools.umad2sim)
        .env("SIM_HOST", "hostA")
        .env(CHILD, "1")
        .env(TWO, "1")
        .env(DIR, &fabric.dir)
        .current_dir(&fabric.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let (ok, out) = wait_child(child, &mut fabric);
    println!("{out}");
    assert!(ok, "the two controllers failed:\n{}", fabric.logs());
    assert!(out.contains("two controllers left everything"), "{out}");

    // OpenSM's view after the child is gone, from a client of its own.
    let mut raw = IbsimMadChannel::connect("hostB").expect("attach to ibsim as hostB");
    let port_b = raw
        .wait_active(SUBNET_UP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut raw = OpenSm::new(raw);
    let gid_a = Gid::new(port_b.gid_prefix, a.node_guid() + 1);
    for (name, gid) in [("hostA", gid_a), ("hostB", port_b.gid())] {
        let listed = listed_groups(&mut raw, &mut fabric, gid);
        assert!(listed.is_empty(), "OpenSM lists {name} in {listed:?}");
        println!("OpenSM's GetTable by PortGID: {name} is in no group");
    }
    // saquery with the SA key (trusted: records name their PortGID and JoinState).
    let all = saquery(&tools, &fabric, "hostB", &["--smkey", "1", "-m"]);
    println!("saquery --smkey 1 -m:\n{all}");
    for gid in [gid_a, port_b.gid()] {
        let gid = saquery_gid(&gid);
        assert!(!all.contains(&gid), "saquery -m still lists {gid}:\n{all}");
    }
    let groups = saquery(&tools, &fabric, "hostB", &["-g"]);
    assert!(
        groups.contains("ff12:401b:ffff::ffff:ffff"),
        "saquery -g lists the broadcast group:\n{groups}"
    );
}

/// The child: hostA over umad (this process runs under umad2sim as SIM_HOST=hostA),
/// hostB over ibsim's sockets.
#[test]
fn child_two_controllers() {
    if !is_child() || std::env::var_os(TWO).is_none() {
        return;
    }
    let mut fabric = Fabric::attach(PathBuf::from(
        std::env::var_os(DIR).expect("IBPOLL_FABRIC_DIR"),
    ));
    // The subnet is up once OpenSM swept both ports.
    for node in ["hostA", "hostB"] {
        let mut ch = IbsimMadChannel::connect(node).expect("attach to ibsim");
        ch.wait_active(SUBNET_UP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", fabric.logs()));
    }
    let sim = SimFabric::new(FabricConfig::default());
    let (dev_a, dev_b) = (sim.add_node("hostA", 1), sim.add_node("hostB", 1));
    let hybrid = HybridFabric::new(sim.clone());
    let umad: ibpoll_pmd_ibsim::MadOpener = Arc::new(|| {
        let ch: Box<dyn MadChannel> = Box::new(umad_channel());
        Ok(ch)
    });
    let port_a = hybrid
        .open_port_with("hostA", &dev_a, 1, Some(umad))
        .unwrap_or_else(|e| panic!("{e}"));
    let port_b = hybrid
        .open_port("hostB", &dev_b, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let mut ha = CtlHost::new("hostA (umad)", [10, 0, 0, 1], &dev_a, port_a, clock.clone());
    let mut hb = CtlHost::new("hostB (ibsim socket)", [10, 0, 0, 2], &dev_b, port_b, clock);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "both links up (cleanup, then the broadcast join)",
        LINK_UP_TIMEOUT,
        |h| h.iter().all(|h| h.ctl.link_up()),
    );
    let g1 = GroupAddr::Ipv4([239, 4, 0, 1]);
    let g2 = GroupAddr::Ipv4([239, 4, 0, 2]);
    let g3 = GroupAddr::Ipv4([239, 4, 0, 3]);
    for h in [&mut ha, &mut hb] {
        assert!(h.ctl.join_group(g1));
    }
    assert!(ha.ctl.join_group(g2));
    // hostB sends to g3 nobody joined: a send-only join.
    let pkt = hb.packet(7);
    hb.request(Request::Mcast {
        group: g3,
        mbuf: pkt,
    });
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "every join answered by OpenSM",
        STEP_TIMEOUT,
        |h| {
            h[0].ctl.group_phase(g1) == Some(GroupPhase::Joined)
                && h[0].ctl.group_phase(g2) == Some(GroupPhase::Joined)
                && h[1].ctl.group_phase(g1) == Some(GroupPhase::Joined)
                && h[1].ctl.group_phase(g3) == Some(GroupPhase::Joined)
        },
    );
    // saquery (under umad2sim as hostA, like this process) with the SA key lists every
    // member: both ports now.
    let tools = find_tools().unwrap_or_else(|m| panic!("{m} missing"));
    let members = saquery(&tools, &fabric, "hostA", &["--smkey", "1", "-m"]);
    for h in [&ha, &hb] {
        let gid = saquery_gid(&h.gid);
        assert!(
            members.contains(&format!("PortGid.................{gid}\n")),
            "saquery -m lacks {} ({gid}):\n{members}",
            h.name
        );
    }
    println!("saquery --smkey 1 -m while joined:\n{members}");
    let m1 = ha.ctl.mgid_of(g1).expect("a group");
    hb.step();
    hb.send_mcast(m1, 11);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "hostA receives hostB's packet to 239.4.0.1",
        STEP_TIMEOUT,
        |h| h[0].received.contains(&11),
    );
    // Independent leaves: hostA leaves g1, hostB keeps it; then the rest goes down.
    ha.ctl.leave_group(g1);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "hostA left 239.4.0.1",
        STEP_TIMEOUT,
        |h| h[0].ctl.group_phase(g1).is_none() && h[0].ctl.sa_in_flight() == 0,
    );
    assert_eq!(hb.ctl.group_phase(g1), Some(GroupPhase::Joined));
    ha.ctl.set_admin_up(false);
    hb.ctl.set_admin_up(false);
    drive(
        &mut [&mut ha, &mut hb],
        &mut fabric,
        "both flushes ended",
        STEP_TIMEOUT,
        |h| {
            h.iter()
                .all(|h| !h.ctl.is_flushing() && h.ctl.sa_in_flight() == 0)
        },
    );
    for h in [&ha, &hb] {
        let s = h.ctl.stats();
        println!(
            "{}: joins sent {} ok {}; leaves sent {} done {}; GetTables {}; SA timeouts {} \
             late {} unknown {} malformed {}",
            h.name,
            s.sa_joins_sent,
            s.joins_ok,
            s.sa_leaves_sent,
            s.leaves_done,
            s.sa_lists_sent,
            s.sa_timeouts,
            s.sa_late_answers,
            s.sa_unknown_answers,
            s.sa_malformed
        );
        assert_eq!(s.joins_failed, 0, "{}", h.name);
        assert_eq!((s.leaves_abandoned, s.sa_timeouts), (0, 0), "{}", h.name);
        assert_eq!(s.leaves_done, s.sa_leaves_sent, "{}", h.name);
        assert!(s.sa_lists_sent >= 1, "{}: the startup listing", h.name);
        let c = h.port.counters();
        assert_eq!(
            (c.mirror_disagreed, c.mirror_unmatched),
            (0, 0),
            "{}: OpenSM and the simulated SA answered alike: {c:?}",
            h.name
        );
    }
    // Over umad, hostA's own view of OpenSM: nothing of either port.
    let ib = ha.port.ibsim_port();
    let sa = MadAddr {
        lid: ib.sm_lid,
        qpn: ibpoll_wire::Qpn::GSI,
        qkey: QKey::GSI,
        sl: ib.sm_sl,
        pkey_index: 0,
    };
    let mut osm_a = OpenSm::over(Box::new(umad_channel()), sa);
    for (name, gid) in [("hostA", ha.gid), ("hostB", hb.gid)] {
        let listed = listed_groups(&mut osm_a, &mut fabric, gid);
        assert!(listed.is_empty(), "OpenSM lists {name} in {listed:?}");
    }
    println!("two controllers left everything (hostA over umad, hostB over ibsim)");
}

/// A GID as saquery prints it (an IPv6 address, zeros compressed).
fn saquery_gid(gid: &Gid) -> String {
    std::net::Ipv6Addr::from(gid.0).to_string()
}
