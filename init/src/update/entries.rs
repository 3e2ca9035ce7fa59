//! The boot entries on the boot partition, read as the update logic sees
//! them: which slot each boots, which booted this time and why, what to
//! rename to bless, roll back or cancel. Pure: the file work is in
//! `boot_partition`.

use brig_spec::boot_slots::{kernel_dir, EntryName, Slot, TRIES};
use brig_spec::update_bundle::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its file name in loader/entries.
    pub file: String,
    pub name: EntryName,
    /// The slot whose kernel it boots.
    pub slot: Slot,
}

impl Entry {
    /// An entry from its file name and text; None for files that are not
    /// Brig's, or whose kernel is in no slot's directory.
    pub fn read(file: &str, text: &str) -> Option<Entry> {
        let name = EntryName::parse(file)?;
        let linux = text
            .lines()
            .find_map(|l| l.strip_prefix("linux "))?
            .trim()
            .trim_start_matches('/');
        let slot = [Slot::A, Slot::B]
            .into_iter()
            .find(|s| linux == format!("{}/vmlinuz", kernel_dir(*s, name.version)))?;
        Some(Entry {
            file: file.to_string(),
            name,
            slot,
        })
    }

    pub fn state(&self) -> String {
        match self.name.counter {
            None => "good".to_string(),
            Some((0, done)) => format!("failed: it did not boot healthy in {done} tries"),
            Some((left, 0)) => format!("installed, boots next ({left} tries)"),
            Some((left, done)) => format!(
                "on trial, {done} of {} tries used",
                left.saturating_add(done)
            ),
        }
    }
}

/// A rename on the boot partition's loader/entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default)]
pub struct Entries(pub Vec<Entry>);

impl Entries {
    /// The newest entry booting `slot` (there is one, unless an update was
    /// cut off between removing the old and writing the new).
    pub fn of(&self, slot: Slot) -> Option<&Entry> {
        self.0
            .iter()
            .filter(|e| e.slot == slot)
            .max_by_key(|e| e.name.generation)
    }

