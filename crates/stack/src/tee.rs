//! A port seen by several controllers (one per interface, i.e. partition): every
//! controller must see every port event, but a port has one event queue. `TeePort`
//! hands each subscriber its own copy of the events; everything else goes straight to
//! the port. Control path only (a lock per event poll is fine there).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ibpoll_dev::{Port, PortEvent};

/// Events buffered per subscriber: more than an HCA's async event queue holds.
const EVENTS_MAX: usize = 256;

#[derive(Debug)]
struct Queues {
    subs: Vec<VecDeque<PortEvent>>,
}

/// One subscriber's view of a shared port.
#[derive(Debug)]
pub(crate) struct TeePort {
    inner: Arc<dyn Port>,
    queues: Arc<Mutex<Queues>>,
    sub: usize,
}

/// `n` views of `port`, each seeing every event from now on.
pub(crate) fn tee(port: &Arc<dyn Port>, n: usize) -> Vec<Arc<dyn Port>> {
    let queues = Arc::new(Mutex::new(Queues {
        subs: vec![VecDeque::new(); n],
    }));
    (0..n)
        .map(|sub| {
            Arc::new(TeePort {
                inner: port.clone(),
                queues: queues.clone(),
                sub,
            }) as Arc<dyn Port>
        })
        .collect()
}

impl Port for TeePort {
    ibpoll_dev::delegate_port!(inner: info, qp, ah, mcast, mad);

    fn poll_event(&self) -> Option<PortEvent> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(ev) = self.inner.poll_event() {
            for s in &mut q.subs {
                // Bounded like the HCA's queue: the oldest events go first.
                if s.len() >= EVENTS_MAX {
                    s.pop_front();
                }
                s.push_back(ev);
            }
        }
        q.subs[self.sub].pop_front()
    }
}
