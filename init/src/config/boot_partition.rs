//! The boot partition's `user-data` (with `meta-data` and
//! `network-config`, as NoCloud): SD cards are edited on another computer,
//! where only the boot partition is readable. A boot partition without
//! `user-data` is not a datasource.

use crate::config::{nocloud, Datasource, Seed, Volumes};

/// The FAT label of a boot partition that may carry `user-data`.
pub const BOOT_LABEL: &str = "BRIG_BOOT";

pub struct BootPartition<'a>(pub Volumes<'a>);

impl Datasource for BootPartition<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let seed = self
            .0
            .read_labelled(BOOT_LABEL, &["vfat"], |at, device, _| {
                Ok(nocloud::files(
                    at,
                    format!("{device} (boot partition {BOOT_LABEL})"),
                ))
            })?;
        Ok(seed.filter(|seed| seed.user_data.is_some()))
    }
}
