//! Reading QEMU's `filter-dump` captures: pcap files of Ethernet frames.
//! `brig bench` and the end-to-end tests wait on them for a guest's DHCP
//! ACK: only then is an ssh connection through QEMU's user network
//! delivered at once (before, its SYN waits for an address to go to).

use std::time::{Duration, SystemTime};

const GLOBAL_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// One captured frame and when QEMU saw it.
pub struct Frame<'a> {
    pub at: SystemTime,
    pub bytes: &'a [u8],
}

/// The whole records of a capture, in order. A last record QEMU is still
/// writing is left out.
pub fn frames(pcap: &[u8]) -> impl Iterator<Item = Frame<'_>> {
    let mut at = GLOBAL_HEADER;
    std::iter::from_fn(move || {
        let header = pcap.get(at..at + RECORD_HEADER)?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
        let start = at + RECORD_HEADER;
        let bytes = pcap.get(start..start + word(8) as usize)?;
        at = start + bytes.len();
        let since_epoch =
            Duration::from_secs(word(0).into()) + Duration::from_micros(word(4).into());
        Some(Frame {
            at: SystemTime::UNIX_EPOCH + since_epoch,
            bytes,
        })
    })
}

/// When the first DHCP ACK in a capture went by, if one did.
pub fn first_dhcp_ack(pcap: &[u8]) -> Option<SystemTime> {
    frames(pcap)
        .find(|frame| is_dhcp_ack(frame.bytes))
        .map(|frame| frame.at)
}

fn is_dhcp_ack(frame: &[u8]) -> bool {
    // Ethernet II carrying IPv4, then UDP from port 67 to port 68.
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &frame[14..];
    let header = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < header + 8 {
        return false;
    }
    let udp = &ip[header..];
    if udp[0..2] != 67u16.to_be_bytes() || udp[2..4] != 68u16.to_be_bytes() {
        return false;
    }
    // BOOTP: a reply (op 2), 236 fixed bytes, the magic cookie, options.
    let bootp = &udp[8..];
    if bootp.len() < 240 || bootp[0] != 2 || bootp[236..240] != [99, 130, 83, 99] {
        return false;
    }
    let mut options = &bootp[240..];
    while let [code, rest @ ..] = options {
        match code {
            0 => options = rest,
            255 => return false,
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    return false;
                };
                let len = usize::from(len);
                if rest.len() < len {
                    return false;
                }
                // Option 53, DHCP message type; 5 is DHCPACK.
                if *code == 53 && len == 1 && rest[0] == 5 {
                    return true;
                }
                options = &rest[len..];
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with a DHCP reply from QEMU's user network
    /// (10.0.2.2 to 10.0.2.15) of message type `kind`.
    fn dhcp_reply(kind: u8) -> Vec<u8> {
        let mut bootp = vec![0u8; 236];
        bootp[0] = 2;
        bootp.extend([99, 130, 83, 99]);
        bootp.extend([1, 4, 255, 255, 255, 0]); // subnet mask first
        bootp.extend([53, 1, kind, 255]);
        let mut udp = Vec::new();
        udp.extend(67u16.to_be_bytes());
        udp.extend(68u16.to_be_bytes());
        udp.extend(((8 + bootp.len()) as u16).to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(bootp);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend([10, 0, 2, 2, 10, 0, 2, 15]);
        ip.extend(udp);
        let mut frame = vec![0xff; 6];
        frame.extend([0x52, 0x55, 0x0a, 0, 2, 2, 0x08, 0x00]);
        frame.extend(ip);
        frame
    }

    /// A capture of `frames`, the n-th seen at n.25 s after the epoch.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut file = vec![0u8; GLOBAL_HEADER];
        for (n, frame) in frames.iter().enumerate() {
            file.extend((n as u32).to_le_bytes());
            file.extend(250_000u32.to_le_bytes());
            file.extend((frame.len() as u32).to_le_bytes());
            file.extend((frame.len() as u32).to_le_bytes());
            file.extend(frame);
        }
        file
    }

    #[test]
    fn a_dhcp_ack_is_found_with_its_time_and_an_offer_or_a_torn_record_is_not() {
        let (offer, ack) = (dhcp_reply(2), dhcp_reply(5));
        assert_eq!(first_dhcp_ack(&pcap(std::slice::from_ref(&offer))), None);
        assert_eq!(
            first_dhcp_ack(&pcap(&[offer.clone(), ack.clone()])),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1250))
        );
        // QEMU still writing the ACK's record: not yet.
        let whole = pcap(&[offer, ack]);
        assert_eq!(first_dhcp_ack(&whole[..whole.len() - 10]), None);
        assert_eq!(frames(&whole[..whole.len() - 10]).count(), 1);
        // A request from the client (port 68 to 67) is no ACK.
        let mut request = dhcp_reply(5);
        let udp = 14 + 20;
        request[udp..udp + 4].copy_from_slice(&[0, 68, 0, 67]);
        assert_eq!(first_dhcp_ack(&pcap(&[request])), None);
    }
}
