//! A lease: what an ACK grants, with the options Brig applies.

use crate::Error;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::message::{code, Message};

/// A route from option 121 (RFC 3442): destination/prefix via gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server: Ipv4Addr,
    /// Routes to install: option 121 when present (the router option is then
    /// ignored, RFC 3442), else a default route via the first router.
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    pub ntp: Vec<Ipv4Addr>,
    pub lease_time: Duration,
    pub renew_after: Duration,
    pub rebind_after: Duration,
}

/// Leases shorter than this are treated as this long, so a misconfigured
/// server cannot make the client spin.
pub const MIN_LEASE: Duration = Duration::from_secs(10);

impl Lease {
    /// The lease an ACK grants, or why it is unusable.
    pub fn from_ack(ack: &Message) -> Result<Lease, Error> {
        let address = ack.yiaddr;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(Error::Protocol(format!(
                "the ACK offers no usable address ({address})"
            )));
        }
        let server = ack.address(code::SERVER_ID).unwrap_or(ack.siaddr);
        let prefix = match ack.address(code::SUBNET_MASK) {
            Some(mask) => prefix_of(mask)
                .ok_or_else(|| Error::Protocol(format!("subnet mask {mask} is not contiguous")))?,
            None => default_prefix(address),
        };
        let routes = match ack.option(code::CLASSLESS_ROUTES) {
            Some(data) => classless_routes(data)?,
            None => ack
                .addresses(code::ROUTER)
                .first()
                .map(|&gateway| {
                    vec![Route {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix: 0,
                        gateway,
                    }]
                })
                .unwrap_or_default(),
        };
        let lease_time = Duration::from_secs(
            ack.u32(code::LEASE_TIME)
                .map_or(u64::from(u32::MAX), u64::from),
        )
        .max(MIN_LEASE);
        // T1 and T2 default to 50% and 87.5% (RFC 2131 4.4.5); nonsense values
        // (T1 >= T2, T2 >= lease) fall back to the defaults.
        let default_t1 = lease_time / 2;
        let default_t2 = lease_time * 7 / 8;
        let t2 = ack
            .u32(code::REBINDING_TIME)
            .map(|s| Duration::from_secs(s.into()))
            .filter(|t| *t < lease_time)
            .unwrap_or(default_t2);
        let t1 = ack
            .u32(code::RENEWAL_TIME)
            .map(|s| Duration::from_secs(s.into()))
            .filter(|t| *t < t2)
            .unwrap_or(default_t1.min(t2));
        Ok(Lease {
            address,
            prefix,
            server,
            routes,
            dns: ack.addresses(code::DNS),
            domain: ack.option(code::DOMAIN_NAME).and_then(text),
            search: ack
                .option(code::DOMAIN_SEARCH)
                .map(domain_search)
                .unwrap_or_default(),
            hostname: ack.option(code::HOSTNAME).and_then(text),
            mtu: ack.u16(code::MTU).filter(|m| *m >= 576),
            ntp: ack.addresses(code::NTP),
            lease_time,
            renew_after: t1,
            rebind_after: t2,
        })
    }
}

fn text(bytes: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(bytes)
        .trim_end_matches('\0')
        .trim()
        .to_string();
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())).then_some(s)
}

/// `255.255.255.0` -> 24; None if not contiguous.
pub fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// The classful prefix, for servers that send no subnet mask.
fn default_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Option 121: each route is a prefix length, the significant octets of the
/// destination, and the gateway (RFC 3442 section 3).
pub fn classless_routes(data: &[u8]) -> Result<Vec<Route>, Error> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let prefix = data[i];
        if prefix > 32 {
            return Err(Error::Protocol(format!(
                "classless route with prefix /{prefix}"
            )));
        }
        let significant = (prefix as usize).div_ceil(8);
        let end = i + 1 + significant + 4;
        let entry = data
            .get(i + 1..end)
            .ok_or_else(|| Error::Protocol("a classless route is cut off".into()))?;
        let mut destination = [0u8; 4];
        destination[..significant].copy_from_slice(&entry[..significant]);
        let g = &entry[significant..];
        routes.push(Route {
            destination: Ipv4Addr::from(destination),
            prefix,
            gateway: Ipv4Addr::new(g[0], g[1], g[2], g[3]),
        });
        i = end;
    }
    Ok(routes)
}

