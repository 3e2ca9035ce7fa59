//! Disk images (`brig build --format raw|qcow2`) as a user runs them: booted
//! by UEFI firmware (OVMF) from the image alone, the state partition made
//! on first boot in the free space of a disk larger than the image and
//! grown when the disk grows, what the user keeps surviving `brigctl
//! reboot`; and a power cut, again and again, while the guest writes its
//! config and files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::guest::{built_as, key_pair, run, Guest};

const BOOT: Duration = Duration::from_secs(240);

/// A copy of the built image (each test boots its own), made `size` large.
fn disk_copy(built: &Path, name: &str, dir: &Path, size: &str) -> PathBuf {
    let copy = dir.join(name);
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(built.join(name))
        .arg(&copy));
    run(Command::new("qemu-img")
        .args(["resize", "-q"])
        .arg(&copy)
        .arg(size));
    copy
}

/// An ssh key and user data that lets it in; returns (key, user-data file).
fn login(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let (key, public) = key_pair(dir, "key");
    let user_data = dir.join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nssh_authorized_keys: ['{}']\n{extra}",
            public.trim()
        ),
    )
    .unwrap();
    (key, user_data)
}

#[test]
fn qemu_x86_64_raw_image_boots_with_uefi_grows_into_its_disk_and_keeps_state() {
    let board = "qemu-x86_64";
    let built = built_as(board, "raw");
    let dir = tempfile::tempdir().unwrap();
    // The 1 GiB image attached as a 4 GiB disk.
    let disk = disk_copy(&built, "brig-qemu-x86_64.img", dir.path(), "4G");
    let (key, user_data) = login(dir.path(), "hostname: diskful\n");
    let known_hosts = dir.path().join("known_hosts");
    let disk_arg = format!("--disk={}", disk.display());

    let started = Instant::now();
    let mut guest = Guest::boot_with(
        board,
        &built,
        &[],
        &[&disk_arg, "--user-data", user_data.to_str().unwrap()],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    for said in [
        // systemd-boot started the kernel with the entry's command line.
        "Command line: initrd=\\brig\\initramfs.img console=ttyS0",
        "brig: system partition /dev/vda2 mounted on /lib/brig",
        "the disk is larger than the table was made for",
        // 4096 MiB less 1 MiB of table, 64 of boot, 256 of system, 1 at the end.
        "brig: state: making the state partition in /dev/vda's free space (3774 MiB)",
        "brig: state: /dev/vda3 formatted (ext4, BRIG_STATE)",
        "brig: state: /dev/vda3 (BRIG_STATE, ext4) mounted at /var/lib/brig",
        "brig: system containers: 5",
    ] {
        assert!(serial.contains(said), "{said:?} not in:\n{serial}");
    }
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    let status = ssh(&guest, "sudo brigctl status");
    println!(
        "raw image, UEFI: power-on to ssh {:.1} s\n{status}",
        started.elapsed().as_secs_f64()
    );
    for line in [
        "boot     disk /dev/vda (system partition /dev/vda2)\n",
        "state    /dev/vda3 at /var/lib/brig: ",
    ] {
        assert!(status.contains(line), "{line:?} not in:\n{status}");
    }
    // ext4 of a 3774 MiB partition: about 3.6 GiB usable.
    assert!(
        status.contains(" MiB of 36"),
        "not grown to the disk: {status}"
    );
    ssh(
        &guest,
        "echo kept > ~/kept.txt; sudo brigctl config set timezone Asia/Tokyo >/dev/null",
    );
    let _ = guest.ssh("brig", &key, &known_hosts, "sudo brigctl reboot");
    guest.wait_exit(Duration::from_secs(120));
    drop(guest);

    // The table as util-linux reads it from the host.
    let table = run(Command::new("sfdisk").arg("--json").arg(&disk));
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["BRIG_BOOT", "BRIG_SYSTEM", "BRIG_STATE"]);
    assert_eq!(parts[2]["start"], 321 * 2048);
    assert_eq!(parts[2]["size"], 3774 * 2048);

    // Second boot, without the seed, on the disk made 1 GiB larger: the
    // state partition and its filesystem grow into it; the same host keys.
    run(Command::new("qemu-img")
        .args(["resize", "-q"])
        .arg(&disk)
        .arg("5G"));
    let mut guest = Guest::boot_with(board, &built, &[], &[&disk_arg]);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(!serial.contains("making the state partition"), "{serial}");
    for said in [
        "brig: state: growing partition 3 of /dev/vda to the end of the disk (+1024 MiB)",
        "brig: state: /dev/vda3: grown online to fill its device (4798 MiB)",
        "brig: state: /dev/vda3 (BRIG_STATE, ext4) mounted at /var/lib/brig",
    ] {
        assert!(serial.contains(said), "{said:?} not in:\n{serial}");
    }
    let out = ssh(
        &guest,
        "hostname; cat ~/kept.txt /etc/timezone; df -m /home | tail -1",
    );
    assert!(out.starts_with("diskful\nkept\nAsia/Tokyo\n"), "{out}");
    let size_mib: u64 = out
        .lines()
        .nth(3)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(size_mib > 4500, "the filesystem did not grow: {out}");
    guest.qmp("system_powerdown", serde_json::json!({}));
    guest.wait_exit(Duration::from_secs(120));
}

