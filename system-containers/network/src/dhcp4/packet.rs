//! IPv4 + UDP framing for DHCP before the interface has an address: the
//! client sends from 0.0.0.0 and receives on a raw (AF_PACKET) socket, so it
//! builds and checks these headers itself.

use std::net::Ipv4Addr;

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const PROTOCOL_UDP: u8 = 17;

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let mut sum = 0u32;
    for word in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    sum + u32::from(PROTOCOL_UDP) + u32::from(udp_len)
}

/// An IPv4 packet carrying one UDP datagram.
pub fn encode(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (UDP_HEADER + payload.len()) as u16;
    let total = IPV4_HEADER as u16 + udp_len;
    let mut p = Vec::with_capacity(total as usize);
    p.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; DSCP low delay, as dhcpcd does
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    p.extend_from_slice(&[64, PROTOCOL_UDP, 0, 0]); // TTL, protocol, checksum (below)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..IPV4_HEADER], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let mut udp_sum = checksum(&p[IPV4_HEADER..], pseudo_header_sum(src, dst, udp_len));
    if udp_sum == 0 {
        udp_sum = 0xffff; // 0 means "no checksum" in UDP over IPv4
    }
    p[IPV4_HEADER + 6..IPV4_HEADER + 8].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// A received UDP datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Parses an IPv4 packet if it is a complete, unfragmented UDP datagram with
/// valid checksums; anything else is None. `udp_checksum_ready` is false when
/// the kernel says the sender left the UDP checksum to offloading.
pub fn decode(p: &[u8], udp_checksum_ready: bool) -> Option<Datagram<'_>> {
    if p.len() < IPV4_HEADER || p[0] >> 4 != 4 || p[9] != PROTOCOL_UDP {
        return None;
    }
    let header = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if header < IPV4_HEADER || total < header + UDP_HEADER || total > p.len() {
        return None;
    }
    let fragment = u16::from_be_bytes([p[6], p[7]]);
    if fragment & 0x3fff != 0 || checksum(&p[..header], 0) != 0 {
        return None; // a fragment, or a damaged header
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let udp = &p[header..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER || udp_len > udp.len() {
        return None;
    }
    let udp = &udp[..udp_len];
    let sent_sum = u16::from_be_bytes([udp[6], udp[7]]);
    if udp_checksum_ready
        && sent_sum != 0
        && checksum(udp, pseudo_header_sum(src, dst, udp_len as u16)) != 0
    {
        return None;
    }
    Some(Datagram {
        src,
        dst,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_valid_checksums() {
        let payload = b"hello dhcp";
        let p = encode(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, payload);
        assert_eq!(p.len(), 20 + 8 + payload.len());
        assert_eq!(checksum(&p[..20], 0), 0, "IP header checksum verifies");
        let d = decode(&p, true).unwrap();
        assert_eq!(
            d,
            Datagram {
                src: Ipv4Addr::UNSPECIFIED,
                dst: Ipv4Addr::BROADCAST,
                src_port: 68,
                dst_port: 67,
                payload
            }
        );
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
            !0xddf2
        );
    }

    #[test]
    fn damaged_fragmented_or_foreign_packets_are_refused() {
        let good = encode(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            67,
            68,
            b"payload!",
        );
        let mut bad = good.clone();
        bad[30] ^= 0xff; // payload: UDP checksum fails
        assert!(decode(&bad, true).is_none());
        // ... unless the kernel says the checksum was left to offloading.
        assert!(decode(&bad, false).is_some());
        let mut bad = good.clone();
        bad[8] = 1; // TTL: header checksum fails
        assert!(decode(&bad, true).is_none());
        let mut frag = good.clone();
        frag[6] = 0x20; // more fragments
        assert!(decode(&frag, true).is_none());
        let mut tcp = good.clone();
        tcp[9] = 6;
        assert!(decode(&tcp, true).is_none());
        for n in 0..good.len() {
            assert!(decode(&good[..n], true).is_none(), "truncated to {n}");
        }
        // A zero UDP checksum means "none" and is accepted.
        let mut unchecked = good.clone();
        unchecked[26] = 0;
        unchecked[27] = 0;
        assert!(decode(&unchecked, true).is_some());
    }
}
