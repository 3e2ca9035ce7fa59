//! OS updates as a user runs them (docs/updates.md): a PC disk image of
//! version 0.1.0 fetches signed bundles over HTTP from the host (`brig
//! bundle serve` on the guest's own network namespace's loopback, which
//! QEMU's user network shows it as 10.0.2.2). It refuses a tampered copy
//! without touching its other slot, installs the real one in slot B, boots
//! it and marks it good once healthy, keeping what the user had (and a
//! bundle for another board, from a file, is refused); power cuts during
//! an upgrade always leave one whole version to boot; and it
//! comes back to 0.1.0 by itself from versions that cannot boot or boot
//! without a network.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::disk_image::{disk_copy, login};
use crate::guest::{built_as, built_variant, Guest, Power};

const BOOT: Duration = Duration::from_secs(240);
/// `brig.update` for the tests: a short grace time, and the shortest
/// health timeout Brig takes.
const TRIAL: &str = "brig:\n  update:\n    grace_time: 5\n    health_timeout: 30\n";

/// `brig bundle serve` serving `dir` in the guest's network namespace
/// (its loopback, which QEMU's user network shows the guest as
/// 10.0.2.2); killed on drop.
pub struct Server(Child, u16);

impl Server {
    pub fn start(guest: &mut Guest, dir: &Path) -> Server {
        let port = 8000;
        let mut child = guest
            .net()
            .command(crate::guest::BRIG)
            .args(["bundle", "serve"])
            .arg(dir)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("brig bundle serve");
        // It says "serving DIR (N bundles) on http://…" once it listens.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(
            line.starts_with("serving ") && line.contains(" on http://127.0.0.1:8000/"),
            "brig bundle serve: {line}"
        );
        Server(child, port)
    }

    /// The URL the guest uses (user networking maps 10.0.2.2 to the host).
    pub fn url(&self, name: &str) -> String {
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
    let (key, user_data) = login(dir.path(), &format!("hostname: updated\n{TRIAL}"));
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

    // A bundle for another board, from a file on the machine: refused.
    let other_board = built_as("qemu-x86_64", "raw").join("brig-qemu-x86_64-0.1.0.bundle");
    guest.scp_to("brig", &key, &known_hosts, &other_board);
    let refused = guest.ssh(
        "brig",
        &key,
        &known_hosts,
        "sudo brigctl os upgrade brig-qemu-x86_64-0.1.0.bundle",
    );
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    println!("other board:\n{said}");
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("reading the file brig-qemu-x86_64-0.1.0.bundle (")
            && said.contains(
                "refused: the bundle is for the qemu-x86_64 board and this machine is pc-x86_64"
            ),
        "{said}"
    );
    let after_refusal = ssh(
        &guest,
        "rm brig-qemu-x86_64-0.1.0.bundle; sudo brigctl os status",
    );
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

    // The same disk, no seed this time: version 0.2.0 from slot B, on trial
    // until healthy for the grace time, then marked good; with the user's
    // files, host keys and hostname.
    let mut guest = Guest::boot_with(board, &v1, &[], &[&disk_arg]);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("brig: system partition /dev/vda3 mounted on /lib/brig"),
        "{serial}"
    );
    assert!(
        serial.contains("brig: update: 0.2.0 (slot B, boot 1 of 3) is on trial"),
        "{serial}"
    );
    let blessed = "brig: update: 0.2.0 (slot B) booted healthy: marked good (brig-2-0.2.0+2-1.conf is now brig-2-0.2.0.conf)";
    let serial = guest.wait_for(blessed, BOOT);
    let healthy = "brig: update: 0.2.0 (slot B, boot 1 of 3) is healthy";
    assert!(serial.contains(healthy), "{serial}");
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
        "booted   the newest good version\n",
        "other    0.1.0 in slot A (good)\n",
        "last     0.2.0 (slot B) booted healthy: marked good",
    ] {
        assert!(after.contains(line), "{line:?} not in:\n{after}");
    }
    guest.press_power_button();
}

