//! The bundle file, and its Ed25519 signature.
//!
//! ```text
//! "BRIGUPD1"                     8 bytes, magic and format version
//! manifest length                4 bytes, little endian, at most 1 MiB
//! manifest                       JSON (`Manifest`)
//! signature                      64 bytes, Ed25519 over all of the above
//! parts                          each part's bytes, in the manifest's order
//! ```
//!
//! Everything a machine needs to decide is in front, so a bundle streamed
//! over HTTP is judged (signature, board, version) before a byte of it is
//! written anywhere, and each part is hashed as it streams to its slot.
//! The signature is checked before the manifest is even parsed.

use std::fmt;
use std::io::{self, Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{Manifest, Part};

const MAGIC: &[u8; 8] = b"BRIGUPD1";
const MAX_MANIFEST: usize = 1 << 20;
const SIGNATURE_LEN: usize = 64;
/// Key files: one line, this prefix and the key in base64.
const SECRET_PREFIX: &str = "brig-update-secret-key ed25519 ";
const PUBLIC_PREFIX: &str = "brig-update-public-key ed25519 ";

/// Why a bundle was not taken, for the user as it is.
#[derive(Debug)]
pub enum BundleError {
    NotABundle,
    Truncated { what: String },
    BadSignature,
    Manifest(String),
    PartMismatch { name: String },
    TrailingBytes,
    Io(io::Error),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotABundle => write!(f, "this is not a Brig update bundle"),
            BundleError::Truncated { what } => {
                write!(f, "the bundle is truncated: it ends inside {what}")
            }
            BundleError::BadSignature => write!(
                f,
                "the bundle's signature does not verify with this machine's update key (signed with another key, or changed since)"
            ),
            BundleError::Manifest(e) => write!(f, "the bundle's manifest: {e}"),
            BundleError::PartMismatch { name } => write!(
                f,
                "part {name}: its SHA-256 does not match the signed manifest (corrupted or changed since signing)"
            ),
            BundleError::TrailingBytes => write!(f, "the bundle has bytes after its last part"),
            BundleError::Io(e) => write!(f, "reading the bundle: {e}"),
        }
    }
}

impl std::error::Error for BundleError {}

/// The key pair's secret half, as `brig keygen` writes it.
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{SECRET_PREFIX}{}\n", base64(key.as_bytes()))
}

pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}\n", base64(key.as_bytes()))
}

pub fn parse_secret_key(text: &str) -> Result<SigningKey, String> {
    let bytes = key_bytes(text, SECRET_PREFIX, "secret")?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = key_bytes(text, PUBLIC_PREFIX, "public")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_string())
}

