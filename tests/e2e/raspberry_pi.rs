//! Raspberry Pi cards (`brig build --board rpi3|rpi4`) as a user makes and
//! uses them: the boot partition holds what the board file names, the card
//! boots in QEMU's raspi3b and raspi4b (`brig run` takes U-Boot and the
//! device tree off that partition, as the Pi's firmware would), makes its
//! state partition on first boot and answers ssh, updates itself into its
//! other slot and rolls back by itself from a version that panics; and
//! `brig flash` writes the card, refusing the disks it must not touch.
//!
//! Longer than 600 lines because the two boards' cards are checked as one
//! user story (build, inspect, boot, state partition, flash), sharing the
//! cards it builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::guest::{
    assert_says, brig, built_as, built_variant, key_pair, run, source_dir, Guest, Power,
};

/// First boot makes and formats the state partition: slow under TCG.
const BOOT: Duration = Duration::from_secs(420);

/// The USB network adapter comes up after `brig: ready`: 15–25 s, later
/// on a loaded host (the DHCP ACK came at most 30 s after it in the runs
/// on record).
const LEASE_AFTER_READY: Duration = Duration::from_secs(60);

/// What the kernel says, again and again, when QEMU's USB host model has
/// lost the adapter (never seen in a boot that got its lease).
const ADAPTER_LOST: &str = "dwc2";
const NOT_CONNECTED: &str = ": Not connected";

/// The boot partition's start in a card image, from the image's table.
fn boot_offset(image: &Path) -> u64 {
    let table = run(Command::new("sfdisk").arg("--json").arg(image));
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let boot = &table["partitiontable"]["partitions"][0];
    assert_eq!(boot["name"], "BRIG_BOOT", "{table}");
    boot["start"].as_u64().unwrap() * 512
}

/// A file off the card's boot partition.
fn boot_file(image: &Path, name: &str) -> Vec<u8> {
    let volume = format!("{}@@{}", image.display(), boot_offset(image));
    Command::new("mcopy")
        .args(["-n", "-i", &volume, &format!("::{name}"), "-"])
        .output()
        .unwrap()
        .stdout
}

fn board_file(board: &str) -> toml::Table {
    let text = std::fs::read_to_string(source_dir().join(format!("boards/{board}.toml"))).unwrap();
    toml::from_str(&text).unwrap()
}