/// Option 119: DNS names in wire format, with compression pointers into the
/// option itself (RFC 3397).
pub fn domain_search(data: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let mut labels = Vec::new();
        let mut at = i;
        let mut next = None; // where the following name starts, once a pointer is followed
        let mut hops = 0;
        loop {
            let Some(&len) = data.get(at) else {
                return names;
            };
            if len == 0 {
                at += 1;
                break;
            }
            if len & 0xc0 == 0xc0 {
                let Some(&low) = data.get(at + 1) else {
                    return names;
                };
                next.get_or_insert(at + 2);
                at = usize::from(len & 0x3f) << 8 | usize::from(low);
                hops += 1;
                if hops > 16 {
                    return names; // a pointer loop
                }
                continue;
            }
            let Some(label) = data.get(at + 1..at + 1 + len as usize) else {
                return names;
            };
            labels.push(String::from_utf8_lossy(label).into_owned());
            at += 1 + len as usize;
        }
        i = next.unwrap_or(at);
        if !labels.is_empty() {
            names.push(labels.join("."));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::super::message::MessageType;
    use super::*;

    fn ack() -> Message {
        let mut m = Message::request(MessageType::Ack, 1, [0; 6]);
        m.op = 2;
        m.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        m.set(code::SUBNET_MASK, vec![255, 255, 255, 0]);
        m.set(code::ROUTER, vec![10, 0, 2, 2]);
        m.set(code::SERVER_ID, vec![10, 0, 2, 2]);
        m.set(code::DNS, vec![10, 0, 2, 3]);
        m.set(code::LEASE_TIME, 86400u32.to_be_bytes().to_vec());
        m
    }

    #[test]
    fn a_typical_ack() {
        let lease = Lease::from_ack(&ack()).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(
            lease.routes,
            [Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Ipv4Addr::new(10, 0, 2, 2)
            }]
        );
        assert_eq!(lease.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.renew_after, Duration::from_secs(43200));
        assert_eq!(lease.rebind_after, Duration::from_secs(75600));
    }

    #[test]
    fn classless_routes_replace_the_router_option() {
        // RFC 3442 examples: 10.0.0.0/8 via 10.0.0.1 ... plus a default route.
        let mut m = ack();
        m.set(
            code::CLASSLESS_ROUTES,
            vec![
                8, 10, 10, 0, 0, 1, 24, 192, 168, 1, 10, 0, 2, 9, 0, 10, 0, 2, 1,
            ],
        );
        let routes = Lease::from_ack(&m).unwrap().routes;
        assert_eq!(
            routes,
            [
                Route {
                    destination: Ipv4Addr::new(10, 0, 0, 0),
                    prefix: 8,
                    gateway: Ipv4Addr::new(10, 0, 0, 1)
                },
                Route {
                    destination: Ipv4Addr::new(192, 168, 1, 0),
                    prefix: 24,
                    gateway: Ipv4Addr::new(10, 0, 2, 9)
                },
                Route {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Ipv4Addr::new(10, 0, 2, 1)
                },
            ]
        );
        m.set(code::CLASSLESS_ROUTES, vec![24, 192, 168]);
        assert!(Lease::from_ack(&m).is_err());
        m.set(code::CLASSLESS_ROUTES, vec![40, 1, 2, 3, 4, 5]);
        assert!(Lease::from_ack(&m).is_err());
    }

    #[test]
    fn timers_fall_back_to_rfc_defaults_when_nonsensical() {
        let mut m = ack();
        m.set(code::LEASE_TIME, 100u32.to_be_bytes().to_vec());
        m.set(code::RENEWAL_TIME, 90u32.to_be_bytes().to_vec());
        m.set(code::REBINDING_TIME, 80u32.to_be_bytes().to_vec()); // T2 < T1
        let lease = Lease::from_ack(&m).unwrap();
        assert_eq!(lease.rebind_after, Duration::from_secs(80));
        assert_eq!(lease.renew_after, Duration::from_secs(50));
        m.set(code::LEASE_TIME, 1u32.to_be_bytes().to_vec());
        assert_eq!(Lease::from_ack(&m).unwrap().lease_time, MIN_LEASE);
    }

    #[test]
    fn unusable_acks_are_rejected() {
        let mut m = ack();
        m.yiaddr = Ipv4Addr::UNSPECIFIED;
        assert!(Lease::from_ack(&m).is_err());
        let mut m = ack();
        m.set(code::SUBNET_MASK, vec![255, 0, 255, 0]);
        assert!(Lease::from_ack(&m)
            .unwrap_err()
            .to_string()
            .contains("not contiguous"));
    }

    #[test]
    fn domain_search_with_compression() {
        // RFC 3397 section 2 example: eng.apple.com, marketing.apple.com
        let data = [
            3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm',
            b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xc0, 4,
        ];
        assert_eq!(
            domain_search(&data),
            ["eng.apple.com", "marketing.apple.com"]
        );
        // A pointer to itself ends parsing instead of looping.
        assert_eq!(domain_search(&[0xc0, 0]), Vec::<String>::new());
        assert_eq!(domain_search(&[3, b'a']), Vec::<String>::new());
    }

    #[test]
    fn masks_and_text() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(text(b"node1\0"), Some("node1".into()));
        assert_eq!(text(b"bad name"), None);
    }
}
