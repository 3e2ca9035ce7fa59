//! Network configuration: cloud-init / netplan "network config version 2",
//! the `network:` key of cloud-config or a NoCloud `network-config` file.
//! See docs/network.md for what is supported.
//!
//! Parsing never fails as a whole: a broken entry is reported precisely and
//! dropped, the rest is kept, so that one typo cannot take the box off the
//! network (brig-netd gives the interfaces no valid entry claims the default).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use written::parse_device;

mod written;

/// A validated network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// In document order within each section: ethernets, bonds, bridges, vlans.
    pub devices: Vec<Device>,
    /// The radio's part of each `wifis:` entry, for the wifi container
    /// (its addresses are among `devices`); bridges and bonds may name them.
    pub wifis: Vec<crate::wifi::Wifi>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The key in the config; the interface name for virtual devices.
    pub id: String,
    pub kind: DeviceKind,
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A physical interface, found by `match` or else by its id as name.
    Ethernet {
        matching: Match,
        set_name: Option<String>,
    },
    Vlan {
        vlan_id: u16,
        link: String,
    },
    Bond {
        interfaces: Vec<String>,
        mode: BondMode,
        primary: Option<String>,
        mii_monitor_ms: u32,
        lacp_fast: bool,
    },
    Bridge {
        interfaces: Vec<String>,
        stp: bool,
        forward_delay_s: Option<u32>,
    },
}

/// How a physical interface is found: all given fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// Name or shell glob (`en*`).
    pub name: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub driver: Option<String>,
}