fn strings(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

pub fn pi_cards_hold_what_their_board_files_name() {
    for board in ["rpi3", "rpi4"] {
        let built = built_as(board, "raw");
        let image = built.join(format!("brig-{board}.img"));
        let spec = board_file(board);
        let pi = spec["raspberry_pi"].as_table().unwrap();

        // The firmware reads the MBR: the boot partition (FAT32 LBA) in
        // the first slot, the protective GPT entry from LBA 1 in the second.
        let lba0 = &std::fs::read(&image).unwrap()[..512];
        let entry = |slot: usize| &lba0[446 + slot * 16..446 + (slot + 1) * 16];
        assert_eq!(entry(0)[4], 0x0c, "{board}: slot 1 is not FAT32 (LBA)");
        assert_eq!(
            u32::from_le_bytes(entry(0)[8..12].try_into().unwrap()) as u64 * 512,
            boot_offset(&image)
        );
        assert_eq!(entry(1)[4], 0xee, "{board}: slot 2 is not protective");
        assert_eq!(u32::from_le_bytes(entry(1)[8..12].try_into().unwrap()), 1);

        let listing = run(Command::new("mdir").args([
            "-/",
            "-b",
            "-i",
            &format!("{}@@{}", image.display(), boot_offset(&image)),
            "::",
        ]));
        let mut wanted = strings(&pi["firmware"]);
        wanted.extend(strings(&pi["device_trees"]).iter().map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        }));
        wanted.extend(
            [
                "u-boot.bin",
                "boot.scr",
                "uboot.env",
                "uboot.env.backup",
                "brig/a-0.1.0/vmlinuz",
                "brig/a-0.1.0/initramfs.img",
                "config.txt",
                "user-data",
            ]
            .map(String::from),
        );
        for name in &wanted {
            assert!(
                listing.lines().any(|l| l == format!("::/{name}")),
                "{board}: {name} not on the boot partition:\n{listing}"
            );
            assert!(
                !boot_file(&image, name).is_empty(),
                "{board}: {name} is empty"
            );
        }
        // Slot A's kernel is the bundle's: gzip'd for U-Boot.
        assert_eq!(
            boot_file(&image, "brig/a-0.1.0/vmlinuz"),
            std::fs::read(built.join("vmlinuz.gz")).unwrap()
        );
        assert_eq!(boot_file(&image, "cmdline.txt"), b"\n");

        let config = String::from_utf8(boot_file(&image, "config.txt")).unwrap();
        let mut lines = vec![
            "arm_64bit=1".to_string(),
            "kernel=u-boot.bin".into(),
            "enable_uart=1".into(),
            "upstream_kernel=1".into(),
        ];
        lines.extend(strings(
            pi.get("config").unwrap_or(&toml::Value::Array(vec![])),
        ));
        for line in &lines {
            assert!(
                config.lines().any(|l| l == line),
                "{board}: {line:?} not in config.txt:\n{config}"
            );
        }

        // U-Boot's environment: slot A, version 0.1.0, no trial; its
        // command line has the board's console and words, the system
        // partition by its PARTUUID.
        let env = brig_spec::uboot::decode_env(&boot_file(&image, "uboot.env")).unwrap();
        assert_eq!(
            boot_file(&image, "uboot.env.backup"),
            boot_file(&image, "uboot.env")
        );
        let slots = brig_spec::uboot::Slots::from_env(&env);
        assert_eq!(slots.b, None, "{board}: slot B boots nothing yet");
        let a = slots.a.expect("slot A in uboot.env");
        assert_eq!((a.name.generation, a.name.counter), (1, None));
        let cmdline = a.cmdline;
        let table = run(Command::new("sfdisk").arg("--json").arg(&image));
        let table: serde_json::Value = serde_json::from_str(&table).unwrap();
        let system = &table["partitiontable"]["partitions"][1];
        assert_eq!(system["name"], "BRIG_SYSTEM_A");
        let mut expected = vec![format!("console={}", spec["console"].as_str().unwrap())];
        expected.extend(strings(&spec["cmdline"]));
        expected.push(format!(
            "brig.system=PARTUUID={}",
            system["uuid"].as_str().unwrap()
        ));
        assert_eq!(cmdline.trim(), expected.join(" "), "{board}");

        // The example the user edits (its validity: raspberry_pi.rs's tests).
        let example = String::from_utf8(boot_file(&image, "user-data")).unwrap();
        assert!(example.starts_with("#cloud-config\n"), "{example}");
        assert!(example.contains("# ssh_authorized_keys:"), "{example}");

        // The compressed copy is the same image.
        let unpacked = Command::new("zstd")
            .args(["-dc"])
            .arg(built.join(format!("brig-{board}.img.zst")))
            .output()
            .unwrap();
        assert!(unpacked.status.success());
        assert!(
            unpacked.stdout == std::fs::read(&image).unwrap(),
            "{board}: the .img.zst is not the image"
        );
        report(&format!(
            "{board}: image {} MiB raw, {:.1} MiB compressed",
            std::fs::metadata(&image).unwrap().len() >> 20,
            std::fs::metadata(built.join(format!("brig-{board}.img.zst")))
                .unwrap()
                .len() as f64
                / (1 << 20) as f64
        ));
    }
}

/// A figure for the closing notes: printed (seen with --nocapture) and
/// added to target/e2e/raspberry-pi-figures.txt (kept when tests pass).
fn report(figure: &str) {
    println!("{figure}");
    let path = source_dir().join("target/e2e/raspberry-pi-figures.txt");
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        use std::io::Write;
        let _ = writeln!(file, "{figure}");
    }
}

/// A copy of the built card with the user's ssh key in its `user-data` (as
/// the user edits it after flashing), booted; returns the guest once it is
/// ready and has its DHCP lease, with the key, known_hosts and the boot's
/// figures.
///
/// QEMU's USB host controller model (dwc2) on a loaded host now and then
/// never connects the USB network adapter ("dwc2 …: Not connected"), so
/// the guest gets no lease. Such a card is booted once more from a fresh
/// copy, said on stderr; a second time fails the test.
fn boot_card(
    board: &str,
    machine: &str,
    dir: &Path,
    extra: &str,
) -> (Guest, PathBuf, PathBuf, String) {
    let (key, public) = key_pair(dir, "key");
    let user_data = dir.join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nhostname: {board}-card\nssh_authorized_keys: ['{public}']\n{extra}"
        ),
    )
    .unwrap();
    let known_hosts = dir.join("known_hosts");
    let mut retried = false;
    loop {
        let (guest, figures) = boot_card_once(board, machine, &dir.join("card.img"), &user_data);
        match lease_or_lost_adapter(&guest) {
            Ok(_) => return (guest, key, known_hosts, figures),
            Err(why) if !retried => {
                guest.give_up(board, &why);
                retried = true;
            }
            Err(why) => panic!("{why}\n{}", guest.console_report()),
        }
    }
}

