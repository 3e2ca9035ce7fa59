//! brig-netd's DHCPv4 client against a real DHCP server: dnsmasq in one
//! network namespace, the client in another, joined by a veth pair. Root only;
//! nothing leaves the namespaces this test creates.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ip_output, Link, NETD};

#[test]
fn a_lease_from_dnsmasq_with_routes_dns_and_release() {
    let mut link = Link::new("full");
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.99,255.255.255.0,10m",
        "--dhcp-option=option:router,192.168.77.1",
        "--dhcp-option=option:dns-server,192.168.77.53,192.168.77.54",
        "--dhcp-option=option:domain-name,test.lan",
        "--dhcp-option=option:domain-search,test.lan,example.org",
        "--dhcp-option=option:mtu,1400",
        "--dhcp-option=121,10.9.0.0/16,192.168.77.254,0.0.0.0/0,192.168.77.1",
    ]);
    let stdout = link.lease_ok(&["--release"]);
    let address = stdout
        .lines()
        .find_map(|l| l.strip_prefix("address "))
        .unwrap();
    let host: u8 = address
        .trim_end_matches("/24")
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        address.starts_with("192.168.77.") && (50..=99).contains(&host),
        "{address}"
    );
    assert!(stdout.contains("server 192.168.77.1\n"), "{stdout}");
    // Option 121 wins over option 3 (RFC 3442).
    assert!(
        stdout.contains("route 10.9.0.0/16 via 192.168.77.254\nroute 0.0.0.0/0 via 192.168.77.1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dns 192.168.77.53\ndns 192.168.77.54\n"),
        "{stdout}"
    );
    assert!(stdout.contains("domain test.lan\n"), "{stdout}");
    assert!(
        stdout.contains("lease 600s renew 300s rebind 525s"),
        "{stdout}"
    );
    assert!(stdout.ends_with("released\n"), "{stdout}");
    let log = link.server_log();
    for step in [
        "DHCPDISCOVER",
        "DHCPOFFER",
        "DHCPREQUEST",
        "DHCPACK",
        "DHCPRELEASE",
    ] {
        assert!(
            log.contains(step),
            "{step} missing from dnsmasq's log:\n{log}"
        );
    }
}

#[test]
fn a_server_that_refuses_gets_no_lease_taken() {
    let mut link = Link::new("nak");
    // A range of static-only addresses: dnsmasq offers nothing to unknown clients.
    link.start_dnsmasq(&["--dhcp-range=192.168.77.0,static"]);
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg("15")
        .arg("ip")
        .args(["netns", "exec", &link.client, NETD, "lease", "veth-c"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "gave up too early"
    );
    // It kept asking, with backoff, and never claimed an address.
    let discovers = link.server_log().matches("DHCPDISCOVER").count();
    assert!(
        (2..=5).contains(&discovers),
        "{discovers} DISCOVERs in 15 s:\n{}",
        link.server_log()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("address"));
}

#[test]
fn a_lease_is_applied_to_the_link_and_removed_on_release() {
    let mut link = Link::new("apply");
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.50,255.255.255.0,10m",
        "--dhcp-option=option:router,192.168.77.1",
        "--dhcp-option=option:mtu,1400",
        "--dhcp-option=121,10.9.0.0/16,192.168.77.254,0.0.0.0/0,192.168.77.1",
    ]);
    let stdout = link.lease_ok(&["--apply"]);
    assert!(stdout.contains("applied in"), "{stdout}");

    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(
        addr.contains("inet 192.168.77.50/24 brd 192.168.77.255"),
        "{addr}"
    );
    // The kernel counts the lease down: the address goes if it is not renewed.
    assert!(
        addr.contains("valid_lft 5")
            || addr.contains("valid_lft 600")
            || addr.contains("valid_lft 599"),
        "{addr}"
    );
    let routes = ip_output(&["-n", &link.client, "-4", "route", "show"]);
    assert!(
        routes.contains("default via 192.168.77.1 dev veth-c proto dhcp"),
        "{routes}"
    );
    assert!(
        routes.contains("10.9.0.0/16 via 192.168.77.254 dev veth-c proto dhcp"),
        "{routes}"
    );
    let mtu = ip_output(&["-n", &link.client, "link", "show", "dev", "veth-c"]);
    assert!(mtu.contains("mtu 1400"), "{mtu}");
    // The address works: the server answers a ping over it.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &link.client,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "192.168.77.1",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Released: the address (and its routes) are gone.
    link.lease_ok(&["--apply", "--release"]);
    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(!addr.contains("192.168.77.50"), "{addr}");
    assert!(!ip_output(&["-n", &link.client, "-4", "route", "show"]).contains("proto dhcp"));
}
