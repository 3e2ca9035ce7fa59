//! The brig-netd daemon (`brig-netd run`) against dnsmasq across network
//! namespaces: leases applied with routes and DNS, renew, rebind, release,
//! INIT-REBOOT after a restart, DHCP's NTP servers handed to chronyd, cable pulled and plugged back (also into
//! another network), static configuration, garbage and silent servers.
//! Root only; nothing leaves the namespaces the tests create.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ip, ip_output, Chronyd, Link, Netd};

const DHCP: &str = "network:
  version: 2
  ethernets:
    client:
      match: {name: veth-c}
      dhcp4: true
      nameservers: {addresses: [192.0.2.53], search: [static.example]}
";

fn ping(link: &Link, address: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &link.client,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            address,
        ])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn renews_then_rebinds_to_another_server_and_releases_on_stop() {
    let mut link = Link::new("renew");
    // Short renewal (T1) and rebinding (T2) times; dnsmasq's shortest lease is 2 min.
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.50,255.255.255.0,2m",
        "--dhcp-option=option:T1,3",
        "--dhcp-option=option:T2,6",
        "--dhcp-option=option:router,192.168.77.1",
        "--dhcp-option=option:dns-server,192.168.77.53",
        "--dhcp-option=option:domain-search,lan.example",
        "--dhcp-option=option:ntp-server,192.168.77.1",
        "--dhcp-option=121,10.9.0.0/16,192.168.77.254,0.0.0.0/0,192.168.77.1",
    ]);
    // chronyd as the ntp container runs it, told about DHCP's NTP server.
    let dir = tempfile::tempdir().unwrap();
    let chronyd = Chronyd::start(&link.client, &dir.path().join("ntp"));
    let netd = Netd::start_in(&link, DHCP, dir);
    netd.wait_for(
        "veth-c: bound 192.168.77.50/24 from 192.168.77.1",
        1,
        Duration::from_secs(20),
    );

    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(addr.contains("inet 192.168.77.50/24"), "{addr}");
    let routes = ip_output(&["-n", &link.client, "-4", "route", "show"]);
    assert!(
        routes.contains("default via 192.168.77.1 dev veth-c proto dhcp"),
        "{routes}"
    );
    assert!(
        routes.contains("10.9.0.0/16 via 192.168.77.254 dev veth-c proto dhcp"),
        "{routes}"
    );
    assert!(ping(&link, "192.168.77.1"));
    // Static DNS first, then the lease's; search domains likewise.
    assert_eq!(
        netd.resolv_conf().lines().skip(1).collect::<Vec<_>>(),
        [
            "nameserver 192.0.2.53",
            "nameserver 192.168.77.53",
            "search static.example lan.example"
        ]
    );
    let ntp = std::fs::read_to_string(netd.dir.path().join("ntp/dhcp.sources")).unwrap();
    assert!(ntp.contains("server 192.168.77.1 iburst"), "{ntp}");
    let sources = chronyd.sources();
    assert!(sources.contains("192.168.77.1"), "{sources}");
    assert!(!netd.log().contains("telling chronyd"), "{}", netd.log());
    let iface = netd.interface("veth-c");
    assert_eq!(iface["config"], "client");
    assert_eq!(iface["dhcp4"]["state"], "bound");
    assert_eq!(iface["dhcp4"]["server"], "192.168.77.1");
    assert_eq!(iface["dhcp4"]["ntp"][0], "192.168.77.1");

    // Renewal at T1: a unicast REQUEST that the server ACKs.
    netd.wait_for(
        "veth-c: bound 192.168.77.50/24 from 192.168.77.1",
        2,
        Duration::from_secs(10),
    );
    assert!(
        link.server_log().matches("DHCPACK").count() >= 2,
        "{}",
        link.server_log()
    );

    // The server goes away and another one, at another address, takes over:
    // renewals (unicast to the old one) fail; at T2 the broadcast rebind
    // reaches the new server.
    link.stop_dnsmasq();
    link.move_server("192.168.77.1/24", "192.168.77.2/24");
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.50,255.255.255.0,2m",
        "--dhcp-authoritative",
        "--dhcp-option=option:router,192.168.77.2",
    ]);
    netd.wait_for(
        "veth-c: bound 192.168.77.50/24 from 192.168.77.2",
        1,
        Duration::from_secs(20),
    );
    let routes = ip_output(&["-n", &link.client, "-4", "route", "show"]);
    assert!(
        routes.contains("default via 192.168.77.2 dev veth-c proto dhcp"),
        "{routes}"
    );
    assert_eq!(netd.interface("veth-c")["dhcp4"]["server"], "192.168.77.2");

    // Stopped as PID 1 stops it: the lease is released and the address goes.
    let (status, _dir) = netd.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        link.server_log().contains("DHCPRELEASE"),
        "{}",
        link.server_log()
    );
    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(!addr.contains("192.168.77.50"), "{addr}");
}

