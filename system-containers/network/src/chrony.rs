//! Tells chronyd (the `ntp` container) that the network changed, over its
//! command socket, the way `chronyc` would: "reload sources" after we rewrote
//! the DHCP NTP servers in its sourcedir, "refresh" (resolve the pool names
//! again) once a link has an address. chronyd reads its sourcedir only on
//! such a request, and its first pool lookup usually fails at boot, before
//! any lease.
//!
//! The protocol is chrony's candm (version 6): a 20-byte request header,
//! padded to the size of the reply, answered with a status code. Both
//! commands carry no data and are answered with a null reply.

use crate::Error;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// Commands this daemon sends (chrony's candm.h numbers, stable across
/// versions: new commands only ever get new numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Refresh = 53,
    ReloadSources = 70,
}

const PROTOCOL_VERSION: u8 = 6;
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
/// A null reply is 28 bytes; requests are padded to their reply's size.
const NULL_REPLY_LEN: usize = 28;

/// The request datagram for `command`.
pub fn encode(command: Command, sequence: u32) -> [u8; NULL_REPLY_LEN] {
    let mut packet = [0u8; NULL_REPLY_LEN];
    packet[0] = PROTOCOL_VERSION;
    packet[1] = REQUEST;
    packet[4..6].copy_from_slice(&(command as u16).to_be_bytes());
    packet[8..12].copy_from_slice(&sequence.to_be_bytes());
    packet
}

/// Checks chronyd's answer to request `sequence`: Ok, or what went wrong.
pub fn check_reply(reply: &[u8], sequence: u32) -> Result<(), Error> {
    if reply.len() < NULL_REPLY_LEN || reply[0] != PROTOCOL_VERSION || reply[1] != REPLY {
        return Err(Error::Protocol(format!(
            "unexpected reply ({} bytes)",
            reply.len()
        )));
    }
    if reply[16..20] != sequence.to_be_bytes() {
        return Err(Error::Protocol("reply to another request".into()));
    }
    match u16::from_be_bytes([reply[8], reply[9]]) {
        0 => Ok(()),
        status => Err(Error::Protocol(format!(
            "chronyd answered with status {status}"
        ))),
    }
}

/// Sends `command` to chronyd at `socket`. The reply comes back to a socket
/// bound next to chronyd's (chronyd answers only named sockets).
pub fn send(socket: &Path, command: Command) -> Result<(), Error> {
    let reply_path = socket.with_file_name(format!("netd-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&reply_path);
    let result = (|| {
        let sock = UnixDatagram::bind(&reply_path)
            .map_err(|e| Error::system(format!("binding {}", reply_path.display()), e))?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| Error::system("setting a timeout for chronyd's reply", e))?;
        let sequence = std::process::id() ^ command as u32;
        sock.send_to(&encode(command, sequence), socket)
            .map_err(|e| Error::system(format!("sending to {}", socket.display()), e))?;
        let mut reply = [0u8; 512];
        let n = sock
            .recv(&mut reply)
            .map_err(|e| Error::system("waiting for chronyd's reply", e))?;
        check_reply(&reply[..n], sequence)
    })();
    let _ = std::fs::remove_file(&reply_path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_padded_to_the_reply_size_with_the_command_and_sequence() {
        let packet = encode(Command::ReloadSources, 0x0102_0304);
        assert_eq!(packet.len(), 28);
        assert_eq!(&packet[..4], &[6, 1, 0, 0]);
        assert_eq!(&packet[4..6], &[0, 70]);
        assert_eq!(&packet[8..12], &[1, 2, 3, 4]);
        assert!(packet[12..].iter().all(|&b| b == 0));
        assert_eq!(encode(Command::Refresh, 0)[5], 53);
    }

    #[test]
    fn replies_are_checked() {
        // A real reply from chronyd 4.3 to "reload sources", sequence 1234.
        let ok = [
            6, 2, 0, 0, 0, 70, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 210, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(check_reply(&ok, 1234).is_ok());
        assert!(check_reply(&ok, 1235)
            .unwrap_err()
            .to_string()
            .contains("another"));
        let mut failed = ok;
        failed[9] = 1;
        assert!(check_reply(&failed, 1234)
            .unwrap_err()
            .to_string()
            .contains("status 1"));
        assert!(check_reply(&ok[..10], 1234).is_err());
    }
}
