//! Applying network configuration through rtnetlink, synchronously: links
//! up and MTU, addresses with lifetimes, routes. One request at a time, each
//! acknowledged, so every failure is reported with what was being done.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::dhcp4::lease::{Lease, Route};

pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, String> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| format!("opening rtnetlink: {e}"))?;
        socket
            .bind_auto()
            .map_err(|e| format!("binding rtnetlink: {e}"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| format!("connecting rtnetlink: {e}"))?;
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
    ) -> Result<(), String> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| format!("{what}: sending: {e}"))?;
        let mut reply = vec![0u8; 8192];
        loop {
            let n = self
                .socket
                .recv(&mut &mut reply[..], 0)
                .map_err(|e| format!("{what}: receiving: {e}"))?;
            let mut offset = 0;
            while offset < n {
                let message = <NetlinkMessage<RouteNetlinkMessage>>::deserialize(&reply[offset..n])
                    .map_err(|e| format!("{what}: bad reply: {e}"))?;
                let length = message.header.length as usize;
                if message.header.sequence_number == self.sequence {
                    if let NetlinkPayload::Error(error) = message.payload {
                        return match error.code {
                            None => Ok(()),
                            Some(code) => Err(format!(
                                "{what}: {}",
                                std::io::Error::from_raw_os_error(-code.get())
                            )),
                        };
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }

    /// Brings the link up, with `mtu` if given.
    pub fn link_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), String> {
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
    ) -> Result<(), String> {
        let mut message = address_message(index, address, prefix);
        let host_bits = 32 - u32::from(prefix);
        if prefix < 31 {
            let broadcast = u32::from(address) | ((1u64 << host_bits) - 1) as u32;
            message
                .attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(broadcast)));
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
    ) -> Result<(), String> {
        let message = address_message(index, address, prefix);
        self.request(
            RouteNetlinkMessage::DelAddress(message),
            0,
            &format!("removing {address}/{prefix} from link {index}"),
        )
    }

    pub fn add_route(
        &mut self,
        index: u32,
        route: &Route,
        protocol: RouteProtocol,
    ) -> Result<(), String> {
        let message = route_message(index, route, protocol);
        let what = format!(
            "adding route {}/{} via {}",
            route.destination, route.prefix, route.gateway
        );
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            &what,
        )
    }
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

fn route_message(index: u32, route: &Route, protocol: RouteProtocol) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = route.prefix;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = protocol;
    message.header.kind = RouteType::Unicast;
    // A 0.0.0.0 gateway means "on this link" (RFC 3442).
    let on_link = route.gateway.is_unspecified();
    message.header.scope = if on_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    if route.prefix > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.destination,
            )));
    }
    if !on_link {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(route.gateway)));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

/// Applies a lease to the link: up (with its MTU), the address, the routes.
pub fn apply(netlink: &mut Netlink, index: u32, lease: &Lease) -> Result<(), String> {
    netlink.link_up(index, lease.mtu.map(u32::from))?;
    let valid = lease.lease_time.as_secs().min(u64::from(u32::MAX - 1)) as u32;
    netlink.add_address(index, lease.address, lease.prefix, valid)?;
    for route in &lease.routes {
        netlink.add_route(index, route, RouteProtocol::Dhcp)?;
    }
    Ok(())
}

/// Removes the lease's address (its routes go with it).
pub fn remove(netlink: &mut Netlink, index: u32, lease: &Lease) -> Result<(), String> {
    netlink.remove_address(index, lease.address, lease.prefix)
}
