//! What brig-netd writes for other containers: resolv.conf (DNS) and the
//! NTP servers learned from DHCP. Pure rendering; the daemon writes the
//! files atomically.

use std::net::IpAddr;

/// glibc and musl read at most three nameservers.
const MAX_NAMESERVERS: usize = 3;
/// glibc reads at most six search domains (musl: 256 characters).
const MAX_SEARCH: usize = 6;

/// DNS settings from one source (a static config entry or a lease), in the
/// order sources are given: static entries first, then leases by interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// Merges the sources, dropping duplicates and keeping first-seen order.
pub fn merge(sources: &[Dns]) -> Dns {
    let mut all = Dns::default();
    for s in sources {
        for server in &s.servers {
            if !all.servers.contains(server) {
                all.servers.push(*server);
            }
        }
        for domain in &s.search {
            if !all.search.contains(domain) {
                all.search.push(domain.clone());
            }
        }
    }
    all
}

pub fn render_resolv_conf(dns: &Dns) -> String {
    let mut text =
        String::from("# Written by brig-netd from the network config and DHCP leases.\n");
    for server in dns.servers.iter().take(MAX_NAMESERVERS) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    let search: Vec<&str> = dns
        .search
        .iter()
        .take(MAX_SEARCH)
        .map(String::as_str)
        .collect();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text
}

/// A chrony `sourcedir` file: one `server` line per NTP server.
pub fn render_ntp_sources(servers: &[IpAddr]) -> String {
    let mut text = String::from("# NTP servers from DHCP, written by brig-netd.\n");
    for server in servers {
        text.push_str(&format!("server {server} iburst\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn static_first_duplicates_dropped_and_limits_kept() {
        let sources = [
            Dns {
                servers: vec![ip("192.0.2.53")],
                search: vec!["corp.example".into()],
            },
            Dns {
                servers: vec![
                    ip("10.0.2.3"),
                    ip("192.0.2.53"),
                    ip("2001:db8::53"),
                    ip("10.9.9.9"),
                ],
                search: (0..8).map(|i| format!("d{i}.example")).collect(),
            },
        ];
        let text = render_resolv_conf(&merge(&sources));
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "nameserver 192.0.2.53",
                "nameserver 10.0.2.3",
                "nameserver 2001:db8::53",
                "search corp.example d0.example d1.example d2.example d3.example d4.example",
            ]
        );
    }

    #[test]
    fn nothing_known_gives_an_empty_but_valid_file() {
        assert_eq!(render_resolv_conf(&Dns::default()).lines().count(), 1);
        assert_eq!(
            render_ntp_sources(&[ip("10.0.2.2")]).lines().nth(1),
            Some("server 10.0.2.2 iburst")
        );
    }
}