impl Match {
    pub fn matches(&self, name: &str, mac: &[u8; 6], driver: Option<&str>) -> bool {
        self.name
            .as_deref()
            .is_none_or(|p| crate::glob::glob_match(p.as_bytes(), name.as_bytes()))
            && self.mac.is_none_or(|m| &m == mac)
            && self.driver.as_deref().is_none_or(|d| {
                driver.is_some_and(|have| crate::glob::glob_match(d.as_bytes(), have.as_bytes()))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    BalanceRr,
    ActiveBackup,
    BalanceXor,
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    BalanceTlb,
    BalanceAlb,
}

impl BondMode {
    /// The kernel's number for the mode (IFLA_BOND_MODE).
    pub fn kernel_value(self) -> u8 {
        self as u8
    }
}

/// What every device kind may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub dhcp4: bool,
    pub dhcp6: bool,
    /// Router advertisements; netplan's default is the kernel's (on).
    pub accept_ra: Option<bool>,
    pub addresses: Vec<Cidr>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub dhcp4_overrides: DhcpOverrides,
    /// Boot does not wait for it.
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOverrides {
    pub use_dns: bool,
    pub use_routes: bool,
    pub use_ntp: bool,
    pub use_mtu: bool,
    pub use_hostname: bool,
    pub use_domains: bool,
    pub route_metric: Option<u32>,
}

impl Default for DhcpOverrides {
    fn default() -> Self {
        DhcpOverrides {
            use_dns: true,
            use_routes: true,
            use_ntp: true,
            use_mtu: true,
            use_hostname: true,
            use_domains: true,
            route_metric: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub to: Cidr,
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
    /// The gateway is on the link even if no address's subnet covers it.
    pub on_link: bool,
    pub table: Option<u32>,
}

/// An address with its prefix length, `192.0.2.5/24` or `2001:db8::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn default_route(v6: bool) -> Cidr {
        if v6 {
            Cidr {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                prefix: 0,
            }
        } else {
            Cidr {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix: 0,
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` has no prefix length (e.g. {text}/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // cloud-init's own examples also write IPv4 netmasks (`/255.255.255.0`).
        let netmask = match (addr, prefix.parse::<Ipv4Addr>()) {
            (IpAddr::V4(_), Ok(mask)) => {
                let bits = u32::from(mask);
                (bits.leading_ones() + bits.trailing_zeros() == 32)
                    .then_some(bits.leading_ones() as u8)
            }
            _ => None,
        };
        let prefix: u8 = netmask
            .or_else(|| prefix.parse().ok())
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{prefix}` is not a prefix length (0-{max}) or netmask"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The result of parsing: what is usable, and what was wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub config: NetworkConfig,
    pub errors: Vec<Problem>,
    /// Nothing usable: the whole document was rejected.
    pub rejected: bool,
}

const SECTIONS: [&str; 4] = ["ethernets", "bonds", "bridges", "vlans"];

impl Parsed {
    fn rejected(problem: String) -> Parsed {
        Parsed {
            errors: vec![Problem::new(String::new(), problem)],
            rejected: true,
            ..Parsed::default()
        }
    }
}

/// A network-config document without its Wi-Fi secrets (each access
/// point's `password` and `auth`), for the network container, which sets up
/// addresses and routes and never joins a network itself; as JSON (which
/// YAML readers read). None if it is not YAML at all: then the container
/// gets it as it is, to report where it is broken.
pub fn without_wifi_secrets(text: &str) -> Option<String> {
    let mut document: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    let root = match document.get_mut("network") {
        Some(_) => document.get_mut("network")?,
        None => &mut document,
    };
    if let Some(wifis) = root.get_mut("wifis").and_then(|w| w.as_object_mut()) {
        for wifi in wifis.values_mut() {
            let points = wifi
                .get_mut("access-points")
                .and_then(|p| p.as_object_mut());
            for point in points.into_iter().flat_map(|p| p.values_mut()) {
                if let Some(point) = point.as_object_mut() {
                    point.remove("password");
                    point.remove("auth");
                }
            }
        }
    }
    Some(format!("{document}\n"))
}

impl NetworkConfig {
    /// Parses a network-config document: either `network: {version: 2, ...}`
    /// or the version 2 mapping itself (both are what cloud-init accepts).
    pub fn parse(text: &str) -> Parsed {
        match serde_saphyr::from_str::<serde_json::Value>(text) {
            Ok(document) => match document.get("network") {
                Some(inner) => NetworkConfig::parse_value(inner),
                None => NetworkConfig::parse_value(&document),
            },
            Err(e) => Parsed::rejected(one_line(&e.to_string())),
        }
    }

    /// Parses the version 2 mapping (the value of cloud-config's
    /// `network:`), exactly as brig-netd applies it.
    pub fn parse_value(root: &serde_json::Value) -> Parsed {
        let Some(map) = root.as_object() else {
            return Parsed::rejected("expected a mapping with `version: 2`".into());
        };
        match map.get("version").and_then(|v| v.as_u64()) {
            Some(2) => {}
            Some(1) => {
                return Parsed::rejected(
                    "network config version 1 is not supported; write version 2 (netplan form)"
                        .into(),
                )
            }
            _ => return Parsed::rejected("`version: 2` is missing".into()),
        }
        let mut parsed = Parsed::default();
        for (key, _) in map.iter() {
            let known = ["version", "renderer", "wifis"].contains(&key.as_str())
                || SECTIONS.contains(&key.as_str());
            if let Some((_, what)) = written::UNSUPPORTED_SECTIONS
                .iter()
                .find(|(section, _)| section == key)
            {
                parsed
                    .errors
                    .push(written::not_supported(key.clone(), what));
            } else if !known {
                parsed.errors.push(Problem {
                    key: key.clone(),
                    problem: format!(
                        "unknown key; expected one of version, renderer, {}",
                        SECTIONS.join(", ")
                    ),
                });
            }
        }
        if let Some(value) = map.get("wifis") {
            // The radio's part is the wifi container's; its mistakes are
            // reported here too, with the rest of the config's.
            let (wifis, errors) = crate::wifi::parse(value);
            parsed.config.wifis = wifis;
            parsed.errors.extend(errors);
            // Its addresses are the network container's, as an ethernet's:
            // it takes the link over once the radio has associated.
            let ids: Vec<String> = parsed
                .config
                .wifis
                .iter()
                .map(|w| w.interface.clone())
                .collect();
            for id in ids {
                let mut addressing = value[&id].as_object().cloned().unwrap_or_default();
                addressing.retain(|key, _| crate::wifi::ADDRESSING.contains(&key.as_str()));
                let key = format!("wifis.{id}");
                let mut notes = Vec::new();
                match parse_device("ethernets", &id, addressing.into(), &mut notes) {
                    Ok(device) => parsed.config.devices.push(device),
                    Err(problem) => parsed.errors.push(problem.under(&key)),
                }
                parsed
                    .errors
                    .extend(notes.into_iter().map(|note| note.under(&key)));
            }
        }
        for section in SECTIONS {
            let Some(entries) = map.get(section) else {
                continue;
            };
            let Some(entries) = entries.as_object() else {
                parsed.errors.push(Problem {
                    key: section.into(),
                    problem: "expected a mapping of interface ids".into(),
                });
                continue;
            };
            for (id, value) in entries {
                let key = format!("{section}.{id}");
                let mut notes = Vec::new();
                match parse_device(section, id, value.clone(), &mut notes) {
                    Ok(device) => parsed.config.devices.push(device),
                    Err(problem) => parsed.errors.push(problem.under(&key)),
                }
                parsed
                    .errors
                    .extend(notes.into_iter().map(|note| note.under(&key)));
            }
        }
        parsed.config.check_references(&mut parsed.errors);
        parsed
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Drops devices that name members or links that do not exist (or were
    /// rejected), and members claimed twice.
    fn check_references(&mut self, errors: &mut Vec<Problem>) {
        loop {
            let ids: BTreeSet<String> = (self.devices.iter().map(|d| d.id.clone()))
                .chain(self.wifis.iter().map(|w| w.interface.clone()))
                .collect();
            let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
            let mut bad = None;
            'devices: for d in &self.devices {
                let (refs, section): (Vec<&String>, &str) = match &d.kind {
                    DeviceKind::Vlan { link, .. } => (vec![link], "vlans"),
                    DeviceKind::Bond { interfaces, .. } => (interfaces.iter().collect(), "bonds"),
                    DeviceKind::Bridge { interfaces, .. } => {
                        (interfaces.iter().collect(), "bridges")
                    }
                    DeviceKind::Ethernet { .. } => continue,
                };
                for r in refs {
                    if !ids.contains(r) {
                        bad = Some((
                            d.id.clone(),
                            section,
                            format!(
                                "`{r}` is not a device defined in this config (or it was rejected)"
                            ),
                        ));
                        break 'devices;
                    }
                    if section != "vlans" {
                        if let Some(other) = claimed.insert(r, &d.id) {
                            bad = Some((
                                d.id.clone(),
                                section,
                                format!("`{r}` is already a member of `{other}`"),
                            ));
                            break 'devices;
                        }
                    }
                }
            }
            let Some((id, section, problem)) = bad else {
                return;
            };
            errors.push(Problem {
                key: format!("{section}.{id}"),
                problem,
            });
            self.devices.retain(|d| d.id != id);
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn parse_mac(text: &str) -> Result<[u8; 6], Problem> {
    let parts: Vec<&str> = text.split(':').collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if ok {
        Ok(mac)
    } else {
        Err(Problem::new(
            String::new(),
            format!("`{text}` is not a MAC address (xx:xx:xx:xx:xx:xx)"),
        ))
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Linux interface names: 1-15 bytes, no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

// ---- what brig-netd reports (`brigctl network`) ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub interfaces: Vec<InterfaceStatus>,
    pub routes: Vec<RouteStatus>,
    pub dns: Vec<String>,
    pub search: Vec<String>,
    /// Problems in the network config, each once.
    pub config_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub mac: String,
    /// ethernet, vlan, bond, bridge, loopback, other
    pub kind: String,
    pub up: bool,
    pub carrier: bool,
    pub mtu: u32,
    pub addresses: Vec<String>,
    /// The config entry that claimed it, or `default`.
    pub config: Option<String>,
    pub dhcp4: Option<LeaseStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// init, selecting, requesting, bound, renewing, rebinding, ...
    pub state: String,
    pub address: Option<String>,
    pub server: Option<String>,
    /// Seconds until renew / rebind / expiry, from now.
    pub renew_in: Option<u64>,
    pub rebind_in: Option<u64>,
    pub expires_in: Option<u64>,
    /// The host name the server offered (shown, not applied: the host name
    /// comes from config, see docs/network.md).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The NTP servers it offered (handed to the ntp container).
    #[serde(default)]
    pub ntp: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub destination: String,
    pub gateway: Option<String>,
    pub interface: String,
    pub protocol: String,
    pub metric: Option<u32>,
}

#[cfg(test)]
mod tests;
