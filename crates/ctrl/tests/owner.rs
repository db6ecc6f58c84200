//! One ibpoll process per InfiniBand port: the owner lock between processes (a child
//! process of this test binary holds it), its release by `kill -9`, and its sharing
//! between the controllers of one process (one per partition).

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibpoll_ctrl::{Controller, CtrlConfig, Error, PortClaim};
use ibpoll_dev::{Clock, Device, Port};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig};
use ibpoll_testkit::data;
use ibpoll_wire::PKey;

const CHILD: &str = "IBPOLL_OWNER_TEST_CHILD";
const GUID: u64 = 0x0002_c903_00a0_0001;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ibpoll-owner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A controller on `port` in partition `pkey` with the owner lock in `dir`.
fn controller(
    port: &Arc<dyn Port>,
    pkey: PKey,
    dir: &Path,
    net: &Net,
) -> Result<Controller, Error> {
    let pool = data::pool("owner", 256);
    let pi = port.attr().pkey_index(pkey).expect("partition");
    let qp = data::ipoib_qp(&**port, pi, &pool, 64);
    let cfg = CtrlConfig {
        pkey,
        owner_lock_dir: Some(dir.to_path_buf()),
        ..CtrlConfig::default()
    };
    let clock: Arc<dyn Clock> = net.clock.clone();
    Controller::new(cfg, port.clone(), qp.ctl, pool, clock).map(|(c, _)| c)
}

/// The child: holds port `GUID` until killed (bounded).
#[test]
fn child_holds_the_port() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let _claim = PortClaim::claim(Path::new(&dir), GUID, PKey::DEFAULT).expect("the port is free");
    println!("HOLDING {}", std::process::id());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn another_process_is_refused_until_the_owner_is_killed() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tmp("procs");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_holds_the_port",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &dir)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            // The harness writes "test <name> ... " before the test's own output.
            if let Some((_, pid)) = line.split_once("HOLDING ") {
                let _ = tx.send(pid.trim().parse::<u32>().expect("a PID"));
            }
        }
    });
    let start = Instant::now();
    let pid = loop {
        if let Ok(pid) = rx.recv_timeout(Duration::from_millis(50)) {
            break pid;
        }
        assert!(child.try_wait().unwrap().is_none(), "the child exited");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never held the port"
        );
    };
    // A controller of this process on that port is refused, naming the owner.
    let net = Net::new(FaultConfig::NONE);
    let port = net.fabric.add_node("a", 1).open_port(1).unwrap();
    assert_eq!(port.attr().gid.guid(), GUID);
    match controller(&port, PKey::DEFAULT, &dir, &net) {
        Err(e @ Error::PortOwned { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("process {pid}")), "{msg}");
            assert!(msg.contains("0x0002c90300a00001"), "{msg}");
            println!("refused as it should be: {msg}");
        }
        other => panic!("an owned port: {:?}", other.map(|_| ())),
    }
    // kill -9 releases it (the kernel drops the flock with the process).
    child.kill().unwrap();
    child.wait().unwrap();
    let c = controller(&port, PKey::DEFAULT, &dir, &net).expect("the port is free again");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_controllers_of_one_process_share_the_port_one_per_partition() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tmp("partitions");
    let net = Net::with(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        faults: FaultConfig::NONE,
        ..FabricConfig::default()
    });
    let port = net.fabric.add_node("a", 1).open_port(1).unwrap();
    let a = controller(&port, PKey::DEFAULT, &dir, &net).expect("first");
    let b = controller(&port, PKey(0x8001), &dir, &net).expect("another partition");
    assert!(matches!(
        controller(&port, PKey::DEFAULT, &dir, &net),
        Err(Error::PortOwned { .. })
    ));
    drop(a);
    let a = controller(&port, PKey::DEFAULT, &dir, &net).expect("the partition is free again");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
