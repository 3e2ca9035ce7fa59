//! cloud-init config: where it comes from and what PID 1 makes of it.
//!
//! Each datasource is a module of its own behind the `Datasource` trait
//! (`kernel_cmdline`, `nocloud`, `boot_partition`, `config_drive`,
//! `saved`; over the network `nocloud_net`, `ec2` and user data at a URL,
//! fetched by a helper process, `network`). `find` tries them in order;
//! `plan` turns the seed, the image's default and the settings made with
//! `brigctl config set` (`local_settings`) into what PID 1 and the
//! containers apply.

pub mod apply;
pub mod ask;
pub mod boot_partition;
pub mod config_drive;
pub mod ec2;
pub mod http;
pub mod kernel_cmdline;
pub mod local_settings;
pub mod network;
pub mod nocloud;
pub mod nocloud_net;
pub mod plan;
pub mod saved;

use std::path::Path;

use brig_spec::paths::SEED_MOUNT;
use nix::mount::MsFlags;

use crate::host::block_devices::Volume;
use crate::host::kernel_cmdline::Cmdline;
use crate::host::system::System;
use ec2::Dmi;
use network::Remote;

/// What a datasource gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    /// Where it came from, for the boot log.
    pub source: String,
    #[serde(with = "base64_bytes")]
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<String>,
    pub network_config: Option<String>,
}

/// Bytes in JSON as base64: as an array of numbers they would be four
/// times their size, and a write each.
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => {
                s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// One place config can come from.
pub trait Datasource {
    /// Its config: `Ok(None)` when it is not there, an error when it is
    /// there but cannot be read.
    fn read(&mut self) -> Result<Option<Seed>, String>;
}

/// Where this boot's config comes from.
#[derive(Debug)]
pub enum Found {
    /// A datasource on this machine, or none (the saved one applies).
    Here(Option<Seed>),
    /// One to fetch over the network once it is up.
    Network(Remote),
}

/// Tries the datasources in order: `brig.config=` (base64 here; a URL is
/// fetched over the network), a NoCloud volume, the boot partition's
/// `user-data`, a ConfigDrive, then `ds=nocloud;s=` or the EC2 metadata
/// service when the command line or DMI names them. A datasource that is
/// there but cannot be read is reported with `report`, and the next one is
/// tried.
pub fn find(
    sys: &dyn System,
    cmdline: &Cmdline,
    volumes: &[(String, Volume)],
    dmi: &Dmi,
    report: &mut dyn FnMut(String),
) -> Found {
    let remote = network::wanted(cmdline, dmi).unwrap_or_else(|e| {
        report(e);
        None
    });
    let at_a_url = cmdline
        .value("brig.config")
        .is_some_and(|v| v.contains("://"));
    if let (true, Some(remote)) = (at_a_url, &remote) {
        return Found::Network(remote.clone());
    }
    let volumes = Volumes { sys, list: volumes };
    let mut here: [Box<dyn Datasource + '_>; 4] = [
        Box::new(kernel_cmdline::KernelCommandLine::new(cmdline)),
        Box::new(nocloud::NoCloud(volumes)),
        Box::new(boot_partition::BootPartition(volumes)),
        Box::new(config_drive::ConfigDrive(volumes)),
    ];
    for datasource in &mut here {
        match datasource.read() {
            Ok(Some(seed)) => return Found::Here(Some(seed)),
            Ok(None) => {}
            Err(e) => report(e),
        }
    }
    match remote {
        Some(remote) if !at_a_url => Found::Network(remote),
        _ => Found::Here(None),
    }
}

/// The machine's block devices, where the datasources on a volume look.
#[derive(Clone, Copy)]
pub struct Volumes<'a> {
    pub sys: &'a dyn System,
    pub list: &'a [(String, Volume)],
}

impl Volumes<'_> {
    /// Reads the first volume labelled `label` (in any case) of one of
    /// `types`, mounted read-only while `read` reads it from its mount point
    /// (with the device and its type); None when there is none.
    fn read_labelled(
        &self,
        label: &str,
        types: &[&str],
        read: impl FnOnce(&Path, &str, &str) -> Result<Seed, String>,
    ) -> Result<Option<Seed>, String> {
        let Some((device, v)) = labelled(self.list, label, types) else {
            return Ok(None);
        };
        read_volume(self.sys, device, v.fstype, |at| read(at, device, v.fstype)).map(Some)
    }
}

