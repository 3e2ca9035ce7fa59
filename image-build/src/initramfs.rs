//! A newc cpio archive (the initramfs format the kernel unpacks), written
//! deterministically: entries sorted by path, fixed inode numbers, owner root,
//! one timestamp (SOURCE_DATE_EPOCH), so the same inputs give the same bytes.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

#[derive(Debug, Default)]
pub struct Initramfs {
    /// Path without leading `/` -> entry.
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// Adds an entry, and its parent directories (mode 0755) if missing.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path, entry);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add(path, Entry::File { mode, data });
    }

    pub fn dir(&mut self, path: &str, mode: u32) {
        self.add(path, Entry::Dir { mode });
    }

    /// `(path, size)` of every regular file, for the manifest.
    pub fn files(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File { data, .. } => Some((format!("/{p}"), data.len() as u64)),
                _ => None,
            })
            .collect()
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (0o040000 | mode, &[], (0, 0)),
                Entry::File { mode, data } => (0o100000 | mode, data, (0, 0)),
                Entry::CharDevice { mode, major, minor } => {
                    (0o020000 | mode, &[], (*major, *minor))
                }
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            write_header(
                &mut out,
                ino as u32 + 1,
                mode,
                nlink,
                mtime,
                data.len() as u32,
                rdev,
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize (with NUL), check
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        mtime,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_entries_sorted() {
        let mut i = Initramfs::default();
        i.file("/lib/modules/6.12/modules.dep", 0o644, b"x".to_vec());
        i.file("/init", 0o755, b"ELF".to_vec());
        let paths: Vec<&String> = i.entries.keys().collect();
        assert_eq!(
            paths,
            [
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.12",
                "lib/modules/6.12/modules.dep"
            ]
        );
        assert_eq!(
            i.files(),
            [
                ("/init".to_string(), 3),
                ("/lib/modules/6.12/modules.dep".to_string(), 1)
            ]
        );
    }

    #[test]
    fn archive_is_valid_newc_that_cpio_reads_back() {
        let mut i = Initramfs::default();
        i.file("/init", 0o755, b"#!hello".to_vec());
        i.add(
            "/dev/console",
            Entry::CharDevice {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        let archive = i.to_cpio(1_700_000_000);
        assert_eq!(archive.len() % 4, 0);
        assert!(archive.starts_with(b"070701"));
        // Deterministic.
        assert_eq!(archive, i.to_cpio(1_700_000_000));

        let dir = tempfile::tempdir().unwrap();
        let archive_path = dir.path().join("a.cpio");
        std::fs::write(&archive_path, &archive).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&archive_path)
            .output()
            .expect("cpio (Debian package cpio) is needed for this test");
        assert!(
            listing.status.success(),
            "{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        let listing = String::from_utf8(listing.stdout).unwrap();
        assert!(
            listing.contains("crw-------")
                && listing.contains("5,")
                && listing.contains("dev/console"),
            "{listing}"
        );
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains("init"),
            "{listing}"
        );
        let extracted = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "--to-stdout", "-F"])
            .arg(&archive_path)
            .arg("init")
            .output()
            .unwrap();
        assert_eq!(extracted.stdout, b"#!hello");
    }
}
