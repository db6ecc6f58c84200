//! Validation of a [`StackBuilder`]: every value is checked before anything is created,
//! and a bad one is answered with an [`Error`] naming the input and the fix.

use ibpoll_mem::MempoolConfig;

use super::{bad, usable_cpus, ControlCore, IfaceConfig, StackBuilder, IFACES_MAX};
use crate::tx::BURST_MAX;
use crate::Error;

/// What a checked configuration amounts to.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) data_cores: usize,
    pub(super) dedicated: bool,
    /// One CPU per lcore: data lcores first, then the dedicated control lcore.
    pub(super) cpus: Vec<usize>,
    pub(super) ifaces: Vec<IfaceConfig>,
    pub(super) pool: MempoolConfig,
    /// The fan-out rings' size, when the stack fans out (and has several lanes).
    pub(super) fanout_ring: Option<usize>,
}

impl Plan {
    pub(super) fn new(b: &StackBuilder) -> Result<Plan, Error> {
        let usable = usable_cpus();
        let dedicated = b.control == ControlCore::Dedicated;
        let data_cores = b
            .data_cores
            .unwrap_or_else(|| usable.len().saturating_sub(usize::from(dedicated)).max(1));
        check_data_cores(data_cores)?;
        let cpus = cpus(b, &usable, data_cores, dedicated)?;
        let ifaces = ifaces(b)?;
        let fanout_ring = fanout_ring(b, data_cores)?;
        let pool = pool(b, ifaces.len(), data_cores, fanout_ring)?;
        Ok(Plan {
            data_cores,
            dedicated,
            cpus,
            ifaces,
            pool,
            fanout_ring,
        })
    }
}

fn check_data_cores(data_cores: usize) -> Result<(), Error> {
    if data_cores == 0 {
        return Err(bad(
            "data_cores",
            0,
            "at least 1 data lcore is needed; leave it unset for one per usable CPU",
        ));
    }
    if data_cores > ibpoll_rcu::READERS_MAX {
        return Err(bad(
            "data_cores",
            data_cores as u64,
            "at most 64 data lcores per stack",
        ));
    }
    Ok(())
}

/// The CPUs to pin to, one per lcore.
fn cpus(
    b: &StackBuilder,
    usable: &[usize],
    data_cores: usize,
    dedicated: bool,
) -> Result<Vec<usize>, Error> {
    let lcores = data_cores + usize::from(dedicated);
    if let Some(cpus) = &b.cpus {
        if cpus.len() < lcores {
            return Err(bad(
                "cpus",
                cpus.len() as u64,
                "name one CPU per lcore: data lcores first, then the dedicated control lcore",
            ));
        }
        if let Some(&cpu) = cpus.iter().find(|c| !usable.contains(c)) {
            return Err(Error::NoSuchCpu {
                cpu,
                usable: usable.to_vec(),
            });
        }
        return Ok(cpus.clone());
    }
    if lcores > usable.len() {
        return Err(Error::TooManyCores {
            data_cores,
            lcores,
            control: if dedicated { " + 1 control" } else { "" },
            available: usable.len(),
            max_data: usable.len().saturating_sub(usize::from(dedicated)),
            hint: if dedicated {
                ", or poll the controller from data lcore 0 (ControlCore::OnDataLcore0)"
            } else {
                ""
            },
        });
    }
    Ok(usable[..lcores].to_vec())
}

