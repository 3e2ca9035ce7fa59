//! The state partition: with an ext4 volume labelled BRIG_STATE attached
//! (smaller than its disk: it grows to fill it),
//! what the machine keeps survives a reboot: the ssh host keys, homes, a
//! setting made with `brigctl config set`, and the datasource itself (the
//! second boot has no seed disk), while per-instance steps do not run again.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::guest::{built, key_pair, run, Guest, Power};

const BOOT: Duration = Duration::from_secs(240);

pub fn qemu_x86_64_keeps_host_keys_homes_and_config_on_the_state_partition() {
    let board = "qemu-x86_64";
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "BRIG_STATE"])
        .arg(&state)
        .arg("256M"));
    // A 256 MB filesystem on a 1 GB disk: it grows to fill it at first boot.
    run(Command::new("truncate").args(["-s", "1G"]).arg(&state));
    let (key, public) = key_pair(dir.path(), "key");
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nhostname: stateful\nssh_authorized_keys: ['{}']\n\
             runcmd:\n  - echo ran >> /var/lib/cloud/runcmd-count\n\
             brig:\n  logging:\n    remote: ['tcp://10.0.2.2:5140']\n",
            public.trim()
        ),
    )
    .unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let state_drive = format!("--qemu-arg=file={},format=raw,if=virtio", state.display());
    let host_key = "cat /var/lib/ssh/ssh_host_ed25519_key.pub";

    // First boot: seed disk and state disk.
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &["brig.service_output=console"],
        &[
            "--user-data",
            user_data.to_str().unwrap(),
            "--qemu-arg=-drive",
            &state_drive,
        ],
    );
    // A remote syslog server (the host's side of QEMU's network), up once
    // the guest is on its way: what the log service queued meanwhile
    // arrives when it connects.
    let received = guest.net().syslog_receiver(5140);
    let serial = guest.wait_for("brig: ready", BOOT);
    for said in [
        "state: /dev/vdb: e2fsck: clean",
        "state: /dev/vdb: grown online to fill its device (1024 MiB)",
        "state: /dev/vdb (BRIG_STATE, ext4) mounted at /var/lib/brig",
    ] {
        assert!(serial.contains(said), "{said:?} not in:\n{serial}");
    }
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    let first_key = ssh(&guest, host_key);
    let status = ssh(&guest, "sudo brigctl status");
    for line in [
        "board    qemu-x86_64\n",
        // The system disk comes after the seed and the state disk.
        "boot     kernel and initramfs, system disk /dev/vdc (read-only)\n",
        "state    /dev/vdb at /var/lib/brig: ",
    ] {
        assert!(status.contains(line), "{line:?} not in:\n{status}");
    }
    assert!(
        status.contains(" MiB of 9"),
        "grown to about 1 GB: {status}"
    );
    ssh(
        &guest,
        "echo kept > ~/kept.txt; sudo brigctl config set timezone Asia/Tokyo >/dev/null; \
         for i in $(seq 60); do [ -f /var/lib/cloud/runcmd-count ] && break; sleep 1; done",
    );
    // The log service: the kernel's messages from the start of the boot,
    // PID 1's from before the log service ran, a service's output, and
    // syslog(3) from the console, all in one place.
    let logs = ssh(
        &guest,
        "logger -t e2e-test hello from the console; \
         for i in $(seq 40); do sudo brigctl logs e2e-test | grep -q hello && break; sleep 0.5; done; \
         sudo brigctl logs --kernel | grep -c 'Linux version'; \
         sudo brigctl logs brig-init | grep -c 'started as PID 1'; \
         sudo brigctl logs network | grep -c 'brig-netd'; \
         sudo brigctl logs e2e-test",
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 4, "{logs}");
    assert_eq!(
        (lines[0], lines[1]),
        ("1", "1"),
        "the kernel's and PID 1's first lines: {logs}"
    );
    assert!(
        lines[2].parse::<u32>().unwrap() > 0,
        "no network output: {logs}"
    );
    assert!(
        lines[3].ends_with(" e2e-test: hello from the console"),
        "{logs}"
    );
    // The same on the remote server, as rsyslog parsed it: the kernel's
    // first line, PID 1's, a service's output and syslog(3), from this host.
    let wanted: [&[&str]; 4] = [
        &["|kernel|kernel|kern.notice|Linux version"],
        &["|brig-init|init|", "started as PID 1"],
        &["|network|service|", "brig-netd"],
        &["stateful|e2e-test|-|user.notice|hello from the console"],
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|parts| !text.lines().any(|l| parts.iter().all(|p| l.contains(p))))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} not forwarded; the receiver has:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(guest);

    // Second boot: the state disk only.
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &["brig.service_output=console"],
        &["--qemu-arg=-drive", &state_drive],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    for said in [
        "state: /dev/vda (BRIG_STATE, ext4) mounted at /var/lib/brig",
        "config: from /var/lib/brig/config/datasource (saved at an earlier boot; no datasource now)",
        "hostname stateful (from config)",
        "runcmd and scripts already ran for instance",
        // Clean, and already filling its disk: nothing to grow.
        "state: /dev/vda: e2fsck: clean [t=",
    ] {
        assert!(serial.contains(said), "{said:?} not in:\n{serial}");
    }
    assert!(
        !serial.contains("generated the ed25519 host key"),
        "{serial}"
    );
    assert_eq!(ssh(&guest, host_key), first_key, "the host key changed");
    let out = ssh(
        &guest,
        "cat ~/kept.txt /etc/timezone; wc -l < /var/lib/cloud/runcmd-count",
    );
    assert_eq!(out, "kept\nAsia/Tokyo\n1\n", "{out}");
    // The logs of the first boot are kept on the state partition.
    let out = ssh(
        &guest,
        "sudo brigctl logs e2e-test | grep -c hello; sudo brigctl logs brig-init | grep -c 'started as PID 1'",
    );
    assert_eq!(out, "1\n2\n", "{out}");
    // An orderly power-off: the filesystem is unmounted clean, so the
    // damage below is not undone by replaying its journal.
    guest.press_power_button();
    drop(guest);
    let check = Command::new("e2fsck")
        .arg("-fn")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "not consistent after an orderly power-off: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    // A state partition broken beyond what e2fsck -p repairs (its root
    // directory's inode cleared, the filesystem marked as having errors):
    // Brig says why and runs from RAM; the volume is neither repaired nor
    // made anew (the same UUID, the same damage), for the user to rescue.
    for request in ["clri <2>", "ssv state 2"] {
        run(Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&state));
    }
    let uuid = || {
        let out = Command::new("dumpe2fs")
            .arg("-h")
            .arg(&state)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("Filesystem UUID:"))
            .unwrap_or_else(|| panic!("no UUID in {text}"))
            .to_string()
    };
    let uuid_before = uuid();
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &[],
        &["--qemu-arg=-drive", &state_drive],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("error: state: /dev/vda (BRIG_STATE): e2fsck could not repair it (exit 4)"),
        "{serial}"
    );
    assert!(
        serial.contains("running from RAM, the volume is left untouched"),
        "{serial}"
    );
    guest.press_power_button();
    drop(guest);
    assert_eq!(uuid(), uuid_before);
    let check = Command::new("e2fsck")
        .arg("-fn")
        .arg(&state)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("Root inode is not a directory"),
        "the damage is still there: {said}"
    );
}