#[test]
fn qemu_x86_64_qcow2_image_boots_with_uefi_to_ssh() {
    let board = "qemu-x86_64";
    let built = built_as(board, "qcow2");
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(&built, "brig-qemu-x86_64.qcow2", dir.path(), "2G");
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    // The SD-card option: logs in RAM although there is a state partition.
    let (key, user_data) = login(dir.path(), "brig:\n  logging:\n    storage: ram\n");
    let known_hosts = dir.path().join("known_hosts");
    let started = Instant::now();
    let mut guest = Guest::boot_with(
        board,
        &built,
        &[],
        &[
            &format!("--disk={}", disk.display()),
            "--user-data",
            user_data.to_str().unwrap(),
        ],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    // 2048 MiB less 1 + 64 + 256 + 1.
    assert!(
        serial.contains(
            "brig: state: making the state partition in /dev/vda's free space (1726 MiB)"
        ),
        "{serial}"
    );
    let status = guest.ssh_ok("brig", &key, &known_hosts, "sudo brigctl status");
    println!(
        "qcow2 image, UEFI: power-on to ssh {:.1} s\n{status}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.contains("state    /dev/vda3 at /var/lib/brig: "),
        "{status}"
    );
    let logs = guest.ssh_ok(
        "brig",
        &key,
        &known_hosts,
        "logger -t sd-card kept in RAM; \
         for i in $(seq 40); do sudo brigctl logs sd-card | grep -q RAM && break; sleep 0.5; done; \
         sudo brigctl logs sd-card; sudo brigctl logs syslog | grep -c 'is in RAM (brig.logging.storage: ram)'; \
         sudo ls -A /var/lib/brig/volumes/logs | wc -l",
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.len() == 3 && lines[0].ends_with(" sd-card: kept in RAM"),
        "{logs}"
    );
    assert_eq!(
        lines[1..],
        ["1", "0"],
        "not in RAM, or written to the state partition: {logs}"
    );
    guest.qmp("system_powerdown", serde_json::json!({}));
    guest.wait_exit(Duration::from_secs(120));
    let check = run(Command::new("qemu-img").args(["check", "-q"]).arg(&disk));
    assert_eq!(check, "");
}

/// Power cuts: each boot the guest starts writing in a loop (its config
/// with `brigctl config set`, which PID 1 saves atomically, and files in
/// /home), and QEMU is stopped dead at a random moment (QMP `quit`: no
/// shutdown, no unmount; what the guest had not yet written is lost). Each
/// next boot must mount the state partition (e2fsck replays the journal)
/// and find a whole config: the value of one of the writes, never older
/// than the one the boot before started from, never empty or mixed.
#[test]
fn qemu_x86_64_state_survives_power_cuts_while_writing() {
    // Ten cuts: each is a boot (~15 s under TCG), and CI has a budget.
    const CUTS: usize = 10;
    let board = "qemu-x86_64";
    let built = built_as(board, "raw");
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(&built, "brig-qemu-x86_64.img", dir.path(), "1G");
    // Markers go straight to the serial console.
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        r#"#cloud-config
bootcmd:
  - |
    exec > /dev/console 2>&1
    echo "power-cut check: hostname=[$(brigctl config get hostname 2>&1)] counter=[$(cat /home/brig/counter 2>&1)]"
    setsid sh -c '
      i=$(brigctl config get hostname | tr -dc 0-9); i=${i:-0}
      echo "power-cut writer: from $i"
      while :; do
        i=$((i+1))
        brigctl config set hostname cut-$i >/dev/null
        mkdir -p /home/brig && echo $i > /home/brig/counter
        head -c 65536 /dev/urandom > /home/brig/blob-$((i % 8))
      done' < /dev/null &
"#,
    )
    .unwrap();
    let options = [
        format!("--disk={}", disk.display()),
        // Straight into the kernel: the firmware is not what is tested.
        "--kernel-boot".to_string(),
        "--user-data".to_string(),
        user_data.display().to_string(),
    ];
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    // Delays from 0.2 to 3 s, different each run, printed to replay one.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("power cuts: delay seed {seed}");
    let mut last_seen = 0u64;
    let mut verdicts = Vec::new();
    let mut values = Vec::new();
    for cut in 0..=CUTS {
        let mut guest = Guest::boot_with(board, &built, &[], &options);
        let serial = guest.wait_for("power-cut writer: from", BOOT);
        let boot = serial
            .split("brig-init 0.1.0 started as PID 1")
            .last()
            .unwrap();
        let mounted = "brig: state: /dev/vda3 (BRIG_STATE, ext4) mounted at /var/lib/brig";
        assert!(
            boot.contains(mounted),
            "boot {cut}: {mounted:?} not in:\n{serial}"
        );
        assert!(!boot.contains("error: config"), "boot {cut}:\n{serial}");
        let verdict = boot
            .lines()
            .find_map(|l| l.split("/dev/vda3: e2fsck: ").nth(1))
            .unwrap_or_default()
            .split(" [t=")
            .next()
            .unwrap()
            .to_string();
        verdicts.push(verdict);
        let check = boot
            .lines()
            .find_map(|l| l.split("power-cut check: ").nth(1))
            .unwrap_or_else(|| panic!("boot {cut}: no check line:\n{serial}"));
        if cut > 0 {
            let value = check
                .strip_prefix("hostname=[cut-")
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("boot {cut}: config not whole: {check:?}"));
            assert!(
                value >= last_seen,
                "boot {cut}: config went back from cut-{last_seen} to cut-{value}"
            );
            last_seen = value;
            values.push(value.to_string());
        }
        if cut == CUTS {
            break;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(200 + (seed >> 33) % 2800);
        std::thread::sleep(delay);
        guest.qmp("quit", serde_json::json!({}));
        guest.wait_exit(Duration::from_secs(30));
    }
    println!(
        "power cuts: {CUTS}; config after each: {}; e2fsck said: {}",
        values.join(" "),
        verdicts.join(" | ")
    );
    assert!(last_seen > 0, "no write ever reached the disk");
}
