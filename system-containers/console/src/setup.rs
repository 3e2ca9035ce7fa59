//! What the console does to its own root filesystem before sshd starts:
//! writes the rendered accounts, makes missing homes, keeps ssh host keys.
//! Each step reports what went wrong and the others still happen, so a bad
//! entry never locks everyone out.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use brig_spec::failed::Failed;

use crate::accounts::{Home, Rendered};

/// The gid of group `shadow` (accounts.rs), which may read /etc/shadow.
const SHADOW_GID: u32 = 42;

/// Writes `data` to `path` with `mode`, owned by `uid` and `gid`: to a
/// temporary file first, synced, then renamed over, then the directory
/// synced, so a power cut leaves the old file or the new, never a part.
/// The temporary file is made new (`O_EXCL`, `O_NOFOLLOW`) and changed
/// through its descriptor: a link a user planted at its name is replaced,
/// never written through.
pub fn write_file(path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), Failed> {
    let what = |e: std::io::Error| Failed::new(format!("writing {}", path.display()), e);
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(what)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.new"));
    // Whatever is there (a leftover, or a link) goes; removing does not
    // follow links.
    match fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(what(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&temporary)
        .map_err(what)?;
    file.write_all(data).map_err(what)?;
    fchown(&file, Some(uid), Some(gid)).map_err(what)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(what)?;
    file.sync_all().map_err(what)?;
    fs::rename(&temporary, path).map_err(what)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(what)
}

/// Makes `link` a symbolic link to `target`, replacing what is there.
pub fn link(link: &Path, target: &Path) -> Result<(), Failed> {
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir).map_err(|e| Failed::new(format!("making {}", dir.display()), e))?;
    }
    let replacing = format!("replacing {}", link.display());
    match fs::symlink_metadata(link) {
        Ok(m) if m.is_dir() => {
            return Err(Failed::new(replacing, std::io::ErrorKind::IsADirectory));
        }
        Ok(_) => fs::remove_file(link).map_err(|e| Failed::new(replacing, e))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| {
        Failed::new(
            format!("linking {} to {}", link.display(), target.display()),
            e,
        )
    })
}

