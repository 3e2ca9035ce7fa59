use super::*;

fn example(name: &str) -> Parsed {
    let path = format!("{}/tests/network-config/{name}", env!("CARGO_MANIFEST_DIR"));
    NetworkConfig::parse(&std::fs::read_to_string(&path).unwrap())
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

#[test]
fn a_wifi_links_addresses_are_the_network_containers() {
    let p = NetworkConfig::parse(
        "version: 2\nwifis:\n  wlan0:\n    dhcp4: true\n    regulatory-domain: DE\n    \
             access-points:\n      home: {password: secret-passphrase}\n  wlan1:\n    \
             addresses: [not-an-address]\n    access-points:\n      open: {}\n",
    );
    let device = p.config.device("wlan0").expect("wlan0 addressed");
    assert!(device.settings.dhcp4, "{device:?}");
    let radios: Vec<&str> = p
        .config
        .wifis
        .iter()
        .map(|w| w.interface.as_str())
        .collect();
    assert_eq!(radios, ["wlan0", "wlan1"]);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(p.errors[0].key.starts_with("wifis.wlan1"), "{:?}", p.errors);
    assert!(p.config.device("wlan1").is_none());
}

#[test]
fn cloud_init_full_example() {
    let p = example("cloud-init-full.yaml");
    assert_eq!(p.errors, vec![]);
    let c = &p.config;
    let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "wlp1s0",
            "id0",
            "lom",
            "switchports",
            "bond0",
            "br0",
            "en-intra"
        ]
    );
    assert_eq!(c.wifis.len(), 1);
    assert_eq!(c.wifis[0].interface, "wlp1s0");
    let id0 = c.device("id0").unwrap();
    assert_eq!(
        id0.kind,
        DeviceKind::Ethernet {
            matching: Match {
                mac: Some([0, 0x11, 0x22, 0x33, 0x44, 0x55]),
                ..Match::default()
            },
            set_name: None
        }
    );
    let s = &id0.settings;
    assert!(s.dhcp4 && !s.dhcp6);
    assert_eq!(s.addresses, [cidr("192.168.14.2/24"), cidr("2001:1::1/64")]);
    assert_eq!(s.nameservers, ["8.8.8.8".parse::<IpAddr>().unwrap()]);
    assert_eq!(s.search, ["foo.local", "bar.local"]);
    let routes: Vec<(String, Option<String>, Option<u32>)> = s
        .routes
        .iter()
        .map(|r| (r.to.to_string(), r.via.map(|v| v.to_string()), r.metric))
        .collect();
    assert_eq!(
        routes,
        [
            ("0.0.0.0/0".into(), Some("192.168.14.1".into()), None),
            ("::/0".into(), Some("2001:1::2".into()), None),
            ("192.0.2.0/24".into(), Some("11.0.0.1".into()), Some(3)),
        ]
    );
    let lom = c.device("lom").unwrap();
    assert!(
        matches!(&lom.kind, DeviceKind::Ethernet { matching, set_name: Some(n) }
            if matching.driver.as_deref() == Some("ixgbe") && n == "lom1")
    );
    assert!(lom.settings.dhcp6);
    let ports = c.device("switchports").unwrap();
    assert!(matches!(&ports.kind, DeviceKind::Ethernet { matching, .. }
            if matching.name.as_deref() == Some("enp2*")));
    assert_eq!(ports.settings.mtu, Some(1280));
    assert!(matches!(&c.device("bond0").unwrap().kind,
            DeviceKind::Bond { interfaces, mode: BondMode::BalanceRr, .. } if interfaces == &["id0", "lom"]));
    assert!(matches!(&c.device("br0").unwrap().kind,
            DeviceKind::Bridge { interfaces, stp: true, .. } if interfaces == &["wlp1s0", "switchports"]));
    let vlan = c.device("en-intra").unwrap();
    assert_eq!(
        vlan.kind,
        DeviceKind::Vlan {
            vlan_id: 1,
            link: "id0".into()
        }
    );
    assert!(
        vlan.settings.dhcp4,
        "YAML 1.1 `yes` is true, as cloud-init reads it"
    );
}

#[test]
fn netplan_bond_example() {
    let p = example("netplan-bond.yaml");
    assert_eq!(p.errors, vec![]);
    let bond = p.config.device("bond0").unwrap();
    assert_eq!(
        bond.kind,
        DeviceKind::Bond {
            interfaces: vec!["enp3s0".into(), "enp4s0".into()],
            mode: BondMode::ActiveBackup,
            primary: Some("enp3s0".into()),
            mii_monitor_ms: 100,
            lacp_fast: false,
        }
    );
    assert!(bond.settings.dhcp4);
    let member = p.config.device("enp3s0").unwrap();
    assert_eq!(member.settings, Settings::default());
}