#[test]
fn keeps_its_lease_across_restarts_and_rechecks_it_when_the_cable_returns() {
    let mut link = Link::new("reboot");
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,10m",
        "--dhcp-authoritative",
    ]);
    let netd = Netd::start(&link, DHCP);
    netd.wait_for("veth-c: bound 192.168.77.", 1, Duration::from_secs(20));
    let address = netd.interface("veth-c")["dhcp4"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, dir) = netd.terminate();

    // Restarted with the same state: INIT-REBOOT asks for the same address,
    // without a DISCOVER.
    let discovers = link.server_log().matches("DHCPDISCOVER").count();
    let netd = Netd::start_in(&link, DHCP, dir);
    let ip_only = address.trim_end_matches("/24");
    netd.wait_for(
        &format!("asking to keep {ip_only} (INIT-REBOOT)"),
        1,
        Duration::from_secs(5),
    );
    netd.wait_for(
        &format!("veth-c: bound {address}"),
        1,
        Duration::from_secs(20),
    );
    assert_eq!(link.server_log().matches("DHCPDISCOVER").count(), discovers);

    // Cable out and back in: the lease is checked again, and kept.
    let requests = link.server_log().matches("DHCPREQUEST").count();
    link.cable(false);
    netd.wait_for("veth-c: carrier lost", 1, Duration::from_secs(5));
    link.cable(true);
    netd.wait_for(
        "veth-c: carrier back; checking the lease",
        1,
        Duration::from_secs(5),
    );
    netd.wait_for(
        &format!("veth-c: bound {address}"),
        2,
        Duration::from_secs(20),
    );
    assert!(link.server_log().matches("DHCPREQUEST").count() > requests);

    // Plugged into another network: the server refuses the old address
    // (NAK), the client starts over and takes an address from the new one.
    link.cable(false);
    netd.wait_for("veth-c: carrier lost", 2, Duration::from_secs(5));
    link.stop_dnsmasq();
    link.move_server("192.168.77.1/24", "10.44.0.1/24");
    link.start_dnsmasq(&[
        "--dhcp-range=10.44.0.70,10.44.0.70,255.255.255.0,10m",
        "--dhcp-authoritative",
    ]);
    link.cable(true);
    netd.wait_for(
        "veth-c: bound 10.44.0.70/24 from 10.44.0.1",
        1,
        Duration::from_secs(30),
    );
    assert!(
        link.server_log().contains("DHCPNAK"),
        "{}",
        link.server_log()
    );
    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(
        addr.contains("10.44.0.70/24") && !addr.contains("192.168.77."),
        "{addr}"
    );
    assert!(ping(&link, "10.44.0.1"));
}