fn key_bytes(text: &str, prefix: &str, which: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let encoded = text
        .trim_end_matches('\n')
        .strip_prefix(prefix)
        .ok_or_else(|| format!("not a Brig update {which} key (it starts {prefix:?})"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the {which} key's base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("the {which} key is not 32 bytes"))
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bundle's head (magic, manifest, signature); the parts follow it.
pub fn signed_head(manifest: &Manifest, key: &SigningKey) -> Vec<u8> {
    let json = manifest.to_json();
    let mut head = Vec::with_capacity(json.len() + 76);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    head.extend_from_slice(json.as_bytes());
    let signature = key.sign(&head);
    head.extend_from_slice(&signature.to_bytes());
    head
}

/// The SHA-256 of everything `reader` gives, and how many bytes it gave.
pub fn sha256_of(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    let mut size = 0;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bundle being read: the manifest, verified, then its parts one by one.
pub struct BundleReader<R> {
    input: R,
    manifest: Manifest,
    next: usize,
}

impl<R: Read> BundleReader<R> {
    /// Reads the head and checks its signature with `key`, then the
    /// manifest. Nothing after the head has been read.
    pub fn open(mut input: R, key: &VerifyingKey) -> Result<Self, BundleError> {
        let mut fixed = [0u8; 12];
        read_exact(&mut input, &mut fixed, "the header")?;
        if &fixed[..8] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let length = u32::from_le_bytes(fixed[8..].try_into().expect("4 bytes")) as usize;
        if length > MAX_MANIFEST {
            return Err(BundleError::Manifest(format!(
                "{length} bytes long, more than the {MAX_MANIFEST} a manifest may be"
            )));
        }
        let mut head = fixed.to_vec();
        head.resize(12 + length, 0);
        read_exact(&mut input, &mut head[12..], "the manifest")?;
        let mut signature = [0u8; SIGNATURE_LEN];
        read_exact(&mut input, &mut signature, "the signature")?;
        key.verify(&head, &Signature::from_bytes(&signature))
            .map_err(|_| BundleError::BadSignature)?;
        let manifest = Manifest::parse(&head[12..]).map_err(BundleError::Manifest)?;
        Ok(BundleReader {
            input,
            manifest,
            next: 0,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Copies the next part to `out` (whatever `out_for` gives for it),
    /// hashing it on the way; `progress` hears the bytes copied so far.
    /// `None` once every part has been copied and nothing follows them.
    pub fn copy_next<W: Write>(
        &mut self,
        out_for: impl FnOnce(&Part) -> io::Result<W>,
        mut progress: impl FnMut(&Part, u64),
    ) -> Result<Option<(Part, W)>, BundleError> {
        let Some(part) = self.manifest.parts.get(self.next).cloned() else {
            let mut extra = [0u8; 1];
            return match read_some(&mut self.input, &mut extra)? {
                0 => Ok(None),
                _ => Err(BundleError::TrailingBytes),
            };
        };
        self.next += 1;
        let mut out = out_for(&part).map_err(BundleError::Io)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 16];
        let mut copied = 0u64;
        while copied < part.size {
            let want = buffer.len().min((part.size - copied) as usize);
            let n = read_some(&mut self.input, &mut buffer[..want])?;
            if n == 0 {
                return Err(BundleError::Truncated {
                    what: format!("part {} ({copied} of {} bytes)", part.name, part.size),
                });
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n]).map_err(BundleError::Io)?;
            copied += n as u64;
            progress(&part, copied);
        }
        if hex(&hasher.finalize()) != part.sha256 {
            return Err(BundleError::PartMismatch { name: part.name });
        }
        Ok(Some((part, out)))
    }
}

fn read_some(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize, BundleError> {
    loop {
        match input.read(buffer) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::Io(e)),
        }
    }
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8], what: &str) -> Result<(), BundleError> {
    input.read_exact(buffer).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated {
            what: what.to_string(),
        },
        _ => BundleError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Version;
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// A whole bundle for `board`, with parts of the given contents.
    fn bundle(board: &str, signer: &SigningKey) -> Vec<u8> {
        let contents: [(&str, &[u8]); 3] = [
            ("vmlinuz", b"kernel bytes"),
            ("initramfs.img", b""),
            ("system.img", &[7u8; 200_000]),
        ];
        let parts = contents
            .iter()
            .map(|(name, bytes)| Part {
                name: name.to_string(),
                size: bytes.len() as u64,
                sha256: sha256_of(*bytes).unwrap().0,
            })
            .collect();
        let manifest = Manifest {
            board: board.to_string(),
            version: Version(0, 2, 0),
            min_from: Version(0, 1, 0),
            cmdline: "console=ttyS0".to_string(),
            parts,
        };
        let mut file = signed_head(&manifest, signer);
        for (_, bytes) in contents {
            file.extend_from_slice(bytes);
        }
        file
    }

    /// Reads every part into memory, as a machine writes them to its slot.
    fn read_all(file: &[u8], key: &VerifyingKey) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
        let mut reader = BundleReader::open(file, key)?;
        let mut parts = Vec::new();
        while let Some((part, bytes)) = reader.copy_next(|_| Ok(Vec::new()), |_, _| {})? {
            parts.push((part.name, bytes));
        }
        Ok(parts)
    }

    #[test]
    fn a_signed_bundle_reads_back_part_by_part() {
        let signer = key(1);
        let parts = read_all(&bundle("pc-x86_64", &signer), &signer.verifying_key()).unwrap();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vmlinuz", "initramfs.img", "system.img"]);
        assert_eq!(parts[0].1, b"kernel bytes");
        assert_eq!(parts[2].1.len(), 200_000);
    }

    #[test]
    fn another_key_or_a_changed_manifest_fails_the_signature() {
        let file = bundle("pc-x86_64", &key(1));
        let e = read_all(&file, &key(2).verifying_key()).unwrap_err();
        assert!(matches!(e, BundleError::BadSignature), "{e}");
        // The board name changed in place, same length: only the signature
        // can tell.
        let text = String::from_utf8_lossy(&file[..200]).into_owned();
        let at = text.find("pc-x86_64").unwrap();
        let mut forged = file.clone();
        forged[at..at + 9].copy_from_slice(b"pc-arm_64");
        let e = read_all(&forged, &key(1).verifying_key()).unwrap_err();
        assert!(matches!(e, BundleError::BadSignature), "{e}");
    }

    #[test]
    fn a_changed_part_fails_its_hash_and_says_which() {
        let mut file = bundle("pc-x86_64", &key(1));
        let last = file.len() - 10;
        file[last] ^= 1;
        let e = read_all(&file, &key(1).verifying_key()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "part system.img: its SHA-256 does not match the signed manifest (corrupted or changed since signing)"
        );
    }

    #[test]
    fn a_truncated_bundle_says_where_it_ends() {
        let file = bundle("pc-x86_64", &key(1));
        let verifying = key(1).verifying_key();
        let e = read_all(&file[..file.len() - 1], &verifying).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the bundle is truncated: it ends inside part system.img (199999 of 200000 bytes)"
        );
        let e = read_all(&file[..100], &verifying).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the bundle is truncated: it ends inside the manifest"
        );
        let e = read_all(&file[..5], &verifying).unwrap_err();
        assert!(e.to_string().ends_with("inside the header"), "{e}");
        let mut longer = file.clone();
        longer.push(0);
        let e = read_all(&longer, &verifying).unwrap_err();
        assert!(matches!(e, BundleError::TrailingBytes), "{e}");
    }

    #[test]
    fn other_files_and_huge_manifests_are_refused_before_reading_on() {
        let verifying = key(1).verifying_key();
        let e = read_all(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0", &verifying).unwrap_err();
        assert!(matches!(e, BundleError::NotABundle), "{e}");
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read_all(&huge, &verifying).unwrap_err();
        assert!(e.to_string().contains("more than the 1048576"), "{e}");
    }

    #[test]
    fn keys_read_back_and_garbage_is_no_key() {
        let signer = key(9);
        let secret = parse_secret_key(&secret_key_text(&signer)).unwrap();
        assert_eq!(secret.as_bytes(), signer.as_bytes());
        let public = parse_public_key(&public_key_text(&signer.verifying_key())).unwrap();
        assert_eq!(public, signer.verifying_key());
        assert!(parse_public_key(&secret_key_text(&signer))
            .unwrap_err()
            .contains("not a Brig update public key"));
        assert!(parse_secret_key("brig-update-secret-key ed25519 AAAA\n")
            .unwrap_err()
            .contains("not 32 bytes"));
    }
}