/// The first volume labelled `label` (in any case) with one of `types`.
fn labelled<'a>(
    volumes: &'a [(String, Volume)],
    label: &str,
    types: &[&str],
) -> Option<&'a (String, Volume)> {
    volumes.iter().find(|(_, v)| {
        v.label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(label))
            && types.contains(&v.fstype)
    })
}

/// Mounts `device` read-only, reads it with `read`, unmounts it.
fn read_volume(
    sys: &dyn System,
    device: &str,
    fstype: &str,
    read: impl FnOnce(&Path) -> Result<Seed, String>,
) -> Result<Seed, String> {
    sys.create_dir_all(SEED_MOUNT)
        .map_err(|e| format!("creating {SEED_MOUNT}: {e}"))?;
    sys.mount(device, SEED_MOUNT, fstype, MsFlags::MS_RDONLY, "")
        .map_err(|e| format!("mounting {device} ({fstype}): {e}"))?;
    let seed = read(Path::new(SEED_MOUNT));
    if let Err(e) = sys.unmount(SEED_MOUNT, true) {
        return Err(format!("unmounting {device}: {e}"));
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    /// `find` on this command line and these volumes: what it found (its
    /// source), what it reported, and what it mounted.
    fn find_on(line: &str, volumes: Vec<(String, Volume)>) -> (String, Vec<String>, Vec<String>) {
        let sys = Recorder::default();
        let mut reported = Vec::new();
        let found = find(
            &sys,
            &Cmdline::parse(line),
            &volumes,
            &Dmi::default(),
            &mut |e| reported.push(e),
        );
        let found = match found {
            Found::Here(Some(seed)) => seed.source,
            Found::Here(None) => "none".into(),
            Found::Network(remote) => format!("network: {remote}"),
        };
        let mounts = sys
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("mount"))
            .collect();
        (found, reported, mounts)
    }

    #[test]
    fn datasources_are_tried_in_order_and_a_broken_one_gives_way_to_the_next() {
        let cidata = (
            "/dev/vdb".to_string(),
            Volume::labelled("CIDATA", "iso9660"),
        );
        let drive = (
            "/dev/sr0".to_string(),
            Volume::labelled("config-2", "iso9660"),
        );
        // The command line first: no volume is even mounted.
        let (found, reported, mounts) =
            find_on("brig.config=I2Nsb3VkLWNvbmZpZwo=", vec![cidata.clone()]);
        assert_eq!(found, "the kernel command line (brig.config=)");
        assert!(
            reported.is_empty() && mounts.is_empty(),
            "{reported:?} {mounts:?}"
        );
        // Invalid base64 is reported, and the next datasource applies.
        let (found, reported, mounts) =
            find_on("brig.config=%%%", vec![drive.clone(), cidata.clone()]);
        assert_eq!(found, "/dev/vdb (NoCloud, iso9660)");
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(
            reported[0].starts_with("brig.config= on the kernel command line"),
            "{reported:?}"
        );
        assert_eq!(mounts, ["mount /run/brig/seed iso9660 /dev/vdb"]);
        // A volume that cannot be read gives way too: here a ConfigDrive
        // without meta_data.json (nothing is mounted at the seed mount).
        let (found, reported, _) = find_on("brig.config=%%%", vec![drive.clone()]);
        assert_eq!(found, "none");
        assert_eq!(reported.len(), 2, "{reported:?}");
        assert!(reported[1].contains("meta_data.json"), "{reported:?}");
        // Nothing local: the network datasource the command line names.
        let (found, ..) = find_on("ds=nocloud;s=http://10.0.2.2:8000/", vec![]);
        assert_eq!(
            found,
            "network: the NoCloud seed at http://10.0.2.2:8000/ (ds=nocloud)"
        );
        // ... but a local one comes first, except `brig.config=URL`.
        let (found, ..) = find_on("ds=nocloud;s=http://10.0.2.2:8000/", vec![cidata.clone()]);
        assert_eq!(found, "/dev/vdb (NoCloud, iso9660)");
        let (found, _, mounts) = find_on("brig.config=http://10.0.2.2/u", vec![cidata]);
        assert_eq!(
            found,
            "network: user data at http://10.0.2.2:80/u (brig.config=)"
        );
        assert!(mounts.is_empty(), "{mounts:?}");
    }
}