/// The guest's DHCP ACK within `LEASE_AFTER_READY`, or why not: the time
/// passed, or the kernel said three times that the USB adapter is not
/// connected (then no lease comes, and waiting for one only costs time).
fn lease_or_lost_adapter(guest: &Guest) -> Result<Duration, String> {
    let deadline = Instant::now() + LEASE_AFTER_READY;
    loop {
        let waited = guest.wait_for_lease(Duration::from_secs(2));
        let serial = guest.serial();
        let lost = serial
            .lines()
            .filter(|l| l.contains(ADAPTER_LOST) && l.contains(NOT_CONNECTED))
            .count();
        match waited {
            Ok(after) => return Ok(after),
            Err(_) if lost >= 3 => {
                return Err(format!(
                    "QEMU's USB host model lost the network adapter (\"{ADAPTER_LOST} …{NOT_CONNECTED}\" {lost} times)"
                ))
            }
            Err(why) if Instant::now() > deadline => {
                return Err(format!(
                    "no DHCP ACK {LEASE_AFTER_READY:?} after `brig: ready` ({why})"
                ))
            }
            Err(_) => {}
        }
    }
}

/// A fresh copy of the built card at `card`, booted on QEMU's `machine`
/// with `user_data` until `brig: ready`; the guest and the boot's figures.
fn boot_card_once(board: &str, machine: &str, card: &Path, user_data: &Path) -> (Guest, String) {
    let built = built_as(board, "raw");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(built.join(format!("brig-{board}.img")))
        .arg(card));
    let mut guest = Guest::boot_with(
        board,
        &built,
        &[],
        &[
            &format!("--disk={}", card.display()),
            "--user-data",
            user_data.to_str().unwrap(),
            "--machine",
            machine,
        ],
    );
    let started = Instant::now();
    let serial = guest.wait_for("brig: ready", BOOT);
    let figures = format!(
        "{board} on {machine}: `brig: ready` {:.0} s after QEMU started ({})",
        started.elapsed().as_secs_f64(),
        serial
            .lines()
            .find(|l| l.contains("brig: ready"))
            .unwrap_or_default()
    );
    for said in [
        "brig: system partition /dev/mmcblk0p2 mounted on /lib/brig",
        "brig: state: making the state partition in /dev/mmcblk0's free space (382 MiB)",
        "brig: state: /dev/mmcblk0p4 formatted (ext4, BRIG_STATE)",
        "brig: state: /dev/mmcblk0p4 (BRIG_STATE, ext4) mounted at /var/lib/brig",
        "brig: config: from /dev/mmcblk0p1 (boot partition BRIG_BOOT)",
        "brig: system containers: 6",
    ] {
        assert!(
            serial.contains(said),
            "{said:?} not in:\n{}",
            guest.console_report()
        );
    }
    (guest, figures)
}

/// What a user checks over ssh on a booted card.
fn check_over_ssh(
    guest: &Guest,
    key: &Path,
    known_hosts: &Path,
    board: &str,
    model: &str,
    serial: &str,
) {
    let out = guest.ssh_ok(
        "brig",
        key,
        known_hosts,
        "hostname; tr -d '\\0' < /proc/device-tree/model; echo; \
         cat /sys/class/tty/console/active; ps -eo args | grep '[a]getty' | sort; \
         sudo brigctl ps",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{board}-card"), "{out}");
    assert!(lines[1].starts_with(model), "{out}");
    // A login prompt on the screen (HDMI, tty1) and on the serial line.
    assert_eq!(lines[2], format!("tty1 {serial}"), "{out}");
    let gettys = &lines[3..5];
    assert!(gettys.iter().any(|l| l.ends_with(" tty1 linux")), "{out}");
    assert!(
        gettys.iter().any(|l| l.contains(&format!(" {serial} "))),
        "{out}"
    );
    for service in ["console", "network", "ntp", "syslog"] {
        let running = lines
            .iter()
            .any(|l| l.starts_with(service) && l.contains(" running "));
        if !running {
            // What it said before it stopped: the failure's reason.
            let logs = guest.ssh(
                "brig",
                key,
                known_hosts,
                &format!("sudo brigctl logs {service} --tail 40"),
            );
            panic!(
                "{service} not running:\n{out}\nits log:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
    }
    // Running with wifis: in the config (waiting for the radio), else it
    // had nothing to do and ended cleanly.
    assert!(
        lines.iter().any(|l| l.starts_with("wifi ")
            && (l.contains(" running ")
                || l.contains(" stopped ") && l.trim_end().ends_with("exited with status 0"))),
        "{out}"
    );
    // The Wi-Fi chip's firmware, where the kernel looks (PID 1's root).
    let firmware = guest.ssh_ok(
        "brig",
        key,
        known_hosts,
        "sudo ls /proc/1/root/lib/firmware/brcm",
    );
    for file in ["brcmfmac43455-sdio.bin", "brcmfmac43455-sdio.clm_blob"] {
        assert!(
            firmware.lines().any(|l| l == file),
            "{file} not in:\n{firmware}"
        );
    }
    let status = guest.ssh_ok("brig", key, known_hosts, "sudo brigctl status");
    assert!(
        status.contains("state    /dev/mmcblk0p4 at /var/lib/brig: "),
        "{status}"
    );
}

/// Both cards, one after the other: one Pi guest at a time, as each has
/// four TCG vCPUs on one host thread, and under more load than that QEMU's
/// USB host model (the guest's network) can miss the device's connection.
/// One test rather than two taking turns on a lock: the waiting one would
/// hold a test thread, and a core, idle. Each board is checked even when
/// the other fails.
pub fn pi_cards_boot_in_qemu_make_their_state_partition_and_answer_ssh() {
    // The longest chain of the run (two slow boots, one after the other):
    // its guest slot is taken now, so its first boot starts as soon as its
    // cards are built, not behind the Swarm's three guests.
    crate::guest::hold_a_slot();
    let rpi3 = std::panic::catch_unwind(rpi3_card);
    let rpi3_passed = rpi3.is_ok();
    let rpi4 = std::panic::catch_unwind(rpi4_card);
    // The update story goes on with the rpi3 card as its first boot left
    // it (its state partition made, the user's file written).
    let updates = match rpi3 {
        Ok(card) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rpi3_updates_through_u_boot_and_rolls_back_by_itself(card)
        }))
        .is_ok(),
        Err(_) => {
            println!("rpi3 updates: not run, as the rpi3 card failed");
            false
        }
    };
    let failed: Vec<&str> = [
        ("rpi3", rpi3_passed),
        ("rpi4", rpi4.is_ok()),
        ("rpi3 updates", updates),
    ]
    .into_iter()
    .filter(|(_, passed)| !passed)
    .map(|(board, _)| board)
    .collect();
    assert!(failed.is_empty(), "failed: {failed:?} (why is above)");
}

