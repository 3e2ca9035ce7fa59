//! An update bundle's manifest, and the checks a machine makes on it
//! before it writes anything (docs/updates.md). The manifest is what the
//! bundle's signature covers, so everything here is read from bytes an
//! attacker may have made until the signature has been checked: parsing
//! refuses what it does not understand instead of guessing.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

mod file;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use file::{
    parse_public_key, parse_secret_key, public_key_text, secret_key_text, sha256_of, signed_head,
    BundleError, BundleReader,
};

/// A Brig version, `MAJOR.MINOR.PATCH`, compared number by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let numbers: Vec<&str> = text.split('.').collect();
        let number = |part: &str| -> Result<u32, String> {
            // Digits only: "+1", " 1" and "" are not versions.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} is not a version (MAJOR.MINOR.PATCH)"));
            }
            part.parse()
                .map_err(|_| format!("{text:?}: {part} is too large for a version number"))
        };
        match numbers.as_slice() {
            [major, minor, patch] => Ok(Version(number(major)?, number(minor)?, number(patch)?)),
            _ => Err(format!("{text:?} is not a version (MAJOR.MINOR.PATCH)")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One file of the bundle: where it goes and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// A relative path inside the slot (`vmlinuz`, `system.img`, `dtbs/…`).
    pub name: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the part's bytes.
    pub sha256: String,
}

/// The manifest as it is stored in the bundle (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    board: String,
    version: String,
    /// The oldest running version this bundle may replace.
    min_from: String,
    cmdline: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub board: String,
    pub version: Version,
    pub min_from: Version,
    /// The kernel command line this version boots with; the machine adds
    /// the slot (`brig.system=PARTUUID=…`) itself.
    pub cmdline: String,
    pub parts: Vec<Part>,
}

/// Linux's own limit on x86 and arm64 (COMMAND_LINE_SIZE).
const MAX_CMDLINE: usize = 2048;

/// The parts every bundle has; the Pi's may add device trees and firmware.
pub const REQUIRED_PARTS: [&str; 3] = ["vmlinuz", "initramfs.img", "system.img"];

/// Parts named `boot/PATH` are files at PATH on the boot partition, shared
/// by both slots (the Pi's firmware, device trees, U-Boot and its script);
/// every other part is the slot's own.
pub const SHARED_PREFIX: &str = "boot/";

/// The kinds of file a bundle may replace on the boot partition, by
/// extension: firmware (`.elf`, `.dat`, `.bin`), device trees and
/// overlays, U-Boot's script. Anything else there is the user's (config.txt,
/// cmdline.txt, user-data), the machine's (U-Boot's environment) or a
/// slot's (`brig/`, `loader/`).
const SHAREABLE: [&str; 6] = ["elf", "dat", "bin", "dtb", "dtbo", "scr"];

/// The boot partition path of a shared part (`boot/start.elf` →
/// `start.elf`), or None for a slot's own part.
pub fn shared_boot_file(part: &str) -> Option<&str> {
    part.strip_prefix(SHARED_PREFIX)
}

/// Whether a bundle may carry the boot partition's file at `path` as a
/// shared part (`boot/PATH`): a firmware, device tree or script file at
/// the top or in `overlays/`, by a name FAT keeps as it is (vfat drops a
/// trailing dot, so `config.txt.` would be `config.txt`), and none a
/// partial file could have.
pub fn may_share(path: &str) -> bool {
    let (dir, file) = match path.split_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, path),
    };
    let in_place = dir.is_none_or(|d| d.eq_ignore_ascii_case("overlays"));
    let kind = file
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    in_place
        && !file.contains('/')
        && !file.starts_with('.')
        && !file.ends_with('.')
        && SHAREABLE.contains(&kind.as_str())
}

