//! Port events.

use std::time::Instant;

use ibpoll_dev::{PortEvent, PortState};

use super::kit::Side;
use super::{EventCause, Fixture};

/// Waits for `want` on `side`'s port, returning the events seen before it.
fn wait_for<F: Fixture + ?Sized>(f: &F, side: &Side, want: PortEvent) -> Vec<PortEvent> {
    let deadline = Instant::now() + f.patience();
    let mut before = Vec::new();
    loop {
        match side.port.poll_event() {
            Some(ev) if ev == want => return before,
            Some(ev) => before.push(ev),
            None => {
                assert!(
                    Instant::now() < deadline,
                    "no {want:?} within {:?} (saw {before:?})",
                    f.patience()
                );
                std::thread::yield_now();
            }
        }
    }
}

/// An idle port reports no event; each cause the fixture can make happen to the second
/// port is reported there, and the port's attributes follow (state, LID).
pub fn events_follow_the_hooks<F: Fixture + ?Sized>(f: &F) {
    let [_, b] = Side::both(f);
    // Drain what set-up may have left (an Active at start), then expect silence.
    while b.port.poll_event().is_some() {}
    std::thread::sleep(f.quiet());
    assert_eq!(b.port.poll_event(), None, "an idle port reports nothing");
    let mut tried = 0;
    for cause in EventCause::ALL {
        let lid = b.port.attr().lid;
        if !f.cause(1, cause) {
            continue;
        }
        tried += 1;
        wait_for(f, &b, cause.expected());
        let attr = b.port.attr();
        match cause {
            EventCause::LinkDown => assert_ne!(attr.state, PortState::Active, "after LinkDown"),
            EventCause::LinkUp => assert_eq!(attr.state, PortState::Active, "after LinkUp"),
            EventCause::LidChange => assert_ne!(attr.lid, lid, "the LID changed"),
            _ => {}
        }
    }
    if tried == 0 {
        eprintln!("events_follow_the_hooks: the fixture causes no event; only silence checked");
    }
}
