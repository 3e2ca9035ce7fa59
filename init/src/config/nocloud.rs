//! NoCloud from a volume labelled `cidata` (FAT or ISO 9660): `user-data`,
//! `meta-data` and `network-config` (what `cloud-localds` and `brig run
//! --user-data` make).

use std::fs;
use std::path::Path;

use crate::config::{Datasource, Seed, Volumes};

pub struct NoCloud<'a>(pub Volumes<'a>);

impl Datasource for NoCloud<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        self.0
            .read_labelled("cidata", &["vfat", "iso9660"], |at, device, fstype| {
                Ok(files(at, format!("{device} (NoCloud, {fstype})")))
            })
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
