//! NoCloud from a volume labelled `cidata` (FAT or ISO 9660): `user-data`,
//! `meta-data` and `network-config` (what `cloud-localds` and `brig run
//! --user-data` make).

use std::fs;
use std::path::Path;

use crate::config::{Datasource, Seed};
use crate::host::block_devices::Volume;
use crate::host::system::System;

pub struct NoCloud<'a> {
    pub sys: &'a dyn System,
    pub volumes: &'a [(String, Volume)],
}

impl Datasource for NoCloud<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let Some((device, v)) = super::labelled(self.volumes, "cidata", &["vfat", "iso9660"])
        else {
            return Ok(None);
        };
        let source = format!("{device} (NoCloud, {})", v.fstype);
        super::read_volume(self.sys, device, v.fstype, |at| Ok(files(at, source))).map(Some)
    }
}

/// NoCloud's files in directory `at`.
pub fn files(at: &Path, source: String) -> Seed {
    Seed {
        source,
        user_data: fs::read(at.join("user-data")).ok(),
        meta_data: fs::read_to_string(at.join("meta-data")).ok(),
        network_config: fs::read_to_string(at.join("network-config")).ok(),
    }
}