/// Why a machine will not install a bundle, said to the user as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    OtherBoard { bundle: String, running: String },
    Older { bundle: Version, running: Version },
    Same { version: Version },
    TooOldToUpdateFrom { running: Version, min_from: Version },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OtherBoard { bundle, running } => write!(
                f,
                "the bundle is for the {bundle} board and this machine is {running}"
            ),
            Refusal::Older { bundle, running } => write!(
                f,
                "the bundle is version {bundle}, older than the running {running} (--allow-downgrade installs it anyway)"
            ),
            Refusal::Same { version } => write!(f, "version {version} is already running"),
            Refusal::TooOldToUpdateFrom { running, min_from } => write!(
                f,
                "the bundle updates from {min_from} or later and this machine runs {running}: update to {min_from} first"
            ),
        }
    }
}

impl Manifest {
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        let stored: Stored =
            serde_json::from_slice(text).map_err(|e| format!("the manifest: {e}"))?;
        let manifest = Manifest {
            version: Version::parse(&stored.version).map_err(|e| format!("version: {e}"))?,
            min_from: Version::parse(&stored.min_from).map_err(|e| format!("min_from: {e}"))?,
            board: stored.board,
            cmdline: stored.cmdline,
            parts: stored.parts,
        };
        manifest.check()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        let stored = Stored {
            board: self.board.clone(),
            version: self.version.to_string(),
            min_from: self.min_from.to_string(),
            cmdline: self.cmdline.clone(),
            parts: self.parts.clone(),
        };
        serde_json::to_string_pretty(&stored).expect("a manifest always serializes")
    }

    /// What no bundle may hold, whoever signed it: paths leaving the slot,
    /// a part twice, a hash that is not one, a required part missing.
    fn check(&self) -> Result<(), String> {
        if self.board.is_empty() || !self.board.bytes().all(is_name_byte) {
            return Err(format!("board: {:?} is not a board name", self.board));
        }
        if self.min_from > self.version {
            return Err(format!(
                "min_from {} is newer than the bundle's own version {}",
                self.min_from, self.version
            ));
        }
        // The line goes into a boot entry as it is: one line, no control
        // characters, and the slot is the machine's to say.
        if self.cmdline.len() > MAX_CMDLINE
            || self.cmdline.chars().any(char::is_control)
            || self
                .cmdline
                .split(' ')
                .any(|w| w.starts_with("brig.system="))
        {
            return Err(format!(
                "cmdline {:?}: not one line of kernel options without brig.system= (at most {MAX_CMDLINE} bytes)",
                self.cmdline
            ));
        }
        let mut seen = HashSet::new();
        let mut seen_shared = HashSet::new();
        for part in &self.parts {
            let components: Vec<&str> = part.name.split('/').collect();
            if components
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == ".." || !c.bytes().all(is_name_byte))
            {
                return Err(format!(
                    "part {:?}: not a plain relative path inside the slot",
                    part.name
                ));
            }
            if let Some(path) = shared_boot_file(&part.name) {
                // FAT knows no case: two names for one file would share
                // one partial file.
                if !may_share(path) || !seen_shared.insert(path.to_ascii_lowercase()) {
                    return Err(format!(
                        "part {:?}: not a file a bundle may replace on the boot partition (or listed twice)",
                        part.name
                    ));
                }
            }
            if !seen.insert(part.name.as_str()) {
                return Err(format!("part {:?} is listed twice", part.name));
            }
            if part.sha256.len() != 64
                || !part
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "part {:?}: sha256 {:?} is not 64 lowercase hex digits",
                    part.name, part.sha256
                ));
            }
        }
        for required in REQUIRED_PARTS {
            if !seen.contains(required) {
                return Err(format!("the bundle has no {required}"));
            }
        }
        Ok(())
    }

    /// Whether this machine (board, running version) may install the
    /// bundle; `None` when it may.
    pub fn refusal(&self, board: &str, running: Version, allow_downgrade: bool) -> Option<Refusal> {
        if self.board != board {
            return Some(Refusal::OtherBoard {
                bundle: self.board.clone(),
                running: board.to_string(),
            });
        }
        match self.version.cmp(&running) {
            Ordering::Less if !allow_downgrade => {
                return Some(Refusal::Older {
                    bundle: self.version,
                    running,
                })
            }
            Ordering::Equal => return Some(Refusal::Same { version: running }),
            _ => {}
        }
        // A downgrade goes back to a version the running one came from; the
        // minimum guards the way forward only.
        if running < self.min_from && self.version > running {
            return Some(Refusal::TooOldToUpdateFrom {
                running,
                min_from: self.min_from,
            });
        }
        None
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn json(board: &str, version: &str, min_from: &str, names: &[&str]) -> String {
        let parts: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"name": "{n}", "size": 4, "sha256": "{HASH}"}}"#))
            .collect();
        format!(
            r#"{{"board": "{board}", "version": "{version}", "min_from": "{min_from}", "cmdline": "console=ttyS0 quiet", "parts": [{}]}}"#,
            parts.join(", ")
        )
    }

    fn manifest(version: &str, min_from: &str) -> Manifest {
        Manifest::parse(json("pc-x86_64", version, min_from, &REQUIRED_PARTS).as_bytes()).unwrap()
    }

    fn error(text: &str) -> String {
        Manifest::parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn versions_compare_by_number_not_by_text() {
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.9.7").unwrap());
        assert_eq!(Version::parse("1.2.3").unwrap().to_string(), "1.2.3");
        for bad in [
            "1.2",
            "1.2.3.4",
            "1.+2.3",
            "1..3",
            " 1.2.3",
            "1.2.99999999999",
            "v1.2.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn a_manifest_reads_back_what_was_written() {
        let written = manifest("0.2.0", "0.1.0");
        let read = Manifest::parse(written.to_json().as_bytes()).unwrap();
        assert_eq!(read, written);
        assert_eq!(read.version, Version(0, 2, 0));
        assert_eq!(read.parts.len(), 3);
    }

    #[test]
    fn parts_that_would_leave_the_slot_are_refused() {
        for name in [
            "../boot/vmlinuz",
            "/etc/shadow",
            "dtbs//x.dtb",
            "dtbs/./x",
            "a\\b",
            "",
        ] {
            let mut names = REQUIRED_PARTS.to_vec();
            names.push(name);
            let e = error(&json("pc-x86_64", "0.2.0", "0.1.0", &names));
            assert!(e.contains("not a plain relative path"), "{name:?}: {e}");
        }
        let mut names = REQUIRED_PARTS.to_vec();
        names.push("dtbs/broadcom/bcm2837-rpi-3-a-plus.dtb");
        Manifest::parse(json("rpi3", "0.2.0", "0.1.0", &names).as_bytes()).unwrap();
    }

    #[test]
    fn shared_boot_files_never_replace_the_users_or_the_slots_files() {
        for name in [
            "boot/config.txt",
            "boot/CMDLINE.TXT",
            "boot/User-Data",
            "boot/uboot.env",
            "boot/brig/a-0.1.0/vmlinuz",
            "boot/loader/entries/brig-9-9.9.9.conf",
            "boot/EFI/BOOT/BOOTX64.EFI",
            "boot/.start.elf.partial",
            "boot/overlays/.x",
            "boot/config.txt.",
            "boot/user-data.",
            "boot/uboot.env.",
            "boot/brig./b-0.1.0/vmlinuz",
            "boot/loader./entries/x.conf",
            "boot/start.elf.",
            "boot/overlays/sub/x.dtbo",
            "boot/startup.nsh",
            "boot/x.efi",
        ] {
            let mut names = REQUIRED_PARTS.to_vec();
            names.push(name);
            let e = error(&json("rpi3", "0.2.0", "0.1.0", &names));
            assert!(
                e.ends_with(
                    "not a file a bundle may replace on the boot partition (or listed twice)"
                ),
                "{name:?}: {e}"
            );
        }
        let mut names = REQUIRED_PARTS.to_vec();
        names.extend([
            "boot/start.elf",
            "boot/overlays/hifiberry-dac.dtbo",
            "boot/boot.scr",
        ]);
        Manifest::parse(json("rpi3", "0.2.0", "0.1.0", &names).as_bytes()).unwrap();
        names.push("boot/START.ELF");
        let e = error(&json("rpi3", "0.2.0", "0.1.0", &names));
        assert!(e.contains("\"boot/START.ELF\": not a file"), "{e}");
        assert_eq!(shared_boot_file("boot/start.elf"), Some("start.elf"));
        assert_eq!(shared_boot_file("vmlinuz"), None);
    }

    #[test]
    fn malformed_manifests_say_what_is_wrong() {
        let e = error(&json(
            "pc-x86_64",
            "0.2.0",
            "0.1.0",
            &["vmlinuz", "system.img"],
        ));
        assert_eq!(e, "the bundle has no initramfs.img");
        let e = error(&json(
            "pc-x86_64",
            "0.2.0",
            "0.1.0",
            &["vmlinuz", "initramfs.img", "system.img", "vmlinuz"],
        ));
        assert!(e.contains("\"vmlinuz\" is listed twice"), "{e}");
        let e = error(&json("pc-x86_64", "0.2.0", "0.3.0", &REQUIRED_PARTS));
        assert!(e.contains("min_from 0.3.0 is newer"), "{e}");
        let e = error(&json("../x", "0.2.0", "0.1.0", &REQUIRED_PARTS));
        assert!(e.contains("not a board name"), "{e}");
        let e = error(&json("pc-x86_64", "two", "0.1.0", &REQUIRED_PARTS));
        assert!(e.starts_with("version: "), "{e}");
        let upper = json("pc-x86_64", "0.2.0", "0.1.0", &REQUIRED_PARTS).replace("9f86", "9F86");
        assert!(error(&upper).contains("not 64 lowercase hex digits"));
        let extra = json("pc-x86_64", "0.2.0", "0.1.0", &REQUIRED_PARTS).replacen(
            '{',
            r#"{"run_this": "rm -rf /", "#,
            1,
        );
        assert!(error(&extra).contains("unknown field `run_this`"));
        assert!(error("{\"board\": ").starts_with("the manifest: "));
        let slot = json("pc-x86_64", "0.2.0", "0.1.0", &REQUIRED_PARTS)
            .replace("quiet", "brig.system=PARTUUID=x");
        assert!(error(&slot).contains("without brig.system="));
        let two_lines = json("pc-x86_64", "0.2.0", "0.1.0", &REQUIRED_PARTS)
            .replace("quiet", "quiet\\ninitrd /x");
        assert!(error(&two_lines).contains("not one line"));
    }

    #[test]
    fn a_machine_refuses_bundles_that_are_not_for_it() {
        let bundle = manifest("0.3.0", "0.2.0");
        let running = Version(0, 2, 5);
        assert_eq!(bundle.refusal("pc-x86_64", running, false), None);
        let other = bundle.refusal("rpi4", running, false).unwrap();
        assert_eq!(
            other.to_string(),
            "the bundle is for the pc-x86_64 board and this machine is rpi4"
        );
        assert_eq!(
            bundle.refusal("pc-x86_64", Version(0, 3, 0), false),
            Some(Refusal::Same {
                version: Version(0, 3, 0)
            })
        );
        let old = bundle
            .refusal("pc-x86_64", Version(0, 1, 9), false)
            .unwrap();
        assert!(old.to_string().contains("update to 0.2.0 first"), "{old}");
    }

    #[test]
    fn an_older_bundle_needs_allow_downgrade() {
        let bundle = manifest("0.2.0", "0.1.0");
        let running = Version(0, 3, 0);
        let refused = bundle.refusal("pc-x86_64", running, false).unwrap();
        assert!(
            refused.to_string().contains("--allow-downgrade"),
            "{refused}"
        );
        assert_eq!(bundle.refusal("pc-x86_64", running, true), None);
    }
}
