//! Wi-Fi in network config version 2: the `wifis:` section (netplan's
//! form), read into what wpa_supplicant needs, and wpa_supplicant's config
//! file written from it. The addresses of a Wi-Fi link (`dhcp4`,
//! `addresses`, …) are the network container's, as for an ethernet; this
//! reads only the radio's part.
//!
//! Supported: open networks, WPA2-Personal (`password`, or `auth:
//! {key-management: psk}`), WPA3-Personal (`key-management: sae`), hidden
//! networks, a BSSID, the regulatory domain. Enterprise (EAP) is reported
//! as not supported yet, and that access point left out.

use serde_json::{Map, Value};

use crate::problem::Problem;

/// One `wifis:` entry: an interface and the networks it may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    pub interface: String,
    /// ISO 3166 country code (`regulatory-domain`), for the channels and
    /// power the radio may use.
    pub regulatory_domain: Option<String>,
    pub access_points: Vec<AccessPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    pub ssid: String,
    pub security: Security,
    /// Probe for it by name: it does not announce itself.
    pub hidden: bool,
    pub bssid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    Open,
    /// WPA2-Personal: a passphrase (8–63 characters) or 64 hex digits.
    Psk(String),
    /// WPA3-Personal.
    Sae(String),
}

/// Keys of a `wifis:` entry that are the network container's, not the
/// radio's; accepted here without a word.
pub const ADDRESSING: &[&str] = &[
    "dhcp4",
    "dhcp6",
    "accept-ra",
    "addresses",
    "gateway4",
    "gateway6",
    "routes",
    "nameservers",
    "mtu",
    "match",
    "set-name",
    "macaddress",
    "optional",
    "critical",
    "dhcp4-overrides",
    "dhcp6-overrides",
    "link-local",
    "renderer",
];

/// Reads the `wifis:` mapping. A broken access point is reported (with its
/// key, `wifis.wlan0.access-points.home.password`) and left out; the rest
/// is kept.
pub fn parse(wifis: &Value) -> (Vec<Wifi>, Vec<Problem>) {
    let mut errors = Vec::new();
    let mut error = |key: String, problem: &str| {
        errors.push(Problem {
            key,
            problem: problem.to_string(),
        })
    };
    let Some(entries) = wifis.as_object() else {
        error("wifis".into(), "expected a mapping of interface ids");
        return (Vec::new(), errors);
    };
    let mut found = Vec::new();
    for (id, entry) in entries {
        let key = format!("wifis.{id}");
        let Some(entry) = entry.as_object() else {
            error(key, "expected a mapping");
            continue;
        };
        let mut wifi = Wifi {
            interface: id.clone(),
            regulatory_domain: None,
            access_points: Vec::new(),
        };
        for (name, value) in entry {
            let key = format!("{key}.{name}");
            match name.as_str() {
                "regulatory-domain" => match value.as_str() {
                    Some(code)
                        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) =>
                    {
                        wifi.regulatory_domain = Some(code.to_ascii_uppercase())
                    }
                    _ => error(key, "expected a two-letter country code (DE, US, …)"),
                },
                "access-points" => match value.as_object() {
                    Some(points) => {
                        for (ssid, point) in points {
                            let key = format!("{key}.{ssid}");
                            match access_point(ssid, point) {
                                Ok(point) => wifi.access_points.push(point),
                                Err(Problem { key: at, problem }) => error(
                                    if at.is_empty() {
                                        key
                                    } else {
                                        format!("{key}.{at}")
                                    },
                                    &problem,
                                ),
                            }
                        }
                    }
                    None => error(key, "expected a mapping of network names (SSIDs)"),
                },
                // Wake-on-WLAN and the like: nothing the radio needs to join.
                "wakeonwlan" => {}
                other if ADDRESSING.contains(&other) => {}
                _ => error(key, "unknown key"),
            }
        }
        if wifi.access_points.is_empty() {
            error(format!("{key}.access-points"), "no network to join");
        }
        found.push(wifi);
    }
    (found, errors)
}

