//! Bonds, bridges and VLANs from the network config, built by brig-netd
//! (`brig-netd run`) and used against dnsmasq across network namespaces:
//! an active-backup bond that fails over when its primary's cable is pulled,
//! an 802.3ad bond aggregating with a kernel LACP partner, a bridge, a VLAN.
//! Root only; nothing leaves the namespaces the tests create. The bond and
//! VLAN tests need kernel support this CI host lacks (see docs/network.md).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ip, Link, Netd};

fn ping(link: &Link, address: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &link.client, "ping", "-c", "1", "-W", "2"])
        .arg(address)
        .output()
        .unwrap()
        .status
        .success()
}

/// Waits until `/proc/net/bonding/<bond>` in the client namespace contains
/// every one of `texts`; returns it.
fn bond_state(link: &Link, bond: &str, texts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let state = link.client_output(&["cat", &format!("/proc/net/bonding/{bond}")]);
        if texts.iter().all(|t| state.contains(t)) {
            return state;
        }
        assert!(Instant::now() < deadline, "{texts:?} not in:\n{state}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server's address on `device` (its bridge or bond), dnsmasq serving
/// there, and netd with a bond of both client ports and `parameters`.
fn serve_and_bond(link: &mut Link, device: &str, parameters: &str) -> Netd {
    ip(&[
        "-n",
        &link.server,
        "addr",
        "add",
        "192.168.77.1/24",
        "dev",
        device,
    ]);
    ip(&["-n", &link.server, "link", "set", device, "up"]);
    link.dhcp_interface = device.into();
    link.start_dnsmasq(&["--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,2m"]);
    Netd::start(
        link,
        &format!(
            "network:
  version: 2
  ethernets:
    port1: {{match: {{name: veth-c}}}}
    port2: {{match: {{name: veth-c2}}}}
  bonds:
    bond0:
      interfaces: [port1, port2]
      parameters: {parameters}
      dhcp4: true
"
        ),
    )
}

#[test]
#[ignore = "needs a kernel with bonding (this CI host's has none and cannot load modules)"]
fn active_backup_bond_gets_a_lease_and_fails_over_when_the_primary_cable_is_pulled() {
    let mut link = Link::new("bond");
    link.second_pair();
    // Both cables end on one server bridge, as two switch ports would.
    ip(&["-n", &link.server, "link", "add", "br-s", "type", "bridge"]);
    for port in ["veth-s", "veth-s2"] {
        ip(&["-n", &link.server, "link", "set", port, "master", "br-s"]);
    }
    ip(&[
        "-n",
        &link.server,
        "addr",
        "del",
        "192.168.77.1/24",
        "dev",
        "veth-s",
    ]);
    let netd = serve_and_bond(
        &mut link,
        "br-s",
        "{mode: active-backup, primary: port1, mii-monitor-interval: 100}",
    );
    netd.wait_for("bond0: bound 192.168.77.", 1, Duration::from_secs(30));
    for said in [
        "bond0: created",
        "veth-c: port of bond0",
        "veth-c2: port of bond0",
    ] {
        assert!(netd.log().contains(said), "{said:?}:\n{}", netd.log());
    }
    bond_state(
        &link,
        "bond0",
        &[
            "Bonding Mode: fault-tolerance (active-backup)",
            "Primary Slave: veth-c",
            "Currently Active Slave: veth-c\n",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(netd.interface("bond0")["dhcp4"]["state"], "bound");
    assert_eq!(netd.interface("veth-c2")["config"], "port2");
    assert!(ping(&link, "192.168.77.1"));

    // The primary's cable pulled: the backup takes over, the lease stays.
    ip(&["-n", &link.server, "link", "set", "veth-s", "down"]);
    bond_state(
        &link,
        "bond0",
        &["Currently Active Slave: veth-c2"],
        Duration::from_secs(10),
    );
    assert!(ping(&link, "192.168.77.1"));
    assert_eq!(netd.interface("bond0")["dhcp4"]["state"], "bound");
}

#[test]
#[ignore = "needs a kernel with bonding (this CI host's has none and cannot load modules)"]
fn lacp_bond_aggregates_with_its_partner_and_gets_a_lease() {
    let mut link = Link::new("lacp");
    link.second_pair();
    // The partner: a kernel 802.3ad bond on the server side.
    ip(&[
        "-n",
        &link.server,
        "addr",
        "del",
        "192.168.77.1/24",
        "dev",
        "veth-s",
    ]);
    ip(&[
        "-n",
        &link.server,
        "link",
        "add",
        "bond-s",
        "type",
        "bond",
        "mode",
        "802.3ad",
        "lacp_rate",
        "fast",
        "miimon",
        "100",
    ]);
    for port in ["veth-s", "veth-s2"] {
        ip(&["-n", &link.server, "link", "set", port, "down"]);
        ip(&["-n", &link.server, "link", "set", port, "master", "bond-s"]);
    }
    let netd = serve_and_bond(
        &mut link,
        "bond-s",
        "{mode: 802.3ad, lacp-rate: fast, mii-monitor-interval: 100}",
    );
    netd.wait_for("bond0: bound 192.168.77.", 1, Duration::from_secs(60));
    let state = bond_state(
        &link,
        "bond0",
        &[
            "Bonding Mode: IEEE 802.3ad Dynamic link aggregation",
            "LACP rate: fast",
        ],
        Duration::from_secs(10),
    );
    // Both ports in one aggregator, with the partner's system known.
    let aggregators: Vec<&str> = state
        .lines()
        .filter(|l| l.starts_with("Aggregator ID:"))
        .collect();
    assert_eq!(aggregators.len(), 2, "{state}");
    assert_eq!(aggregators[0], aggregators[1], "{state}");
    assert!(
        state.contains("Partner Mac Address:")
            && !state.contains("Partner Mac Address: 00:00:00:00:00:00"),
        "{state}"
    );
    assert!(ping(&link, "192.168.77.1"));
}

#[test]
fn bridge_gets_a_lease_with_its_port_and_parameters() {
    let mut link = Link::new("bridge");
    link.start_dnsmasq(&["--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,2m"]);
    let netd = Netd::start(
        &link,
        "network:
  version: 2
  ethernets:
    port1: {match: {name: veth-c}}
  bridges:
    br0:
      interfaces: [port1]
      parameters: {stp: false, forward-delay: 3}
      dhcp4: true
",
    );
    netd.wait_for("br0: bound 192.168.77.", 1, Duration::from_secs(30));
    for said in ["br0: created", "veth-c: port of br0"] {
        assert!(netd.log().contains(said), "{said:?}:\n{}", netd.log());
    }
    let port = link.client_output(&["ip", "-d", "link", "show", "veth-c"]);
    assert!(port.contains("master br0"), "{port}");
    let bridge = |file: &str| {
        link.client_output(&["cat", &format!("/sys/class/net/br0/bridge/{file}")])
            .trim()
            .to_string()
    };
    assert_eq!(bridge("stp_state"), "0");
    assert_eq!(bridge("forward_delay"), "300");
    assert!(ping(&link, "192.168.77.1"));
    assert_eq!(netd.interface("br0")["config"], "br0");
    assert_eq!(netd.interface("veth-c")["config"], "port1");
    assert!(netd.interface("veth-c")["dhcp4"].is_null());
}

#[test]
#[ignore = "needs a kernel with 8021q (this CI host's has none and cannot load modules)"]
fn vlan_on_a_port_gets_its_own_lease() {
    let mut link = Link::new("vlan");
    ip(&[
        "-n",
        &link.server,
        "link",
        "add",
        "link",
        "veth-s",
        "name",
        "veth-s.42",
        "type",
        "vlan",
        "id",
        "42",
    ]);
    ip(&[
        "-n",
        &link.server,
        "addr",
        "add",
        "192.168.42.1/24",
        "dev",
        "veth-s.42",
    ]);
    ip(&["-n", &link.server, "link", "set", "veth-s.42", "up"]);
    link.dhcp_interface = "veth-s.42".into();
    link.start_dnsmasq(&["--dhcp-range=192.168.42.50,192.168.42.60,255.255.255.0,2m"]);
    let netd = Netd::start(
        &link,
        "network:
  version: 2
  ethernets:
    port1: {match: {name: veth-c}}
  vlans:
    vlan42: {id: 42, link: port1, dhcp4: true}
",
    );
    netd.wait_for("vlan42: bound 192.168.42.", 1, Duration::from_secs(30));
    let vlan = link.client_output(&["ip", "-d", "link", "show", "vlan42"]);
    assert!(
        vlan.contains("vlan42@veth-c") && vlan.contains("vlan protocol 802.1Q id 42"),
        "{vlan}"
    );
    assert!(ping(&link, "192.168.42.1"));
    assert_eq!(netd.interface("vlan42")["config"], "vlan42");
}
