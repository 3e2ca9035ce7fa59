//! Applying network configuration through rtnetlink, synchronously: links
//! up and MTU, addresses with lifetimes, routes. One request at a time, each
//! acknowledged, so every failure is reported with what was being done.
//!
//! Longer than 600 lines because it is one protocol: the message framing
//! and every request brig-netd makes share the same builder and the same
//! acknowledgement loop; split by request, each file would repeat them.

use crate::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use brig_spec::network::{BondMode, Cidr, DeviceKind};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{
    BondLacpRate, BondMode as KernelBondMode, BridgeStpState, InfoBond, InfoBridge, InfoData,
    InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::dhcp4::lease::Lease;

/// A route to install: what a lease or a static config entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub to: Cidr,
    /// None: on-link (no gateway).
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
    /// The gateway is reachable on the link even outside every subnet.
    pub on_link: bool,
    pub table: Option<u32>,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// The hardware's own MAC, which a bond does not change: what `match:
    /// macaddress` compares.
    pub permanent_mac: Option<[u8; 6]>,
    /// ARPHRD_ETHER
    pub ether: bool,
    /// rtnetlink's link kind (veth, bridge, vlan, bond...); None for hardware.
    pub kind: Option<String>,
    pub up: bool,
    pub carrier: bool,
    pub mtu: u32,
    /// The bond or bridge it is a port of.
    pub master: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressState {
    pub index: u32,
    pub address: Cidr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub to: Cidr,
    pub via: Option<IpAddr>,
    pub index: Option<u32>,
    pub protocol: String,
    pub metric: Option<u32>,
}

pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, Error> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| Error::system("opening rtnetlink", e))?;
        socket
            .bind_auto()
            .map_err(|e| Error::system("binding rtnetlink", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::system("connecting rtnetlink", e))?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), Error> {
        self.exchange(message, NLM_F_ACK | flags, what).map(|_| ())
    }

    /// Sends a dump request and collects every answer.
    fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.exchange(message, NLM_F_DUMP, what)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| Error::system(format!("{what}: sending"), e))?;
        let mut reply = vec![0u8; 32768];
        let mut collected = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut reply[..], 0)
                .map_err(|e| Error::system(format!("{what}: receiving"), e))?;
            let mut offset = 0;
            while offset < n {
                let message = <NetlinkMessage<RouteNetlinkMessage>>::deserialize(&reply[offset..n])
                    .map_err(|e| Error::Protocol(format!("{what}: bad reply: {e}")))?;
                let length = message.header.length as usize;
                if message.header.sequence_number == self.sequence {
                    match message.payload {
                        NetlinkPayload::Error(error) => {
                            return match error.code {
                                None => Ok(collected),
                                Some(code) => Err(Error::system(
                                    what,
                                    std::io::Error::from_raw_os_error(-code.get()),
                                )),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(collected),
                        NetlinkPayload::InnerMessage(inner) => collected.push(inner),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<LinkState>, Error> {
        let answers = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "listing links",
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_state(&link)),
                _ => None,
            })
            .collect())
    }

    pub fn addresses(&mut self) -> Result<Vec<AddressState>, Error> {
        let answers = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "listing addresses",
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let address = a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let address = address.or_else(|| {
                        a.attributes.iter().find_map(|attr| match attr {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    Some(AddressState {
                        index: a.header.index,
                        address: Cidr {
                            addr: address,
                            prefix: a.header.prefix_len,
                        },
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<RouteState>, Error> {
        let answers = self.dump(
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            "listing routes",
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_state(&r),
                _ => None,
            })
            .collect())
    }

    /// Brings the link up, with `mtu` if given.
    pub fn link_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), Error> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            link.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(
            RouteNetlinkMessage::SetLink(link),
            0,
            &format!("bringing up link {index}"),
        )
    }

    /// Adds (or refreshes) an IPv4 address whose lifetime is `valid_seconds`:
    /// the kernel drops it by itself if the lease runs out.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
        valid_seconds: u32,
    ) -> Result<(), Error> {
        let mut message = address_message(index, address, prefix);
        if let Some(b) = broadcast(address, prefix) {
            message.attributes.push(AddressAttribute::Broadcast(b));
        }
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = valid_seconds;
        lifetime.ifa_valid = valid_seconds;
        message
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("adding {address}/{prefix} to link {index}"),
        )
    }

    pub fn remove_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), Error> {
        let message = address_message(index, address, prefix);
        self.request(
            RouteNetlinkMessage::DelAddress(message),
            0,
            &format!("removing {address}/{prefix} from link {index}"),
        )
    }

    /// Creates the bond, bridge or VLAN `name` (a VLAN on link `parent`).
    pub fn create_link(
        &mut self,
        name: &str,
        kind: &DeviceKind,
        parent: Option<u32>,
    ) -> Result<(), Error> {
        let (info_kind, data) = match kind {
            DeviceKind::Bond {
                mode,
                mii_monitor_ms,
                lacp_fast,
                ..
            } => {
                let mut options = vec![
                    InfoBond::Mode(KernelBondMode::from(mode.kernel_value())),
                    InfoBond::MiiMon(*mii_monitor_ms),
                ];
                if *mode == BondMode::Lacp {
                    options.push(InfoBond::AdLacpRate(if *lacp_fast {
                        BondLacpRate::Fast
                    } else {
                        BondLacpRate::Slow
                    }));
                }
                (InfoKind::Bond, InfoData::Bond(options))
            }
            DeviceKind::Bridge {
                stp,
                forward_delay_s,
                ..
            } => {
                let mut options = vec![InfoBridge::StpState(if *stp {
                    BridgeStpState::KernelStp
                } else {
                    BridgeStpState::Disabled
                })];
                // The kernel counts in hundredths of a second (USER_HZ).
                options.extend(forward_delay_s.map(|s| InfoBridge::ForwardDelay(s * 100)));
                (InfoKind::Bridge, InfoData::Bridge(options))
            }
            DeviceKind::Vlan { vlan_id, .. } => {
                (InfoKind::Vlan, InfoData::Vlan(vec![InfoVlan::Id(*vlan_id)]))
            }
            DeviceKind::Ethernet { .. } => {
                return Err(Error::Protocol(format!("{name} is not a virtual device")))
            }
        };
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(parent) = parent {
            link.attributes.push(LinkAttribute::Link(parent));
        }
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(info_kind),
            LinkInfo::Data(data),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("creating {name}"),
        )
    }

    /// Makes link `index` a port of bond or bridge `master`. Bonds take only
    /// ports that are down; the bond brings them up, a bridge does not.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), Error> {
        let mut down = LinkMessage::default();
        down.header.index = index;
        down.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(down),
            0,
            &format!("taking link {index} down"),
        )?;
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::Controller(master));
        self.request(
            RouteNetlinkMessage::SetLink(link),
            0,
            &format!("adding link {index} to link {master}"),
        )?;
        self.link_up(index, None)
    }

    /// Sets a bond's primary port (RTM_NEWLINK on the existing bond: the
    /// kernel applies link-kind options only there, not in RTM_SETLINK).
    pub fn set_bond_primary(&mut self, bond: u32, port: u32) -> Result<(), Error> {
        let mut link = LinkMessage::default();
        link.header.index = bond;
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bond),
            LinkInfo::Data(InfoData::Bond(vec![InfoBond::Primary(port)])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(link),
            0,
            &format!("making link {port} the primary port of bond {bond}"),
        )
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), Error> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::SetLink(link),
            0,
            &format!("setting the MAC address of link {index}"),
        )
    }

    /// Adds a permanent address (static config), IPv4 or IPv6.
    pub fn add_static_address(&mut self, index: u32, address: Cidr) -> Result<(), Error> {
        let message = match address.addr {
            IpAddr::V4(v4) => {
                let mut m = address_message(index, v4, address.prefix);
                if let Some(b) = broadcast(v4, address.prefix) {
                    m.attributes.push(AddressAttribute::Broadcast(b));
                }
                m
            }
            IpAddr::V6(v6) => {
                let mut m = AddressMessage::default();
                m.header.family = AddressFamily::Inet6;
                m.header.prefix_len = address.prefix;
                m.header.index = index;
                m.attributes.push(AddressAttribute::Address(IpAddr::V6(v6)));
                m
            }
        };
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("adding {address} to link {index}"),
        )
    }

    pub fn add_route(
        &mut self,
        index: u32,
        route: &RouteSpec,
        protocol: RouteProtocol,
    ) -> Result<(), Error> {
        let message = route_message(index, route, protocol);
        let what = match route.via {
            Some(via) => format!("adding route {} via {via}", route.to),
            None => format!("adding route {} on link {index}", route.to),
        };
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            &what,
        )
    }
}