/// /etc/passwd, shadow, group, gshadow, sudoers rules, authorized keys and
/// sshd's settings. Returns the problems; the account files themselves
/// failing is an error (nobody could log in).
pub fn write_accounts(r: &Rendered, etc: &Path) -> Result<Vec<String>, Failed> {
    write_file(&etc.join("passwd"), r.passwd.as_bytes(), 0o644, 0, 0)?;
    write_file(
        &etc.join("shadow"),
        r.shadow.as_bytes(),
        0o640,
        0,
        SHADOW_GID,
    )?;
    write_file(&etc.join("group"), r.group.as_bytes(), 0o644, 0, 0)?;
    write_file(
        &etc.join("gshadow"),
        r.gshadow.as_bytes(),
        0o640,
        0,
        SHADOW_GID,
    )?;
    let mut problems = Vec::new();
    for (user, rules) in &r.sudoers {
        let path = etc.join("sudoers.d").join(format!("90-brig-{user}"));
        if let Err(e) = write_file(&path, rules.as_bytes(), 0o440, 0, 0) {
            problems.push(e.to_string());
            continue;
        }
        // sudo refuses to run at all with a broken sudoers file: check
        // each user's rules and drop those visudo rejects. The common
        // rules are known good, and visudo is one process fewer on a
        // first boot's way to sshd.
        if known_good_sudoers(rules) {
            continue;
        }
        if let Some(error) = visudo_rejects(&path) {
            problems.push(format!(
                "user {user:?}: sudo rules rejected, none applied: {error}"
            ));
            let _ = fs::remove_file(&path);
        }
    }
    for (user, keys) in &r.authorized_keys {
        let path = etc.join("ssh/authorized_keys").join(user);
        if let Err(e) = write_file(&path, keys.as_bytes(), 0o644, 0, 0) {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = write_file(
        &etc.join("ssh/sshd_config.d/brig.conf"),
        r.sshd_config.as_bytes(),
        0o644,
        0,
        0,
    ) {
        problems.push(e.to_string());
    }
    Ok(problems)
}

/// Rules visudo need not check: comments, and lines `<user> <rule>` with a
/// plain user name (a valid one without `-` or `$`, which sudoers would
/// need quoted) and one of the rules cloud-init's examples give.
pub fn known_good_sudoers(text: &str) -> bool {
    const RULES: &[&str] = &[
        "ALL=(ALL) NOPASSWD:ALL",
        "ALL=(ALL:ALL) NOPASSWD:ALL",
        "ALL=(ALL) ALL",
        "ALL=(ALL:ALL) ALL",
    ];
    text.lines().filter(|l| !l.starts_with('#')).all(|line| {
        line.split_once(' ').is_some_and(|(user, rule)| {
            brig_spec::console::valid_name(user)
                && !user.contains(['-', '$'])
                && RULES.contains(&rule)
        })
    })
}

/// visudo's complaint about a sudoers file, if any (None when it is
/// accepted, or when there is no visudo to ask).
fn visudo_rejects(path: &Path) -> Option<String> {
    let out = Command::new("/usr/sbin/visudo")
        .args(["-c", "-q", "-f"])
        .arg(path)
        .output()
        .ok()?;
    (!out.status.success()).then(|| {
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// Makes each missing home from /etc/skel, owned by its user, mode 0700.
/// An existing home (from the volume) is left as it is.
pub fn make_homes(homes: &[Home], skel: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for home in homes {
        let path = Path::new(&home.path);
        if path.exists() {
            continue;
        }
        let made = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::create_dir(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
            chown(path, Some(home.uid), Some(home.gid))?;
            if let Ok(entries) = fs::read_dir(skel) {
                for entry in entries.flatten() {
                    if entry.file_type()?.is_file() {
                        let target = path.join(entry.file_name());
                        fs::copy(entry.path(), &target)?;
                        chown(&target, Some(home.uid), Some(home.gid))?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            problems.push(format!(
                "user {:?}: making home {}: {e}",
                home.user, home.path
            ));
        }
    }
    problems
}

/// The host key types generated, strongest first. No RSA key: making
/// its primes took 8 s of a first boot's 12 s wait for ssh under TCG (and
/// seconds on a Pi), every boot without a state partition; every client
/// since OpenSSH 5.7 (2011) and PuTTY 0.68 (2017) takes ECDSA or ed25519.
pub const HOST_KEY_TYPES: &[&str] = &["ed25519", "ecdsa"];

pub fn host_key_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("ssh_host_{kind}_key"))
}

/// Keeps the host keys in `dir` (a volume: the same keys across restarts
/// and, with a state partition, reboots); makes those missing, each pair
/// written atomically, the public key first (a private key present means
/// the pair is whole). Returns a line per key made.
///
/// Made here (the `ssh-key` crate) rather than by `ssh-keygen`: the keys
/// are milliseconds of work, but each ssh-keygen process cost 0.5 s cold
/// under TCG (the dynamic loader relocating libcrypto) and more beside the
/// other services starting, on the way to sshd on every boot without a
/// state partition.
pub fn host_keys(dir: &Path, comment: &str) -> Result<Vec<String>, Failed> {
    fs::create_dir_all(dir).map_err(|e| Failed::new(format!("making {}", dir.display()), e))?;
    let complete = |p: &Path| fs::metadata(p).is_ok_and(|m| m.len() > 0);
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut lines = Vec::new();
    for kind in HOST_KEY_TYPES {
        let key = host_key_path(dir, kind);
        let public = key.with_extension("pub");
        if complete(&key) && complete(&public) {
            continue;
        }
        make_host_key(&key, kind, comment, (uid, gid))?;
        lines.push(format!("generated the {kind} host key"));
    }
    Ok(lines)
}

/// Makes a new key pair of `kind` (one of `HOST_KEY_TYPES`) at `key` and
/// `key`.pub, in OpenSSH's formats, owned by `owner` (uid, gid).
fn make_host_key(key: &Path, kind: &str, comment: &str, owner: (u32, u32)) -> Result<(), Failed> {
    use ssh_key::{rand_core::OsRng, Algorithm, EcdsaCurve, LineEnding, PrivateKey};
    let failed = |e: ssh_key::Error| {
        Failed::new(
            format!("making the {kind} host key"),
            std::io::Error::other(e.to_string()),
        )
    };
    let algorithm = match kind {
        "ed25519" => Algorithm::Ed25519,
        "ecdsa" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        _ => return Err(failed(ssh_key::Error::AlgorithmUnknown)),
    };
    let mut pair = PrivateKey::random(&mut OsRng, algorithm).map_err(failed)?;
    pair.set_comment(comment);
    let private = pair.to_openssh(LineEnding::LF).map_err(failed)?;
    let public = pair.public_key().to_openssh().map_err(failed)? + "\n";
    let (uid, gid) = owner;
    write_file(
        &key.with_extension("pub"),
        public.as_bytes(),
        0o644,
        uid,
        gid,
    )?;
    write_file(key, private.as_bytes(), 0o600, uid, gid)
}

/// A line per host key in `dir` with its fingerprint, as `ssh-keygen -l`
/// says it (`256 SHA256:… root@brig (ED25519)`); computed here rather
/// than by one more process while the first login is served.
pub fn host_key_fingerprints(dir: &Path) -> Result<Vec<String>, Failed> {
    let mut lines = Vec::new();
    for kind in HOST_KEY_TYPES {
        let path = host_key_path(dir, kind).with_extension("pub");
        let text = fs::read_to_string(&path)
            .map_err(|e| Failed::new(format!("reading {}", path.display()), e))?;
        let line = fingerprint_line(&text).ok_or_else(|| {
            Failed::new(
                format!("reading {}", path.display()),
                std::io::Error::other("not an ed25519 or ECDSA public key"),
            )
        })?;
        lines.push(format!("host key {line}"));
    }
    Ok(lines)
}

/// `ssh-keygen -l`'s line for an OpenSSH public key line (`type base64
/// comment`): its size in bits, the SHA-256 of the key blob in unpadded
/// base64, the comment and the type. Only the types made here.
pub fn fingerprint_line(public_key: &str) -> Option<String> {
    use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey};
    let key = PublicKey::from_openssh(public_key.trim()).ok()?;
    let (bits, label) = match key.algorithm() {
        Algorithm::Ed25519 => (256, "ED25519"),
        Algorithm::Ecdsa { curve } => match curve {
            EcdsaCurve::NistP256 => (256, "ECDSA"),
            EcdsaCurve::NistP384 => (384, "ECDSA"),
            EcdsaCurve::NistP521 => (521, "ECDSA"),
        },
        _ => return None,
    };
    let comment = match key.comment() {
        "" => "no comment",
        comment => comment,
    };
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    Some(format!("{bits} {fingerprint} {comment} ({label})"))
}

/// sshd's start without its listening (`-t`: it reads its config and host
/// keys, and exits), while the accounts are written.
pub const SSHD_PROGRAMS: &[&[&str]] = &[&["/usr/sbin/sshd", "-t"]];

/// The programs a login over ssh runs, each as it only loads and exits:
/// sshd's per-connection programs and the default shell. Run once sshd
/// is started.
pub const LOGIN_PROGRAMS: &[&[&str]] = &[
    &["/usr/lib/openssh/sshd-session", "-V"],
    &["/usr/lib/openssh/sshd-auth", "-V"],
    &["/bin/bash", "-c", "true"],
];

/// Runs each of `programs` once, so that the page cache holds what they
/// load (the dynamic loader reads the pages of each library they touch):
/// on a first boot those come cold from the squashfs otherwise, under TCG
/// 0.3–0.5 s for sshd's libcrypto, and the first login took 1.6 s where
/// the next took 0.6 s. A line for each program that could not run, or
/// one saying what was warmed.
pub fn warm(programs: &[&[&str]]) -> Vec<String> {
    let mut problems = Vec::new();
    for command in programs {
        let ran = Command::new(command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ran {
            Ok(status) if status.success() => {}
            Ok(status) => problems.push(format!(
                "error: warming the page cache: {} ({status})",
                command.join(" ")
            )),
            Err(e) => problems.push(format!(
                "error: warming the page cache: {}: {e}",
                command[0]
            )),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let names: Vec<String> = programs
        .iter()
        .map(|c| {
            let program = c[0].rsplit('/').next().unwrap_or(c[0]);
            std::iter::once(program)
                .chain(c[1..].iter().copied())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    vec![format!("warmed the page cache: {}", names.join(", "))]
}

/// The console's time zone (`root` is `/` but for tests): /etc/localtime
/// a link into tzdata, /etc/timezone its name. A line for the log.
pub fn timezone(zone: &str, root: &Path) -> String {
    let zoneinfo = Path::new("/usr/share/zoneinfo").join(zone);
    if !root
        .join(zoneinfo.strip_prefix("/").unwrap_or(&zoneinfo))
        .is_file()
    {
        return format!("error: config: `timezone`: no time zone {zone:?} in tzdata; UTC stays");
    }
    let localtime = root.join("etc/localtime");
    let made = (|| -> std::io::Result<()> {
        fs::create_dir_all(root.join("etc"))?;
        let _ = fs::remove_file(&localtime);
        std::os::unix::fs::symlink(&zoneinfo, &localtime)?;
        fs::write(root.join("etc/timezone"), format!("{zone}\n"))
    })();
    match made {
        Ok(()) => format!("time zone {zone}"),
        Err(e) => format!("error: setting the time zone {zone}: {e}"),
    }
}

/// /etc/hosts naming this machine, so sudo and others resolve it.
pub fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_link_into_tzdata() {
        let root = tempfile::tempdir().unwrap();
        let zone = root.path().join("usr/share/zoneinfo/Europe");
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("Berlin"), "TZif").unwrap();
        assert_eq!(
            timezone("Europe/Berlin", root.path()),
            "time zone Europe/Berlin"
        );
        assert_eq!(
            fs::read_link(root.path().join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );
        assert_eq!(
            fs::read_to_string(root.path().join("etc/timezone")).unwrap(),
            "Europe/Berlin\n"
        );
        let e = timezone("Mars/Olympus_Mons", root.path());
        assert!(
            e.starts_with("error: config: `timezone`: no time zone"),
            "{e}"
        );
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/shadow");
        write_file(&path, b"old\n", 0o640, 0, 0).unwrap();
        write_file(&path, b"new\n", 0o600, 0, 0).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let left: Vec<_> = fs::read_dir(dir.path().join("etc")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }

    #[test]
    fn homes_come_from_skel_and_existing_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let skel = dir.path().join("skel");
        fs::create_dir(&skel).unwrap();
        fs::write(skel.join(".profile"), "# profile\n").unwrap();
        let existing = dir.path().join("home/old");
        fs::create_dir_all(&existing).unwrap();
        fs::write(existing.join("notes"), "mine").unwrap();
        let (uid, gid) = (nix_like::getuid(), nix_like::getgid());
        let homes = [
            Home {
                user: "new".into(),
                path: dir.path().join("home/new").display().to_string(),
                uid,
                gid,
            },
            Home {
                user: "old".into(),
                path: existing.display().to_string(),
                uid,
                gid,
            },
        ];
        assert!(make_homes(&homes, &skel).is_empty());
        let new = dir.path().join("home/new");
        assert_eq!(
            fs::read_to_string(new.join(".profile")).unwrap(),
            "# profile\n"
        );
        assert_eq!(
            fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::read_to_string(existing.join("notes")).unwrap(), "mine");
        assert!(
            !existing.join(".profile").exists(),
            "an existing home is left alone"
        );
    }

    #[test]
    fn a_public_key_line_that_is_not_what_it_claims_has_no_fingerprint() {
        let ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEqe1ZE+GTgziExDp0O+60U3MQwEZXAVrZtCfcP16r3W root@x";
        assert!(fingerprint_line(ed25519)
            .unwrap()
            .ends_with(" root@x (ED25519)"));
        // The same blob under another type's name, a blob that is not
        // base64, an RSA key (not made here), nothing.
        assert_eq!(
            fingerprint_line(&ed25519.replace("ssh-ed25519", "ecdsa-sha2-nistp256")),
            None
        );
        assert_eq!(fingerprint_line("ssh-ed25519 !!! root@x"), None);
        assert_eq!(
            fingerprint_line("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ== x"),
            None
        );
        assert_eq!(fingerprint_line(""), None);
    }

    #[test]
    fn the_common_sudo_rules_need_no_visudo_and_others_do() {
        let r = crate::accounts::render(&brig_spec::console::ConsoleConfig::default());
        assert!(known_good_sudoers(&r.sudoers[0].1), "{:?}", r.sudoers);
        assert!(known_good_sudoers(
            "# c\nops ALL=(ALL:ALL) ALL\nops ALL=(ALL) NOPASSWD:ALL\n"
        ));
        for text in [
            "ops ALL=(ALL) NOPASSWD:/usr/bin/true\n",
            "ops ALL=(ALL) NOPASSWD:ALL, !/bin/sh\n",
            "ops-1 ALL=(ALL) ALL\n",
            "ops  ALL=(ALL) ALL\n",
            "Defaults !authenticate\n",
        ] {
            assert!(!known_good_sudoers(text), "{text:?}");
        }
    }

    mod nix_like {
        pub fn getuid() -> u32 {
            // SAFETY: getuid cannot fail and touches no memory.
            unsafe { libc::getuid() }
        }
        pub fn getgid() -> u32 {
            // SAFETY: getgid cannot fail and touches no memory.
            unsafe { libc::getgid() }
        }
    }

    #[test]
    fn host_keys_are_made_once_and_kept() {
        if !Path::new("/usr/bin/ssh-keygen").exists() {
            panic!("ssh-keygen is needed (openssh-client; scripts/setup-host installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let lines = host_keys(dir.path(), "root@test").unwrap();
        assert_eq!(
            lines,
            [
                "generated the ed25519 host key",
                "generated the ecdsa host key"
            ]
        );
        let fingerprints = host_key_fingerprints(dir.path()).unwrap();
        assert_eq!(fingerprints.len(), 2, "{fingerprints:?}");
        // OpenSSH reads each private key, finds its public key the one
        // beside it, and only root may read it.
        // What OpenSSH's ssh-keygen says of a key file.
        let ssh_keygen = |option: &str, file: &Path| {
            let out = Command::new("/usr/bin/ssh-keygen")
                .arg(option)
                .arg("-f")
                .arg(file)
                .output()
                .unwrap();
            assert!(out.status.success(), "{option} {}: {out:?}", file.display());
            String::from_utf8(out.stdout).unwrap()
        };
        for kind in HOST_KEY_TYPES {
            let key = host_key_path(dir.path(), kind);
            let derived = ssh_keygen("-y", &key);
            let beside = fs::read_to_string(key.with_extension("pub")).unwrap();
            assert_eq!(
                derived.split_whitespace().take(2).collect::<Vec<_>>(),
                beside.split_whitespace().take(2).collect::<Vec<_>>(),
                "{kind}"
            );
            assert!(beside.ends_with(" root@test\n"), "{beside:?}");
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // Each as ssh-keygen -l says it.
        for (kind, line) in HOST_KEY_TYPES.iter().zip(&fingerprints) {
            let public = host_key_path(dir.path(), kind).with_extension("pub");
            let said = ssh_keygen("-l", &public);
            assert_eq!(line, &format!("host key {}", said.trim()));
        }
        assert!(
            fingerprints[0].starts_with("host key 256 SHA256:"),
            "{fingerprints:?}"
        );
        assert!(
            fingerprints[0].ends_with("root@test (ED25519)"),
            "{fingerprints:?}"
        );
        assert!(
            fingerprints[1].ends_with("root@test (ECDSA)"),
            "{fingerprints:?}"
        );
        let before = fs::read(host_key_path(dir.path(), "ed25519")).unwrap();
        // A half-made pair (no public key) is made again; whole ones stay.
        fs::remove_file(host_key_path(dir.path(), "ecdsa").with_extension("pub")).unwrap();
        let lines = host_keys(dir.path(), "root@test").unwrap();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("generated"))
                .collect::<Vec<_>>(),
            ["generated the ecdsa host key"]
        );
        assert_eq!(
            fs::read(host_key_path(dir.path(), "ed25519")).unwrap(),
            before
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "no temporary files: {names:?}");
    }
}
