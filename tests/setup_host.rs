//! `scripts/setup-host --plan` on a bare machine: what it would install
//! where only git and curl are (Debian 12 and Ubuntu 24.04, as root and as
//! a user), and on this host once it ran: nothing. The bare machines are
//! directories standing for `/` (SETUP_HOST_ROOT) with those two programs
//! and the distribution's os-release and apt sources.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup-host")
}

const DEBIAN_12: &str =
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
const DEBIAN_SOURCES: (&str, &str) = (
    "/etc/apt/sources.list.d/debian.sources",
    "Types: deb\nURIs: http://deb.debian.org/debian\n\
Suites: bookworm bookworm-updates\nComponents: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
);
const UBUNTU_24_04: &str =
    "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n\
VERSION=\"24.04.1 LTS (Noble Numbat)\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n";

/// A machine with git and curl only, its apt sources (path, contents) and
/// a user's empty home.
fn bare(os_release: &str, sources: &[(&str, &str)], extra: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at("/etc/apt/sources.list.d")).unwrap();
    std::fs::create_dir_all(at("/usr/bin")).unwrap();
    std::fs::create_dir_all(at("/home/user")).unwrap();
    std::fs::write(at("/etc/os-release"), os_release).unwrap();
    for (path, contents) in sources {
        std::fs::write(at(path), contents).unwrap();
    }
    for program in ["/usr/bin/git", "/usr/bin/curl"].iter().chain(extra) {
        std::fs::write(at(program), "#!/bin/sh\n").unwrap();
        std::process::Command::new("chmod")
            .arg("755")
            .arg(at(program))
            .status()
            .unwrap();
    }
    root
}

/// The plan for `root` as `uid`: (success, what it said on both outputs).
fn plan(root: Option<&Path>, uid: u32) -> (Output, String) {
    let mut command = Command::new("bash");
    command.arg(script()).arg("--plan");
    if let Some(root) = root {
        command
            .env("SETUP_HOST_ROOT", root)
            .env("SETUP_HOST_UID", uid.to_string())
            .env("HOME", "/home/user")
            // No rustup on the path of a bare machine.
            .env("PATH", "/usr/bin:/bin");
    }
    let output = command.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .replace("\u{1b}[1m", "")
    .replace("\u{1b}[0m", "");
    (output, said)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            all.push(path);
        }
    }
    all.sort();
    all
}

/// The packages of the plan's install line.
fn packages(said: &str) -> Vec<String> {
    let line = said
        .lines()
        .find(|l| l.starts_with("setup: plan: installing Debian packages"))
        .unwrap_or_else(|| panic!("no packages in:\n{said}"));
    let list = line.split_once(": ").unwrap().1.split_once(": ").unwrap().1;
    let list = list.rsplit_once(": ").map_or(list, |(_, l)| l);
    list.split_whitespace().map(String::from).collect()
}

#[test]
fn a_bare_debian_12_gets_everything_as_root() {
    let root = bare(DEBIAN_12, &[DEBIAN_SOURCES], &[]);
    let before = files(root.path());
    let (output, said) = plan(Some(root.path()), 0);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains(
            "setup: plan: adding bookworm-backports (mirror http://deb.debian.org/debian) for QEMU 10"
        ),
        "{said}"
    );
    let packages = packages(&said);
    for wanted in [
        "gcc",
        "libc6-dev",
        "python3",
        "ca-certificates",
        "qemu-system-x86",
        "qemu-system-arm",
        "mmdebstrap",
        "ovmf",
        "nbdkit",
        "dnsmasq-base",
        "gcc-aarch64-linux-gnu",
    ] {
        assert!(packages.iter().any(|p| p == wanted), "{wanted}: {said}");
    }
    assert!(
        !packages.iter().any(|p| p == "curl"),
        "curl is there: {said}"
    );
    for line in [
        "setup: plan: installing rustup and the stable Rust toolchain into ~/.cargo",
        "setup: plan: unpacking Debian's chrony into target/host-tools/chrony",
        "setup: plan: adding Rust targets x86_64-unknown-linux-musl aarch64-unknown-linux-musl",
        "setup: plan: adding Rust components rustfmt clippy",
        "setup: plan done: nothing was changed",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    assert_eq!(files(root.path()), before, "the plan changed the machine");
}

/// Debian 12 from a netinst: its mirror in the one-line sources.list, and
/// no deb822 file but a third party's, for another distribution.
#[test]
fn the_mirror_for_backports_is_the_one_the_host_uses_for_bookworm() {
    let others = (
        "/etc/apt/sources.list.d/docker.sources",
        "Types: deb\nURIs: https://download.example.com/linux/debian\nSuites: trixie\n\
Components: stable\n",
    );
    let list = (
        "/etc/apt/sources.list",
        "# deb cdrom:[Debian GNU/Linux 12.8.0]/ bookworm main\n\
deb http://security.debian.org/debian-security bookworm-security main\n\
deb [arch=amd64] http://ftp.example.org/debian/ bookworm main non-free-firmware\n",
    );
    for sources in [&[list][..], &[others, list]] {
        let root = bare(DEBIAN_12, sources, &[]);
        let (output, said) = plan(Some(root.path()), 0);
        assert!(output.status.success(), "{said}");
        assert!(
            said.contains("adding bookworm-backports (mirror http://ftp.example.org/debian/) for"),
            "{said}"
        );
    }
    let root = bare(DEBIAN_12, &[others, DEBIAN_SOURCES], &[]);
    let (output, said) = plan(Some(root.path()), 0);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("adding bookworm-backports (mirror http://deb.debian.org/debian) for"),
        "{said}"
    );
    let root = bare(DEBIAN_12, &[others], &[]);
    let (output, said) = plan(Some(root.path()), 0);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("setup: cannot find the host's Debian mirror to add bookworm-backports"),
        "{said}"
    );
}

#[test]
fn a_user_installs_through_sudo_or_is_told_what_root_must_install() {
    let root = bare(DEBIAN_12, &[DEBIAN_SOURCES], &["/usr/bin/sudo"]);
    let (output, said) = plan(Some(root.path()), 1000);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("setup: plan: installing Debian packages (with sudo): "),
        "{said}"
    );
    let root = bare(DEBIAN_12, &[DEBIAN_SOURCES], &[]);
    let (output, said) = plan(Some(root.path()), 1000);
    assert!(!output.status.success(), "{said}");
    let refusal = said.lines().last().unwrap();
    assert!(
        refusal.starts_with("setup: not root and no sudo: as root, install the Debian packages ")
            && refusal.contains(" qemu-system-x86"),
        "{said}"
    );
}

#[test]
fn a_bare_ubuntu_24_04_gets_everything_from_its_own_archive() {
    let root = bare(UBUNTU_24_04, &[], &[]);
    let (output, said) = plan(Some(root.path()), 0);
    assert!(output.status.success(), "{said}");
    assert!(!said.contains("backports"), "{said}");
    assert!(said.contains("QEMU 8.2 has no raspi4b machine"), "{said}");
    assert!(
        packages(&said).iter().any(|p| p == "qemu-system-arm"),
        "{said}"
    );
}

/// Once setup-host has run (scripts/test runs it first), its plan on this
/// host is empty: every package it wants is found by the file it looks for.
#[test]
fn this_host_needs_nothing_more() {
    let (output, said) = plan(None, 0);
    assert!(output.status.success(), "{said}");
    let planned: Vec<&str> = said.lines().filter(|l| l.contains("plan: ")).collect();
    assert!(planned.is_empty(), "still to do on this host:\n{said}");
}
