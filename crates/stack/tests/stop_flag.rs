//! The stop flag: a panicking application sets it and the stack still stops the normal
//! way (the flush leaves every group); a flag the program sets is seen by the handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::{ControlCore, GroupAddr, IdlePolicy, LcoreCtx, Stack, Tx};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};

const T: Duration = Duration::from_secs(20);

/// An application that panics in `poll` once `armed` is set.
struct Bomb {
    armed: Arc<AtomicBool>,
}

impl ibpoll::App for Bomb {
    fn on_burst(&mut self, _: &LcoreCtx, _: &mut ibpoll_mem::MbufArray, _: &mut Tx) {}

    fn poll(&mut self, _: &LcoreCtx, _: &mut Tx) -> bool {
        if self.armed.load(Ordering::Relaxed) {
            panic!("the application's own bug");
        }
        false
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The application on the lcore that hosts the control core panics (the worst case:
/// the controller must survive it), and, with a dedicated control lcore, on a data
/// lcore that does not host it.
fn a_panicking_app_stops_the_stack_and_leaves_every_group(control: ControlCore, cores: usize) {
    let fabric = SimFabric::new(FabricConfig::default());
    let flag = Arc::new(AtomicBool::new(false));
    let armed = Arc::new(AtomicBool::new(false));
    let stack = {
        let armed = armed.clone();
        Stack::builder()
            .name("bomb")
            .fabric(&fabric, "bomb")
            .ipv4([10, 0, 0, 1])
            .data_cores(cores)
            .control(control)
            .pin(false)
            .idle(IdlePolicy::Yield { after: 8 })
            .stop_flag(flag.clone())
            .stop_timeout(T)
            .start(move |_| Bomb {
                armed: armed.clone(),
            })
            .expect("start")
    };
    assert!(stack.wait_link_up(T).unwrap());
    assert!(stack.join_group(GroupAddr::Ipv4([239, 1, 2, 3])).unwrap());
    let gid = stack.hwaddr().gid();
    wait_for("the broadcast group and 239.1.2.3 joined at the SA", || {
        fabric.with_sa(|sa| sa.memberships_of(&gid).count()) == 2
    });
    assert!(!stack.stop_requested());
    armed.store(true, Ordering::Relaxed);
    wait_for("the stop flag", || flag.load(Ordering::SeqCst));
    assert!(stack.stop_requested());
    // The control core still answers: the lcore survived its application.
    assert!(stack.link_up().unwrap());
    let report = stack.stop().expect("a normal stop");
    assert!(report.flushed, "{report:?}");
    assert_eq!(report.app_panics.len(), cores, "{report:?}");
    assert!(report.app_panics.contains(&0), "{report:?}");
    assert!(report.ctrl.leaves_done >= 2, "{:?}", report.ctrl);
    assert_eq!(fabric.with_sa(|sa| sa.memberships_of(&gid).count()), 0);
    assert_eq!(report.pool_in_use, 0);
}

#[test]
fn a_panic_on_the_lcore_hosting_the_control_core_still_flushes() {
    a_panicking_app_stops_the_stack_and_leaves_every_group(ControlCore::OnDataLcore0, 1);
}

#[test]
fn a_panic_on_data_lcores_with_a_dedicated_control_lcore_still_flushes() {
    a_panicking_app_stops_the_stack_and_leaves_every_group(ControlCore::Dedicated, 1);
}

#[test]
fn the_program_sets_the_flag_and_the_stack_reports_it() {
    let fabric = SimFabric::new(FabricConfig::default());
    let flag = Arc::new(AtomicBool::new(false));
    let stack = Stack::builder()
        .fabric(&fabric, "a")
        .data_cores(1)
        .pin(false)
        .idle(IdlePolicy::Yield { after: 8 })
        .stop_flag(flag.clone())
        .start(|_| ibpoll::Discard)
        .expect("start");
    assert!(!stack.stop_requested());
    flag.store(true, Ordering::SeqCst);
    assert!(stack.stop_requested());
    assert!(Arc::ptr_eq(stack.stop_flag(), &flag));
    // run_until_ctrl_c returns at once on a set flag, then stops.
    let report = stack.run_until_ctrl_c(None).expect("stop");
    assert!(report.app_panics.is_empty());
    assert!(report.flushed);
}
