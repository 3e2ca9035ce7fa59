//! What a version on trial must show before it is marked good, measured on
//! the running machine: the network configured (an address on an
//! interface) and ssh listening. The system containers' readiness comes
//! from the supervisor (`Init::trial_problems`).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// The console container's sshd.
const SSH: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 22);
/// A loopback connect answers at once; this bounds a full accept queue.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// An address a peer could reach the machine at: not loopback, not link
/// local (169.254/16 and fe80::/10 come without any network configured).
pub fn is_configured(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// None if some interface has a configured address; else what is missing.
pub fn network_problem() -> Option<String> {
    let addresses = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list,
        Err(e) => return Some(format!("listing network addresses: {e}")),
    };
    let configured = addresses.filter_map(|a| {
        let address = a.address?;
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else {
            IpAddr::V6(address.as_sockaddr_in6()?.ip())
        };
        is_configured(ip).then_some(a.interface_name)
    });
    match configured.into_iter().next() {
        Some(_) => None,
        None => Some("the network is not configured (no interface has an address)".into()),
    }
}

/// None if sshd takes connections on port 22.
pub fn ssh_problem() -> Option<String> {
    TcpStream::connect_timeout(&SSH, CONNECT_TIMEOUT)
        .err()
        .map(|e| format!("ssh is not listening on port 22 ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_a_peer_could_use_count() {
        for (text, counts) in [
            ("10.0.2.15", true),
            ("2001:db8::15", true),
            ("fd00::1", true),
            ("127.0.0.1", false),
            ("169.254.3.4", false),
            ("::1", false),
            ("fe80::5054:ff:fe12:3456", false),
            ("0.0.0.0", false),
        ] {
            assert_eq!(is_configured(text.parse().unwrap()), counts, "{text}");
        }
    }
}