/// A card after its first boot, powered off: its directory (`card.img`,
/// the user-data), and the user's ssh key and known_hosts.
struct BootedCard {
    dir: tempfile::TempDir,
    key: PathBuf,
    known_hosts: PathBuf,
}

/// In QEMU's raspi3ap: the Raspberry Pi 3 A+, with 512 MiB, the smallest
/// memory Brig supports (the card is the same for the 3 B and B+). Its
/// first boot is also the update story's: U-Boot's script boots 0.1.0
/// from slot A, and the user leaves a file to find after the updates.
fn rpi3_card() -> BootedCard {
    let dir = tempfile::tempdir().unwrap();
    // Wi-Fi as a user writes it: the wifi container runs wpa_supplicant
    // with it once wlan0 exists (no radio in QEMU: it waits for it). The
    // update story's trial times: the lease comes 15–60 s after
    // `brig: ready` under TCG, which the PC's 30 s timeout would fail.
    let config = "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n  wifis:\n    \
                  wlan0:\n      dhcp4: true\n      regulatory-domain: DE\n      access-points:\n        \
                  home: {password: correct-horse}\n        office: {password: short}\n\
                  brig:\n  update:\n    grace_time: 5\n    health_timeout: 240\n";
    let (mut guest, key, known_hosts, figures) = boot_card("rpi3", "raspi3ap", dir.path(), config);
    report(&figures);
    let serial = guest.serial();
    assert!(
        serial.contains("brig: booting brig/a-0.1.0 (slot a)"),
        "U-Boot's script did not boot slot A:\n{serial}"
    );
    let before = guest.ssh_ok(
        "brig",
        &key,
        &known_hosts,
        "echo kept > ~/kept.txt; sudo brigctl os status",
    );
    assert_says(
        &before,
        &["running  0.1.0 (slot A)\n", "other    slot B is empty\n"],
    );
    // The serial console is the mini UART, as on the board.
    let model = "Raspberry Pi 3 Model A+";
    check_over_ssh(&guest, &key, &known_hosts, "rpi3", model, "ttyS1");
    // 512 MiB: what the kernel leaves, and what is used with every system
    // container running (for the record).
    let memory = guest.ssh_ok("brig", &key, &known_hosts, "free -m | grep ^Mem:");
    let total: u64 = memory
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (300..=512).contains(&total),
        "not a 512 MiB machine: {memory}"
    );
    report(&format!("rpi3 on raspi3ap (512 MiB): {}", memory.trim()));
    let logs = guest.ssh_ok("brig", &key, &known_hosts, "sudo brigctl logs wifi");
    for said in [
        "wifi: error: network config: wifis.wlan0.access-points.office.password: ",
        "wifi: waiting for wlan0 (no Wi-Fi chip, or its driver has no firmware yet)",
    ] {
        assert!(logs.contains(said), "{said:?} not in:\n{logs}");
    }
    guest.halts_on_power_off();
    guest.brigctl_power(&key, &known_hosts, Power::PowerOff);
    BootedCard {
        dir,
        key,
        known_hosts,
    }
}

