//! The boot partition's `user-data` (with `meta-data` and
//! `network-config`, as NoCloud): SD cards are edited on another computer,
//! where only the boot partition is readable. A boot partition without
//! `user-data` is not a datasource.

use crate::config::{nocloud, Datasource, Seed};
use crate::host::block_devices::Volume;
use crate::host::system::System;

/// The FAT label of a boot partition that may carry `user-data` (with
/// `meta-data` and `network-config`, as NoCloud): SD cards are edited on
/// another computer, where only the boot partition is readable.
pub const BOOT_LABEL: &str = "BRIG_BOOT";

pub struct BootPartition<'a> {
    pub sys: &'a dyn System,
    pub volumes: &'a [(String, Volume)],
}

impl Datasource for BootPartition<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let Some((device, v)) = super::labelled(self.volumes, BOOT_LABEL, &["vfat"]) else {
            return Ok(None);
        };
        let source = format!("{device} (boot partition {BOOT_LABEL})");
        let seed = super::read_volume(self.sys, device, v.fstype, |at| {
            Ok(nocloud::files(at, source))
        })?;
        Ok(seed.user_data.is_some().then_some(seed))
    }
}
