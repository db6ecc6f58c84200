//! Ctrl-C (SIGINT): a flag the stack's handle polls; the lcores never see signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static CTRL_C: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

extern "C" fn on_sigint(_sig: libc::c_int) {
    // Relaxed: a flag polled by `ctrl_c_pressed`; a store is async-signal-safe.
    CTRL_C.store(true, Ordering::Relaxed);
}

/// Installs the SIGINT handler (once per process).
pub fn install_ctrl_c() {
    INSTALL.call_once(|| {
        let handler: extern "C" fn(libc::c_int) = on_sigint;
        // SAFETY: `on_sigint` only stores to an atomic, which is async-signal-safe, and
        // has the signature `signal` expects for a handler.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    });
}

/// Whether Ctrl-C was pressed since [`install_ctrl_c`].
pub fn ctrl_c_pressed() -> bool {
    // Relaxed: see `on_sigint`.
    CTRL_C.load(Ordering::Relaxed)
}
