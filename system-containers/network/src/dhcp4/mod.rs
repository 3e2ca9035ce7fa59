//! DHCPv4 (RFC 2131, 2132, 3442).

pub mod client;
pub mod lease;
pub mod message;
pub mod packet;
