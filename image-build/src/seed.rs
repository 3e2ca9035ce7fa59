//! A NoCloud seed for `brig run --user-data`: a small FAT volume labelled
//! CIDATA with `user-data`, `meta-data` and `network-config`, attached to the
//! guest as a read-only disk, as cloud-localds makes them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::host_tools;

/// The seed's path in the artifacts directory: made anew by each `brig run`
/// (named by its process, so guests booted side by side from the same
/// artifacts each get their own) and removed when QEMU exits.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(format!("nocloud-seed-{}.img", std::process::id()))
}

/// Files for the seed: `meta-data` defaults to an instance id derived from
/// the user data, so new user data is a new instance.
pub fn files(
    user_data: Option<&[u8]>,
    meta_data: Option<&[u8]>,
    network_config: Option<&[u8]>,
) -> Vec<(&'static str, Vec<u8>)> {
    let user_data = user_data.unwrap_or(b"#cloud-config\n");
    let meta_data = match meta_data {
        Some(m) => m.to_vec(),
        None => format!(
            "instance-id: {}\n",
            brig_spec::cloud_config::default_instance_id(user_data)
        )
        .into_bytes(),
    };
    let mut files = vec![("user-data", user_data.to_vec()), ("meta-data", meta_data)];
    if let Some(n) = network_config {
        files.push(("network-config", n.to_vec()));
    }
    files
}

/// Writes the seed volume into `dir`; returns its path.
pub fn make(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    let mkfs = host_tools::require("mkfs.vfat", "dosfstools")?;
    let mcopy = host_tools::require("mcopy", "mtools")?;
    let image = path(dir);
    let _ = std::fs::remove_file(&image);
    // mcopy names the files on the volume after the files it copies.
    let stage = image.with_extension("files");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let mut staged = Vec::new();
    for (name, data) in files {
        let path = stage.join(name);
        std::fs::write(&path, data).with_context(|| format!("staging {name}"))?;
        staged.push(path);
    }
    let what = format!("making the NoCloud seed {}", image.display());
    let made = host_tools::run(
        Command::new(mkfs)
            .args(["-C", "-n", "CIDATA"])
            .arg(&image)
            .arg("1024"),
        &what,
    )
    .and_then(|_| {
        host_tools::run(
            Command::new(mcopy)
                .arg("-i")
                .arg(&image)
                .args(&staged)
                .arg("::"),
            &what,
        )
    });
    let _ = std::fs::remove_dir_all(&stage);
    made.map(|_| image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_defaults_to_an_instance_id_from_the_user_data() {
        let a = files(Some(b"#cloud-config\nhostname: a\n"), None, None);
        let b = files(Some(b"#cloud-config\nhostname: b\n"), None, None);
        assert_eq!(a[1].0, "meta-data");
        assert!(String::from_utf8_lossy(&a[1].1).starts_with("instance-id: brig-"));
        assert_ne!(a[1].1, b[1].1);
        let c = files(None, Some(b"instance-id: x\n"), Some(b"version: 2\n"));
        assert_eq!(c[0].1, b"#cloud-config\n");
        assert_eq!(c[1].1, b"instance-id: x\n");
        assert_eq!(c[2].0, "network-config");
    }

    #[test]
    fn the_seed_is_a_fat_volume_labelled_cidata_with_the_files() {
        if host_tools::find("mcopy").is_none() || host_tools::find("mkfs.vfat").is_none() {
            panic!("mtools and dosfstools are needed: run scripts/setup-host");
        }
        let dir = tempfile::tempdir().unwrap();
        let image = make(
            dir.path(),
            &files(Some(b"#cloud-config\nhostname: t\n"), None, None),
        )
        .unwrap();
        let head = std::fs::read(&image).unwrap();
        assert_eq!(&head[43..49], b"CIDATA", "boot sector label");
        let listing = Command::new("mdir")
            .arg("-i")
            .arg(&image)
            .arg("-b")
            .arg("::")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.contains("user-data") && listing.contains("meta-data"),
            "{listing}"
        );
    }
}
