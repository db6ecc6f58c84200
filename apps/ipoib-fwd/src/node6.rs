//! The IPv6 part of a forwarder's configuration: connected routes from the interfaces'
//! IPv6 addresses, the checks of IPv6 routes and multicast routes, and the tables.

use ibpoll::GroupAddr;

use crate::mroute::MrouteTable;
use crate::mroute6::MrouteTable6;
use crate::route6::{is_link_local, Route6, RouteTable6};
use crate::{Error, FwdConfig, MCAST_GROUPS_MAX};

impl FwdConfig {
    /// The IPv6 checks of [`validate`](FwdConfig::validate): prefix lengths, routes
    /// naming interfaces that exist, one route per prefix, gateways on their
    /// interface's subnet (or link-local), the multicast routes and the group bound
    /// over IPv4 and IPv6.
    pub(crate) fn validate6(&self) -> Result<(), Error> {
        for (i, f) in self.ifaces.iter().enumerate() {
            if f.ipv6_prefix_len > 128 {
                return Err(Error::BadConfig {
                    field: "ifaces",
                    fix: format!(
                        "interface {i}: IPv6 prefix length {} is over 128",
                        f.ipv6_prefix_len
                    ),
                });
            }
        }
        for (i, r) in self.routes6.iter().enumerate() {
            if r.iface >= self.ifaces.len() {
                return Err(Error::NoSuchIface {
                    route: r.to_string(),
                    iface: r.iface,
                    ifaces: self.ifaces.len(),
                });
            }
            self.check_gateway6(r)?;
            if let Some(o) = self.routes6[..i]
                .iter()
                .find(|o| o.prefix == r.prefix && o.prefix_len == r.prefix_len)
            {
                return Err(Error::DuplicateRoute {
                    route: r.to_string(),
                    other: o.to_string(),
                });
            }
        }
        let groups = self.mroute_table()?.subscriptions().len()
            + self.mroute_table6()?.subscriptions().len();
        if groups > MCAST_GROUPS_MAX {
            return Err(Error::BadConfig {
                field: "mroutes",
                fix: format!(
                    "the IPv4 and IPv6 multicast routes cover {groups} groups; a forwarder subscribes to at most {MCAST_GROUPS_MAX}"
                ),
            });
        }
        Ok(())
    }

    /// An IPv6 gateway is resolved by neighbour discovery on its outgoing interface: it
    /// must be on that interface's subnet, or link-local (on every link).
    fn check_gateway6(&self, r: &Route6) -> Result<(), Error> {
        let (Some(via), Some(f)) = (r.via, self.ifaces.get(r.iface)) else {
            return Ok(());
        };
        if is_link_local(&via) {
            return Ok(());
        }
        let Some(addr) = f.ipv6 else {
            return Ok(());
        };
        let subnet = Route6::connected(r.iface, addr, f.ipv6_prefix_len);
        if subnet.contains(via) {
            return Ok(());
        }
        Err(Error::GatewayOffLink {
            route: r.to_string(),
            via: via.into(),
            iface: r.iface,
            subnet: format!(
                "{}/{}",
                std::net::Ipv6Addr::from(subnet.prefix),
                subnet.prefix_len
            ),
        })
    }

    /// Connected IPv6 routes (one per interface with an IPv6 address), then the
    /// configured ones.
    pub fn all_routes6(&self) -> Vec<Route6> {
        let mut all: Vec<Route6> = self
            .ifaces
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.ipv6.map(|a| Route6::connected(i, a, f.ipv6_prefix_len)))
            .collect();
        all.extend_from_slice(&self.routes6);
        all
    }

    /// The IPv6 route table: connected routes and the configured ones.
    pub fn route_table6(&self) -> Result<RouteTable6, Error> {
        RouteTable6::new(&self.all_routes6())
    }

    /// The IPv6 multicast route table (checked against the interfaces).
    pub fn mroute_table6(&self) -> Result<MrouteTable6, Error> {
        MrouteTable6::new(&self.mroutes6, self.ifaces.len())
    }
}

/// Every group the forwarder subscribes to on interface `iface`, IPv4 then IPv6.
pub(crate) fn subscriptions_on(
    mroutes: &MrouteTable,
    mroutes6: &MrouteTable6,
    iface: usize,
) -> Vec<GroupAddr> {
    let v4 = mroutes
        .subscriptions()
        .iter()
        .filter(|(i, _)| *i == iface)
        .map(|(_, g)| GroupAddr::Ipv4(*g));
    let v6 = mroutes6
        .subscriptions()
        .iter()
        .filter(|(i, _)| *i == iface)
        .map(|(_, g)| GroupAddr::Ipv6(*g));
    v4.chain(v6).collect()
}

/// A group for messages.
pub(crate) fn group_name(g: GroupAddr) -> String {
    match g {
        GroupAddr::Ipv4(a) => std::net::Ipv4Addr::from(a).to_string(),
        GroupAddr::Ipv6(a) => std::net::Ipv6Addr::from(a).to_string(),
        GroupAddr::Mgid(m) => m.to_string(),
    }
}
