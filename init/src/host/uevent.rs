//! Kernel uevents (NETLINK_KOBJECT_UEVENT): devices that appear after boot.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// One kernel uevent: `ACTION@DEVPATH` followed by `KEY=VALUE` fields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Uevent {
    pub fields: HashMap<String, String>,
}

impl Uevent {
    /// Parses a kernel uevent datagram. Messages from udev (`libudev` magic)
    /// and ones without a header are not kernel events: None.
    pub fn parse(datagram: &[u8]) -> Option<Uevent> {
        let mut parts = datagram.split(|&b| b == 0).filter(|p| !p.is_empty());
        let header = std::str::from_utf8(parts.next()?).ok()?;
        if !header.contains('@') {
            return None;
        }
        let mut fields = HashMap::new();
        for part in parts {
            let Ok(text) = std::str::from_utf8(part) else {
                continue;
            };
            if let Some((key, value)) = text.split_once('=') {
                fields.insert(key.to_string(), value.to_string());
            }
        }
        Some(Uevent { fields })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn is_add(&self) -> bool {
        self.get("ACTION") == Some("add")
    }
}

/// A non-blocking socket subscribed to the kernel's uevent multicast group.
pub fn open_socket() -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    // Coldplug loads many modules at once; a large buffer keeps the burst of
    // events from overflowing (RCVBUFFORCE works as PID 1 has CAP_NET_ADMIN).
    let _ = socket::setsockopt(&fd, socket::sockopt::RcvBufForce, &(4 << 20));
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(fd)
}

/// Reads the next datagram the kernel sent, or None when there is none
/// right now. Any process in this network namespace may send to this
/// socket (a container sharing the host's network too): what does not come
/// from the kernel (sender port 0) is dropped, so no one can make PID 1
/// load modules or open devices with forged events.
pub fn receive(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    loop {
        match socket::recvfrom::<NetlinkAddr>(fd.as_raw_fd(), buf) {
            Ok((n, Some(from))) if from.pid() == 0 => return Some(n),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            // EAGAIN: drained. ENOBUFS: the kernel dropped events; the next
            // read continues with newer ones.
            Err(nix::Error::ENOBUFS) => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_add_event() {
        let msg = b"add@/devices/pci0000:00/0000:00:02.0/virtio0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0/virtio0\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000001v00001AF4\0SEQNUM=1234\0";
        let ev = Uevent::parse(msg).unwrap();
        assert!(ev.is_add());
        assert_eq!(ev.get("MODALIAS"), Some("virtio:d00000001v00001AF4"));
        assert_eq!(ev.get("SUBSYSTEM"), Some("virtio"));
        assert_eq!(ev.get("SEQNUM"), Some("1234"));
    }

    #[test]
    fn rejects_udev_and_garbage() {
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"\0\0"), None);
    }

    #[test]
    fn events_forged_by_a_process_are_dropped() {
        let pid1 = open_socket().unwrap();
        let to: NetlinkAddr = socket::getsockname(pid1.as_raw_fd()).unwrap();
        let forger = socket::socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .unwrap();
        let forged = b"add@/devices/forged\0ACTION=add\0MODALIAS=forged:x\0DEVNAME=input/event9\0";
        let sent = socket::sendto(forger.as_raw_fd(), forged, &to, socket::MsgFlags::empty());
        assert_eq!(
            sent.unwrap(),
            forged.len(),
            "the socket takes a process's datagrams"
        );
        // Only the kernel's events come out (the host may add a device
        // meanwhile); the forged one never does.
        let mut buf = [0u8; 8192];
        while let Some(n) = receive(&pid1, &mut buf) {
            assert_ne!(&buf[..n], &forged[..], "a forged event came through");
        }
    }

    #[test]
    fn tolerates_fields_without_values_and_bad_utf8() {
        let ev = Uevent::parse(
            b"remove@/devices/x\0ACTION=remove\0\xff\xfe\0JUNK\0DEVNAME=input/event3\0",
        )
        .unwrap();
        assert!(!ev.is_add());
        assert_eq!(ev.get("DEVNAME"), Some("input/event3"));
        assert_eq!(ev.fields.len(), 2);
    }
}