#[test]
fn netplan_vlans_and_bridge_example() {
    let p = example("netplan-vlan-bridge.yaml");
    assert_eq!(p.errors, vec![]);
    let main = p.config.device("mainif").unwrap();
    assert_eq!(main.settings.routes[0].to, Cidr::default_route(false));
    assert_eq!(main.settings.nameservers.len(), 2);
    assert_eq!(
        p.config.device("vlan10").unwrap().kind,
        DeviceKind::Vlan {
            vlan_id: 10,
            link: "mainif".into()
        }
    );
    assert_eq!(
        p.config.device("br0").unwrap().kind,
        DeviceKind::Bridge {
            interfaces: vec!["vlan15".into()],
            stp: false,
            forward_delay_s: Some(4)
        }
    );
}

#[test]
fn nocloud_file_without_network_key_and_netmask_address() {
    let p = example("cloud-init-no-network-key.yaml");
    assert_eq!(p.errors, vec![]);
    let d = p.config.device("interface0").unwrap();
    assert_eq!(d.settings.addresses, [cidr("192.168.1.10/24")]);
    assert!(
        matches!(&d.kind, DeviceKind::Ethernet { matching, set_name: Some(n) }
            if matching.mac == Some([0x52, 0x54, 0, 0x12, 0x34, 0]) && n == "interface0")
    );
}

fn errors(text: &str) -> Vec<String> {
    NetworkConfig::parse(text)
        .errors
        .iter()
        .map(|e| format!("network config: {e}"))
        .collect()
}

#[test]
fn whole_document_rejected_with_reason() {
    for (text, expect) in [
        ("network: [1, 2", "network config: "),
        ("- a\n- b\n", "expected a mapping"),
        ("network:\n  ethernets: {}\n", "`version: 2` is missing"),
        (
            "network:\n  version: 1\n  config: []\n",
            "version 1 is not supported",
        ),
    ] {
        let p = NetworkConfig::parse(text);
        assert!(p.rejected, "{text}");
        assert!(
            format!("network config: {}", p.errors[0]).contains(expect),
            "{text}: {:?}",
            p.errors
        );
    }
}

#[test]
fn a_broken_entry_is_dropped_and_named_the_rest_kept() {
    let text = "network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
    eth1:
      adresses: [10.0.0.1/24]
    eth2:
      addresses: [10.0.0.300/24]
    eth3:
      addresses: [10.0.0.3]
    eth4:
      routes: [{to: 10.9.0.0/16, via: 'fe80::1'}]
    eth5:
      mtu: 20
    eth6:
      match: {macaddress: '00:11:22'}
  vlans:
    v1: {id: 5000, link: eth0}
    v2: {id: 7, link: eth9}
    averyveryverylongname: {id: 8, link: eth0}
  bonds:
    bond0: {interfaces: [eth0], parameters: {mode: fastest}}
    bond1: {interfaces: [eth0], parameters: {stp: true}}
  bridges:
    br0: {interfaces: [eth0]}
    br1: {interfaces: [eth0]}
  routers: {}
";
    let p = NetworkConfig::parse(text);
    assert!(!p.rejected);
    let ids: Vec<&str> = p.config.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["eth0", "br0"]);
    let errors: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    let expect = [
        "`routers`: unknown key",
        "`ethernets.eth1.adresses`: unknown field `adresses`",
        "`ethernets.eth2.addresses[0]`: `10.0.0.300` is not an IP address",
        "`ethernets.eth3.addresses[0]`: `10.0.0.3` has no prefix length",
        "`ethernets.eth4.routes[0].via`: fe80::1 and 10.9.0.0/16 are different address families",
        "`ethernets.eth5.mtu`: 20 is out of range",
        "`ethernets.eth6.match.macaddress`: `00:11:22` is not a MAC address",
        "`bonds.bond0.parameters.mode`: unknown variant `fastest`",
        "`bonds.bond1.parameters`: stp and forward-delay are bridge parameters",
        "`vlans.v1.id`: 5000 is not a VLAN id",
        "`vlans.averyveryverylongname`: `averyveryverylongname` is not a valid interface name",
        "`vlans.v2`: `eth9` is not a device defined in this config",
        "`bridges.br1`: `eth0` is already a member of `br0`",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn wrong_types_and_bad_addresses_are_named_by_their_key() {
    let p = NetworkConfig::parse(
        "network: {version: 2, ethernets: {eth0: {dhcp4: maybe, addresses: [300.1.1.1/99]}, \
         eth1: {addresses: [300.1.1.1/99]}, eth2: {routes: [{to: default, via: 10.0.0.1, metric: -1}]}}}",
    );
    let errors: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            "`ethernets.eth0.dhcp4`: invalid type: string \"maybe\", expected a boolean",
            "`ethernets.eth1.addresses[0]`: `300.1.1.1` is not an IP address",
            "`ethernets.eth2.routes[0].metric`: invalid value: integer `-1`, expected u32",
        ]
    );
    assert!(p.config.devices.is_empty(), "{:?}", p.config);
}