#[test]
fn static_addresses_routes_and_dns_and_a_broken_entry_reported() {
    let link = Link::new("static");
    ip(&[
        "-n",
        &link.server,
        "addr",
        "add",
        "2001:db8:77::1/64",
        "dev",
        "veth-s",
        "nodad",
    ]);
    let config = "network:
  version: 2
  ethernets:
    veth-c:
      addresses: [192.168.77.9/24, '2001:db8:77::9/64']
      gateway4: 192.168.77.1
      routes:
        - {to: 10.20.0.0/16, via: 192.168.77.254, metric: 50}
        - {to: '2001:db8:99::/48', via: '2001:db8:77::1'}
      mtu: 1400
      accept-ra: false
      nameservers: {addresses: [192.168.77.1, '2001:db8:77::1'], search: [a.example, b.example]}
    typo:
      match: {name: eth9}
      adresses: [10.0.0.1/24]
";
    let netd = Netd::start(&link, config);
    netd.wait_for("veth-c: configuring from veth-c", 1, Duration::from_secs(5));
    assert!(
        netd.log()
            .contains("`ethernets.typo.adresses`: unknown field `adresses`"),
        "{}",
        netd.log()
    );
    // accept-ra: false reaches the kernel (on by default for a host).
    let accept_ra = || link.client_output(&["cat", "/proc/sys/net/ipv6/conf/veth-c/accept_ra"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while accept_ra().trim() != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "accept_ra {}",
            accept_ra()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = netd.status();
    assert!(
        status["config_errors"][0]
            .as_str()
            .unwrap()
            .contains("ethernets.typo"),
        "{status}"
    );

    let addr = ip_output(&["-n", &link.client, "addr", "show", "dev", "veth-c"]);
    assert!(
        addr.contains("inet 192.168.77.9/24 brd 192.168.77.255"),
        "{addr}"
    );
    assert!(addr.contains("inet6 2001:db8:77::9/64"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = ip_output(&["-n", &link.client, "-4", "route", "show"]);
    assert!(
        routes.contains("default via 192.168.77.1 dev veth-c proto static"),
        "{routes}"
    );
    assert!(
        routes.contains("10.20.0.0/16 via 192.168.77.254 dev veth-c proto static metric 50"),
        "{routes}"
    );
    let routes6 = ip_output(&["-n", &link.client, "-6", "route", "show"]);
    assert!(
        routes6.contains("2001:db8:99::/48 via 2001:db8:77::1 dev veth-c proto static"),
        "{routes6}"
    );
    assert_eq!(
        netd.resolv_conf().lines().skip(1).collect::<Vec<_>>(),
        [
            "nameserver 192.168.77.1",
            "nameserver 2001:db8:77::1",
            "search a.example b.example"
        ]
    );
    assert!(ping(&link, "192.168.77.1"));
    let iface = netd.interface("veth-c");
    assert!(iface["dhcp4"].is_null());
    assert_eq!(iface["mtu"], 1400);

    // The status socket is open to the read-only group: clients that
    // connect and say nothing hold up nobody (ten of them cost 20 s when
    // the daemon waited up to 2 s for each one's request line).
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let silent: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(netd.status_socket()).unwrap())
        .collect();
    for stream in silent
        .iter()
        .chain([&UnixStream::connect(netd.status_socket()).unwrap()])
    {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("the status, unasked, within 10 s");
        let status: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(status["interfaces"].is_array(), "{status}");
    }
}

#[test]
fn garbage_from_the_network_and_a_silent_server_do_no_harm() {
    let mut link = Link::new("garbage");
    let netd = Netd::start(&link, DHCP);
    // While the client is looking for a server, something on the network
    // sprays port 68 with junk: random bytes, truncated and malformed
    // BOOTREPLYs (bad option lengths, no end, endless padding), huge packets.
    let spray = r#"
import os, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"veth-s")
s.bind(("0.0.0.0", 67))
head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0, 0, 0, bytes(4), bytes([192,168,77,99]), bytes(4), bytes(4), bytes(16), bytes(64), bytes(128))
cookie = bytes([99, 130, 83, 99])
junk = [os.urandom(n) for n in (1, 10, 200, 240, 300, 1400)]
junk += [head, head + cookie, head + cookie + bytes([53, 1, 2, 54, 200]), head + cookie + bytes([53, 9]) + bytes(9), head + cookie + bytes(1000), head + cookie + bytes([255]) * 3, head[:100]]
for _ in range(20):
    for j in junk:
        s.sendto(j, ("255.255.255.255", 68))
"#;
    let sprayed = Command::new("ip")
        .args(["netns", "exec", &link.server, "python3", "-c", spray])
        .status()
        .unwrap();
    assert!(sprayed.success());
    // Then a real server appears: the client still gets its lease.
    link.start_dnsmasq(&[
        "--dhcp-range=192.168.77.50,192.168.77.50,255.255.255.0,2m",
        "--dhcp-option=option:T1,2",
        "--dhcp-option=option:T2,4",
    ]);
    netd.wait_for("veth-c: bound 192.168.77.50/24", 1, Duration::from_secs(30));

    // The server stops answering: renewals and rebinding go unanswered, the
    // address stays until the lease runs out, the daemon keeps trying.
    link.stop_dnsmasq();
    // T2 (4 s) passes without an answer: the client rebinds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lease = loop {
        let lease = netd.interface("veth-c")["dhcp4"].clone();
        if lease["state"] == "rebinding" {
            break lease;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rebinding: {lease}\n{}",
            netd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut netd = netd;
    assert!(netd.alive(), "{}", netd.log());
    assert_eq!(lease["address"], "192.168.77.50/24");
    let left = lease["expires_in"].as_u64().unwrap();
    assert!((100..=116).contains(&left), "{lease}");
    let addr = ip_output(&["-n", &link.client, "-4", "addr", "show", "dev", "veth-c"]);
    assert!(addr.contains("192.168.77.50/24"), "{addr}");
}
