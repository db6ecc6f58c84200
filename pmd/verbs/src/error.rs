use std::io;

/// Why a verbs or umad operation on the set-up path failed. Every `Display` is one line
/// that names the cause and, where the user can act, the fix; the OS error is the
/// `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The shared library could not be loaded: rdma-core is not installed.
    #[error("{lib} could not be loaded (rdma-core is not installed): install it, e.g. `apt install {packages}`")]
    LibraryMissing {
        /// The library asked for (`libibverbs.so.1`, `libibumad.so.3`).
        lib: String,
        /// The Debian packages that provide it.
        packages: &'static str,
        /// What dlopen() said.
        #[source]
        source: libloading::Error,
    },
    /// libibverbs found no RDMA device.
    #[error("no RDMA device: {0}")]
    NoDevice(NoDevice),
    /// No device has the name asked for.
    #[error("no RDMA device named \"{name}\"; the devices are: {available} (see `ibv_devices`)")]
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The names found, comma-separated.
        available: String,
    },
    /// The device has no such port.
    #[error("device {device} has no port {port} (it has {count}); ports are numbered from 1")]
    NoSuchPort {
        /// The device.
        device: String,
        /// The port asked for.
        port: u8,
        /// How many it has.
        count: u8,
    },
    /// The port is not Active.
    #[error(
        "port {port} of {device} is {state}, not Active: on InfiniBand a subnet manager \
         must be running (opensm), on RoCE the network interface must be up; check with \
         `ibv_devinfo -d {device}`"
    )]
    PortNotActive {
        /// The device.
        device: String,
        /// The port.
        port: u8,
        /// Its state as ibv_devinfo names it (`PORT_DOWN`, `PORT_INIT`, ...).
        state: &'static str,
    },
    /// The memory to register is larger than the locked-memory limit allows.
    #[error(
        "registering {len} bytes of memory needs a higher locked-memory limit (RLIMIT_MEMLOCK \
         is {limit} bytes): run `ulimit -l unlimited` (or set memlock in \
         /etc/security/limits.conf), or grant CAP_IPC_LOCK"
    )]
    MemlockTooLow {
        /// Bytes to register.
        len: usize,
        /// The soft limit.
        limit: u64,
        /// The registration's own error, when it was tried.
        #[source]
        source: Option<io::Error>,
    },
    /// A verbs call failed.
    #[error("{op} on {device} failed")]
    Verbs {
        /// The call (`ibv_create_qp`, ...).
        op: &'static str,
        /// The device.
        device: String,
        /// What it returned (errno).
        #[source]
        source: io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid {what}: {field} = {value}: {fix}")]
    Config {
        /// The object configured (`UD QP`, `CQ`, `umad channel`).
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What would be accepted.
        fix: &'static str,
    },
    /// The device lacks a capability the caller asked for.
    #[error("{device} cannot {what}; {fix}")]
    Unsupported {
        /// The device.
        device: String,
        /// What it cannot do.
        what: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// The QP's receive queue moved while completions were outstanding in a way the ring
    /// of posted receives cannot explain (a bug or a misbehaving provider).
    #[error("UD QP {qpn:#x}: {what}")]
    Ring {
        /// The QP number.
        qpn: u32,
        /// What did not match.
        what: &'static str,
    },
    /// A libibumad call failed.
    #[error("{op} failed{hint}")]
    Umad {
        /// The call (`umad_open_port`, ...).
        op: &'static str,
        /// A fix, with its leading separator, or empty.
        hint: &'static str,
        /// What it returned (errno).
        #[source]
        source: io::Error,
    },
}

/// Why no device was found, and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoDevice {
    /// The kernel's uverbs interface is absent.
    NoUverbs,
    /// The kernel has devices but libibverbs has no provider for them, or none exist.
    NoneFound,
}

impl std::fmt::Display for NoDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoDevice::NoUverbs => f.write_str(
                "/sys/class/infiniband_verbs is missing: is the ib_uverbs kernel module loaded \
                 (`modprobe ib_uverbs`), and does this kernel have an RDMA driver for the HCA?",
            ),
            NoDevice::NoneFound => f.write_str(
                "libibverbs lists none: is a provider for the HCA installed (`apt install \
                 ibverbs-providers`) and its kernel driver loaded (`rdma link` lists the port)?",
            ),
        }
    }
}

impl Error {
    /// Whether the machine's set-up is at fault, not the program: rdma-core missing, no
    /// device (or not the one named), no such port, the port not Active, the
    /// locked-memory limit. The user fixes these (each message says how); a program
    /// reports them as a refused configuration.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            Error::LibraryMissing { .. }
                | Error::NoDevice(_)
                | Error::NoSuchDevice { .. }
                | Error::NoSuchPort { .. }
                | Error::PortNotActive { .. }
                | Error::MemlockTooLow { .. }
        )
    }

    /// A verbs call's failure, with errno as its source.
    pub(crate) fn verbs(op: &'static str, device: &str, errno: i32) -> Error {
        Error::Verbs {
            op,
            device: device.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// A verbs call's failure, from the current errno.
    pub(crate) fn verbs_errno(op: &'static str, device: &str) -> Error {
        Error::Verbs {
            op,
            device: device.to_owned(),
            source: io::Error::last_os_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_diagnostic_is_one_line_with_its_fix() {
        let cases: Vec<(Error, &str)> = vec![
            (Error::NoDevice(NoDevice::NoUverbs), "modprobe ib_uverbs"),
            (Error::NoDevice(NoDevice::NoneFound), "ibverbs-providers"),
            (
                Error::PortNotActive {
                    device: "mlx5_0".into(),
                    port: 1,
                    state: "PORT_DOWN",
                },
                "opensm",
            ),
            (
                Error::MemlockTooLow {
                    len: 1 << 30,
                    limit: 8 << 20,
                    source: None,
                },
                "ulimit -l",
            ),
            (
                Error::NoSuchDevice {
                    name: "mlx5_9".into(),
                    available: "rxe0".into(),
                },
                "rxe0",
            ),
        ];
        for (e, fix) in cases {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert!(s.contains(fix), "{s} should name {fix}");
        }
    }
}
