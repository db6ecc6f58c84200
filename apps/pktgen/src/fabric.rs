//! Where the nodes run (`--fabric`): the embedded simulated fabric, or one port of a
//! real HCA through libibverbs, opened and checked before anything starts.

use std::sync::Arc;

use ibpoll::StackBuilder;
use ibpoll_dev::Device;
use ibpoll_pmd_ring::RingPair;
use ibpoll_pmd_sim::SimFabric;
use ibpoll_pmd_verbs::VerbsDevice;

/// A verbs port, opened and Active.
#[derive(Debug, Clone)]
pub struct VerbsTarget {
    pub device: Arc<dyn Device>,
    pub port: u8,
}

impl VerbsTarget {
    /// `verbs:DEVICE:PORT`.
    pub fn label(&self) -> String {
        format!("verbs:{}:{}", self.device.name(), self.port)
    }
}

/// Opens `device` (the first one libibverbs lists when `None`) and checks that `port`
/// is Active. The errors are the machine's set-up, each one line with its fix:
/// libibverbs missing, no RDMA device (ib_uverbs), no such device or port, the port
/// not Active.
pub fn open_verbs(device: Option<&str>, port: u8) -> Result<VerbsTarget, ibpoll_pmd_verbs::Error> {
    let dev = match device {
        Some(name) => VerbsDevice::open(name)?,
        None => VerbsDevice::open_first()?,
    };
    dev.active_port(port)?;
    Ok(VerbsTarget {
        device: Arc::new(dev),
        port,
    })
}

/// The verbs diagnostic about the machine's set-up in an error's chain of causes, if
/// there is one (a stack that could not register its pool: the memlock limit).
pub fn setup_diagnostic<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ibpoll_pmd_verbs::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(v) = c.downcast_ref::<ibpoll_pmd_verbs::Error>() {
            return v.is_setup().then_some(v);
        }
        cur = c.source();
    }
    None
}

/// The fabric of one run.
pub enum Net {
    Sim(SimFabric),
    /// The ring PMD joining the generator's port (side 0) and the sink's (side 1), over
    /// two nodes of the simulated fabric (its control plane).
    Ring(SimFabric, RingPair),
    Verbs(VerbsTarget),
}

impl Net {
    /// The ring pair over two new nodes `gen` and `sink` of `fabric`.
    pub fn ring(fabric: SimFabric) -> Result<Net, ibpoll_dev::Error> {
        let gen: Arc<dyn Device> = fabric.add_node("gen", 1);
        let sink: Arc<dyn Device> = fabric.add_node("sink", 1);
        let pair = RingPair::new(&gen, &sink)?;
        Ok(Net::Ring(fabric, pair))
    }

    /// The simulated fabric, when that is where the nodes run (or their control plane,
    /// under the ring PMD).
    pub fn sim(&self) -> Option<&SimFabric> {
        match self {
            Net::Sim(f) | Net::Ring(f, _) => Some(f),
            Net::Verbs(_) => None,
        }
    }

    /// `builder` with node `name` placed on this fabric (under the ring PMD, "gen" and
    /// "sink" are the pair's two sides).
    pub fn place(&self, builder: StackBuilder, name: &str) -> StackBuilder {
        match self {
            Net::Sim(f) => builder.fabric(f, name),
            Net::Ring(_, pair) => builder.device(pair.device(usize::from(name != "gen")), 1),
            Net::Verbs(t) => builder.device(t.device.clone(), t.port),
        }
    }

    /// The ring pair's drops, by reason, under the ring PMD.
    pub fn ring_drops(&self) -> Vec<(&'static str, u64)> {
        match self {
            Net::Ring(_, pair) => pair.stats().drops().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Packets the fabric itself dropped (the simulated switch's counts and the ring
    /// PMD's; a real fabric's drops are not seen from here).
    pub fn dropped(&self) -> u64 {
        let ring = match self {
            Net::Ring(_, pair) => pair.stats().dropped(),
            _ => 0,
        };
        self.sim().map_or(0, |f| f.stats().dropped()) + ring
    }

    /// How the summary names it.
    pub fn label(&self) -> String {
        match self {
            Net::Sim(_) => "sim".to_owned(),
            Net::Ring(..) => "ring".to_owned(),
            Net::Verbs(t) => t.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(ibpoll_pmd_verbs::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("starting the stack")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_memlock_refusal_deep_in_a_chain_is_a_setup_diagnostic() {
        let memlock = Outer(ibpoll_pmd_verbs::Error::MemlockTooLow {
            len: 64 << 20,
            limit: 8 << 20,
            source: None,
        });
        let found = setup_diagnostic(&memlock).expect("found in the chain");
        assert!(found.to_string().contains("ulimit -l"), "{found}");
        let verbs_call = Outer(ibpoll_pmd_verbs::Error::Config {
            what: "UD QP",
            field: "x",
            value: 0,
            fix: "y",
        });
        assert!(
            setup_diagnostic(&verbs_call).is_none(),
            "a program error, not set-up"
        );
    }
}