/// A boot of the version on trial that did not become ready: one the boot
/// loader counted as a try.
struct Try {
    serial: String,
    /// Killed by the test: the kernel stalled before PID 1 (see
    /// `boot_until_ready`), so it could not show how the version fails.
    stalled: bool,
}

/// Boots `disk` until a boot reaches PID 1's `brig: ready` with no version
/// on trial (the boot loader chose a good version), at most `most` times;
/// QEMU ends at each reboot (`--no-reboot`), and each new start is the
/// machine's reset. Returns the boots of `trying` that ended before that
/// one (its tries), and the ready boot's guest.
///
/// Under TCG on a loaded host a guest rarely stalls for minutes
/// (docs/testing.md, "A kernel that stalls before PID 1"). Before PID 1 no
/// watchdog resets it, so a boot with no PID 1 `PID1_WITHIN` after QEMU
/// started is ended here, as a reset would; once PID 1 has armed the
/// watchdog, such a stall is a reset. Either way its console is kept in
/// target/e2e/retried-boots/, said on stderr, and the machine is booted
/// again. A stalled boot of `trying` is one of its tries (the boot loader
/// counted it when it chose it); a boot of another version that ends
/// before it is ready is not. One such boot is allowed; a second fails the
/// test, saying how it ended.
fn boot_until_ready(
    board: &str,
    artifacts: &Path,
    disk_arg: &str,
    trying: &str,
    most: usize,
) -> (Vec<Try>, Guest) {
    let mut tries = Vec::new();
    let mut strays = 0;
    for _ in 0..most {
        let mut guest = Guest::boot_unwatched(board, artifacts, &[disk_arg]);
        let deadline = std::time::Instant::now() + BOOT;
        loop {
            let serial = guest.serial();
            if serial.contains("brig: ready") && !serial.contains(") is on trial") {
                return (tries, guest);
            }
            let ended = match guest.exited() {
                Some(status) => Some(format!("ended ({status})")),
                None if guest.stalled_before_pid1(&serial) => {
                    Some("stalled before PID 1 (no PID 1 within 90 s)".to_string())
                }
                None => None,
            };
            if let Some(how) = ended {
                let stalled = !how.starts_with("ended");
                let of_trying = booted_version(&serial) == Some(trying);
                if of_trying && !stalled {
                    tries.push(Try { serial, stalled });
                    break;
                }
                let summary = boot_summary(&serial);
                strays += 1;
                assert!(
                    strays < 2,
                    "a second boot {how} before it was ready, not a try of {trying} that failed as it should:\n{summary}\n\nits whole console:\n{serial}"
                );
                if of_trying {
                    tries.push(Try { serial, stalled });
                }
                let whose = if of_trying {
                    "of"
                } else {
                    "of a version other than"
                };
                guest.give_up(
                    board,
                    &format!("a boot {whose} {trying} {how} before it was ready:\n{summary}\n"),
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a boot neither became ready nor ended in {BOOT:?}; {}",
                guest.console_report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!(
        "{most} boots and none became ready; the last try of {trying}:\n{}",
        tries.last().map_or("(none)", |t| t.serial.as_str())
    );
}

/// The version whose kernel a boot's console shows systemd-boot started:
/// its entry's `initrd=\brig\<slot>-<version>\initramfs.img`.
fn booted_version(serial: &str) -> Option<&str> {
    let line = serial.lines().find(|l| l.contains("Command line:"))?;
    let dir = line.split("initrd=\\brig\\").nth(1)?.split('\\').next()?;
    dir.split_once('-').map(|(_, version)| version)
}

/// A boot's console in a few lines for a failure message (a CI summary
/// shows only the head of one): the kernel's command line, which says
/// which version booted, how it ended (PID 1's reboot, a panic, or
/// neither: a watchdog reset or a kill), and the console's last lines.
fn boot_summary(serial: &str) -> String {
    let lines: Vec<&str> = serial.lines().collect();
    let command_line = lines
        .iter()
        .find(|l| l.contains("Command line:"))
        .unwrap_or(&"(no kernel command line)");
    let ended = if serial.contains("reboot: Restarting system") {
        "it rebooted"
    } else if serial.contains("Kernel panic") {
        "its kernel panicked"
    } else {
        "neither a reboot nor a panic on its console: a watchdog reset, or QEMU killed"
    };
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    format!("{command_line}\n{ended}; its console ends:\n{tail}")
}

/// Two bad updates, each left to the machine: 0.2.0's kernel panics
/// before PID 1 runs (its initramfs has no such init), and 0.3.0 boots but
/// never gets a network (its virtio_net driver is refused). Each uses up
/// its 3 tries, and then 0.1.0 boots again by itself, says why, and keeps
/// the user's data.
pub fn pc_x86_64_rolls_back_by_itself_from_a_version_that_panics_and_one_without_network() {
    let board = "pc-x86_64";
    let v1 = built_as(board, "raw");
    let panics = built_variant(
        board,
        "raw",
        "panics",
        &[
            "--without",
            "docker",
            "--os-version",
            "0.2.0",
            "--bundle",
            "--kernel-arg",
            "rdinit=/no-such-init",
            "--kernel-arg",
            "panic=1",
        ],
    );
    let offline = built_variant(
        board,
        "raw",
        "offline",
        &[
            "--without",
            "docker",
            "--os-version",
            "0.3.0",
            "--bundle",
            "--kernel-arg",
            "module_blacklist=virtio_net",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    for (built, version) in [(&panics, "0.2.0"), (&offline, "0.3.0")] {
        let bundle = format!("brig-pc-x86_64-{version}.bundle");
        std::fs::copy(built.join(&bundle), served.join(&bundle)).unwrap();
    }
    let disk = disk_copy(&v1, "brig-pc-x86_64.img", dir.path(), "2G");
    let (key, user_data) = login(dir.path(), TRIAL);
    let known_hosts = dir.path().join("known_hosts");
    let disk_arg = format!("--disk={}", disk.display());
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    let mut guest = Guest::boot_with(
        board,
        &v1,
        &[],
        &[&disk_arg, "--user-data", user_data.to_str().unwrap()],
    );
    guest.wait_for("brig: ready", BOOT);
    ssh(&guest, "echo kept > ~/kept.txt");

    for (version, failure, slot_b_failed) in [
        (
            "0.2.0",
            "Kernel panic - not syncing",
            "0.2.0 in slot B (failed: it did not boot healthy in 3 tries)",
        ),
        (
            "0.3.0",
            "brig: error: update: 0.3.0 (slot B, boot",
            "0.3.0 in slot B (failed: it did not boot healthy in 3 tries)",
        ),
    ] {
        let server = Server::start(&mut guest, &served);
        let url = server.url(&format!("brig-pc-x86_64-{version}.bundle"));
        let installed = ssh(&guest, &format!("sudo brigctl os upgrade {url}"));
        assert!(
            installed.contains(&format!("installed {version} in slot B")),
            "{installed}"
        );
        guest.brigctl_power(&key, &known_hosts, Power::Reboot);
        drop(server);
        drop(guest);

        let (failed, back) = boot_until_ready(board, &v1, &disk_arg, version, 6);
        guest = back;
        println!("{version}: {} boots failed, then:", failed.len());
        assert_eq!(
            failed.len(),
            3,
            "{version}: not 3 failed tries of it:\n{}\n\nwhole consoles:\n{}",
            failed
                .iter()
                .map(|t| boot_summary(&t.serial))
                .collect::<Vec<_>>()
                .join("\n====\n"),
            failed
                .iter()
                .map(|t| t.serial.as_str())
                .collect::<Vec<_>>()
                .join("\n====\n")
        );
        for (n, Try { serial, stalled }) in failed.iter().enumerate() {
            if *stalled {
                // Ended by the test before the version could show how it
                // fails; said on stderr with its console kept.
                continue;
            }
            assert!(
                serial.contains(failure),
                "{version}, try {}: no {failure:?}:\n{serial}",
                n + 1
            );
            if version == "0.3.0" {
                let reason = format!("brig: error: update: 0.3.0 (slot B, boot {} of 3) was not healthy 30 s after boot: the network is not configured (no interface has an address); rebooting", n + 1);
                assert!(serial.contains(&reason), "{reason:?} not in:\n{serial}");
            }
        }
        let serial = guest.serial();
        let said = format!("brig: update: rolled back: {version} (slot B) failed to boot healthy 3 times; 0.1.0 runs again");
        assert!(serial.contains(&said), "{said:?} not in:\n{serial}");
        let status = ssh(&guest, "cat ~/kept.txt; sudo brigctl os status");
        println!("{status}");
        for line in [
            "kept\n".to_string(),
            "running  0.1.0 (slot A)\n".to_string(),
            format!("booted   rolled back: {version} (slot B) failed to boot healthy 3 times\n"),
            format!("other    {slot_b_failed}\n"),
        ] {
            assert!(status.contains(&line), "{line:?} not in:\n{status}");
        }
        // 0.2.0 never reached PID 1 to say how its trial went: the
        // rollback takes the place of "installed"; 0.3.0 said why itself.
        let last = match version {
            "0.2.0" => format!("last     {}", &said["brig: update: ".len()..]),
            _ => "last     0.3.0 (slot B, boot 3 of 3) was not healthy 30 s after boot".to_string(),
        };
        assert!(status.contains(&last), "{last:?} not in:\n{status}");
    }
    // A machine told to follow 0.3.0's URL does not take it again: it
    // failed here, and would loop through its tries forever.
    let server = Server::start(&mut guest, &served);
    let url = server.url("brig-pc-x86_64-0.3.0.bundle");
    ssh(
        &guest,
        &format!("sudo brigctl config set brig.update.url {url}"),
    );
    let refused = format!("brig: update: {url} holds 0.3.0, which slot B holds already (failed: it did not boot healthy in 3 tries): not installed again");
    guest.wait_for(&refused, BOOT);
    drop(server);
    guest.press_power_button();
}

/// The power cut at ten moments of `brigctl os upgrade`: while the bundle
/// is checked, as the install starts, through the system image's writing
/// and around the kernel and the entry, each a little later than its
/// console line by a random delay. After each cut the machine boots one
/// whole version, healthy, with the user's data; after the last, an
/// upgrade that is let finish boots 0.2.0 and marks it good.
pub fn pc_x86_64_power_cuts_during_an_upgrade_always_leave_one_whole_version() {
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
    let disk = disk_copy(&v1, "brig-pc-x86_64.img", dir.path(), "2G");
    let (key, user_data) = login(dir.path(), TRIAL);
    let known_hosts = dir.path().join("known_hosts");
    let disk_arg = format!("--disk={}", disk.display());
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    // The console line each cut waits for, and the most it then waits.
    // Parts come in this order: vmlinuz, initramfs.img, system.img; then
    // the kernel files are renamed and the entry written.
    let cuts = [
        ("to check it", 0),
        ("to check it", 4000),
        ("installing in slot B", 0),
        ("vmlinuz: 50% of", 300),
        ("vmlinuz: 100% of", 300),
        ("system.img: 10% of", 300),
        ("system.img: 50% of", 300),
        ("system.img: 90% of", 300),
        ("system.img: 100% of", 0),
        ("system.img: 100% of", 300),
    ];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("upgrade power cuts: delay seed {seed}");
    let mut guest = Guest::boot_with(
        board,
        &v1,
        &[],
        &[&disk_arg, "--user-data", user_data.to_str().unwrap()],
    );
    guest.wait_for("brig: ready", BOOT);
    // Synced: a cut may come within ext4's five seconds of commit delay.
    ssh(&guest, "echo kept > ~/kept.txt && sync");
    for (n, (line, most)) in cuts.iter().enumerate() {
        let server = Server::start(&mut guest, &served);
        let mut upgrade = guest
            .ssh_command(
                "brig",
                &key,
                &known_hosts,
                &[],
                &format!("sudo brigctl os upgrade {}", server.url(bundle)),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        guest.wait_for(line, BOOT);
        // xorshift64: the delay after the line, replayable from the seed.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = if *most == 0 { 0 } else { seed % most };
        std::thread::sleep(Duration::from_millis(delay));
        guest.pull_the_plug();
        let _ = upgrade.kill();
        let _ = upgrade.wait();
        let finished = guest.serial().contains("brig: update: installed 0.2.0");
        println!(
            "cut {}: {delay} ms after {line:?}; install finished before it: {finished}",
            n + 1
        );
        drop(server);
        drop(guest);

        guest = Guest::boot_with(board, &v1, &[], &[&disk_arg]);
        let serial = guest.wait_for("brig: ready", BOOT);
        assert!(
            serial.contains("brig: ready [t="),
            "cut {}: not every service came up:\n{serial}",
            n + 1
        );
        let status = ssh(
            &guest,
            "cat ~/kept.txt; sudo brigctl status | head -1; sudo brigctl os status",
        );
        // One whole version, all its services up: the one the image in its
        // slot says it is (0.2.0 only if the cut came after its entry was
        // written, the install's last step).
        let whole = status.starts_with("kept\nversion  0.1.0\n")
            && status.contains("running  0.1.0 (slot A)\n")
            || status.starts_with("kept\nversion  0.2.0\n")
                && status.contains("running  0.2.0 (slot B)\n");
        assert!(whole, "cut {}: {status}", n + 1);
        // From the kernel's writing until the entry is written and the boot
        // partition unmounted, it was mounted when the power went: the
        // next boot's fsck.fat finds it dirty and frees what the cut left
        // owned by nothing (without it, the space leaked and a later
        // install found too little room). A cut after the install leaves
        // 0.2.0 to boot and the partition clean.
        let repaired = serial.contains("brig: boot partition /dev/vda1: fsck.fat repaired it");
        let runs_new = status.contains("running  0.2.0");
        println!(
            "cut {}: fsck.fat repaired the boot partition: {repaired}",
            n + 1
        );
        if n >= 3 {
            assert!(
                repaired || runs_new,
                "cut {}: no fsck.fat repair:\n{serial}",
                n + 1
            );
        }
        if status.contains("running  0.2.0") {
            // The cut came after the install: 0.2.0 is whole. Back to
            // 0.1.0, the way a user goes back, to cut the next install.
            println!(
                "cut {}: the install had finished; rolling back to go on",
                n + 1
            );
            guest.wait_for("booted healthy: marked good", BOOT);
            let back = ssh(&guest, "sudo brigctl os rollback");
            assert!(back.contains("0.1.0"), "{back}");
            guest.brigctl_power(&key, &known_hosts, Power::Reboot);
            drop(guest);
            guest = Guest::boot_with(board, &v1, &[], &[&disk_arg]);
            guest.wait_for("brig: ready", BOOT);
            let status = ssh(&guest, "sudo brigctl os status");
            assert!(status.starts_with("running  0.1.0 (slot A)\n"), "{status}");
        }
    }
    // The leftovers of ten cut installs do not stop a whole one, which the
    // machine now takes by itself, as a fleet's machines do: told where to
    // look (`brig.update.url`), it checks at once, installs and reboots.
    let server = Server::start(&mut guest, &served);
    let url = server.url(bundle);
    ssh(
        &guest,
        &format!("sudo brigctl config set brig.update.url {url}"),
    );
    let status = guest.wait_exit(BOOT);
    let serial = guest.serial();
    println!("brig.update.url: QEMU {status}");
    for said in [
        "brig: update: installed 0.2.0 in slot B".to_string(),
        "brig: update: installed from brig.update.url; rebooting into it now".into(),
    ] {
        assert!(serial.contains(&said), "{said:?} not in:\n{serial}");
    }
    drop(server);
    drop(guest);
    let mut guest = Guest::boot_with(board, &v1, &[], &[&disk_arg]);
    guest.wait_for("brig: ready", BOOT);
    let server = Server::start(&mut guest, &served);
    guest.wait_for(
        "brig: update: 0.2.0 (slot B) booted healthy: marked good",
        BOOT,
    );
    // Marked good, it looks again: the bundle is what it runs.
    let nothing =
        format!("brig: update: {url} holds 0.2.0, and this machine runs 0.2.0: nothing to install");
    guest.wait_for(&nothing, BOOT);
    let status = ssh(&guest, "cat ~/kept.txt; sudo brigctl os status");
    assert!(
        status.starts_with("kept\nrunning  0.2.0 (slot B)\n"),
        "{status}"
    );
    drop(server);
    guest.press_power_button();
}

/// `brigctl install` as a user runs it (docs/updates.md, "Installing to a
/// disk"): the PC image written to a USB stick, its `user-data` on the
/// stick's boot partition as edited on another computer, booted on a
/// machine with two more disks. Installing onto the stick itself, a
/// partition, a disk that does not exist, one too small, or without
/// `--yes` is refused; then the running version installs onto the empty
/// disk, which boots alone, makes its state partition, lets the user in
/// with the stick's config and shows one version in slot A.
pub fn pc_x86_64_installs_itself_from_a_usb_stick_onto_the_machines_disk() {
    use crate::guest::{assert_says, run};
    use std::process::Command;
    let board = "pc-x86_64";
    let v1 = built_as(board, "raw");
    let dir = tempfile::tempdir().unwrap();
    let stick = disk_copy(&v1, "brig-pc-x86_64.img", dir.path(), "2G");
    let (key, user_data) = login(
        dir.path(),
        "hostname: installed\nmounts:\n  - [ LABEL=data, /mnt/data ]\n",
    );
    let table = |image: &Path| -> serde_json::Value {
        let json = run(Command::new("sfdisk").arg("--json").arg(image));
        serde_json::from_str(&json).unwrap()
    };
    let stick_table = table(&stick);
    let boot_start = stick_table["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{}", stick.display(), boot_start * 512))
        .arg(&user_data)
        .arg("::user-data"));
    let blank = |name: &str, size: u64| {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        path
    };
    let disk = blank("disk.img", 3 << 30);
    let small = blank("small.img", 300 << 20);
    // A data disk the machine mounts: in use, so refused.
    let data = blank("data.img", 1 << 30);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "data"])
        .arg(&data));
    let drive = |image: &Path| format!("--qemu-arg=file={},format=raw,if=virtio", image.display());
    let known_hosts = dir.path().join("known_hosts");
    let mut guest = Guest::boot_with(
        board,
        &v1,
        &[],
        &[
            &format!("--disk={}", stick.display()),
            "--qemu-arg=-drive",
            &drive(&disk),
            "--qemu-arg=-drive",
            &drive(&small),
            "--qemu-arg=-drive",
            &drive(&data),
        ],
    );
    guest.wait_for("brig: ready", BOOT);
    let disks = "this machine's disks: /dev/vda, /dev/vdb, /dev/vdc, /dev/vdd";
    for (command, error) in [
        (
            "sudo brigctl install --device /dev/vdb",
            "brigctl: this erases /dev/vdb: pass --yes to go on (no terminal to ask on)",
        ),
        (
            "sudo brigctl install --device /dev/vda --yes",
            "brigctl: /dev/vda is the disk this machine booted from: install onto another disk",
        ),
        (
            "sudo brigctl install --device /dev/vda2 --yes",
            &format!("brigctl: /dev/vda2 is a partition: name the whole disk; {disks}"),
        ),
        (
            "sudo brigctl install --device /dev/sdz --yes",
            &format!("brigctl: there is no disk /dev/sdz; {disks}"),
        ),
        (
            "sudo brigctl install --device /dev/../vdb --yes",
            "brigctl: /dev/../vdb: name a disk of this machine, as /dev/sdb or /dev/nvme0n1",
        ),
        (
            "sudo brigctl install --device /dev/vdd --yes",
            "brigctl: /dev/vdd is in use (a partition of it is mounted, or LVM, RAID or dm-crypt holds it): nothing was written",
        ),
        (
            "sudo brigctl install --device /dev/vdc --yes",
            "brigctl: /dev/vdc holds 300 MiB; Brig needs 642 MiB (a boot partition, two system slots and at least 64 MiB for the state partition): nothing was written",
        ),
        (
            "brigctl install --device /dev/vdb --yes",
            "brigctl: permission denied: installing onto a disk needs root (sudo brigctl …)",
        ),
    ] {
        let out = guest.ssh("brig", &key, &known_hosts, command);
        let error: &str = error;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: succeeded");
        assert!(stderr.contains(error), "{command}: {error:?} not in:\n{stderr}");
    }
    let said = guest.ssh_ok(
        "brig",
        &key,
        &known_hosts,
        "sudo brigctl install --device /dev/vdb --yes",
    );
    println!("{said}");
    assert_says(
        &said,
        &[
            "installing 0.1.0 (pc-x86_64) from /dev/vda onto /dev/vdb (3072 MiB); everything on /dev/vdb is erased\n",
            "BRIG_SYSTEM_A: 100% of ",
            "/dev/vdb: the copies read back the same\n",
            "installed 0.1.0 onto /dev/vdb (slot A); its state partition is made at its first boot. Power off, remove the USB stick, and boot from /dev/vdb\n",
        ],
    );
    guest.brigctl_power(&key, &known_hosts, Power::PowerOff);
    drop(guest);

    // Nothing was written to the disk that was too small, nor to the one
    // in use: still the ext4 it was, and no partition table.
    let zeros = std::fs::read(&small).unwrap().iter().all(|b| *b == 0);
    assert!(zeros, "the refused disk was written to");
    let probe = run(Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&data));
    assert_says(&probe, &["TYPE=ext4\n", "LABEL=data\n"]);
    assert!(!probe.contains("PTTYPE"), "{probe}");
    // The stick's layout, with GUIDs of the disk's own.
    let installed = table(&disk);
    let parts = |t: &serde_json::Value| -> Vec<(String, u64, String)> {
        t["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["start"].as_u64().unwrap(),
                    p["uuid"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let (on_stick, on_disk) = (parts(&table(&stick)), parts(&installed));
    let names: Vec<&str> = on_disk.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        ["BRIG_BOOT", "BRIG_SYSTEM_A", "BRIG_SYSTEM_B"],
        "{installed}"
    );
    for (stick_part, disk_part) in on_stick.iter().zip(&on_disk) {
        assert_eq!(stick_part.1, disk_part.1, "{installed}");
        assert_ne!(stick_part.2, disk_part.2, "the same GUID on both disks");
    }

    // The installed disk alone, as the machine boots once the stick is out.
    let known_hosts = dir.path().join("known_hosts.installed");
    let mut guest = Guest::boot_with(board, &v1, &[], &[&format!("--disk={}", disk.display())]);
    let serial = guest.wait_for("brig: ready", BOOT);
    // systemd-boot started the one entry, which names the disk's own slot.
    let cmdline = format!("brig.system=PARTUUID={}", on_disk[1].2.to_uppercase());
    assert_says(
        &serial,
        &[
            "Command line: initrd=\\brig\\a-0.1.0\\initramfs.img",
            &cmdline,
            "brig: system partition /dev/vda2 mounted on /lib/brig",
            "brig: state: making the state partition in /dev/vda's free space",
            "brig: config: from /dev/vda1 (boot partition BRIG_BOOT)",
        ],
    );
    let status = guest.ssh_ok(
        "brig",
        &key,
        &known_hosts,
        "hostname; sudo brigctl os status; sudo brigctl status",
    );
    println!("{status}");
    assert_says(
        &status,
        &[
            "installed\n",
            "running  0.1.0 (slot A)\n",
            "other    slot B is empty\n",
            "boot     disk /dev/vda (system partition /dev/vda2, slot A)\n",
            "state    /dev/vda4 at /var/lib/brig: ",
        ],
    );
    guest.brigctl_power(&key, &known_hosts, Power::PowerOff);
}
