//! Starts the lcores: one thread per lane (pinned, registered with the pools), data
//! lcore 0 hosting the controllers unless the control core is dedicated.

use super::check::Plan;
use super::{pin_to, register_lcore, StackBuilder};
use crate::app::App;

use crate::control::StackParts;
use crate::lcore::{self, DataLcore};
use crate::signal::{Guarded, StopOnPanic};
use crate::stack::{LcoreExit, Stack};
use crate::Error;

pub(super) fn spawn<A: App>(
    b: &StackBuilder,
    plan: &Plan,
    parts: StackParts,
    mut app: impl FnMut(usize) -> A,
) -> Result<Stack, Error> {
    let StackParts {
        mut stack,
        control,
        lanes,
    } = parts;
    let stop_state = stack.stop_state().clone();
    let shared = lanes[0].shared.clone();
    let hosts = control.into_hosts();
    // The controllers go to data lcore 0, or to a control lcore of their own.
    let (mut host, dedicated_hosts) = if plan.dedicated {
        (None, Some(hosts))
    } else {
        (Some(hosts), None)
    };
    let mut threads = Vec::with_capacity(lanes.len() + 1);
    let pin = b.pin;
    for (i, lane) in lanes.into_iter().enumerate() {
        let name = format!("{}-lcore{i}", b.name);
        let cpu = plan.cpus[i];
        let ctl = if i == 0 {
            host.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        let app = Guarded::new(app(i), i, stop_state.clone());
        let lcore = DataLcore::new(lane, ctl, app, b.idle, b.ctl_poll_interval);
        let thread = name.clone();
        let on_panic = StopOnPanic {
            state: stop_state.clone(),
            lcore: i,
        };
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _on_panic = on_panic;
                if pin {
                    pin_to(cpu, &thread);
                }
                let _lcore = register_lcore(&thread);
                LcoreExit { ctrl: lcore.run() }
            });
        match h {
            Ok(h) => threads.push(h),
            Err(source) => return Err(abort(stack, threads, Error::Spawn { name, source })),
        }
    }
    if let Some(hosts) = dedicated_hosts {
        let name = format!("{}-ctl", b.name);
        let cpu = plan.cpus[plan.data_cores];
        let thread = name.clone();
        let idle = b.idle;
        let shared = shared.clone();
        let on_panic = StopOnPanic {
            state: stop_state.clone(),
            lcore: plan.data_cores,
        };
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _on_panic = on_panic;
                if pin {
                    pin_to(cpu, &thread);
                }
                let _lcore = register_lcore(&thread);
                LcoreExit {
                    ctrl: lcore::run_control(hosts, shared, idle),
                }
            });
        match h {
            Ok(h) => threads.push(h),
            Err(source) => return Err(abort(stack, threads, Error::Spawn { name, source })),
        }
    }
    stack.adopt(threads);
    Ok(stack)
}

/// A thread could not start: stops the ones that did and returns the error.
fn abort(mut stack: Stack, threads: Vec<std::thread::JoinHandle<LcoreExit>>, e: Error) -> Error {
    stack.adopt(threads);
    let _ = stack.stop();
    e
}