    pub fn next_generation(&self) -> u32 {
        // Saturating: a crafted entry must not make PID 1 panic.
        self.0
            .iter()
            .map(|e| e.name.generation)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    /// Why the running version (in `slot`) booted, and the other slot.
    pub fn describe(&self, slot: Slot) -> (String, String) {
        let ours = self.of(slot);
        let other = self.of(slot.other());
        let other_text = match other {
            Some(e) => format!("{} in slot {} ({})", e.name.version, e.slot, e.state()),
            None => format!("slot {} is empty", slot.other()),
        };
        let newer_other =
            other.filter(|o| ours.is_none_or(|e| o.name.generation > e.name.generation));
        let booted = match (ours.and_then(|e| e.name.counter), newer_other) {
            (Some((_, done)), _) => format!(
                "on trial: boot {done} of {TRIES}; blessed once healthy, else the last good version boots again"
            ),
            (None, Some(o)) if o.name.is_bad() => format!(
                "rolled back: {} (slot {}) failed to boot healthy {} times",
                o.name.version,
                o.slot,
                o.name.counter.map_or(0, |c| c.1)
            ),
            (None, Some(o)) if o.name.counter.is_some() => {
                format!("{} is installed and starts at the next boot", o.name.version)
            }
            (None, Some(o)) => format!(
                "chosen at the boot menu: {} (slot {}) is the default",
                o.name.version, o.slot
            ),
            (None, None) => "the newest good version".to_string(),
        };
        (booted, other_text)
    }

    /// The rename that marks the running version good, if it is on trial.
    pub fn blessing(&self, slot: Slot) -> Option<Rename> {
        let ours = self.of(slot)?;
        ours.name.counter?;
        Some(Rename {
            from: ours.file.clone(),
            to: ours.name.blessed().file_name(),
        })
    }

    /// `brigctl os rollback` from `slot`: an installed update not yet
    /// booted is cancelled (its tries set to none left); otherwise the
    /// other slot's good version becomes the newest, so it boots next.
    pub fn rollback(&self, slot: Slot, running: Version) -> Result<(Rename, String), String> {
        let other = self.of(slot.other()).ok_or_else(|| {
            format!(
                "slot {} is empty: there is nothing to roll back to",
                slot.other()
            )
        })?;
        let ours_generation = self.of(slot).map_or(0, |e| e.name.generation);
        if other.name.generation > ours_generation && !other.name.is_bad() {
            if let Some((_, done)) = other.name.counter {
                let cancelled = EntryName {
                    counter: Some((0, done)),
                    ..other.name
                };
                return Ok((
                    Rename {
                        from: other.file.clone(),
                        to: cancelled.file_name(),
                    },
                    format!(
                        "the update to {} is cancelled: {running} keeps booting",
                        other.name.version
                    ),
                ));
            }
        }
        if other.name.is_bad() {
            return Err(format!(
                "{} in slot {} failed to boot healthy: not rolling back to it",
                other.name.version, other.slot
            ));
        }
        let promoted = EntryName {
            generation: self.next_generation(),
            counter: None,
            ..other.name
        };
        Ok((
            Rename {
                from: other.file.clone(),
                to: promoted.file_name(),
            },
            format!(
                "{} (slot {}) boots at the next reboot (brigctl reboot)",
                other.name.version, other.slot
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, slot: Slot) -> Entry {
        let name = EntryName::parse(file).unwrap();
        let text = format!(
            "title x\nlinux /{}/vmlinuz\noptions quiet\n",
            kernel_dir(slot, name.version)
        );
        Entry::read(file, &text).unwrap()
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn an_entry_knows_its_slot_from_its_kernel() {
        let e = Entry::read(
            "brig-2-0.2.0+3.conf",
            "title t\nlinux /brig/b-0.2.0/vmlinuz\ninitrd /brig/b-0.2.0/initramfs.img\n",
        )
        .unwrap();
        assert_eq!((e.slot, e.name.counter), (Slot::B, Some((3, 0))));
        // A kernel outside the slots' directories, or another version's.
        assert_eq!(Entry::read("brig-2-0.2.0.conf", "linux /vmlinuz\n"), None);
        assert_eq!(
            Entry::read("brig-2-0.2.0.conf", "linux /brig/b-0.1.0/vmlinuz\n"),
            None
        );
        assert_eq!(
            Entry::read("debian.conf", "linux /brig/a-0.1.0/vmlinuz\n"),
            None
        );
    }

    #[test]
    fn a_trial_boot_is_blessed_and_a_good_one_is_left_alone() {
        let entries = Entries(vec![
            entry("brig-1-0.1.0.conf", Slot::A),
            entry("brig-2-0.2.0+2-1.conf", Slot::B),
        ]);
        let (booted, other) = entries.describe(Slot::B);
        assert!(booted.starts_with("on trial: boot 1 of 3"), "{booted}");
        assert_eq!(other, "0.1.0 in slot A (good)");
        assert_eq!(
            entries.blessing(Slot::B),
            Some(Rename {
                from: "brig-2-0.2.0+2-1.conf".into(),
                to: "brig-2-0.2.0.conf".into()
            })
        );
        assert_eq!(entries.blessing(Slot::A), None);
        assert_eq!(entries.next_generation(), 3);
    }

    #[test]
    fn a_version_that_used_up_its_tries_is_reported_as_rolled_back() {
        let entries = Entries(vec![
            entry("brig-1-0.1.0.conf", Slot::A),
            entry("brig-2-0.2.0+0-3.conf", Slot::B),
        ]);
        let (booted, other) = entries.describe(Slot::A);
        assert_eq!(
            booted,
            "rolled back: 0.2.0 (slot B) failed to boot healthy 3 times"
        );
        assert_eq!(
            other,
            "0.2.0 in slot B (failed: it did not boot healthy in 3 tries)"
        );
        let e = entries.rollback(Slot::A, v("0.1.0")).unwrap_err();
        assert!(e.contains("failed to boot healthy"), "{e}");
    }

    #[test]
    fn rollback_promotes_the_good_other_slot_or_cancels_a_pending_update() {
        let settled = Entries(vec![
            entry("brig-1-0.1.0.conf", Slot::A),
            entry("brig-2-0.2.0.conf", Slot::B),
        ]);
        let (rename, said) = settled.rollback(Slot::B, v("0.2.0")).unwrap();
        assert_eq!(rename.to, "brig-3-0.1.0.conf");
        assert!(
            said.starts_with("0.1.0 (slot A) boots at the next reboot"),
            "{said}"
        );

        let pending = Entries(vec![
            entry("brig-1-0.1.0.conf", Slot::A),
            entry("brig-2-0.2.0+3.conf", Slot::B),
        ]);
        let (booted, _) = pending.describe(Slot::A);
        assert_eq!(booted, "0.2.0 is installed and starts at the next boot");
        let (rename, said) = pending.rollback(Slot::A, v("0.1.0")).unwrap();
        assert_eq!(rename.to, "brig-2-0.2.0+0.conf");
        assert!(said.contains("cancelled"), "{said}");

        let alone = Entries(vec![entry("brig-1-0.1.0.conf", Slot::A)]);
        assert!(alone
            .rollback(Slot::A, v("0.1.0"))
            .unwrap_err()
            .contains("slot B is empty"));
        assert_eq!(alone.describe(Slot::A).0, "the newest good version");
    }
}
