//! The user's own disks and services from cloud-config: a data disk found by
//! its label and mounted under /mnt (`mounts`), and a service whose rootfs
//! is a squashfs file on that disk (`brig.services`), serving files from the
//! disk; broken entries are reported and the rest still comes up. The
//! config itself is on a boot partition (`BRIG_BOOT`), as on an SD card.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::guest::{built, key_pair, run, Guest};

const BOOT: Duration = Duration::from_secs(240);

/// An ext4 disk image labelled `appdata` holding `web.squashfs` (a
/// busybox-static rootfs from Debian, for the host's architecture) and
/// `www/index.html`.
fn data_disk(dir: &Path) -> std::path::PathBuf {
    let rootfs = dir.join("rootfs");
    run(Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=extract",
            "--include=busybox-static",
            "trixie",
        ])
        .arg(&rootfs));
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("www")).unwrap();
    std::fs::write(content.join("www/index.html"), "hello from a user disk\n").unwrap();
    run(Command::new("mksquashfs")
        .arg(&rootfs)
        .arg(content.join("web.squashfs"))
        .args(["-comp", "zstd", "-quiet", "-no-progress"]));
    let disk = dir.join("data.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "appdata", "-d"])
        .arg(&content)
        .arg(&disk)
        .arg("64M"));
    disk
}

pub fn qemu_x86_64_mounts_a_data_disk_and_runs_a_service_from_it() {
    let board = "qemu-x86_64";
    let dir = tempfile::tempdir().unwrap();
    let disk = data_disk(dir.path());
    let (key, public) = key_pair(dir.path(), "key");
    let known_hosts = dir.path().join("known_hosts");
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config
ssh_authorized_keys: ['{}']
mounts:
  - [ 'LABEL=appdata', /mnt/apps, auto, 'defaults,ro' ]
  - [ vdz, /mnt/nothing ]
  - [ vdb, /etc ]
brig:
  services:
    web:
      description: files from the data disk
      rootfs: {{image: /mnt/apps/web.squashfs}}
      command: [/usr/bin/busybox, httpd, -f, -p, '8080', -h, /www]
      host_namespaces: [net]
      depends_on: [network]
      limits: {{memory_max: 32M, pids_max: 16}}
      mounts: [{{type: bind, source: /mnt/apps/www, target: /www, read_only: true}}]
    missing-image:
      rootfs: {{image: /mnt/apps/nowhere.squashfs}}
      command: [/usr/bin/busybox, 'true']
    network:
      rootfs: {{image: /mnt/apps/web.squashfs}}
      command: [/usr/bin/busybox, 'true']
",
            public.trim()
        ),
    )
    .unwrap();
    // The config comes from a boot partition's user-data, as on an SD card
    // edited on another computer.
    let boot = dir.path().join("boot.img");
    run(Command::new("mkfs.vfat")
        .args(["-n", "BRIG_BOOT", "-C"])
        .arg(&boot)
        .arg("8192"));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&boot)
        .arg(&user_data)
        .arg("::user-data"));
    let drive = |image: &Path| format!("--qemu-arg=file={},format=raw,if=virtio", image.display());
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &["brig.service_output=console"],
        &[
            "--qemu-arg=-drive",
            &drive(&boot),
            "--qemu-arg=-drive",
            &drive(&disk),
        ],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    for said in [
        "config: from /dev/vda (boot partition BRIG_BOOT)",
        "mounts: LABEL=appdata on /mnt/apps: /dev/vdb (ext4) mounted",
        "error: mounts: /dev/vdz on /mnt/nothing: no such device, or no filesystem Brig recognises on /dev/vdz",
        "`mounts[2]`: mount point \"/etc\" must be a path under /mnt or /media",
        "config: service web added (brig.services)",
        "`brig.services.network`: a service named \"network\" exists already",
    ] {
        assert!(serial.contains(said), "{said:?} not in:\n{serial}");
    }

    let ssh = |command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    // The service reads the disk through its bind mount; the console sees
    // the mount too, read-only as asked.
    let out = ssh(
        "for i in $(seq 60); do curl -sf http://127.0.0.1:8080/index.html && break; sleep 1; done; \
         cat /mnt/apps/www/index.html; grep ' /mnt/apps ' /proc/mounts | cut -d' ' -f1,3,4 | cut -d, -f1",
    );
    assert_eq!(
        out, "hello from a user disk\nhello from a user disk\n/dev/vdb ext4 ro\n",
        "{out}"
    );
    let ps = ssh("sudo brigctl ps");
    let line = |name: &str| {
        ps.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{ps}"))
            .to_string()
    };
    assert!(line("web").contains("running"), "{ps}");
    assert!(
        line("missing-image").contains("/mnt/apps/nowhere.squashfs: No such file or directory"),
        "{ps}"
    );
    let logs = ssh("sudo brigctl logs missing-image");
    assert!(
        logs.contains("/mnt/apps/nowhere.squashfs: No such file or directory"),
        "{logs}"
    );
    // A user service is managed as any other: restarted by brigctl (which
    // returns before the new process runs). `[h]` keeps pgrep from finding
    // this shell, whose command line holds the pattern.
    let out = ssh(
        "before=$(pgrep -f '[h]ttpd -f -p 8080'); sudo brigctl restart web >/dev/null; \
         for i in $(seq 60); do after=$(pgrep -f '[h]ttpd -f -p 8080'); \
           [ -n \"$after\" ] && [ \"$after\" != \"$before\" ] && break; sleep 1; done; \
         [ -n \"$before\" ] && [ \"$before\" != \"$after\" ] && echo new-process; \
         for i in $(seq 60); do curl -sf http://127.0.0.1:8080/index.html && break; sleep 1; done",
    );
    assert_eq!(out, "new-process\nhello from a user disk\n", "{out}");
}
