//! Stopping on request: the stop flag an application shares with its stacks, what sets
//! it (its own signal handlers, a panicking lcore), and a Ctrl-C convenience.
//!
//! The stack never installs a signal handler of its own unless asked to
//! ([`install_ctrl_c`], [`register_stop_signals`], [`Stack::run_until_ctrl_c`]), and
//! then only through `signal-hook`, which adds its action beside the handlers already
//! installed instead of replacing them. A program that handles signals itself gives
//! the stack its flag ([`StackBuilder::stop_flag`]) and sets it from its own handlers.
//!
//! The flag is a request, not the stop: the lcores keep running (and draining) until
//! the handle's [`Stack::stop`] takes the interfaces down, waits for the flush (every
//! membership left) and joins them. Whoever owns the handle watches the flag
//! ([`Stack::stop_requested`]) and calls `stop`.
//!
//! A panic in an application callback is caught on its lcore: the lcore stops calling
//! that application (whatever it left in its receive slots is freed and counted as
//! `app_dropped`, as always), keeps polling its queues and, on data lcore 0, the
//! control core, and sets the stop flag, so that the owner stops the stack the normal
//! way and the flush still leaves every group. [`StopReport::app_panics`] names the
//! lcores. A panic in the stack's own code ends its thread; the flag is set then too.
//!
//! [`Stack::run_until_ctrl_c`]: crate::Stack::run_until_ctrl_c
//! [`Stack::stop`]: crate::Stack::stop
//! [`Stack::stop_requested`]: crate::Stack::stop_requested
//! [`StackBuilder::stop_flag`]: crate::StackBuilder::stop_flag
//! [`StopReport::app_panics`]: crate::StopReport::app_panics

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::app::{App, LcoreCtx};
use crate::tx::Tx;

/// The stop flag and the lcores whose application panicked, shared by a stack's lcores
/// and its handle.
#[derive(Debug)]
pub(crate) struct StopState {
    /// Set (SeqCst, like signal-hook's stores) by whoever requests the stop.
    pub(crate) flag: Arc<AtomicBool>,
    /// Bit `i`: data lcore `i`'s application panicked.
    panicked: AtomicU64,
}

impl StopState {
    pub(crate) fn new(flag: Arc<AtomicBool>) -> StopState {
        StopState {
            flag,
            panicked: AtomicU64::new(0),
        }
    }

    /// Lcore `lcore` panicked: the owner must stop the stack.
    fn panicked_on(&self, lcore: usize) {
        // Relaxed: read after the lcores were joined (`join` synchronises).
        self.panicked.fetch_or(
            1u64.checked_shl(lcore as u32).unwrap_or(0),
            Ordering::Relaxed,
        );
        self.flag.store(true, Ordering::SeqCst);
    }

    /// The data lcores whose application panicked.
    pub(crate) fn panicked_lcores(&self) -> Vec<usize> {
        let bits = self.panicked.load(Ordering::Relaxed);
        (0..64).filter(|i| bits & (1 << i) != 0).collect()
    }

    pub(crate) fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// An application whose callbacks run under `catch_unwind`: after a panic it is never
/// called again, and the stop flag is set.
pub(crate) struct Guarded<A> {
    app: Option<A>,
    lcore: usize,
    state: Arc<StopState>,
}

impl<A> std::fmt::Debug for Guarded<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("lcore", &self.lcore)
            .field("alive", &self.app.is_some())
            .finish()
    }
}

impl<A: App> Guarded<A> {
    pub(crate) fn new(app: A, lcore: usize, state: Arc<StopState>) -> Guarded<A> {
        Guarded {
            app: Some(app),
            lcore,
            state,
        }
    }

    fn call<R: Default>(&mut self, f: impl FnOnce(&mut A) -> R) -> R {
        let Some(app) = self.app.as_mut() else {
            return R::default();
        };
        match catch_unwind(AssertUnwindSafe(|| f(app))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(
                    lcore = self.lcore,
                    "ibpoll: the application panicked on this lcore; it is no longer \
                     called and the stack's stop flag is set"
                );
                self.state.panicked_on(self.lcore);
                // Its destructor may panic too: that must not end the lcore either.
                let app = self.app.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(app)));
                R::default()
            }
        }
    }
}

impl<A: App> App for Guarded<A> {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut ibpoll_mem::MbufArray, tx: &mut Tx) {
        self.call(|a| a.on_burst(ctx, rx, tx));
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        self.call(|a| a.poll(ctx, tx))
    }
}

/// Sets the stop flag when the thread it lives on unwinds (a panic in the stack's own
/// code, outside the application's callbacks).
#[derive(Debug)]
pub(crate) struct StopOnPanic {
    pub(crate) state: Arc<StopState>,
    pub(crate) lcore: usize,
}

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.state.panicked_on(self.lcore);
        }
    }
}

/// Makes SIGINT and SIGTERM set `flag` (signal-hook: beside any handler already
/// installed, never replacing it). A program that wants a second signal to end it at
/// once registers `signal_hook::flag::register_conditional_shutdown` first.
///
/// ```no_run
/// use std::sync::atomic::AtomicBool;
/// use std::sync::Arc;
/// use ibpoll::{Discard, FabricConfig, SimFabric, Stack};
/// let stop = Arc::new(AtomicBool::new(false));
/// ibpoll::register_stop_signals(&stop)?;
/// let fabric = SimFabric::new(FabricConfig::default());
/// let stack = Stack::builder()
///     .fabric(&fabric, "a")
///     .stop_flag(stop.clone())
///     .start(|_| Discard)?;
/// while !stack.stop_requested() {
///     std::thread::sleep(std::time::Duration::from_millis(50));
/// }
/// let report = stack.stop()?; // Ctrl-C: every group left, then the lcores stop
/// # let _ = report;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_stop_signals(flag: &Arc<AtomicBool>) -> std::io::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

fn ctrl_c_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Makes SIGINT (Ctrl-C) and SIGTERM set a process-wide flag that
/// [`ctrl_c_pressed`] reads; once per process, through signal-hook (the application's
/// own handlers stay installed and keep running).
pub fn install_ctrl_c() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if let Err(e) = register_stop_signals(ctrl_c_flag()) {
            tracing::warn!(error = %e, "ibpoll: cannot watch SIGINT/SIGTERM");
        }
    });
}

/// Whether SIGINT or SIGTERM arrived since [`install_ctrl_c`].
pub fn ctrl_c_pressed() -> bool {
    ctrl_c_flag().load(Ordering::SeqCst)
}
