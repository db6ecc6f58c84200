//! A subnet-manager restart is logged at INFO: its cause, the light flush, and the
//! rejoin of every group, each naming the group. Its own binary (one test): the log
//! subscriber is process-wide, as a program's is, since the controller logs from the
//! lcore that hosts it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use ibpoll::GroupAddr;
use ibpoll_ctrl::mcast::GroupPhase;
use ibpoll_wire::ipoib;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const GROUP: [u8; 4] = [239, 1, 2, 3];

#[test]
fn a_subnet_manager_restart_and_the_rejoin_of_every_group_are_logged_at_info() {
    let _serial = serial();
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let fabric = fabric();
    let s = host(&fabric, "a", [10, 0, 0, 1], 0)
        .start(|_| ibpoll::Discard)
        .expect("start");
    assert!(s.wait_link_up(T).unwrap());
    assert!(s.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    let joined = || {
        s.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    };
    wait_for("the join", T, joined);
    let joins_before = s.ctrl_stats().unwrap().joins_ok;
    let mark = capture.text().len();

    fabric.restart_sm(None);
    wait_for("the rejoin of both groups", T, || {
        let st = s.ctrl_stats().unwrap();
        st.flushes_light == 1
            && st.joins_ok >= joins_before + 2
            && !s.with_controller(|c| c.is_flushing()).unwrap()
    });
    assert!(joined());
    let log = capture.text()[mark..].to_owned();
    let info = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .contains(" INFO ")
    };
    assert!(
        info("the subnet manager restarted or asked to reregister; rejoining every group"),
        "{log}"
    );
    assert!(info("flush started"), "{log}");
    assert!(info("flush ended"), "{log}");
    let pkey = ibpoll_wire::PKey::DEFAULT;
    let bcast = ipoib::broadcast_mgid(pkey);
    let group = ipoib::ipv4_mcast_mgid(GROUP, pkey, ipoib::McastScope::LINK_LOCAL);
    for mgid in [bcast, group] {
        let line = log
            .lines()
            .find(|l| l.contains("joined group") && l.contains(&mgid.to_string()))
            .unwrap_or_else(|| panic!("no rejoin of {mgid} in:\n{log}"));
        assert!(line.contains(" INFO ") && line.contains("mlid="), "{line}");
    }
    // In that order: the cause, then the rejoins.
    let cause = log.find("the subnet manager restarted").unwrap();
    assert!(log.rfind("joined group").unwrap() > cause, "{log}");
    s.stop().expect("stop");
}