/// In QEMU's raspi4b.
fn rpi4_card() {
    let dir = tempfile::tempdir().unwrap();
    let (mut guest, key, known_hosts, figures) = boot_card("rpi4", "raspi4b", dir.path(), "");
    report(&figures);
    // QEMU's raspi4b hangs on the mini UART: brig run's device tree copy
    // turns it off and the PL011 stands in (qemu/raspi4b.toml).
    let model = "Raspberry Pi 4 Model B";
    check_over_ssh(&guest, &key, &known_hosts, "rpi4", model, "ttyAMA0");
    let logs = guest.ssh_ok("brig", &key, &known_hosts, "sudo brigctl logs wifi");
    assert!(
        logs.contains("wifi: no network config (/run/brig/config/wifi/network.yaml: No such file or directory (os error 2)): no wifis to join"),
        "{logs}"
    );
    guest.brigctl_power(&key, &known_hosts, Power::PowerOff);
}

/// The Pi's update path as on the PC (docs/updates.md), on QEMU's raspi3b
/// (its model restarts the machine; raspi3ap's has no restart), from the
/// rpi3 card's first boot (0.1.0 from slot A): 0.2.0 is installed into
/// slot B, boots on trial and is marked good in U-Boot's environment;
/// 0.3.0, whose kernel panics before PID 1, is installed into slot A and
/// uses up its 3 tries, and U-Boot boots 0.2.0 again by itself, the
/// user's file kept.
///
/// The bundles reach the Pi as files in the user's home, copied onto the
/// card's state partition while the machine is off (as with a card
/// reader): QEMU's model of the Pi's USB moves 0.26 MiB/s, so one 66 MiB
/// bundle over HTTP took 250 s to check and as long again to install. The
/// HTTP path is the PC's test, and the same code. A Pi kernel that panics
/// before PID 1 has no restart handler yet (the watchdog's driver is a
/// module): the test pulls the plug at each panic, standing in for the
/// reset (docs/updates.md says what a real Pi lacks).
fn rpi3_updates_through_u_boot_and_rolls_back_by_itself(card: BootedCard) {
    let board = "rpi3";
    let variant = |name: &str, version: &str, extra: &[&str]| {
        let mut args = vec!["--without", "docker", "--os-version", version, "--bundle"];
        args.extend(extra);
        built_variant(board, "raw", name, &args)
    };
    let v2 = variant("v2", "0.2.0", &[]);
    let panics = variant(
        "panics",
        "0.3.0",
        &[
            "--kernel-arg",
            "rdinit=/no-such-init",
            "--kernel-arg",
            "panic=1",
        ],
    );
    let BootedCard {
        dir,
        key,
        known_hosts,
    } = card;
    let card = dir.path().join("card.img");
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    {
        // The state partition (4) as the user's computer mounts it (by
        // its place in the GUID table: no partition scan here).
        let table = run(Command::new("sfdisk").arg("--json").arg(&card));
        let table: serde_json::Value = serde_json::from_str(&table).unwrap();
        let state = &table["partitiontable"]["partitions"][3];
        assert_eq!(state["name"], "BRIG_STATE", "{table}");
        let (start, size) = (
            state["start"].as_u64().unwrap(),
            state["size"].as_u64().unwrap(),
        );
        let point = dir.path().join("state");
        std::fs::create_dir(&point).unwrap();
        run(Command::new("mount")
            .arg("-o")
            .arg(format!(
                "loop,offset={},sizelimit={}",
                start * 512,
                size * 512
            ))
            .arg(&card)
            .arg(&point));
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg(self.0).status();
            }
        }
        let _mounted = Unmount(&point);
        let home = point.join("volumes/home/brig");
        let owner = run(Command::new("stat").args(["-c", "%u:%g"]).arg(&home));
        for (built, version) in [(&v2, "0.2.0"), (&panics, "0.3.0")] {
            let bundle = format!("brig-rpi3-{version}.bundle");
            std::fs::copy(built.join(&bundle), home.join(&bundle)).unwrap();
            run(Command::new("chown")
                .arg(owner.trim())
                .arg(home.join(&bundle)));
        }
    }
    // The card's GPU firmware as an older release left it: the bundle's
    // replaces it (both slots share it), and nothing else.
    let volume = format!("{}@@{}", card.display(), boot_offset(&card));
    let older = dir.path().join("start.elf");
    std::fs::write(&older, b"an older start.elf").unwrap();
    run(Command::new("mcopy")
        .args(["-o", "-i", &volume])
        .arg(&older)
        .arg("::start.elf"));
    let upgrade = |guest: &Guest, version: &str| {
        let said = ssh(
            guest,
            &format!("sudo brigctl os upgrade brig-rpi3-{version}.bundle"),
        );
        println!("upgrade to {version}:\n{said}");
        said
    };

    let card_arg = format!("--disk={}", card.display());
    let start = |watched: bool| {
        let options = [card_arg.as_str(), "--machine", "raspi3b"];
        if watched {
            Guest::boot_with(board, &built_as(board, "raw"), &[], &options)
        } else {
            Guest::boot_unwatched(board, &built_as(board, "raw"), &options)
        }
    };
    let mut guest = start(true);
    guest.wait_for("brig: ready", BOOT);
    let said = upgrade(&guest, "0.2.0");
    assert!(
        said.contains("reading the file brig-rpi3-0.2.0.bundle (")
            && said.contains("\nboot files: start.elf replaced (shared by both slots); the other ")
            && said.contains("installed 0.2.0 in slot B; it starts at the next boot"),
        "{said}"
    );
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(guest);

    // 0.2.0 from slot B, on trial, then marked good.
    let mut guest = start(true);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert_says(
        &serial,
        &[
            "brig: booting brig/b-0.2.0 (slot b)",
            "brig: system partition /dev/mmcblk0p3 mounted on /lib/brig",
            "brig: update: 0.2.0 (slot B, boot 1 of 3) is on trial",
        ],
    );
    let blessed = "brig: update: 0.2.0 (slot B) booted healthy: marked good (brig-2-0.2.0+2-1.conf is now brig-2-0.2.0.conf)";
    guest.wait_for(blessed, BOOT);
    let after = ssh(&guest, "cat ~/kept.txt; sudo brigctl os status");
    println!("after 0.2.0:\n{after}");
    assert_says(
        &after,
        &[
            "kept\n",
            "running  0.2.0 (slot B)\n",
            "other    0.1.0 in slot A (good)\n",
        ],
    );

    // 0.3.0 panics at every boot; the test resets the machine each time.
    let said = upgrade(&guest, "0.3.0");
    assert!(said.contains("installed 0.3.0 in slot A"), "{said}");
    assert!(said.contains("\nboot files: all "), "{said}");
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(guest);
    for try_number in 1..=3 {
        let mut guest = start(false);
        let serial = guest.wait_for("Kernel panic - not syncing", BOOT);
        assert!(
            serial.contains("brig: booting brig/a-0.3.0 (slot a)"),
            "try {try_number}:\n{serial}"
        );
        guest.pull_the_plug();
    }
    let mut guest = start(true);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert_says(
        &serial,
        &[
        "brig: booting brig/b-0.2.0 (slot b)",
        "brig: update: rolled back: 0.3.0 (slot A) failed to boot healthy 3 times; 0.2.0 runs again",
        ],
    );
    let status = ssh(&guest, "cat ~/kept.txt; sudo brigctl os status");
    println!("after the rollback:\n{status}");
    assert_says(
        &status,
        &[
            "kept\n",
            "running  0.2.0 (slot B)\n",
            "booted   rolled back: 0.3.0 (slot A) failed to boot healthy 3 times\n",
            "other    0.3.0 in slot A (failed: it did not boot healthy in 3 tries)\n",
            "last     rolled back: 0.3.0 (slot A) failed to boot healthy 3 times; 0.2.0 runs again",
        ],
    );
    guest.brigctl_power(&key, &known_hosts, Power::PowerOff);
    drop(guest);
    let built = std::fs::read(v2.join("boot-shared/start.elf")).unwrap();
    assert!(
        boot_file(&card, "start.elf") == built,
        "the card's start.elf is not the bundle's"
    );
}

