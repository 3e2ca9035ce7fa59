//! Which configuration each link gets: pure, from the network config and
//! what the kernel reports about the link.

use brig_spec::network::{Device, DeviceKind, NetworkConfig, Settings};

/// What the daemon knows of a link when deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// For `match: macaddress`: the permanent MAC when the kernel reports one
    /// (a bond gives its ports its own).
    pub mac: [u8; 6],
    /// The kernel driver (sysfs `device/driver`), for `match: driver:`.
    pub driver: Option<String>,
    /// Backed by a device (PCI, USB, virtio): what the default configures.
    /// Virtual Ethernet links (veth, docker's bridges) are not.
    pub physical: bool,
    /// An Ethernet-type link that `ethernets:` entries may match: physical
    /// ones and veth pairs.
    pub ethernet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The config entry that claimed the link, or None for the default.
    pub entry: Option<String>,
    pub settings: Settings,
}

impl Assignment {
    /// The default for a physical link no entry claims: DHCPv4 (and the
    /// kernel's router advertisement handling for IPv6).
    pub fn default_dhcp() -> Assignment {
        Assignment {
            entry: None,
            settings: Settings {
                dhcp4: true,
                ..Settings::default()
            },
        }
    }
}

/// The assignment for one link: a bond, bridge or VLAN is the entry of its
/// name; an Ethernet link the first `ethernets:` entry (in document order)
/// that matches it; otherwise, for a physical link, the default.
pub fn assign(config: &NetworkConfig, link: &LinkInfo) -> Option<Assignment> {
    if let Some(d) = config
        .devices
        .iter()
        .find(|d| d.id == link.name && !matches!(d.kind, DeviceKind::Ethernet { .. }))
    {
        return Some(Assignment {
            entry: Some(d.id.clone()),
            settings: d.settings.clone(),
        });
    }
    if !link.ethernet {
        return None;
    }
    let claimed = config.devices.iter().find(|d| match &d.kind {
        DeviceKind::Ethernet { matching, .. } => {
            matching.matches(&link.name, &link.mac, link.driver.as_deref())
        }
        _ => false,
    });
    match claimed {
        Some(d) => Some(Assignment {
            entry: Some(d.id.clone()),
            settings: d.settings.clone(),
        }),
        None if link.physical => Some(Assignment::default_dhcp()),
        None => None,
    }
}

/// The bonds and bridges to create, then the VLANs (which may sit on a bond).
pub fn virtual_devices(config: &NetworkConfig) -> impl Iterator<Item = &Device> {
    let kind = |d: &&Device| match d.kind {
        DeviceKind::Ethernet { .. } => 2,
        DeviceKind::Bond { .. } | DeviceKind::Bridge { .. } => 0,
        DeviceKind::Vlan { .. } => 1,
    };
    let mut devices: Vec<&Device> = config.devices.iter().filter(|d| kind(d) < 2).collect();
    devices.sort_by_key(kind);
    devices.into_iter()
}

/// The bond or bridge whose `interfaces` list config entry `entry`.
pub fn master_of<'a>(config: &'a NetworkConfig, entry: &str) -> Option<&'a Device> {
    config.devices.iter().find(|d| match &d.kind {
        DeviceKind::Bond { interfaces, .. } | DeviceKind::Bridge { interfaces, .. } => {
            interfaces.iter().any(|i| i == entry)
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, physical: bool) -> LinkInfo {
        LinkInfo {
            index: 2,
            name: name.into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            driver: Some("virtio_net".into()),
            physical,
            ethernet: true,
        }
    }

    fn config(text: &str) -> NetworkConfig {
        let parsed = NetworkConfig::parse(text);
        assert_eq!(parsed.errors, vec![]);
        parsed.config
    }

    #[test]
    fn no_config_means_dhcp_on_physical_links_only() {
        let none = NetworkConfig::default();
        assert_eq!(
            assign(&none, &link("eth0", true)),
            Some(Assignment::default_dhcp())
        );
        assert_eq!(assign(&none, &link("veth1", false)), None);
        let mut lo = link("lo", false);
        lo.ethernet = false;
        assert_eq!(assign(&none, &lo), None);
    }

    #[test]
    fn first_matching_entry_wins_by_name_glob_mac_or_driver() {
        let c = config(
            "version: 2
ethernets:
  bymac: {match: {macaddress: '52:54:00:12:34:56'}, addresses: [10.0.0.2/24]}
  byname: {match: {name: 'en*'}, dhcp4: true}
  bydriver: {match: {driver: 'e1000*'}, dhcp4: true}
  veth0: {dhcp4: true}
",
        );
        let a = assign(&c, &link("eth0", true)).unwrap();
        assert_eq!(a.entry.as_deref(), Some("bymac"));
        assert!(!a.settings.dhcp4);
        let mut other = link("enp1s0", true);
        other.mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(assign(&c, &other).unwrap().entry.as_deref(), Some("byname"));
        other.name = "eth7".into();
        other.driver = Some("e1000e".into());
        assert_eq!(
            assign(&c, &other).unwrap().entry.as_deref(),
            Some("bydriver")
        );
        other.driver = None;
        assert_eq!(
            assign(&c, &other),
            Some(Assignment::default_dhcp()),
            "unclaimed physical link"
        );
        let mut veth = link("veth0", false);
        veth.mac = [2, 0, 0, 0, 0, 2];
        assert_eq!(
            assign(&c, &veth).unwrap().entry.as_deref(),
            Some("veth0"),
            "named veth"
        );
        veth.name = "veth9".into();
        assert_eq!(assign(&c, &veth), None);
    }

    #[test]
    fn bonds_bridges_and_vlans_claim_their_members_and_their_own_links() {
        let c = config(
            "version: 2
ethernets:
  port1: {match: {name: 'ens3'}}
  port2: {match: {name: 'ens4'}}
  lan: {match: {name: 'ens5'}}
bonds:
  bond0:
    interfaces: [port1, port2]
    parameters: {mode: active-backup, primary: port1}
    dhcp4: true
bridges:
  br0: {interfaces: [lan], addresses: [10.1.0.1/24]}
vlans:
  bond0.42: {id: 42, link: bond0, addresses: [10.42.0.2/24]}
",
        );
        let order: Vec<&str> = virtual_devices(&c).map(|d| d.id.as_str()).collect();
        assert_eq!(order, ["bond0", "br0", "bond0.42"]);
        assert_eq!(master_of(&c, "port2").unwrap().id, "bond0");
        assert_eq!(master_of(&c, "lan").unwrap().id, "br0");
        assert!(master_of(&c, "bond0").is_none());

        // A member is claimed by its entry: no default DHCP on it.
        let port = assign(&c, &link("ens4", true)).unwrap();
        assert_eq!(port.entry.as_deref(), Some("port2"));
        assert!(!port.settings.dhcp4);
        // The bond's own link, which is not an Ethernet one to match.
        let mut bond = link("bond0", false);
        bond.ethernet = false;
        let a = assign(&c, &bond).unwrap();
        assert_eq!(a.entry.as_deref(), Some("bond0"));
        assert!(a.settings.dhcp4);
        bond.name = "bond0.42".into();
        assert_eq!(assign(&c, &bond).unwrap().settings.addresses.len(), 1);
        bond.name = "bond1".into();
        assert_eq!(assign(&c, &bond), None);
    }
}
