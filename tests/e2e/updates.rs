//! OS updates as a user runs them (docs/updates.md): a PC disk image of
//! version 0.1.0 fetches a signed 0.2.0 bundle over HTTP from the host
//! (`python3 -m http.server` on the guest's own network namespace's
//! loopback, which QEMU's user network shows it as 10.0.2.2), refuses a
//! tampered copy without touching its other slot, installs the real one in
//! slot B and boots it, keeping what the user had.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::disk_image::{disk_copy, login};
use crate::guest::{built_as, built_variant, Guest, Power};

const BOOT: Duration = Duration::from_secs(240);

/// `python3 -m http.server` serving `dir` in the guest's network
/// namespace; killed on drop.
struct Server(Child, u16);

impl Server {
    fn start(guest: &mut Guest, dir: &Path) -> Server {
        let port = 8000;
        let mut child = guest
            .net()
            .command("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        // It says "Serving HTTP on …" once it listens.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(line.contains("Serving HTTP"), "http.server: {line}");
        Server(child, port)
    }

    /// The URL the guest uses (user networking maps 10.0.2.2 to the host).
    fn url(&self, name: &str) -> String {
        format!("http://10.0.2.2:{}/{name}", self.1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn pc_x86_64_updates_over_http_to_slot_b_refuses_a_tampered_bundle_and_keeps_data() {
    let board = "pc-x86_64";
    let v1 = built_as(board, "raw");
    let v2 = built_variant(
        board,
        "raw",
        "v2",
        &["--without", "docker", "--os-version", "0.2.0", "--bundle"],
    );
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let bundle = "brig-pc-x86_64-0.2.0.bundle";
    std::fs::copy(v2.join(bundle), served.join(bundle)).unwrap();
    // One byte of the system image changed, near the end: only the part's
    // hash can tell.
    let mut tampered = std::fs::read(v2.join(bundle)).unwrap();
    let at = tampered.len() - 4096;
    tampered[at] ^= 0x20;
    std::fs::write(served.join("tampered.bundle"), tampered).unwrap();

    let disk = disk_copy(&v1, "brig-pc-x86_64.img", dir.path(), "2G");
    let (key, user_data) = login(dir.path(), "hostname: updated\n");
    let known_hosts = dir.path().join("known_hosts");
    let disk_arg = format!("--disk={}", disk.display());
    let mut guest = Guest::boot_with(
        board,
        &v1,
        &[],
        &[&disk_arg, "--user-data", user_data.to_str().unwrap()],
    );
    guest.wait_for("brig: ready", BOOT);
    let server = Server::start(&mut guest, &served);
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    let before = ssh(&guest, "echo kept > ~/kept.txt; sudo brigctl os status");
    println!("before:\n{before}");
    for line in ["running  0.1.0 (slot A)\n", "other    slot B is empty\n"] {
        assert!(before.contains(line), "{line:?} not in:\n{before}");
    }

    // The tampered bundle: refused, and the upgrade's exit status says so.
    let refused = guest.ssh(
        "brig",
        &key,
        &known_hosts,
        &format!("sudo brigctl os upgrade {}", server.url("tampered.bundle")),
    );
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    println!("tampered:\n{said}");
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("refused: part system.img: its SHA-256 does not match the signed manifest"),
        "{said}"
    );
    let after_refusal = ssh(&guest, "sudo brigctl os status");
    assert!(
        after_refusal.contains("other    slot B is empty\n"),
        "{after_refusal}"
    );

    let installed = ssh(
        &guest,
        &format!("sudo brigctl os upgrade {}", server.url(bundle)),
    );
    println!("upgrade:\n{installed}");
    assert!(
        installed.contains("installed 0.2.0 in slot B; it starts at the next boot"),
        "{installed}"
    );
    assert!(installed.contains("system.img: 50% of "), "{installed}");
    let pending = ssh(&guest, "sudo brigctl os status");
    assert!(
        pending.contains("booted   0.2.0 is installed and starts at the next boot\n"),
        "{pending}"
    );
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(server);
    drop(guest);

    // The same disk, no seed this time: version 0.2.0 from slot B, on trial,
    // with the user's files, host keys and hostname.
    let mut guest = Guest::boot_with(board, &v1, &[], &[&disk_arg]);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("brig: system partition /dev/vda3 mounted on /lib/brig"),
        "{serial}"
    );
    let after = ssh(
        &guest,
        "hostname; cat ~/kept.txt; sudo brigctl status | head -1; sudo brigctl os status",
    );
    println!("after:\n{after}");
    assert!(
        after.starts_with("updated\nkept\nversion  0.2.0\n"),
        "{after}"
    );
    for line in [
        "running  0.2.0 (slot B)\n",
        "booted   on trial: boot 1 of 3",
        "other    0.1.0 in slot A (good)\n",
        "last     installed 0.2.0 in slot B",
    ] {
        assert!(after.contains(line), "{line:?} not in:\n{after}");
    }
    guest.press_power_button();
}
