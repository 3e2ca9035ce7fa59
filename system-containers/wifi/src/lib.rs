//! The wifi container's plan: for each `wifis:` entry of the network
//! config, wpa_supplicant's config file and command line. Running them is
//! main.rs's.

use std::path::{Path, PathBuf};

use brig_spec::network::NetworkConfig;
use brig_spec::wifi::{wpa_supplicant_conf, Wifi};

/// Where the configs and control sockets go (a tmpfs of the container's).
pub const RUN_DIR: &str = "/run/wpa_supplicant";

/// One radio: its interface, config file and wpa_supplicant's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Radio {
    pub interface: String,
    pub config_path: PathBuf,
    pub config: String,
    pub command: Vec<String>,
}

/// What the network config asks of the radios, and its problems (each as
/// a line for the log; the access points they concern are left out).
pub fn plan(network_config: &str, run_dir: &Path) -> (Vec<Radio>, Vec<String>) {
    let parsed = NetworkConfig::parse(network_config);
    let problems = parsed
        .errors
        .iter()
        .map(|e| format!("network config: {}: {}", e.key, e.problem))
        .collect();
    let radios = parsed
        .config
        .wifis
        .iter()
        .filter(|wifi| !wifi.access_points.is_empty())
        .map(|wifi| radio(wifi, run_dir))
        .collect();
    (radios, problems)
}

fn radio(wifi: &Wifi, run_dir: &Path) -> Radio {
    let config_path = run_dir.join(format!("{}.conf", wifi.interface));
    Radio {
        interface: wifi.interface.clone(),
        config: wpa_supplicant_conf(wifi, &run_dir.display().to_string()),
        command: vec![
            "/usr/sbin/wpa_supplicant".into(),
            "-i".into(),
            wifi.interface.clone(),
            "-c".into(),
            config_path.display().to_string(),
            // nl80211 (every current driver, brcmfmac too), else wext.
            "-D".into(),
            "nl80211,wext".into(),
        ],
        config_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wifi_with_access_points_gets_a_config_and_a_supplicant() {
        let (radios, problems) = plan(
            "network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      \
             regulatory-domain: DE\n      access-points:\n        home:\n          \
             password: \"correct horse\"\n        office:\n          password: short\n",
            Path::new("/run/wpa_supplicant"),
        );
        assert_eq!(radios.len(), 1);
        let radio = &radios[0];
        assert_eq!(radio.interface, "wlan0");
        assert_eq!(
            radio.config_path,
            Path::new("/run/wpa_supplicant/wlan0.conf")
        );
        assert_eq!(
            radio.command,
            [
                "/usr/sbin/wpa_supplicant",
                "-i",
                "wlan0",
                "-c",
                "/run/wpa_supplicant/wlan0.conf",
                "-D",
                "nl80211,wext"
            ]
        );
        assert!(radio.config.contains("country=DE\n"), "{}", radio.config);
        // "home" in hex; "office"'s 5-character passphrase is refused.
        assert!(radio.config.contains("ssid=686f6d65\n"), "{}", radio.config);
        assert!(
            radio.config.contains("psk=\"correct horse\"\n"),
            "{}",
            radio.config
        );
        assert!(!radio.config.contains("6f6666696365"), "{}", radio.config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("network config: wifis.wlan0.access-points.office"),
            "{problems:?}"
        );
    }

    #[test]
    fn no_wifis_means_nothing_to_run() {
        let (radios, problems) = plan(
            "version: 2\nethernets:\n  eth0: {dhcp4: true}\n",
            Path::new("/run/wpa_supplicant"),
        );
        assert!(radios.is_empty());
        assert!(problems.is_empty());
    }
}
