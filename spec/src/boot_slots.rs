//! The two system slots of a disk image and how the boot partition names
//! what boots each (docs/updates.md). The host tool writes the first
//! version's files; PID 1 writes an update's and blesses it. Pure names and
//! text, shared so both sides agree.
//!
//! systemd-boot, with no `default` in loader.conf, boots the first entry
//! in its order: entries with no tries left last, then by file name,
//! highest version-sorted first. So an entry's name starts with its
//! generation (one more for each install), which makes the newest install
//! the default whatever its version (a downgrade too), and a counter
//! (`+3`) that runs out moves it behind the others: the last good install
//! boots again.

use std::fmt;

use crate::update_bundle::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Its GPT partition name.
    pub const fn label(self) -> &'static str {
        match self {
            Slot::A => "BRIG_SYSTEM_A",
            Slot::B => "BRIG_SYSTEM_B",
        }
    }

    pub fn from_label(label: &str) -> Option<Slot> {
        [Slot::A, Slot::B].into_iter().find(|s| s.label() == label)
    }

    fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}

/// Where the boot entries are, on the boot partition.
pub const ENTRIES_DIR: &str = "loader/entries";
/// How many boots a new install gets to prove itself.
pub const TRIES: u32 = 3;

/// The directory of a slot's kernel and initramfs on the boot partition:
/// `brig/b-0.2.0`.
pub fn kernel_dir(slot: Slot, version: Version) -> String {
    format!("brig/{}-{version}", slot.letter())
}

/// Whether `dir` (a name under `brig/`) holds a kernel of `slot`.
pub fn is_kernel_dir_of(dir: &str, slot: Slot) -> bool {
    dir.strip_prefix(slot.letter())
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|v| Version::parse(v).is_ok())
}

/// A boot entry as its file name tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    pub generation: u32,
    pub version: Version,
    /// Boot counting: (tries left, tries done); `None` once blessed.
    pub counter: Option<(u32, u32)>,
}

impl EntryName {
    /// `brig-2-0.2.0+3.conf`, `brig-2-0.2.0+1-2.conf`, `brig-1-0.1.0.conf`.
    pub fn file_name(&self) -> String {
        let counter = match self.counter {
            None => String::new(),
            Some((left, 0)) => format!("+{left}"),
            Some((left, done)) => format!("+{left}-{done}"),
        };
        format!("brig-{}-{}{counter}.conf", self.generation, self.version)
    }

    pub fn parse(name: &str) -> Option<EntryName> {
        let stem = name.strip_prefix("brig-")?.strip_suffix(".conf")?;
        let (stem, counter) = match stem.split_once('+') {
            None => (stem, None),
            Some((stem, counter)) => {
                let (left, done) = match counter.split_once('-') {
                    None => (counter, "0"),
                    Some(both) => both,
                };
                (stem, Some((number(left)?, number(done)?)))
            }
        };
        let (generation, version) = stem.split_once('-')?;
        Some(EntryName {
            generation: number(generation)?,
            version: Version::parse(version).ok()?,
            counter,
        })
    }

    /// Tried and failed every time: systemd-boot passes it over.
    pub fn is_bad(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }

    /// The name once the version has proven itself: no counter.
    pub fn blessed(&self) -> EntryName {
        EntryName {
            counter: None,
            ..*self
        }
    }
}

fn number(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// A boot entry's contents. `cmdline` already names the slot's partition.
pub fn entry_text(board: &str, version: Version, slot: Slot, cmdline: &str) -> String {
    let dir = kernel_dir(slot, version);
    format!(
        "title Brig {version} ({board}, slot {slot})\nversion {version}\nlinux /{dir}/vmlinuz\ninitrd /{dir}/initramfs.img\noptions {cmdline}\n"
    )
}

/// loader.conf: no `default`, so the order above decides (a `default`
/// would be booted even when its tries have run out).
pub const LOADER_CONF: &str =
    "# systemd-boot: boot the newest good Brig at once; hold a key while booting for the menu.\ntimeout 0\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_read_back_with_their_counters() {
        for (name, counter) in [
            ("brig-1-0.1.0.conf", None),
            ("brig-2-0.2.0+3.conf", Some((3, 0))),
            ("brig-2-0.2.0+1-2.conf", Some((1, 2))),
            ("brig-12-1.10.3+0-3.conf", Some((0, 3))),
        ] {
            let entry = EntryName::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(entry.counter, counter, "{name}");
            assert_eq!(entry.file_name(), name);
        }
        let bad = EntryName::parse("brig-2-0.2.0+0-3.conf").unwrap();
        assert!(bad.is_bad());
        assert_eq!(bad.blessed().file_name(), "brig-2-0.2.0.conf");
        for not_ours in [
            "brig.conf",
            "debian-6.1.conf",
            "brig-x-0.1.0.conf",
            "brig-1-0.1.conf",
            "brig-1-0.1.0+.conf",
            "brig-1-0.1.0+a.conf",
            "brig-1-0.1.0.conf.bak",
        ] {
            assert_eq!(EntryName::parse(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn slots_name_their_partitions_and_kernel_directories() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::from_label("BRIG_SYSTEM_B"), Some(Slot::B));
        assert_eq!(Slot::from_label("BRIG_SYSTEM"), None);
        let dir = kernel_dir(Slot::B, Version(0, 2, 0));
        assert_eq!(dir, "brig/b-0.2.0");
        assert!(is_kernel_dir_of("b-0.2.0", Slot::B));
        assert!(!is_kernel_dir_of("b-0.2.0", Slot::A));
        assert!(!is_kernel_dir_of("b-notes", Slot::B));
        let text = entry_text("pc-x86_64", Version(0, 2, 0), Slot::B, "quiet");
        assert!(text.contains("linux /brig/b-0.2.0/vmlinuz\n"), "{text}");
        assert!(text.ends_with("options quiet\n"), "{text}");
    }
}
