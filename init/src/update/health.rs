//! What a version on trial must show before it is marked good, measured on
//! the running machine: the network configured (an address on an
//! interface) and ssh listening. The system containers' readiness comes
//! from the supervisor (`Init::trial_problems`).

use std::net::IpAddr;

/// The console container's sshd, in the host's network namespace.
const SSH_PORT: u16 = 22;

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

/// None if something listens on port 22. Read from the kernel's socket
/// tables, not by connecting: a connect can be made to wait (a firewall
/// rule on lo) and PID 1 must not, and sshd would log every probe.
pub fn ssh_problem() -> Option<String> {
    let listening = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .any(|table| std::fs::read_to_string(table).is_ok_and(|text| listens_on(&text, SSH_PORT)));
    (!listening).then(|| format!("ssh is not listening on port {SSH_PORT}"))
}

/// Whether a /proc/net/tcp or tcp6 table has a socket listening on `port`.
pub fn listens_on(table: &str, port: u16) -> bool {
    const LISTEN: &str = "0A";
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        state == LISTEN && local_port == Some(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_in_the_kernels_table() {
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let listening = format!("{header}   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n");
        assert!(listens_on(&listening, 22));
        assert!(!listens_on(&listening, 2222));
        // Port 22 in a connection (01, established), not a listener.
        let connected = format!("{header}   0: 0F02000A:0016 0202000A:D4C2 01 00000000:00000000 00:00000000 00000000     0        0 1235 1\n");
        assert!(!listens_on(&connected, 22));
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000\n";
        assert!(listens_on(v6, 22));
        assert!(!listens_on("", 22) && !listens_on("garbage\nmore garbage", 22));
    }

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
