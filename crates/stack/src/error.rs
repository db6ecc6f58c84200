//! Set-up errors. Everything after start-up is a counter ([`LcoreStats`](crate::LcoreStats)).

use ibpoll_wire::PKey;

/// Why a stack could not be built, started, reached or stopped. Each variant names the
/// input that was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was not told which device to run on.
    #[error(
        "ibpoll: no device: name one with StackBuilder::device(device, port) (a driver's \
         device, e.g. an HCA) or StackBuilder::fabric(&fabric, node) (the simulated \
         fabric, feature `sim`); a stack never picks one by itself"
    )]
    NoDevice,
    /// A builder value is out of range.
    #[error("ibpoll: bad configuration: {field} = {value}: {fix}")]
    BadConfig {
        /// The builder method / field.
        field: &'static str,
        /// The value that was passed.
        value: u64,
        /// What would be accepted.
        fix: &'static str,
    },
    /// More lcores were asked for than the machine (or this process's CPU set) has.
    #[error(
        "ibpoll: {lcores} lcores asked for ({data_cores} data{control}) but only {available} \
         CPUs are usable by this process: lower .data_cores() to at most {max_data}{hint}"
    )]
    TooManyCores {
        /// Data lcores asked for.
        data_cores: usize,
        /// All lcores (data plus a dedicated control lcore).
        lcores: usize,
        /// " + 1 control" when the controller has its own lcore, else "".
        control: &'static str,
        /// CPUs usable.
        available: usize,
        /// The largest data-core count that fits.
        max_data: usize,
        /// A further hint.
        hint: &'static str,
    },
    /// A CPU given to `.cpus()` is not usable by this process.
    #[error(
        "ibpoll: .cpus() names CPU {cpu}, which this process cannot run on (usable: {usable:?}); \
         pick CPUs from that list"
    )]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The usable CPUs.
        usable: Vec<usize>,
    },
    /// The partition is not usable on the port.
    #[error(
        "ibpoll: partition {pkey} is not in the P_Key table of port {port} ({pkeys}): \
         configure .pkey() with one of those, or have the subnet manager add it to the port"
    )]
    Partition {
        /// The P_Key asked for.
        pkey: PKey,
        /// The port.
        port: u8,
        /// The port's valid P_Keys, formatted.
        pkeys: String,
    },
    /// The buffer pool could not be created.
    #[error("ibpoll: the buffer pool ({n_bufs} buffers of {data_room} bytes) could not be created; fix .pool_size() / .mtu()")]
    Pool {
        /// Buffers asked for.
        n_bufs: u32,
        /// Data room asked for.
        data_room: u32,
        /// The pool's error (it names the field).
        #[source]
        source: ibpoll_mem::Error,
    },
    /// The pool is too small for the receive rings the stack posts.
    #[error(
        "ibpoll: .pool_size({n_bufs}) is too small: {data_cores} receive rings of \
         {rx_ring_size} plus send and burst buffers need at least {needed}; raise .pool_size() \
         or lower .rx_ring_size()"
    )]
    PoolTooSmall {
        /// Buffers asked for.
        n_bufs: u32,
        /// Buffers needed.
        needed: u64,
        /// Data cores.
        data_cores: usize,
        /// Receive ring size.
        rx_ring_size: u32,
    },
    /// The device refused a set-up operation (port, queue pair).
    #[error("ibpoll: {op} on device {device} failed")]
    Device {
        /// What was attempted.
        op: &'static str,
        /// The device name.
        device: String,
        /// The driver's error.
        #[source]
        source: ibpoll_dev::Error,
    },
    /// The control plane could not be created.
    #[error("ibpoll: creating the controller failed")]
    Controller {
        /// The controller's error.
        #[source]
        source: ibpoll_ctrl::Error,
    },
    /// An lcore thread could not be started.
    #[error("ibpoll: starting lcore thread {name} failed")]
    Spawn {
        /// The thread name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An interface index the stack does not have.
    #[error("ibpoll: no interface {iface}: the stack has {ifaces} (0..{ifaces})")]
    NoSuchIface {
        /// The index asked for.
        iface: usize,
        /// Interfaces the stack has.
        ifaces: usize,
    },
    /// The stack is stopped (or its control lcore is gone).
    #[error("ibpoll: the stack is stopped")]
    Stopped,
    /// The control lcore did not answer in time.
    #[error("ibpoll: the control lcore did not answer within {secs} s (is lcore 0 stuck in the application?)")]
    ControlTimeout {
        /// How long we waited.
        secs: u64,
    },
    /// SIGINT/SIGTERM could not be watched (signal-hook's registration failed).
    #[error("ibpoll: cannot watch SIGINT and SIGTERM")]
    Signals {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An lcore thread panicked.
    #[error("ibpoll: lcore {lcore} panicked")]
    LcorePanicked {
        /// Which lcore (data lcores first, then the control lcore).
        lcore: usize,
    },
}
