//! A port of a verbs device as an [`ibpoll_dev::Port`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ibpoll_dev::{
    AddressHandle, AhAttr, Error as DevError, LinkLayer, MadChannel, Parked, Port, PortAttr,
    PortEvent, UdCaps, UdQp, UdQpConfig,
};
use ibpoll_wire::{Gid, Lid, QKey, Qpn};

use crate::device::{DevShared, DevState};
use crate::ffi::UmadLibrary;
use crate::mad::{UmadChannel, UmadConfig};
use crate::mcast::{self, Netdev};
use crate::setup::{self, driver};

/// A port of a [`VerbsDevice`](crate::VerbsDevice). Cheap to clone; every handle of one
/// port shares its events, address handles and QPs.
#[derive(Debug, Clone)]
pub struct VerbsPort {
    dev: Arc<DevShared>,
    num: u8,
}

impl VerbsPort {
    pub(crate) fn new(dev: Arc<DevShared>, num: u8) -> VerbsPort {
        VerbsPort { dev, num }
    }

    fn no_qp(&self, qpn: Qpn) -> DevError {
        DevError::NoSuchQp {
            port: self.num,
            qpn,
        }
    }

    fn mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid, attach: bool) -> Result<(), DevError> {
        let op = if attach { "attach" } else { "detach" };
        let fail = |reason| DevError::Mcast {
            op,
            qpn,
            mgid: *mgid,
            mlid,
            reason,
        };
        let qp = self
            .dev
            .qp(self.num, qpn.get())
            .ok_or_else(|| fail("no such UD QP on this port"))?;
        let mut st = self.dev.lock();
        let netdev = self.dev.netdev(&mut st, self.num);
        let groups = &mut st.ports[usize::from(self.num) - 1].groups;
        let attached = groups.is_attached(qpn.get(), &mgid.0);
        if attach {
            if attached {
                return Ok(());
            }
            qp.handle
                .attach_mcast(&mgid.0, mlid.0)
                .map_err(driver("attach_mcast"))?;
            if let Err(e) = groups.attach(qpn.get(), &mgid.0, netdev) {
                let _ = qp.handle.detach_mcast(&mgid.0, mlid.0);
                return Err(DevError::Io {
                    op: "joining the IP multicast group of the MGID on the RoCE netdev",
                    source: e,
                });
            }
            return Ok(());
        }
        if !attached {
            return Err(fail("the QP is not attached to the group"));
        }
        groups.detach(qpn.get(), &mgid.0, netdev);
        qp.handle
            .detach_mcast(&mgid.0, mlid.0)
            .map_err(driver("detach_mcast"))
    }
}

impl DevShared {
    /// Where port `num`'s IP multicast memberships are made: `None` on InfiniBand.
    pub(crate) fn netdev(&self, st: &mut DevState, num: u8) -> Option<Netdev> {
        let info = self.ctx.query_port(num).ok()?;
        if crate::attr::link_layer(info.link_layer) != LinkLayer::Ethernet {
            return None;
        }
        let (gids, _) = self.tables(st, num);
        Some(mcast::netdev(self.ctx.name(), num, gids))
    }
}

impl Port for VerbsPort {
    fn port_num(&self) -> u8 {
        self.num
    }

    fn attr(&self) -> PortAttr {
        self.dev.port_attr(self.num)
    }

    fn ud_caps(&self) -> UdCaps {
        self.dev.caps
    }

    fn poll_event(&self) -> Option<PortEvent> {
        self.dev.poll_event(self.num)
    }

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, DevError> {
        setup::create_ud_qp(&self.dev, self.num, cfg)
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), DevError> {
        let qp = self
            .dev
            .qp(self.num, qpn.get())
            .ok_or_else(|| self.no_qp(qpn))?;
        qp.handle.set_qkey(qkey.0).map_err(driver("set_qp_qkey"))?;
        qp.qkey.store(qkey.0, Ordering::Relaxed);
        Ok(())
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, DevError> {
        let qpn = parked.qpn();
        let qp = self
            .dev
            .qp(self.num, qpn.get())
            .ok_or_else(|| self.no_qp(qpn))?;
        let valid = self
            .attr()
            .pkeys
            .get(usize::from(pkey_index))
            .is_some_and(|p| p.base() != 0);
        if !valid {
            return Err(DevError::PkeyIndex {
                port: self.num,
                index: pkey_index,
            });
        }
        qp.move_pkey_index(parked, pkey_index)
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, DevError> {
        let link = self.attr().link_layer;
        self.dev
            .ahs(self.num)
            .create(&self.dev.pd, self.num, link, attr)
    }

    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), DevError> {
        // SAFETY: forwarded to the caller (no send names `ah` now or later).
        unsafe { self.dev.ahs(self.num).destroy(ah) }
    }

    fn attach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), DevError> {
        self.mcast(qpn, mgid, mlid, true)
    }

    fn detach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), DevError> {
        self.mcast(qpn, mgid, mlid, false)
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, DevError> {
        let name = self.dev.ctx.name();
        if self.attr().link_layer == LinkLayer::Ethernet {
            return Err(DevError::NoSubnetAdmin {
                device: name.to_owned(),
                port: self.num,
            });
        }
        let lib = UmadLibrary::load().map_err(driver("open_mad_channel"))?;
        let cfg = UmadConfig {
            ca: Some(name.to_owned()),
            port_num: self.num,
            ..UmadConfig::default()
        };
        let ch = UmadChannel::open(&lib, &cfg).map_err(driver("open_mad_channel"))?;
        Ok(Box::new(ch))
    }
}
