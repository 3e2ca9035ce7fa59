//! An AF_PACKET socket on one interface carrying IPv4: DHCP needs it before
//! the interface has an address (send from 0.0.0.0, receive replies to an
//! address not yet configured).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_IP: u16 = 0x0800;

pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn address(ifindex: i32, mac: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain integers; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = ifindex;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&mac);
    sa
}

impl RawSocket {
    pub fn open(ifindex: i32) -> io::Result<RawSocket> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sa = address(ifindex, [0; 6]);
        // SAFETY: bind with a sockaddr_ll of the size we pass.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Ask for packet metadata: a checksum left to offloading (veth,
        // virtio) is not filled in yet, and must not count as damage.
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with an int option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        attach_dhcp_client_filter(&fd)?;
        Ok(RawSocket { fd, ifindex })
    }

    /// Sends an IPv4 packet to the Ethernet broadcast address.
    pub fn send_broadcast(&self, packet: &[u8]) -> io::Result<()> {
        let sa = address(self.ifindex, [0xff; 6]);
        // SAFETY: sendto with a valid buffer and sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one IPv4 packet, or None if none came within `timeout`.
    /// The flag says whether its checksums are complete (false when the
    /// sender left them to hardware offload).
    pub fn receive(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<(usize, bool)>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on one pollfd we own.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16]; // aligned room for one tpacket_auxdata cmsg
                                      // SAFETY: msghdr is plain data; all-zero is valid before we fill it.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: recvmsg into buffers that outlive the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut complete = true;
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET
                    && (*cmsg).cmsg_type == libc::PACKET_AUXDATA
                {
                    let aux = libc::CMSG_DATA(cmsg) as *const libc::tpacket_auxdata;
                    complete =
                        std::ptr::read_unaligned(aux).tp_status & libc::TP_STATUS_CSUMNOTREADY == 0;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Some((n as usize, complete)))
    }
}

/// Keeps only unfragmented UDP to port 68 in the kernel: without it every IP
/// packet on the interface would wake the daemon while the socket is open.
fn attach_dhcp_client_filter(fd: &OwnedFd) -> io::Result<()> {
    // Classic BPF over the IPv4 header (SOCK_DGRAM: no link header).
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let program = [
        op(0x30, 0, 0, 9),      // ldb [9]             IP protocol
        op(0x15, 0, 6, 17),     // jeq #17 ? next : drop
        op(0x28, 0, 0, 6),      // ldh [6]             flags, fragment offset
        op(0x45, 4, 0, 0x1fff), // jset #0x1fff ? drop : next
        op(0xb1, 0, 0, 0),      // ldxb 4*([0]&0xf)    IP header length
        op(0x48, 0, 0, 2),      // ldh [x+2]           UDP destination port
        op(0x15, 0, 1, 68),     // jeq #68 ? accept : drop
        op(0x06, 0, 0, 0xffff), // accept
        op(0x06, 0, 0, 0),      // drop
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program outlives the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The interface's index and MAC address, from sysfs.
pub fn interface(name: &str) -> io::Result<(i32, [u8; 6])> {
    let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"));
    let index = read("ifindex")?
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("bad ifindex for {name}")))?;
    let text = read("address")?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| io::Error::other(format!("{name} has no Ethernet address")))?;
    Ok((index, mac))
}