#[test]
fn netplan_features_brig_does_not_implement_are_named_and_the_rest_applies() {
    let p = NetworkConfig::parse(
        "version: 2
ethernets:
  eth0:
    dhcp4: true
    openvswitch: {external-ids: {a: b}}
    routing-policy: [{from: 10.0.0.0/8, table: 5}]
    receive-checksum-offload: false
  ib0: {infiniband-mode: connected, addresses: [10.1.0.2/24]}
  vf0: {link: eth0, virtual-function-count: 2}
bonds:
  bond0: {interfaces: [eth0], parameters: {mode: active-backup, arp-interval: 100}}
tunnels:
  wg0: {mode: wireguard}
vrfs: {vrf0: {table: 10}}
modems: {}
",
    );
    let errors: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    let expect = [
        "`tunnels`: not supported by Brig (tunnels: GRE, IPIP, SIT, VXLAN, WireGuard); ignored",
        "`vrfs`: not supported by Brig (VRFs)",
        "`modems`: not supported by Brig (modems)",
        "`ethernets.eth0.openvswitch`: not supported by Brig (Open vSwitch)",
        "`ethernets.eth0.routing-policy`: not supported by Brig (policy routing)",
        "`ethernets.eth0.receive-checksum-offload`: not supported by Brig (offload settings)",
        "`ethernets.ib0.infiniband-mode`: not supported by Brig (InfiniBand)",
        "`ethernets.vf0.virtual-function-count`: not supported by Brig (SR-IOV)",
        "`ethernets.vf0.link`: not supported by Brig (SR-IOV virtual functions)",
        "`bonds.bond0.parameters.arp-interval`: not supported by Brig (this bond parameter)",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    // What Brig does implement still applies, in each of those entries.
    let eth0 = p.config.device("eth0").expect("eth0 kept");
    assert!(eth0.settings.dhcp4);
    let ib0 = p.config.device("ib0").expect("ib0 kept");
    assert_eq!(ib0.settings.addresses, [cidr("10.1.0.2/24")]);
    assert!(p.config.device("vf0").is_some());
    assert!(
        matches!(
            p.config.device("bond0").map(|d| &d.kind),
            Some(DeviceKind::Bond {
                mode: BondMode::ActiveBackup,
                ..
            })
        ),
        "{:?}",
        p.config
    );
}

#[test]
fn rejected_members_take_their_bond_with_them() {
    let text = "network:
  version: 2
  ethernets:
    eth0: {dhcp4: maybe}
    eth1: {}
  bonds:
    bond0: {interfaces: [eth0, eth1], dhcp4: true}
  vlans:
    v7: {id: 7, link: bond0}
";
    let p = NetworkConfig::parse(text);
    let ids: Vec<&str> = p.config.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["eth1"]);
    assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
    assert!(errors(text)[2].contains("`vlans.v7`: `bond0` is not a device"));
}

#[test]
fn cidr_forms() {
    assert_eq!(cidr("10.1.2.3/255.255.0.0"), cidr("10.1.2.3/16"));
    assert!("10.1.2.3/255.0.255.0".parse::<Cidr>().is_err());
    assert!("10.1.2.3/33".parse::<Cidr>().is_err());
    assert!("2001:db8::1/129".parse::<Cidr>().is_err());
    assert_eq!(cidr("2001:db8::1/64").to_string(), "2001:db8::1/64");
}

#[test]
fn the_network_containers_copy_has_no_wifi_secrets() {
    let text = "network:
  version: 2
  wifis:
    wlan0:
      dhcp4: true
      access-points:
        home: {password: hunter2-long-enough}
        office:
          auth: {key-management: eap, method: peap, identity: me, password: s3cret-too}
        cafe: {}
";
    let copy = without_wifi_secrets(text).unwrap();
    assert!(
        !copy.contains("hunter2") && !copy.contains("s3cret"),
        "{copy}"
    );
    assert!(!copy.contains("auth"), "{copy}");
    // The rest is as it was, and still the same config to the parser.
    let parsed = NetworkConfig::parse(&copy);
    assert!(
        parsed.errors.is_empty() && !parsed.rejected,
        "{:?}",
        parsed.errors
    );
    let value: serde_json::Value = serde_json::from_str(&copy).unwrap();
    let points = &value["network"]["wifis"]["wlan0"]["access-points"];
    assert_eq!(points.as_object().unwrap().len(), 3);
    assert_eq!(value["network"]["wifis"]["wlan0"]["dhcp4"], true);
    // Not YAML: none (the container gets the text to report on).
    assert_eq!(without_wifi_secrets("network: [unclosed"), None);
}