/// One access point; on error, where in it (`password`) and what.
fn access_point(ssid: &str, value: &Value) -> Result<AccessPoint, Problem> {
    let fail = |at: &str, problem: &str| Err(Problem::new(at.to_string(), problem.to_string()));
    if ssid.is_empty() || ssid.len() > 32 {
        return fail("", "a network name (SSID) has 1 to 32 bytes");
    }
    let empty = Map::new();
    let point = match value {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return fail("", "expected a mapping (or nothing, for an open network)"),
    };
    let mut password = None;
    let mut management = None;
    let mut hidden = false;
    let mut bssid = None;
    for (name, value) in point {
        match name.as_str() {
            "password" => {
                password = Some(
                    text(value).ok_or(Problem::new("password".into(), "expected text".into()))?,
                )
            }
            "hidden" => {
                hidden = value.as_bool().ok_or(Problem::new(
                    "hidden".into(),
                    "expected true or false".into(),
                ))?
            }
            "bssid" => {
                let text = value.as_str().unwrap_or_default();
                if crate::network::parse_mac(text).is_err() {
                    return fail("bssid", "expected a MAC address (aa:bb:cc:dd:ee:ff)");
                }
                bssid = Some(text.to_ascii_lowercase());
            }
            "mode" => {
                if value.as_str() != Some("infrastructure") {
                    return fail(
                        "mode",
                        "only `infrastructure` (joining an access point) is supported",
                    );
                }
            }
            // The radio picks the band and channel of the network it finds.
            "band" | "channel" => {}
            "auth" => {
                let Some(auth) = value.as_object() else {
                    return fail("auth", "expected a mapping");
                };
                for (name, value) in auth {
                    match name.as_str() {
                        "key-management" => management = value.as_str().map(str::to_string),
                        "password" => {
                            password = Some(text(value).ok_or(Problem::new(
                                "auth.password".into(),
                                "expected text".into(),
                            ))?)
                        }
                        _ => {
                            return fail(
                                &format!("auth.{name}"),
                                "not supported: Brig joins open, WPA2- and WPA3-Personal networks",
                            )
                        }
                    }
                }
            }
            _ => return fail(name, "unknown key"),
        }
    }
    let security = match (management.as_deref(), password) {
        (None | Some("none"), None) => Security::Open,
        (Some("none"), Some(_)) => return fail("auth.key-management", "`none` takes no password"),
        (None | Some("psk"), Some(password)) => {
            Security::Psk(psk(&password).map_err(|p| Problem::new("password".to_string(), p))?)
        }
        (Some("sae"), Some(password)) => Security::Sae(
            printable(&password).map_err(|p| Problem::new("password".to_string(), p))?,
        ),
        (Some("psk" | "sae"), None) => return fail("password", "missing: this network needs one"),
        (Some("eap" | "eap-sha256" | "eap-suite-b-192" | "802.1x"), _) => {
            return fail(
                "auth.key-management",
                "enterprise (EAP) networks are not supported yet",
            )
        }
        (Some(_), _) => return fail("auth.key-management", "expected none, psk or sae"),
    };
    Ok(AccessPoint {
        ssid: ssid.to_string(),
        security,
        hidden,
        bssid,
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        // `password: 12345678` is a number to YAML.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A WPA2 passphrase (8–63 printable ASCII characters) or a 64-hex-digit key.
fn psk(password: &str) -> Result<String, String> {
    if password.len() == 64 && password.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(password.to_ascii_lowercase());
    }
    if !(8..=63).contains(&password.len()) {
        return Err(format!(
            "a WPA passphrase has 8 to 63 characters (this one has {})",
            password.len()
        ));
    }
    printable(password)
}

fn printable(password: &str) -> Result<String, String> {
    if password.is_empty() || !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("a passphrase is printable ASCII".into());
    }
    Ok(password.to_string())
}

/// wpa_supplicant's config for `wifi`. Network names are written in hex,
/// so any byte in them is safe; a passphrase is quoted (wpa_supplicant
/// takes everything up to the line's last `"`), having been checked to be
/// printable ASCII.
pub fn wpa_supplicant_conf(wifi: &Wifi, control_dir: &str) -> String {
    let mut out = format!(
        "# Written by Brig from the network config (wifis.{}).\nctrl_interface={control_dir}\nupdate_config=0\n",
        wifi.interface
    );
    if let Some(country) = &wifi.regulatory_domain {
        out += &format!("country={country}\n");
    }
    for point in &wifi.access_points {
        out += "\nnetwork={\n";
        let hex: String = point.ssid.bytes().map(|b| format!("{b:02x}")).collect();
        out += &format!("\tssid={hex}\n");
        match &point.security {
            Security::Open => out += "\tkey_mgmt=NONE\n",
            Security::Psk(key) if key.len() == 64 => {
                out += &format!("\tkey_mgmt=WPA-PSK\n\tpsk={key}\n")
            }
            Security::Psk(passphrase) => {
                out += &format!("\tkey_mgmt=WPA-PSK\n\tpsk=\"{passphrase}\"\n")
            }
            // Protected management frames are required by WPA3.
            Security::Sae(password) => {
                out += &format!("\tkey_mgmt=SAE\n\tieee80211w=2\n\tsae_password=\"{password}\"\n")
            }
        }
        if point.hidden {
            out += "\tscan_ssid=1\n";
        }
        if let Some(bssid) = &point.bssid {
            out += &format!("\tbssid={bssid}\n");
        }
        out += "}\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> (Vec<Wifi>, Vec<String>) {
        let value: Value = serde_saphyr::from_str(yaml).unwrap();
        let (wifis, errors) = parse(&value);
        let errors = errors.iter().map(|e| e.to_string());
        (
            wifis,
            errors
                .map(|e| e.trim_start_matches("network config: ").to_string())
                .collect(),
        )
    }

    #[test]
    fn networks_become_wpa_supplicant_blocks() {
        let (wifis, errors) = read(
            "wlan0:\n  dhcp4: true\n  regulatory-domain: de\n  access-points:\n    \
             home: {password: 'correct horse \"battery\"'}\n    \
             café:\n    \
             attic: {hidden: true, bssid: 'AA:BB:CC:DD:EE:FF', auth: {key-management: sae, password: s3cret-sae}}\n",
        );
        assert_eq!(errors, Vec::<String>::new());
        // The access points in name order (the mapping is read sorted).
        let conf = wpa_supplicant_conf(&wifis[0], "/run/wpa_supplicant");
        assert_eq!(
            conf,
            "# Written by Brig from the network config (wifis.wlan0).\n\
             ctrl_interface=/run/wpa_supplicant\nupdate_config=0\ncountry=DE\n\
             \nnetwork={\n\tssid=6174746963\n\tkey_mgmt=SAE\n\tieee80211w=2\n\
             \tsae_password=\"s3cret-sae\"\n\tscan_ssid=1\n\tbssid=aa:bb:cc:dd:ee:ff\n}\n\
             \nnetwork={\n\tssid=636166c3a9\n\tkey_mgmt=NONE\n}\n\
             \nnetwork={\n\tssid=686f6d65\n\tkey_mgmt=WPA-PSK\n\tpsk=\"correct horse \"battery\"\"\n}\n"
        );
    }

    #[test]
    fn a_hex_key_is_written_bare() {
        let key = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        let (wifis, errors) = read(&format!(
            "wlan0:\n  access-points:\n    lab: {{password: {key}}}\n"
        ));
        assert_eq!(errors, Vec::<String>::new());
        let conf = wpa_supplicant_conf(&wifis[0], "/run/wpa_supplicant");
        assert!(
            conf.contains(&format!("\tpsk={}\n", key.to_ascii_lowercase())),
            "{conf}"
        );
        assert!(!conf.contains("country="));
    }

    #[test]
    fn a_broken_access_point_is_reported_and_the_others_kept() {
        let (wifis, errors) = read(
            "wlan0:\n  wakeonwlan: [any]\n  regulatory-domain: Germany\n  access-points:\n    \
             short: {password: seven77}\n    \
             corp: {auth: {key-management: eap, identity: me, password: x}}\n    \
             typo: {pasword: abcdefgh}\n    \
             wpa3: {auth: {key-management: sae}}\n    \
             line: {password: \"a\\nbcdefgh\"}\n    \
             ok: {password: '12345678'}\n\
             wlan1:\n  access-points: {}\n",
        );
        assert_eq!(
            errors,
            [
                "`wifis.wlan0.access-points.corp.auth.identity`: not supported: Brig joins open, WPA2- and WPA3-Personal networks",
                "`wifis.wlan0.access-points.line.password`: a passphrase is printable ASCII",
                "`wifis.wlan0.access-points.short.password`: a WPA passphrase has 8 to 63 characters (this one has 7)",
                "`wifis.wlan0.access-points.typo.pasword`: unknown key",
                "`wifis.wlan0.access-points.wpa3.password`: missing: this network needs one",
                "`wifis.wlan0.regulatory-domain`: expected a two-letter country code (DE, US, …)",
                "`wifis.wlan1.access-points`: no network to join",
            ]
        );
        assert_eq!(wifis[0].access_points.len(), 1);
        assert_eq!(
            wifis[0].access_points[0].security,
            Security::Psk("12345678".into())
        );
        let (_, errors) = read("[wlan0]");
        assert_eq!(errors, ["`wifis`: expected a mapping of interface ids"]);
    }
}