/// A loop device over a sparse file of `size`, detached (and unmounted)
/// when dropped.
struct Loop {
    device: String,
    mounted: Option<PathBuf>,
}

impl Loop {
    fn new(file: &Path, size: &str) -> Loop {
        run(Command::new("truncate").args(["-s", size]).arg(file));
        let device = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file));
        Loop {
            device: device.trim().to_string(),
            mounted: None,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(point) = &self.mounted {
            let _ = Command::new("umount").arg(point).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// `brig flash` with `args`: (success, stderr).
fn flash(args: &[&str]) -> (bool, String) {
    let output = brig(&[&["flash"], args].concat(), &[]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn zeros_at_start(path: &Path) -> bool {
    let mut start = vec![0u8; 1 << 20];
    use std::io::Read;
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut start)
        .unwrap();
    start.iter().all(|&b| b == 0)
}

pub fn brig_flash_writes_and_verifies_a_card_and_refuses_disks_it_must_not_touch() {
    let built = built_as("rpi3", "raw");
    let image = built.join("brig-rpi3.img");
    let image_bytes = std::fs::read(&image).unwrap();
    let out = built.to_str().unwrap();
    // `brig flash` of the built card onto `device`.
    let flash_built = |device: &str, more: &[&str]| {
        flash(&[&["--board", "rpi3", "--out", out, "--device", device], more].concat())
    };
    // `brig flash` of the raw image onto `device`.
    let flash_image = |device: &str, more: &[&str]| {
        flash(
            &[
                &["--device", device, "--image", image.to_str().unwrap()],
                more,
            ]
            .concat(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, "#cloud-config\nhostname: flashed\n").unwrap();

    // Into an image file, with the user's user-data on the boot partition:
    // everything else is the image's.
    let card = dir.path().join("card.img");
    let (ok, said) = flash_built(
        card.to_str().unwrap(),
        &["--user-data", user_data.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    for line in [
        "writing: 1024 of 1024 MiB (100%)",
        "verifying: 1024 of 1024 MiB (100%)",
        "holds the image",
        "user-data written onto the boot partition",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    assert_eq!(
        boot_file(&card, "user-data"),
        b"#cloud-config\nhostname: flashed\n"
    );
    let written = std::fs::read(&card).unwrap();
    assert_eq!(written.len(), image_bytes.len());
    let boot_end = 129 << 20; // the 128 MiB boot partition from 1 MiB
    assert!(written[..1 << 20] == image_bytes[..1 << 20]);
    assert!(written[boot_end..] == image_bytes[boot_end..]);

    // Bad user data: placed problems, nothing written.
    let bad = dir.path().join("bad-user-data");
    std::fs::write(&bad, "#cloud-config\nhostname: [not, a, name]\n").unwrap();
    let untouched = dir.path().join("untouched.img");
    let (ok, said) = flash_built(
        untouched.to_str().unwrap(),
        &["--user-data", bad.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(said.contains("bad-user-data:2:"), "{said}");
    assert!(said.contains("nothing written"), "{said}");
    assert!(!untouched.exists());

    // A loop device is no removable disk: refused, left as it was.
    let backing = dir.path().join("disk");
    let mut disk = Loop::new(&backing, "2G");
    let device = disk.device.clone();
    let (ok, said) = flash_built(&device, &[]);
    assert!(!ok);
    let name = device.trim_start_matches("/dev/");
    assert!(
        said.contains(&format!(
            "{name} is not a removable disk (not USB, not an SD card slot) (--force writes anyway)"
        )),
        "{said}"
    );
    assert!(zeros_at_start(&backing));

    // Mounted: refused, naming where.
    run(Command::new("mkfs.ext4").args(["-q", &device]));
    let point = dir.path().join("mnt");
    std::fs::create_dir(&point).unwrap();
    run(Command::new("mount").arg(&device).arg(&point));
    disk.mounted = Some(point.clone());
    let (ok, said) = flash_built(&device, &[]);
    assert!(!ok);
    assert!(
        said.contains(&format!(
            "{name} is in use: {name} is mounted at {}",
            point.display()
        )),
        "{said}"
    );
    // Forcing changes nothing there.
    let (ok, said) = flash_built(&device, &["--force"]);
    assert!(!ok);
    assert!(
        said.contains(&format!("{name} is in use: {name} is mounted at")),
        "{said}"
    );
    assert!(!said.contains("writing:"), "{said}");
    run(Command::new("umount").arg(&point));
    disk.mounted = None;

    // Forced, from the compressed copy: written and verified.
    let zst = built.join("brig-rpi3.img.zst");
    let (ok, said) = flash(&[
        "--device",
        &device,
        "--image",
        zst.to_str().unwrap(),
        "--force",
    ]);
    assert!(ok, "{said}");
    assert!(said.contains("holds the image"), "{said}");
    let on_disk = std::fs::read(&backing).unwrap();
    assert!(on_disk[..image_bytes.len()] == image_bytes[..]);

    // A partition, even forced: refused (the table just written shows
    // them once the kernel rereads it).
    run(Command::new("partx").args(["-u", &device]));
    let partition = format!("{device}p1");
    let (ok, said) = flash_image(&partition, &["--force"]);
    assert!(!ok);
    assert!(
        said.contains(&format!(
            "{name}p1 is a partition: name the whole disk it is on"
        )),
        "{said}"
    );
    drop(disk);

    // Too small, even forced.
    let small = Loop::new(&dir.path().join("small"), "512M");
    let (ok, said) = flash_image(&small.device, &["--force"]);
    assert!(!ok);
    assert!(
        said.contains("holds 512 MiB, the image needs 1024 MiB"),
        "{said}"
    );
    assert!(zeros_at_start(&dir.path().join("small")));

    // The disk this computer runs from: refused. A loop device stands in
    // for it (brig is told that the filesystem of a directory on it is
    // the root one, as `/` is on the real disk, which is never aimed at):
    // the root filesystem on its first partition, as on most computers.
    let mut root_disk = Loop::new(&dir.path().join("root-disk"), "2G");
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", &root_disk.device])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), b"label: gpt\n,256M\n").unwrap();
    assert!(
        sfdisk.wait().unwrap().success(),
        "sfdisk {}",
        root_disk.device
    );
    run(Command::new("partx").args(["-u", &root_disk.device]));
    let root_partition = format!("{}p1", root_disk.device);
    run(Command::new("mkfs.ext4").args(["-q", &root_partition]));
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("mount").arg(&root_partition).arg(&root));
    root_disk.mounted = Some(root.clone());
    // Its partition table (the first MiB, before the filesystem, which the
    // kernel writes to while it is mounted): a written image would have
    // put its own there first.
    let table = |path: &Path| {
        let mut start = vec![0u8; 1 << 20];
        use std::io::Read;
        std::fs::File::open(path)
            .unwrap()
            .read_exact(&mut start)
            .unwrap();
        start
    };
    let before = table(&dir.path().join("root-disk"));
    let (ok, said) = flash_image(&root_disk.device, &["--root-of", root.to_str().unwrap()]);
    assert!(!ok, "{said}");
    let name = root_disk.device.trim_start_matches("/dev/");
    assert!(
        said.contains(&format!("{name} holds this computer's root filesystem")),
        "{said}"
    );
    assert!(!said.contains("writing:"), "{said}");
    assert!(
        table(&dir.path().join("root-disk")) == before,
        "the stand-in root disk was written"
    );
    // Forced: still refused.
    let (ok, said) = flash_image(
        &root_disk.device,
        &["--root-of", root.to_str().unwrap(), "--force"],
    );
    assert!(!ok, "{said}");
    assert!(
        said.contains("holds this computer's root filesystem"),
        "{said}"
    );
    assert!(table(&dir.path().join("root-disk")) == before);
    drop(root_disk);

    // A root filesystem on two disks (btrfs RAID1, mounted by its first):
    // the second is the root disk as much as the first.
    let first = Loop::new(&dir.path().join("btrfs-1"), "1200M");
    let mut second = Loop::new(&dir.path().join("btrfs-2"), "1200M");
    run(Command::new("mkfs.btrfs").args([
        "-q",
        "-f",
        "-d",
        "raid1",
        "-m",
        "raid1",
        &first.device,
        &second.device,
    ]));
    let btrfs_root = dir.path().join("btrfs-root");
    std::fs::create_dir(&btrfs_root).unwrap();
    run(Command::new("mount")
        .args(["-o", &format!("device={}", second.device), &first.device])
        .arg(&btrfs_root));
    second.mounted = Some(btrfs_root.clone());
    let before = table(&dir.path().join("btrfs-2"));
    let second_name = second.device.trim_start_matches("/dev/");
    let (ok, said) = flash_image(
        &second.device,
        &["--root-of", btrfs_root.to_str().unwrap(), "--force"],
    );
    assert!(!ok, "{said}");
    assert!(
        said.contains(&format!(
            "{second_name} holds this computer's root filesystem"
        )),
        "{said}"
    );
    // Not named as the root, forced past "not removable": the kernel
    // still refuses the exclusive open of a device btrfs holds.
    let (ok, said) = flash_image(&second.device, &["--force"]);
    assert!(!ok, "{said}");
    assert!(said.contains("the kernel says it is in use"), "{said}");
    assert!(!said.contains("writing:"), "{said}");
    assert!(table(&dir.path().join("btrfs-2")) == before);
    drop(second);
    drop(first);

    // Neither a disk nor an image file: refused, nothing opened for
    // writing (a FIFO would block a writer without a reader).
    let fifo = dir.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    for (target, said_what) in [
        (
            fifo.to_str().unwrap(),
            "it is a FIFO, neither a block device (a disk) nor an image file",
        ),
        ("/dev/null", "it is a character device"),
        (dir.path().to_str().unwrap(), "it is a directory"),
        (
            "/dev/brig-no-such-card",
            "it does not exist: is the card in?",
        ),
    ] {
        let (ok, said) = flash_image(target, &[]);
        assert!(!ok, "{target}: {said}");
        assert!(
            said.contains(&format!("not writing {target}: {said_what}")),
            "{said}"
        );
    }
    assert!(!Path::new("/dev/brig-no-such-card").exists());
}
