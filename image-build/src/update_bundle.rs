//! Update bundles and the key that signs them (docs/updates.md):
//! `brig keygen`, `brig build --bundle`, `brig bundle check`.
//!
//! Every image carries the public half of an update key; a machine takes
//! only bundles signed with the secret half. Without `--update-key`, builds
//! use one key per user (`~/.config/brig/update.key`), made at the first
//! build, as Bottlerocket's build makes local signing keys for development.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use brig_spec::update_bundle::{
    self as bundle, BundleReader, Manifest, Part, SigningKey, VerifyingKey, Version,
};

use crate::progress::step;

/// `$XDG_CONFIG_HOME/brig/update.key`, else `~/.config/brig/update.key`.
pub fn default_key_path() -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set: give --update-key")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(config.join("brig").join("update.key"))
}

/// The public key's file beside the secret one: `update.key` → `update.pub`.
pub fn public_path(secret: &Path) -> PathBuf {
    secret.with_extension("pub")
}

/// Makes a key pair: the secret half readable by its owner only, never
/// over an existing file (that would orphan every machine that trusts it).
pub fn keygen(secret: &Path) -> Result<VerifyingKey> {
    let mut seed = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a new key")?;
    let key = SigningKey::from_bytes(&seed);
    if let Some(dir) = secret.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let public = public_path(secret);
    // Each file is written whole under a name of its own, then linked to
    // its name: link never replaces, so two builds racing to make the
    // default key agree on one.
    let publish = |path: &Path, text: &str, mode: u32| -> Result<()> {
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", partial.display()))?;
        let linked = std::fs::hard_link(&partial, path);
        let _ = std::fs::remove_file(&partial);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} exists: a new key there would make every machine built with the old one refuse your bundles; remove it first if that is what you want",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    };
    publish(secret, &bundle::secret_key_text(&key), 0o600)?;
    publish(
        &public,
        &bundle::public_key_text(&key.verifying_key()),
        0o644,
    )?;
    Ok(key.verifying_key())
}

/// The signing key at `path`; at the default path, made when absent.
pub fn load(path: &Path, is_default: bool) -> Result<SigningKey> {
    if is_default && !path.exists() {
        // Another build may make it at the same moment: its key is as good.
        if let Err(e) = keygen(path) {
            if !path.exists() {
                return Err(e);
            }
        }
        step(&format!(
            "made an update signing key, {} (public half {}): keep it, machines built now take only bundles it signs",
            path.display(),
            public_path(path).display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the update key {}", path.display()))?;
    bundle::parse_secret_key(&text)
        .map_err(|e| anyhow::anyhow!("the update key {}: {e}", path.display()))
}

/// What a bundle is made of: the release and its parts' files.
pub struct Release<'a> {
    pub board: &'a str,
    pub version: Version,
    pub min_from: Version,
    pub cmdline: &'a str,
    /// (name in the slot, file here), in the order they are written.
    pub parts: Vec<(&'a str, PathBuf)>,
}

pub fn file_name(board: &str, version: Version) -> String {
    format!("brig-{board}-{version}.bundle")
}

/// Writes `out/brig-<board>-<version>.bundle`, signed with `key`.
pub fn write(release: &Release, key: &SigningKey, out: &Path) -> Result<PathBuf> {
    let mut parts = Vec::new();
    for (name, path) in &release.parts {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (sha256, size) =
            bundle::sha256_of(file).with_context(|| format!("hashing {}", path.display()))?;
        parts.push(Part {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        board: release.board.to_string(),
        version: release.version,
        min_from: release.min_from,
        cmdline: release.cmdline.to_string(),
        parts,
    };
    // What a machine would refuse is refused here, at the source.
    let manifest = Manifest::parse(manifest.to_json().as_bytes())
        .map_err(|e| anyhow::anyhow!("the bundle's manifest: {e}"))?;
    let path = out.join(file_name(release.board, release.version));
    let partial = path.with_extension("bundle.partial");
    let mut file =
        File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(&bundle::signed_head(&manifest, key))
        .with_context(|| format!("writing {}", partial.display()))?;
    for (_, source) in &release.parts {
        let mut input =
            File::open(source).with_context(|| format!("opening {}", source.display()))?;
        std::io::copy(&mut input, &mut file)
            .with_context(|| format!("copying {} into {}", source.display(), partial.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("moving {} into place", path.display()))?;
    Ok(path)
}

/// Reads a whole bundle as a machine would, without writing its parts:
/// `brig bundle check`.
pub fn check(path: &Path, public: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(public)
        .with_context(|| format!("reading the public key {}", public.display()))?;
    let key = bundle::parse_public_key(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", public.display()))?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BundleReader::open(std::io::BufReader::new(file), &key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    while reader
        .copy_next(|_| Ok(std::io::sink()), |_, _| {})
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .is_some()
    {}
    Ok(reader.manifest().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn release(dir: &Path) -> Release<'static> {
        let mut parts = Vec::new();
        for (name, bytes) in [
            ("vmlinuz", &b"kernel"[..]),
            ("initramfs.img", b"initramfs"),
            ("system.img", &[3u8; 70_000]),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            parts.push((name, path));
        }
        Release {
            board: "pc-x86_64",
            version: Version(0, 2, 0),
            min_from: Version(0, 1, 0),
            cmdline: "console=ttyS0",
            parts,
        }
    }

    #[test]
    fn keygen_makes_a_private_key_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("keys/update.key");
        let public = keygen(&secret).unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = bundle::parse_public_key(
            &std::fs::read_to_string(dir.path().join("keys/update.pub")).unwrap(),
        )
        .unwrap();
        assert_eq!(read, public);
        let before = std::fs::read(&secret).unwrap();
        let e = keygen(&secret).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        assert_eq!(std::fs::read(&secret).unwrap(), before);
        assert_eq!(load(&secret, false).unwrap().verifying_key(), public);
    }

    #[test]
    fn the_default_key_is_made_once_and_an_explicit_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("brig/update.key");
        let first = load(&default, true).unwrap();
        let again = load(&default, true).unwrap();
        assert_eq!(first.as_bytes(), again.as_bytes());
        let e = load(&dir.path().join("other.key"), false).unwrap_err();
        assert!(format!("{e:#}").contains("reading the update key"), "{e:#}");
    }

    #[test]
    fn a_written_bundle_checks_with_its_key_and_not_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("update.key");
        let signing = SigningKey::from_bytes(&[5; 32]);
        std::fs::write(&key, bundle::secret_key_text(&signing)).unwrap();
        std::fs::write(
            public_path(&key),
            bundle::public_key_text(&signing.verifying_key()),
        )
        .unwrap();
        let path = write(&release(dir.path()), &signing, dir.path()).unwrap();
        assert_eq!(path.file_name().unwrap(), "brig-pc-x86_64-0.2.0.bundle");
        let manifest = check(&path, &public_path(&key)).unwrap();
        assert_eq!(manifest.parts[2].size, 70_000);
        assert_eq!(manifest.cmdline, "console=ttyS0");

        let other = dir.path().join("other.pub");
        let stranger = SigningKey::from_bytes(&[6; 32]);
        std::fs::write(&other, bundle::public_key_text(&stranger.verifying_key())).unwrap();
        let e = check(&path, &other).unwrap_err().to_string();
        assert!(e.contains("signature does not verify"), "{e}");
    }
}