/// The interfaces, each checked.
fn ifaces(b: &StackBuilder) -> Result<Vec<IfaceConfig>, Error> {
    let ifaces: Vec<IfaceConfig> = if b.interfaces.is_empty() {
        vec![IfaceConfig {
            pkey: b.pkey,
            ipv4: b.ipv4,
            ipv6: b.ipv6,
            ..IfaceConfig::default()
        }]
    } else {
        b.interfaces.clone()
    };
    if ifaces.len() > IFACES_MAX {
        return Err(bad(
            "interface",
            ifaces.len() as u64,
            "at most 8 interfaces (partitions) per stack",
        ));
    }
    for (i, f) in ifaces.iter().enumerate() {
        if f.pkey.base() == 0 {
            return Err(bad(
                "pkey",
                u64::from(f.pkey.0),
                "P_Key 0 is the invalid partition; the default partition is 0xffff",
            ));
        }
        if f.prefix_len > 32 {
            return Err(bad(
                "prefix_len",
                u64::from(f.prefix_len),
                "an IPv4 prefix length is 0..=32",
            ));
        }
        if f.ipv6_prefix_len > 128 {
            return Err(bad(
                "ipv6_prefix_len",
                u64::from(f.ipv6_prefix_len),
                "an IPv6 prefix length is 0..=128",
            ));
        }
        if f.ipv6.is_some_and(|a| a[0] == 0xff || a == [0; 16]) {
            return Err(bad(
                "ipv6",
                0,
                "an interface's IPv6 address is a unicast address (not :: and not in ff00::/8)",
            ));
        }
        if ifaces[..i].iter().any(|g| g.pkey.base() == f.pkey.base()) {
            return Err(bad(
                "interface.pkey",
                u64::from(f.pkey.0),
                "each interface needs a partition of its own: two interfaces have this P_Key",
            ));
        }
    }
    Ok(ifaces)
}

/// The fan-out rings' size: a power of two, 32..=32768; `None` when off or with one
/// lane.
fn fanout_ring(b: &StackBuilder, data_cores: usize) -> Result<Option<usize>, Error> {
    let Some(n) = b.fanout.ring_size() else {
        return Ok(None);
    };
    if !(32..=32768).contains(&n) || !n.is_power_of_two() {
        return Err(bad(
            "fanout.ring_size",
            u64::from(n),
            "a fan-out ring holds a power of two of packets, 32..=32768 (default 1024)",
        ));
    }
    Ok((data_cores > 1).then_some(n as usize))
}

/// Buffers the stack needs at least: every lane's receive ring on every interface and
/// its bursts and TX table, and the control core's send backlog.
pub(super) fn buffers_needed(b: &StackBuilder, n_ifaces: usize, data_cores: usize) -> u64 {
    let per_lane = u64::from(b.rx_ring_size) + 4 * BURST_MAX as u64;
    n_ifaces as u64 * (data_cores as u64 * per_lane + b.ctrl.tx_backlog_max as u64) + 64
}

/// The pool's configuration: absurd sizes are refused by the pool's own checks,
/// too-small ones here.
fn pool(
    b: &StackBuilder,
    n_ifaces: usize,
    data_cores: usize,
    fanout_ring: Option<usize>,
) -> Result<MempoolConfig, Error> {
    let needed = buffers_needed(b, n_ifaces, data_cores);
    // What full fan-out rings hold (one per interface and worker lane): the default
    // pool has room for them besides, so that full rings do not starve the receive
    // queues' refills.
    let rings = fanout_ring.map_or(0, |n| (n_ifaces * (data_cores - 1) * n) as u64);
    let n_bufs = b.pool_size.unwrap_or_else(|| {
        (2 * needed + rings).clamp(8192, u64::from(ibpoll_mem::N_BUFS_MAX)) as u32
    });
    let cfg = MempoolConfig {
        name: format!("{}-pool", b.name),
        n_bufs,
        data_room: b.mtu.bytes() as u32,
        headroom: ibpoll_mem::HEADROOM_DEFAULT,
        cache_size: b.pool_cache.min(n_bufs),
        hugepages: b.hugepages,
    };
    cfg.validate().map_err(|source| Error::Pool {
        n_bufs,
        data_room: cfg.data_room,
        source,
    })?;
    if u64::from(n_bufs) < needed {
        return Err(Error::PoolTooSmall {
            n_bufs,
            needed,
            data_cores,
            rx_ring_size: b.rx_ring_size,
        });
    }
    Ok(cfg)
}
