//! A bridge from the network config, built by brig-netd (`brig-netd run`)
//! and given a lease by dnsmasq across network namespaces. Root only;
//! nothing leaves the namespaces the tests create. Bonds and VLANs need
//! kernel modules this CI host lacks: they are tested inside a QEMU guest
//! (tests/e2e/network.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Link, Netd};

fn ping(link: &Link, address: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &link.client, "ping", "-c", "1", "-W", "2"])
        .arg(address)
        .output()
        .unwrap()
        .status
        .success()
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
