//! brig-netd, the `network` system container. This first part is the pure
//! DHCPv4 core (wire format, leases, the RFC 2131 client state machine); the
//! sockets, netlink and configuration come next (issue 4).

pub mod dhcp4;
pub mod netlink;
pub mod plan;
pub mod raw_socket;
pub mod resolv;
