//! The network config as written: the serde shapes of v2 YAML
//! (`RawDevice` and its parts) and their translation into the validated
//! model of `network`, each problem with its key.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDevice {
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
pub(super) struct RawMatch {
    name: Option<String>,
    macaddress: Option<String>,
    driver: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawParameters {
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
pub(super) enum Number {
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
pub(super) enum RawAddress {
    Plain(String),
    WithOptions(BTreeMap<String, IgnoredAny>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNameservers {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRoute {
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
pub(super) struct RawOverrides {
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
pub(super) enum YesOrRoute {
    Flag(bool),
    Text(#[allow(dead_code)] String),
}

/// Top-level parts of netplan that Brig does not implement, and what they
/// are, for the message. They are reported by key and ignored: the rest of
/// the config applies.
pub(super) const UNSUPPORTED_SECTIONS: [(&str, &str); 7] = [
    ("tunnels", "tunnels: GRE, IPIP, SIT, VXLAN, WireGuard"),
    ("vrfs", "VRFs"),
    ("openvswitch", "Open vSwitch"),
    ("modems", "modems"),
    ("nm-devices", "NetworkManager devices"),
    ("dummy-devices", "dummy devices"),
    ("virtual-ethernets", "veth pairs"),
];

/// A device's keys that Brig does not implement; the rest of the entry
/// applies without them.
const UNSUPPORTED_DEVICE_KEYS: [(&str, &str); 22] = [
    ("openvswitch", "Open vSwitch"),
    ("routing-policy", "policy routing"),
    ("auth", "802.1X authentication"),
    ("infiniband-mode", "InfiniBand"),
    ("virtual-function-count", "SR-IOV"),
    ("embedded-switch-mode", "SR-IOV"),
    ("delay-virtual-functions-rebind", "SR-IOV"),
    ("networkmanager", "NetworkManager settings"),
    ("activation-mode", "activation modes"),
    ("ignore-carrier", "ignoring the carrier"),
    ("emit-lldp", "LLDP"),
    ("ipv6-address-generation", "IPv6 address generation modes"),
    ("ipv6-address-token", "IPv6 address tokens"),
    ("ipv6-mtu", "a separate IPv6 MTU"),
    ("receive-checksum-offload", "offload settings"),
    ("transmit-checksum-offload", "offload settings"),
    ("tcp-segmentation-offload", "offload settings"),
    ("tcp6-segmentation-offload", "offload settings"),
    ("generic-segmentation-offload", "offload settings"),
    ("generic-receive-offload", "offload settings"),
    ("large-receive-offload", "offload settings"),
    ("neigh-suppress", "neighbour suppression"),
];

/// Bond parameters Brig does not set (it sets mode, primary,
/// mii-monitor-interval and lacp-rate).
const UNSUPPORTED_BOND_PARAMETERS: [&str; 15] = [
    "ad-select",
    "all-slaves-active",
    "all-members-active",
    "arp-interval",
    "arp-ip-targets",
    "arp-validate",
    "arp-all-targets",
    "up-delay",
    "down-delay",
    "fail-over-mac-policy",
    "gratuitous-arp",
    "packets-per-slave",
    "packets-per-member",
    "primary-reselect-policy",
    "resend-igmp",
];

pub(super) fn not_supported(key: String, what: &str) -> Problem {
    Problem::new(
        key,
        format!("not supported by Brig ({what}); ignored, the rest applies"),
    )
}

/// Takes the keys Brig does not implement out of a device entry, each
/// reported in `notes`, so that the rest of the entry applies.
fn strip_unsupported(section: &str, value: &mut serde_json::Value, notes: &mut Vec<Problem>) {
    let Some(entry) = value.as_object_mut() else {
        return;
    };
    for (key, what) in UNSUPPORTED_DEVICE_KEYS {
        if entry.remove(key).is_some() {
            notes.push(not_supported(key.into(), what));
        }
    }
    // An ethernet's `link` names the physical function of an SR-IOV
    // virtual function.
    if section == "ethernets" && entry.remove("link").is_some() {
        notes.push(not_supported("link".into(), "SR-IOV virtual functions"));
    }
    if let Some(parameters) = entry.get_mut("parameters").and_then(|p| p.as_object_mut()) {
        for key in UNSUPPORTED_BOND_PARAMETERS {
            if parameters.remove(key).is_some() {
                notes.push(not_supported(
                    format!("parameters.{key}"),
                    "this bond parameter",
                ));
            }
        }
    }
}

/// One device entry: the device, or the first problem that rejects it.
/// Keys Brig does not implement go to `notes` and do not reject it.
pub(super) fn parse_device(
    section: &str,
    id: &str,
    mut value: serde_json::Value,
    notes: &mut Vec<Problem>,
) -> Result<Device, Problem> {
    strip_unsupported(section, &mut value, notes);
    let raw: RawDevice = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = match e.path().to_string() {
            root if root == "." => String::new(),
            key => key,
        };
        Problem::new(key, one_line(&e.inner().to_string()))
    })?;
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
                        .map_err(|p| p.under("match.macaddress"))?,
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

pub(super) fn settings(raw: &RawDevice) -> Result<Settings, Problem> {
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
        s.mac = Some(parse_mac(mac).map_err(|p| p.under("macaddress"))?);
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
