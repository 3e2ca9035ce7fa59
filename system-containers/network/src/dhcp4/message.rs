//! The DHCPv4 wire format: the BOOTP header, the magic cookie and the options
//! (RFC 2131 section 2, RFC 2132). Written here rather than taken from a crate:
//! the format is small and fixed, and the general DHCP crates pull a DNS
//! library in for one option.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const HEADER: usize = 236;
/// BOOTP's minimum message size; some servers drop shorter requests.
const MIN_SIZE: usize = 300;
const BROADCAST_FLAG: u16 = 0x8000;

/// Option codes used by Brig.
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const NTP: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// A DHCPv4 message. Options are kept by code; repeated instances of one
/// code are concatenated on decoding, as RFC 3396 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1 = request (client to server), 2 = reply.
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: BTreeMap<u8, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad DHCP message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// A client request of `kind` from `mac`.
    pub fn request(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
        let mut options = BTreeMap::new();
        options.insert(code::MESSAGE_TYPE, vec![kind as u8]);
        Message {
            op: 1,
            xid,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options,
        }
    }

    pub fn kind(&self) -> Option<MessageType> {
        self.options
            .get(&code::MESSAGE_TYPE)
            .and_then(|v| v.first())
            .and_then(|&b| MessageType::from_u8(b))
    }

    pub fn set(&mut self, code: u8, value: Vec<u8>) {
        self.options.insert(code, value);
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }

    /// An option holding one IPv4 address.
    pub fn address(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code)? {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// An option holding a list of IPv4 addresses.
    pub fn addresses(&self, code: u8) -> Vec<Ipv4Addr> {
        match self.option(code) {
            Some(v) if v.len() % 4 == 0 => v
                .chunks(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn u32(&self, code: u8) -> Option<u32> {
        self.option(code)?.try_into().ok().map(u32::from_be_bytes)
    }

    pub fn u16(&self, code: u8) -> Option<u16> {
        self.option(code)?.try_into().ok().map(u16::from_be_bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_SIZE);
        out.extend_from_slice(&[self.op, 1, 6, 0]); // op, htype ethernet, hlen 6, hops
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&(if self.broadcast { BROADCAST_FLAG } else { 0 }).to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.resize(HEADER, 0); // chaddr padding, sname, file
        out.extend_from_slice(&COOKIE);
        // Message type first: some servers expect it there.
        let ordered = self
            .options
            .iter()
            .filter(|(c, _)| **c == code::MESSAGE_TYPE)
            .chain(
                self.options
                    .iter()
                    .filter(|(c, _)| **c != code::MESSAGE_TYPE),
            );
        for (&code, value) in ordered {
            // Values over 255 bytes are split into several instances (RFC 3396).
            let chunks: Vec<&[u8]> = if value.is_empty() {
                vec![&[]]
            } else {
                value.chunks(255).collect()
            };
            for chunk in chunks {
                out.push(code);
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        out.push(code::END);
        if out.len() < MIN_SIZE {
            out.resize(MIN_SIZE, 0);
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
        let err = |m: &str| Err(DecodeError(m.to_string()));
        if data.len() < HEADER + COOKIE.len() {
            return err(&format!("{} bytes, shorter than a DHCP header", data.len()));
        }
        if data[1] != 1 || data[2] != 6 {
            return err("not Ethernet (htype 1, hlen 6)");
        }
        if data[HEADER..HEADER + 4] != COOKIE {
            return err("no DHCP magic cookie (plain BOOTP?)");
        }
        let addr = |at: usize| Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&data[28..34]);
        let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut i = HEADER + 4;
        // A missing END option is tolerated.
        while let Some(&code) = data.get(i) {
            match code {
                code::PAD => i += 1,
                code::END => break,
                _ => {
                    let Some(&len) = data.get(i + 1) else {
                        return err("an option is cut off");
                    };
                    let value = data
                        .get(i + 2..i + 2 + len as usize)
                        .ok_or_else(|| DecodeError(format!("option {code} runs past the end")))?;
                    options.entry(code).or_default().extend_from_slice(value);
                    i += 2 + len as usize;
                }
            }
        }
        Ok(Message {
            op: data[0],
            xid: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            secs: u16::from_be_bytes([data[8], data[9]]),
            broadcast: u16::from_be_bytes([data[10], data[11]]) & BROADCAST_FLAG != 0,
            ciaddr: addr(12),
            yiaddr: addr(16),
            siaddr: addr(20),
            giaddr: addr(24),
            chaddr,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn a_request_round_trips_and_has_the_bootp_shape() {
        let mut m = Message::request(MessageType::Discover, 0xdead_beef, MAC);
        m.broadcast = true;
        m.set(code::PARAMETER_REQUEST_LIST, vec![1, 3, 6, 121]);
        let bytes = m.encode();
        assert_eq!(bytes.len(), 300);
        assert_eq!(&bytes[..4], &[1, 1, 6, 0]);
        assert_eq!(&bytes[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[10..12], &[0x80, 0]);
        assert_eq!(&bytes[28..34], &MAC);
        assert_eq!(&bytes[236..240], &COOKIE);
        // The message type is the first option.
        assert_eq!(&bytes[240..243], &[53, 1, 1]);
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.kind(), Some(MessageType::Discover));
    }

    #[test]
    fn long_options_are_split_and_joined_again() {
        let mut m = Message::request(MessageType::Request, 1, MAC);
        let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        m.set(code::DOMAIN_SEARCH, long.clone());
        let back = Message::decode(&m.encode()).unwrap();
        assert_eq!(back.option(code::DOMAIN_SEARCH), Some(long.as_slice()));
    }

    #[test]
    fn typed_option_accessors() {
        let mut m = Message::request(MessageType::Ack, 1, MAC);
        m.set(code::ROUTER, vec![10, 0, 2, 2]);
        m.set(code::DNS, vec![10, 0, 2, 3, 1, 1, 1, 1]);
        m.set(code::LEASE_TIME, 86400u32.to_be_bytes().to_vec());
        m.set(code::MTU, 1500u16.to_be_bytes().to_vec());
        m.set(code::SERVER_ID, vec![1, 2, 3]); // wrong length
        assert_eq!(m.address(code::ROUTER), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            m.addresses(code::DNS),
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(m.u32(code::LEASE_TIME), Some(86400));
        assert_eq!(m.u16(code::MTU), Some(1500));
        assert_eq!(m.address(code::SERVER_ID), None);
        assert_eq!(m.u32(code::RENEWAL_TIME), None);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[2; 100]).is_err());
        let mut bytes = Message::request(MessageType::Offer, 7, MAC).encode();
        bytes[236] = 0; // cookie
        assert!(Message::decode(&bytes)
            .unwrap_err()
            .to_string()
            .contains("cookie"));
        let mut bytes = Message::request(MessageType::Offer, 7, MAC).encode();
        bytes.truncate(245);
        bytes[243] = 61;
        bytes[244] = 200; // length past the end
        assert!(Message::decode(&bytes).unwrap_err().0.contains("option 61"));
        // Every truncation of a valid message either decodes or errors.
        let full = Message::request(MessageType::Ack, 9, MAC).encode();
        for n in 0..full.len() {
            let _ = Message::decode(&full[..n]);
        }
        // Random bytes after a valid header.
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut bytes = full[..240].to_vec();
            for _ in 0..(seed % 64) {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((seed >> 24) as u8);
            }
            let _ = Message::decode(&bytes);
        }
    }
}
