//! Network configuration: cloud-init / netplan "network config version 2",
//! the `network:` key of cloud-config or a NoCloud `network-config` file.
//! See docs/network.md for what is supported.
//!
//! Parsing never fails as a whole: a broken entry is reported precisely and
//! dropped, the rest is kept, so that one typo cannot take the box off the
//! network (brig-netd gives the interfaces no valid entry claims the default).

use crate::problem::Problem;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

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

impl NetworkConfig {
    /// Parses a network-config document: either `network: {version: 2, ...}`
    /// or the version 2 mapping itself (both are what cloud-init accepts).
    pub fn parse(text: &str) -> Parsed {
        let reject = |problem: String| Parsed {
            errors: vec![Problem {
                key: String::new(),
                problem,
            }],
            rejected: true,
            ..Parsed::default()
        };
        let document: serde_json::Value = match serde_saphyr::from_str(text) {
            Ok(v) => v,
            Err(e) => return reject(one_line(&e.to_string())),
        };
        let root = match document.get("network") {
            Some(inner) => inner.clone(),
            None => document,
        };
        let Some(map) = root.as_object() else {
            return reject("expected a mapping with `version: 2`".into());
        };
        match map.get("version").and_then(|v| v.as_u64()) {
            Some(2) => {}
            Some(1) => {
                return reject(
                    "network config version 1 is not supported; write version 2 (netplan form)"
                        .into(),
                )
            }
            _ => return reject("`version: 2` is missing".into()),
        }
        let mut parsed = Parsed::default();
        for (key, _) in map.iter() {
            let known = ["version", "renderer", "wifis"].contains(&key.as_str())
                || SECTIONS.contains(&key.as_str());
            if !known {
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
                match parse_device("ethernets", &id, addressing.into()) {
                    Ok(device) => parsed.config.devices.push(device),
                    Err(Problem { key: sub, problem }) => parsed.errors.push(Problem {
                        key: [format!("wifis.{id}"), sub]
                            .iter()
                            .filter(|k| !k.is_empty())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("."),
                        problem,
                    }),
                }
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
                match parse_device(section, id, value.clone()) {
                    Ok(device) => parsed.config.devices.push(device),
                    Err(Problem { key: sub, problem }) => parsed.errors.push(Problem {
                        key: if sub.is_empty() {
                            key
                        } else {
                            format!("{key}.{sub}")
                        },
                        problem,
                    }),
                }
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

// ---- the document as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDevice {
    // ethernets
    #[serde(rename = "match")]
    matching: Option<RawMatch>,
    set_name: Option<String>,
    // vlans
    id: Option<u16>,
    link: Option<String>,
    // bonds, bridges
    interfaces: Option<Vec<String>>,
    parameters: Option<RawParameters>,
    // common
    #[serde(default)]
    dhcp4: bool,
    #[serde(default)]
    dhcp6: bool,
    accept_ra: Option<bool>,
    #[serde(default)]
    addresses: Vec<RawAddress>,
    gateway4: Option<String>,
    gateway6: Option<String>,
    nameservers: Option<RawNameservers>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    mtu: Option<u32>,
    macaddress: Option<String>,
    dhcp4_overrides: Option<RawOverrides>,
    #[serde(default)]
    optional: bool,
    // Accepted and ignored: meaningful to other renderers only.
    #[allow(dead_code)] // accepted, means nothing to Brig
    renderer: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    critical: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    dhcp_identifier: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    dhcp6_overrides: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    link_local: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    wakeonlan: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    ipv6_privacy: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    name: Option<String>,
    macaddress: Option<String>,
    driver: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawParameters {
    mode: Option<BondMode>,
    primary: Option<String>,
    mii_monitor_interval: Option<Number>,
    lacp_rate: Option<String>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    transmit_hash_policy: Option<IgnoredAny>,
    stp: Option<bool>,
    forward_delay: Option<Number>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    priority: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    hello_time: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    max_age: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    path_cost: Option<IgnoredAny>,
}

/// netplan writes times both as numbers and as strings (`"100"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u32),
    Text(String),
}

impl Number {
    fn value(&self, key: &str) -> Result<u32, Problem> {
        match self {
            Number::Int(n) => Ok(*n),
            Number::Text(t) => t
                .trim_end_matches("ms")
                .trim_end_matches('s')
                .parse()
                .map_err(|_| Problem::new(key.to_string(), format!("`{t}` is not a number"))),
        }
    }
}

/// `- 192.0.2.5/24` or `- 192.0.2.5/24: {label: ..., lifetime: ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAddress {
    Plain(String),
    WithOptions(BTreeMap<String, IgnoredAny>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameservers {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoute {
    to: String,
    via: Option<String>,
    metric: Option<u32>,
    #[serde(default)]
    on_link: bool,
    table: Option<u32>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    scope: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    #[serde(rename = "type")]
    kind: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    from: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOverrides {
    use_dns: Option<bool>,
    use_routes: Option<bool>,
    use_ntp: Option<bool>,
    use_mtu: Option<bool>,
    use_hostname: Option<bool>,
    use_domains: Option<YesOrRoute>,
    route_metric: Option<u32>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    send_hostname: Option<IgnoredAny>,
    #[allow(dead_code)] // accepted, means nothing to Brig
    hostname: Option<IgnoredAny>,
}

/// `use-domains` is a boolean or `route`.
#[derive(Deserialize)]
#[serde(untagged)]
enum YesOrRoute {
    Flag(bool),
    Text(#[allow(dead_code)] String),
}

fn parse_device(section: &str, id: &str, value: serde_json::Value) -> Result<Device, Problem> {
    let raw: RawDevice = RawDevice::deserialize(value)
        .map_err(|e| Problem::new(String::new(), one_line(&e.to_string())))?;
    let field_err = |field: &str, problem: String| Problem::new(field.to_string(), problem);
    let only = |allowed: &[&str]| -> Result<(), Problem> {
        let present = [
            ("match", raw.matching.is_some()),
            ("set-name", raw.set_name.is_some()),
            ("id", raw.id.is_some()),
            ("link", raw.link.is_some()),
            ("interfaces", raw.interfaces.is_some()),
            ("parameters", raw.parameters.is_some()),
        ];
        for (field, set) in present {
            if set && !allowed.contains(&field) {
                return Err(field_err(field, format!("not valid in {section}")));
            }
        }
        Ok(())
    };
    if !valid_ifname(id) && section != "ethernets" {
        return Err(field_err(
            "",
            format!(
                "`{id}` is not a valid interface name (1-15 characters, no `/`, `:` or spaces)"
            ),
        ));
    }
    let kind = match section {
        "ethernets" => {
            only(&["match", "set-name"])?;
            let matching = match &raw.matching {
                None => Match {
                    name: Some(id.to_string()),
                    ..Match::default()
                },
                Some(m) => Match {
                    name: m.name.clone(),
                    mac: m
                        .macaddress
                        .as_deref()
                        .map(parse_mac)
                        .transpose()
                        .map_err(|p| field_err("match.macaddress", p))?,
                    driver: m.driver.clone(),
                },
            };
            if matching == Match::default() {
                return Err(field_err(
                    "match",
                    "matches nothing: give name, macaddress or driver".into(),
                ));
            }
            if let Some(name) = &raw.set_name {
                if !valid_ifname(name) {
                    return Err(field_err(
                        "set-name",
                        format!("`{name}` is not a valid interface name"),
                    ));
                }
            }
            DeviceKind::Ethernet {
                matching,
                set_name: raw.set_name.clone(),
            }
        }
        "vlans" => {
            only(&["id", "link"])?;
            let vlan_id = raw
                .id
                .ok_or_else(|| field_err("id", "missing (1-4094)".into()))?;
            if !(1..=4094).contains(&vlan_id) {
                return Err(field_err(
                    "id",
                    format!("{vlan_id} is not a VLAN id (1-4094)"),
                ));
            }
            let link = raw
                .link
                .clone()
                .ok_or_else(|| field_err("link", "missing: the device the VLAN runs on".into()))?;
            DeviceKind::Vlan { vlan_id, link }
        }
        "bonds" => {
            only(&["interfaces", "parameters"])?;
            let p = raw.parameters.as_ref();
            if p.is_some_and(|p| p.stp.is_some() || p.forward_delay.is_some()) {
                return Err(field_err(
                    "parameters",
                    "stp and forward-delay are bridge parameters".into(),
                ));
            }
            let lacp_fast = match p.and_then(|p| p.lacp_rate.as_deref()) {
                None | Some("slow") => false,
                Some("fast") => true,
                Some(other) => {
                    return Err(field_err(
                        "parameters.lacp-rate",
                        format!("`{other}`: expected slow or fast"),
                    ))
                }
            };
            DeviceKind::Bond {
                interfaces: raw.interfaces.clone().unwrap_or_default(),
                mode: p.and_then(|p| p.mode).unwrap_or(BondMode::BalanceRr),
                primary: p.and_then(|p| p.primary.clone()),
                mii_monitor_ms: p
                    .and_then(|p| p.mii_monitor_interval.as_ref())
                    .map(|n| n.value("parameters.mii-monitor-interval"))
                    .transpose()?
                    .unwrap_or(100),
                lacp_fast,
            }
        }
        _ => {
            only(&["interfaces", "parameters"])?;
            let p = raw.parameters.as_ref();
            if p.is_some_and(|p| p.mode.is_some() || p.primary.is_some() || p.lacp_rate.is_some()) {
                return Err(field_err(
                    "parameters",
                    "mode, primary and lacp-rate are bond parameters".into(),
                ));
            }
            DeviceKind::Bridge {
                interfaces: raw.interfaces.clone().unwrap_or_default(),
                stp: p.and_then(|p| p.stp).unwrap_or(true),
                forward_delay_s: p
                    .and_then(|p| p.forward_delay.as_ref())
                    .map(|n| n.value("parameters.forward-delay"))
                    .transpose()?,
            }
        }
    };
    if let DeviceKind::Bond {
        interfaces,
        primary: Some(primary),
        ..
    } = &kind
    {
        if !interfaces.contains(primary) {
            return Err(field_err(
                "parameters.primary",
                format!("`{primary}` is not one of the bond's interfaces"),
            ));
        }
    }
    Ok(Device {
        id: id.to_string(),
        kind,
        settings: settings(&raw)?,
    })
}

fn settings(raw: &RawDevice) -> Result<Settings, Problem> {
    let mut s = Settings {
        dhcp4: raw.dhcp4,
        dhcp6: raw.dhcp6,
        accept_ra: raw.accept_ra,
        optional: raw.optional,
        ..Settings::default()
    };
    for (i, a) in raw.addresses.iter().enumerate() {
        let text = match a {
            RawAddress::Plain(t) => t.clone(),
            RawAddress::WithOptions(m) if m.len() == 1 => {
                m.keys().next().cloned().unwrap_or_default()
            }
            RawAddress::WithOptions(_) => {
                return Err(Problem::new(
                    format!("addresses[{i}]"),
                    "expected `ADDRESS/PREFIX` or `ADDRESS/PREFIX: {options}`".into(),
                ))
            }
        };
        s.addresses.push(
            text.parse()
                .map_err(|p| Problem::new(format!("addresses[{i}]"), p))?,
        );
    }
    if let Some(g) = &raw.gateway4 {
        let via: Ipv4Addr = g.parse().map_err(|_| {
            Problem::new(
                "gateway4".to_string(),
                format!("`{g}` is not an IPv4 address"),
            )
        })?;
        s.routes.push(Route {
            to: Cidr::default_route(false),
            via: Some(IpAddr::V4(via)),
            metric: None,
            on_link: false,
            table: None,
        });
    }
    if let Some(g) = &raw.gateway6 {
        let via: Ipv6Addr = g.parse().map_err(|_| {
            Problem::new(
                "gateway6".to_string(),
                format!("`{g}` is not an IPv6 address"),
            )
        })?;
        s.routes.push(Route {
            to: Cidr::default_route(true),
            via: Some(IpAddr::V6(via)),
            metric: None,
            on_link: false,
            table: None,
        });
    }
    for (i, r) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let via: Option<IpAddr> = r
            .via
            .as_deref()
            .map(|v| {
                v.parse().map_err(|_| {
                    Problem::new(format!("{key}.via"), format!("`{v}` is not an IP address"))
                })
            })
            .transpose()?;
        let to = match r.to.as_str() {
            "default" => Cidr::default_route(via.is_some_and(|v| v.is_ipv6())),
            "0.0.0.0/0" | "::/0" => {
                r.to.parse()
                    .map_err(|p| Problem::new(format!("{key}.to"), p))?
            }
            other => other
                .parse()
                .map_err(|p| Problem::new(format!("{key}.to"), p))?,
        };
        if let Some(v) = via {
            if v.is_ipv4() != to.addr.is_ipv4() {
                return Err(Problem::new(
                    format!("{key}.via"),
                    format!("{v} and {to} are different address families"),
                ));
            }
        }
        s.routes.push(Route {
            to,
            via,
            metric: r.metric,
            on_link: r.on_link,
            table: r.table,
        });
    }
    if let Some(ns) = &raw.nameservers {
        for (i, a) in ns.addresses.iter().enumerate() {
            s.nameservers.push(a.parse().map_err(|_| {
                Problem::new(
                    format!("nameservers.addresses[{i}]"),
                    format!("`{a}` is not an IP address"),
                )
            })?);
        }
        for (i, d) in ns.search.iter().enumerate() {
            if d.is_empty() || d.len() > 253 || d.contains(char::is_whitespace) {
                return Err(Problem::new(
                    format!("nameservers.search[{i}]"),
                    format!("`{d}` is not a domain name"),
                ));
            }
            s.search.push(d.clone());
        }
    }
    if let Some(mtu) = raw.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(Problem::new(
                "mtu".into(),
                format!("{mtu} is out of range (68-65535)"),
            ));
        }
        s.mtu = Some(mtu);
    }
    if let Some(mac) = &raw.macaddress {
        s.mac = Some(parse_mac(mac).map_err(|p| Problem::new("macaddress".to_string(), p))?);
    }
    if let Some(o) = &raw.dhcp4_overrides {
        let d = DhcpOverrides::default();
        s.dhcp4_overrides = DhcpOverrides {
            use_dns: o.use_dns.unwrap_or(d.use_dns),
            use_routes: o.use_routes.unwrap_or(d.use_routes),
            use_ntp: o.use_ntp.unwrap_or(d.use_ntp),
            use_mtu: o.use_mtu.unwrap_or(d.use_mtu),
            use_hostname: o.use_hostname.unwrap_or(d.use_hostname),
            use_domains: !matches!(o.use_domains, Some(YesOrRoute::Flag(false))),
            route_metric: o.route_metric,
        };
    }
    Ok(s)
}

pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
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
        Err(format!("`{text}` is not a MAC address (xx:xx:xx:xx:xx:xx)"))
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
