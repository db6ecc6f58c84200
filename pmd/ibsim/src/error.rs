use std::time::Duration;

/// Why attaching to ibsim, or a control call to it, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing listens on ibsim's control socket.
    #[error(
        "ibsim is not running (nothing is bound to the abstract socket \"sim:ctl\"): \
         start it with `ibsim -s net.topo` (package ibsim-utils) and an SM such as \
         `SIM_HOST=sm LD_PRELOAD=libumad2sim.so opensm`"
    )]
    NotRunning {
        /// The refusal.
        #[source]
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("{op} on the abstract socket \"{name}\" failed")]
    Socket {
        /// What was done (`bind`, `connect`, `send`, ...).
        op: &'static str,
        /// The abstract socket name (without the leading NUL).
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// ibsim did not answer a control message in time.
    #[error(
        "ibsim did not answer {op} within {timeout:?}; is it running and started \
         (`ibsim -s net.topo`, or `start` at its console)?"
    )]
    Timeout {
        /// The control message.
        op: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// ibsim refused to attach a client to the node.
    #[error(
        "ibsim refused to attach a client to node \"{node}\": the topology has no node \
         of that name (SIM_HOST), or all {max} client slots are taken"
    )]
    ConnectRefused {
        /// The node asked for.
        node: String,
        /// ibsim's client limit (`IBSIM_MAX_CLIENTS`).
        max: u32,
    },
    /// ibsim answered a control message with an error.
    #[error("ibsim refused {op}")]
    CtlRefused {
        /// The control message.
        op: &'static str,
    },
    /// ibsim's answer to a control message is not one.
    #[error("ibsim answered {op} with a malformed control message: {reason}")]
    CtlReply {
        /// The control message.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The port did not become Active in time.
    #[error(
        "the port of ibsim node \"{node}\" did not become Active within {timeout:?}: is a \
         subnet manager running (`SIM_HOST=<its node> LD_PRELOAD=libumad2sim.so opensm`)?"
    )]
    PortNotActive {
        /// The node.
        node: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The node name cannot be sent to ibsim.
    #[error("node name \"{node}\" is unusable: {reason}")]
    NodeName {
        /// The name.
        node: String,
        /// What is wrong, and what would be accepted.
        reason: &'static str,
    },
    /// A hybrid port's ibsim side has not been swept by the subnet manager yet.
    #[error(
        "the port of ibsim node \"{node}\" is not Active yet: wait for it \
         (IbsimMadChannel::wait_active) before opening a hybrid port on it"
    )]
    NotActive {
        /// The node.
        node: String,
    },
    /// A hybrid port's two sides are not the same port.
    #[error(
        "ibsim node \"{node}\" has GID {ibsim} but the simulated port has {sim}: give the \
         node the simulated device's node GUID in the ibsim topology (a line \
         `caguid=0x<node GUID>` before its `Hca` line) and the same subnet prefix"
    )]
    Mismatch {
        /// The node.
        node: String,
        /// The ibsim port's GID.
        ibsim: ibpoll_wire::Gid,
        /// The simulated port's GID.
        sim: ibpoll_wire::Gid,
    },
    /// The simulated side refused an operation.
    #[error("the simulated port refused")]
    Device(#[source] ibpoll_dev::Error),
}