/// A socket that receives the kernel's link notifications (RTMGRP_LINK).
pub struct LinkMonitor {
    socket: Socket,
}

const RTMGRP_LINK: u32 = 1;

impl LinkMonitor {
    pub fn open() -> Result<LinkMonitor, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE)
            .map_err(|e| Error::system("opening rtnetlink monitor", e))?;
        socket
            .bind(&SocketAddr::new(0, RTMGRP_LINK))
            .map_err(|e| Error::system("subscribing to link events", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| Error::system("link monitor", e))?;
        Ok(LinkMonitor { socket })
    }

    /// The link states announced since the last call (new or changed links),
    /// and the indexes of removed links.
    pub fn read(&mut self) -> (Vec<LinkState>, Vec<u32>) {
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        let mut buf = vec![0u8; 32768];
        while let Ok(n) = self.socket.recv(&mut &mut buf[..], 0) {
            let mut offset = 0;
            while offset < n {
                let Ok(message) =
                    <NetlinkMessage<RouteNetlinkMessage>>::deserialize(&buf[offset..n])
                else {
                    break;
                };
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        changed.push(link_state(&link))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                        removed.push(link.header.index)
                    }
                    _ => {}
                }
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
        (changed, removed)
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn link_state(link: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: link.header.index,
        ether: link.header.link_layer_type == LinkLayerType::Ether,
        up: link.header.flags.contains(LinkFlags::Up),
        carrier: link.header.flags.contains(LinkFlags::LowerUp),
        ..LinkState::default()
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(name) => state.name = name.clone(),
            LinkAttribute::Address(bytes) => state.mac = bytes.as_slice().try_into().ok(),
            LinkAttribute::PermAddress(bytes) => {
                state.permanent_mac = bytes.as_slice().try_into().ok()
            }
            LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
            LinkAttribute::Controller(master) => state.master = Some(*master),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        state.kind = Some(match kind {
                            InfoKind::Other(name) => name.clone(),
                            known => format!("{known:?}").to_lowercase(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    state
}

fn route_state(r: &RouteMessage) -> Option<RouteState> {
    if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let v6 = r.header.address_family == AddressFamily::Inet6;
    let mut state = RouteState {
        to: Cidr::default_route(v6),
        via: None,
        index: None,
        protocol: format!("{}", r.header.protocol).to_lowercase(),
        metric: None,
    };
    state.to.prefix = r.header.destination_prefix_length;
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(a) => state.to.addr = ip(a)?,
            RouteAttribute::Gateway(a) => state.via = ip(a),
            RouteAttribute::Oif(i) => state.index = Some(*i),
            RouteAttribute::Priority(m) => state.metric = Some(*m),
            _ => {}
        }
    }
    Some(state)
}

fn broadcast(address: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    (prefix < 31).then(|| {
        let host_bits = 32 - u32::from(prefix);
        Ipv4Addr::from(u32::from(address) | ((1u64 << host_bits) - 1) as u32)
    })
}

fn address_message(index: u32, address: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix;
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    message
        .attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    message
}

fn route_message(index: u32, route: &RouteSpec, protocol: RouteProtocol) -> RouteMessage {
    let mut message = RouteMessage::default();
    let address = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    };
    message.header.address_family = if route.to.addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    message.header.destination_prefix_length = route.to.prefix;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = protocol;
    message.header.kind = RouteType::Unicast;
    message.header.scope = match route.via {
        None => RouteScope::Link,
        Some(_) => RouteScope::Universe,
    };
    if route.on_link {
        message.header.flags |= RouteFlags::Onlink;
    }
    if route.to.prefix > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(address(route.to.addr)));
    }
    if let Some(via) = route.via {
        message
            .attributes
            .push(RouteAttribute::Gateway(address(via)));
    }
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    if let Some(table) = route.table {
        message.header.table = RouteHeader::RT_TABLE_UNSPEC;
        message.attributes.push(RouteAttribute::Table(table));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

/// The routes a lease asks for, in the kernel's terms: option 121's
/// 0.0.0.0 gateway means "on this link" (RFC 3442).
pub fn lease_routes(lease: &Lease, metric: Option<u32>) -> Vec<RouteSpec> {
    lease
        .routes
        .iter()
        .map(|r| RouteSpec {
            to: Cidr {
                addr: IpAddr::V4(r.destination),
                prefix: r.prefix,
            },
            via: (!r.gateway.is_unspecified()).then_some(IpAddr::V4(r.gateway)),
            metric,
            on_link: false,
            table: None,
        })
        .collect()
}

/// Applies a lease to the link: up (with its MTU), the address, the routes.
pub fn apply(netlink: &mut Netlink, index: u32, lease: &Lease) -> Result<(), Error> {
    netlink.link_up(index, lease.mtu.map(u32::from))?;
    let valid = lease.lease_time.as_secs().min(u64::from(u32::MAX - 1)) as u32;
    netlink.add_address(index, lease.address, lease.prefix, valid)?;
    for route in lease_routes(lease, None) {
        netlink.add_route(index, &route, RouteProtocol::Dhcp)?;
    }
    Ok(())
}

/// Removes the lease's address (its routes go with it).
pub fn remove(netlink: &mut Netlink, index: u32, lease: &Lease) -> Result<(), Error> {
    netlink.remove_address(index, lease.address, lease.prefix)
}
