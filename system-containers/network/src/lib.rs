//! brig-netd, the `network` system container: DHCPv4 (wire format, leases,
//! the RFC 2131 client state machine), static configuration over rtnetlink,
//! resolv.conf and NTP servers for the other containers, and the daemon that ties them
//! together. See docs/network.md.

pub mod chrony;
pub mod daemon;
pub mod dhcp4;
mod error;
pub mod netlink;
pub mod plan;
pub mod raw_socket;
pub mod resolv;
pub use error::Error;
