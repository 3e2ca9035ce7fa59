//! Disk images (`brig build --format raw|qcow2`) as a user runs them: booted
//! by UEFI firmware (OVMF) from the image alone, the state partition made
//! on first boot in the free space of a disk larger than the image and
//! grown when the disk grows, what the user keeps surviving `brigctl
//! reboot`; and a power cut, again and again, while the guest writes its
//! config and files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::guest::{built_as, key_pair, run, Guest, Power};

const BOOT: Duration = Duration::from_secs(240);

/// A copy of the built image (each test boots its own), made `size` large.
pub fn disk_copy(built: &Path, name: &str, dir: &Path, size: &str) -> PathBuf {
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
pub fn login(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
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

/// The PC board's raw image (Debian's generic kernel, the disk a user
/// writes to a real machine's), booted as a PC boots it: UEFI firmware,
/// systemd-boot, the kernel off the boot partition.
pub fn pc_x86_64_raw_image_boots_with_uefi_grows_into_its_disk_and_keeps_state() {
    let board = "pc-x86_64";
    let built = built_as(board, "raw");
    let dir = tempfile::tempdir().unwrap();
    // The 1 GiB image attached as a 4 GiB disk.
    let disk = disk_copy(&built, "brig-pc-x86_64.img", dir.path(), "4G");
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
        "Command line: initrd=\\brig\\a-0.1.0\\initramfs.img console=tty0 console=ttyS0,115200",
        "brig: system partition /dev/vda2 mounted on /lib/brig",
        "the disk is larger than the table was made for",
        // 4096 MiB less 1 MiB of table, 64 of boot, 2 × 256 of system
        // slots, 1 at the end.
        "brig: state: making the state partition in /dev/vda's free space (3518 MiB)",
        "brig: state: /dev/vda4 formatted (ext4, BRIG_STATE)",
        "brig: state: /dev/vda4 (BRIG_STATE, ext4) mounted at /var/lib/brig",
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
        "boot     disk /dev/vda (system partition /dev/vda2, slot A)\n",
        "state    /dev/vda4 at /var/lib/brig: ",
    ] {
        assert!(status.contains(line), "{line:?} not in:\n{status}");
    }
    // ext4 of a 3518 MiB partition: about 3.3 GiB usable.
    let state_mib: f64 = status
        .split(" MiB of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        (3200.0..3518.0).contains(&state_mib),
        "not grown to the disk: {status}"
    );
    ssh(
        &guest,
        "echo kept > ~/kept.txt; sudo brigctl config set timezone Asia/Tokyo >/dev/null",
    );
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(guest);

    // The table as util-linux reads it from the host.
    let table = run(Command::new("sfdisk").arg("--json").arg(&disk));
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["BRIG_BOOT", "BRIG_SYSTEM_A", "BRIG_SYSTEM_B", "BRIG_STATE"]
    );
    assert_eq!(parts[3]["start"], 577 * 2048);
    assert_eq!(parts[3]["size"], 3518 * 2048);

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
        "brig: state: growing partition 4 of /dev/vda to the end of the disk (+1024 MiB)",
        "brig: state: /dev/vda4: grown online to fill its device (4542 MiB)",
        "brig: state: /dev/vda4 (BRIG_STATE, ext4) mounted at /var/lib/brig",
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
    assert!(size_mib > 4200, "the filesystem did not grow: {out}");
    guest.press_power_button();
}

pub fn qemu_x86_64_qcow2_image_boots_with_uefi_to_ssh() {
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
    // 2048 MiB less 1 + 64 + 2 × 256 + 1.
    assert!(
        serial.contains(
            "brig: state: making the state partition in /dev/vda's free space (1470 MiB)"
        ),
        "{serial}"
    );
    let status = guest.ssh_ok("brig", &key, &known_hosts, "sudo brigctl status");
    println!(
        "qcow2 image, UEFI: power-on to ssh {:.1} s\n{status}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.contains("state    /dev/vda4 at /var/lib/brig: "),
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
    guest.press_power_button();
    let check = run(Command::new("qemu-img").args(["check", "-q"]).arg(&disk));
    assert_eq!(check, "");
}

/// Power cuts: each boot the guest starts writing in a loop (its config
/// with `brigctl config set`, which PID 1 saves atomically and syncs, a
/// counter and blocks of a known pattern in /home, never synced), and the
/// power is cut at a random moment: the disk's write cache is lost (nbdkit
/// holds every write the guest has not flushed, and is killed), then QEMU
/// is stopped dead. After each cut, on the host, what the disk holds is
/// checked: e2fsck on a copy of the state partition finds nothing but a
/// journal to replay, the config is whole and never older than before the
/// cut, the counter is a number no newer than the config, each block is
/// its pattern (or a prefix of it), nothing torn or mixed. The next boot
/// must mount the state partition itself and see the same.
pub fn qemu_x86_64_state_survives_power_cuts_while_writing() {
    // Six cuts, and more (up to twelve) until one has lost unflushed
    // writes: 9 of 20 cuts lost some in one run, 10 of 12 in another. Each
    // cut is a boot; CI has 20 minutes.
    const MIN_CUTS: usize = 6;
    const MAX_CUTS: usize = 12;
    let board = "qemu-x86_64";
    let built = built_as(board, "raw");
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(&built, "brig-qemu-x86_64.img", dir.path(), "1G");
    // Booted straight into the kernel (the firmware is not what is tested),
    // with the disk only behind the cache: artifacts without the disk image.
    let kernel_only = dir.path().join("kernel-only");
    std::fs::create_dir(&kernel_only).unwrap();
    for file in ["vmlinuz", "initramfs.img", "cmdline"] {
        std::fs::copy(built.join(file), kernel_only.join(file)).unwrap();
    }
    volatile_cache_loses_unflushed_writes(dir.path());
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
      mkdir -p /home/brig
      while :; do
        i=$((i+1))
        brigctl config set hostname cut-$i >/dev/null || { echo "power-cut set failed $i"; continue; }
        echo $i > /home/brig/counter
        yes $i | head -c 65536 > /home/brig/blob-$((i % 8))
        echo "power-cut wrote $i"
      done' < /dev/null &
"#,
    )
    .unwrap();
    let options = ["--user-data".to_string(), user_data.display().to_string()];
    // Delays from 0.2 to 3 s, different each run, printed to replay one.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("power cuts: delay seed {seed}");
    let first_boot_cut = cut_between_making_and_formatting_the_state_partition(
        &built,
        &disk,
        dir.path(),
        &kernel_only,
        &options,
    );
    println!("power cuts: first boot cut {first_boot_cut}");
    let mut last_seen = 0u64;
    let mut on_disk: Option<OnDisk> = None;
    let (mut values, mut verdicts, mut lost) = (Vec::new(), Vec::new(), 0);
    let mut cuts = 0;
    for cut in 0..=MAX_CUTS {
        let cache = VolatileCache::serve(&disk, dir.path());
        let mut all = options.to_vec();
        all.extend(cache.drive_options());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut guest = Guest::boot_with(board, &kernel_only, &[], &all);
        let serial = guest.wait_for("power-cut writer: from", BOOT);
        let boot = serial
            .split("brig-init 0.1.0 started as PID 1")
            .last()
            .unwrap();
        if cut == 0 {
            // The partition the cut left unformatted is formatted now.
            for said in [
                "brig: state: /dev/vdb4 (BRIG_STATE) has no filesystem: it was made but not formatted (the power went during first boot?); formatting it now",
                "brig: state: /dev/vdb4 formatted (ext4, BRIG_STATE)",
            ] {
                assert!(boot.contains(said), "boot 0: {said:?} not in:\n{serial}");
            }
        }
        // The seed is vda, the disk behind the cache vdb.
        let mounted = "brig: state: /dev/vdb4 (BRIG_STATE, ext4) mounted at /var/lib/brig";
        assert!(
            boot.contains(mounted),
            "boot {cut}: {mounted:?} not in:\n{serial}"
        );
        assert!(!boot.contains("error: config"), "boot {cut}:\n{serial}");
        let check = boot
            .lines()
            .find_map(|l| l.split("power-cut check: ").nth(1))
            .unwrap_or_else(|| panic!("boot {cut}: no check line:\n{serial}"));
        // The guest sees what the host saw on the disk after the cut.
        if let Some(seen) = &on_disk {
            let hostname = match seen.config {
                Some(n) => format!("hostname=[cut-{n}]"),
                None => "hostname=[brigctl: hostname is not set]".to_string(),
            };
            assert!(
                check.starts_with(&hostname),
                "boot {cut}: the guest's {check:?}, the disk's {seen:?}"
            );
            if let Some(n) = seen.counter {
                assert!(
                    check.contains(&format!("counter=[{n}]")),
                    "boot {cut}: {check:?} {seen:?}"
                );
            }
        }
        if (cut >= MIN_CUTS && lost > 0) || cut == MAX_CUTS {
            guest.press_power_button();
            cuts = cut;
            break;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(200 + (seed >> 33) % 2800);
        std::thread::sleep(delay);
        // The power goes: the disk's cache first, then the machine.
        drop(cache);
        guest.pull_the_plug();
        let wrote = guest
            .serial()
            .lines()
            .filter_map(|l| l.split("power-cut wrote ").nth(1))
            .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        drop(guest);
        let seen = OnDisk::check(&disk, dir.path(), cut);
        let value = seen.config.unwrap_or(0);
        assert!(
            value >= last_seen,
            "cut {cut}: the config went back from cut-{last_seen} to cut-{value}"
        );
        // `power-cut wrote N` is said after `brigctl config set` returned:
        // PID 1 had renamed the file into place and synced its directory.
        // A rename without that sync would be lost with the cache.
        assert!(
            value >= wrote,
            "cut {cut}: `config set hostname cut-{wrote}` was acknowledged, the disk has cut-{value}"
        );
        if seen.counter.unwrap_or(0) < wrote {
            lost += 1;
        }
        last_seen = value;
        values.push(value.to_string());
        verdicts.push(seen.e2fsck.clone());
        on_disk = Some(seen);
    }
    println!(
        "power cuts: {cuts}; config after each: {}; unflushed writes lost at {lost} cuts; \
         e2fsck said: {}",
        values.join(" "),
        verdicts.join(" | ")
    );
    assert!(last_seen > 0, "no write ever reached the disk");
    // The writer never syncs its counter: a cut that loses none of it is
    // one that came just after a sync; twelve such in a row mean the
    // cache is not volatile after all.
    assert!(lost > 0, "no cut lost an unflushed write");
}

/// First boot makes the state partition, then formats it: the power is
/// cut between the two, with the disk's cache lost. The cut comes a little
/// later each try (the table written, mke2fs's work not yet flushed is the
/// aim) until the disk's table names BRIG_STATE and the partition holds no
/// ext4; a try that missed starts again from a fresh copy. Returns
/// the try that hit, described.
fn cut_between_making_and_formatting_the_state_partition(
    built: &Path,
    disk: &Path,
    dir: &Path,
    kernel_only: &Path,
    options: &[String],
) -> String {
    let mut tried = Vec::new();
    for delay_ms in [0u64, 50, 150, 400, 1000, 2000] {
        let cache = VolatileCache::serve(disk, dir);
        let mut all = options.to_vec();
        all.extend(cache.drive_options());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut guest = Guest::boot_with("qemu-x86_64", kernel_only, &[], &all);
        guest.wait_for("brig: state: making the state partition", BOOT);
        std::thread::sleep(Duration::from_millis(delay_ms));
        drop(cache);
        guest.pull_the_plug();
        drop(guest);
        let table = run(Command::new("sfdisk").arg("--json").arg(disk));
        let table: serde_json::Value = serde_json::from_str(&table).unwrap();
        let state = &table["partitiontable"]["partitions"][3];
        if state["name"] != "BRIG_STATE" {
            let names = &table["partitiontable"]["partitions"];
            tried.push(format!("{delay_ms} ms: no partition yet ({names})"));
            // A fresh copy all the same: one CI run booted the next try
            // into a state partition this table did not show.
            let fresh = disk_copy(built, "brig-qemu-x86_64.img", dir, "1G");
            assert_eq!(fresh, disk);
            continue;
        }
        let mut magic = [0u8; 2];
        let file = std::fs::File::open(disk).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(
            &file,
            &mut magic,
            state["start"].as_u64().unwrap() * 512 + 1024 + 0x38,
        )
        .unwrap();
        if magic != [0x53, 0xEF] {
            return format!("{delay_ms} ms after the partition was announced");
        }
        tried.push(format!("{delay_ms} ms: already formatted"));
        // Too late: the next try starts from the image as built.
        let fresh = disk_copy(built, "brig-qemu-x86_64.img", dir, "1G");
        assert_eq!(fresh, disk);
    }
    panic!(
        "no cut fell between making and formatting the state partition: {}",
        tried.join("; ")
    );
}

/// A disk's volatile write cache: nbdkit serves the image over a unix
/// socket with its cache filter in writeback mode, holding every write
/// until the guest flushes; dropping it kills nbdkit, and what was not
/// flushed is gone, as at a power cut. QEMU is told the disk has a write
/// cache (`cache=writeback`), so the guest's kernel flushes as on a real one.
struct VolatileCache {
    nbdkit: std::process::Child,
    socket: PathBuf,
}

impl VolatileCache {
    fn serve(image: &Path, dir: &Path) -> VolatileCache {
        let socket = dir.join("nbd.sock");
        let _ = std::fs::remove_file(&socket);
        let nbdkit = Command::new("nbdkit")
            .args(["--foreground", "--unix"])
            .arg(&socket)
            .args(["--filter=cache", "file"])
            .arg(image)
            .arg("cache=writeback")
            .spawn()
            .expect("starting nbdkit (Debian package nbdkit)");
        let cache = VolatileCache { nbdkit, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cache.socket.exists() {
            assert!(Instant::now() < deadline, "nbdkit did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        cache
    }

    /// `brig run` options that attach the disk behind the cache.
    fn drive_options(&self) -> [String; 2] {
        [
            "--qemu-arg=-drive".to_string(),
            format!(
                "--qemu-arg=file.driver=nbd,file.path={},format=raw,if=virtio,cache=writeback",
                self.socket.display()
            ),
        ]
    }
}

impl Drop for VolatileCache {
    fn drop(&mut self) {
        let _ = self.nbdkit.kill();
        let _ = self.nbdkit.wait();
    }
}

/// The harness itself: a write the client has not flushed does not reach
/// the image when the cache goes; one written with FUA (force unit
/// access, as the kernel writes what must be on the disk) does. qemu-io
/// is the disk's client, still connected when the cache is killed, as
/// QEMU is.
fn volatile_cache_loses_unflushed_writes(dir: &Path) {
    use std::io::{BufRead, BufReader, Write};
    let image = dir.join("cache-check.img");
    run(Command::new("truncate").args(["-s", "1M"]).arg(&image));
    for (fua, kept) in [("", false), ("-f ", true)] {
        let cache = VolatileCache::serve(&image, dir);
        let target = format!("nbd+unix:///?socket={}", cache.socket.display());
        // Line-buffered, to see each answer as it comes; writeback mode
        // flushes only when asked (or at the end, which never comes here).
        let mut client = Command::new("stdbuf")
            .args(["-oL", "qemu-io", "-f", "raw", "-t", "writeback", &target])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("qemu-io (Debian package qemu-utils)");
        let mut stdin = client.stdin.take().unwrap();
        writeln!(stdin, "write {fua}-P 0x5a 0 64k").unwrap();
        let mut said = String::new();
        let mut lines = BufReader::new(client.stdout.take().unwrap());
        while !said.contains("wrote 65536/65536 bytes") {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                panic!("qemu-io ended: {said}");
            }
            said += &line;
        }
        // The power goes while the client is connected.
        drop(cache);
        drop(stdin);
        let _ = client.wait();
        let bytes = std::fs::read(&image).unwrap();
        assert_eq!(
            bytes[..65536].iter().all(|&b| b == 0x5a),
            kept,
            "write {fua}: qemu-io said: {said}"
        );
    }
}

/// What the disk holds after a cut, read on the host from a copy of its
/// state partition once e2fsck has replayed the journal.
#[derive(Debug)]
struct OnDisk {
    /// N of the saved hostname cut-N.
    config: Option<u64>,
    counter: Option<u64>,
    /// What e2fsck did, in a word.
    e2fsck: String,
}

impl OnDisk {
    fn check(disk: &Path, dir: &Path, cut: usize) -> OnDisk {
        // The state partition, where the disk's table says it is.
        let table = run(Command::new("sfdisk").arg("--json").arg(disk));
        let table: serde_json::Value = serde_json::from_str(&table).unwrap();
        let state = &table["partitiontable"]["partitions"][3];
        assert_eq!(state["name"], "BRIG_STATE", "cut {cut}: {table}");
        let part = dir.join("state-copy.img");
        run(Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", part.display()))
            .arg(format!("skip={}", state["start"].as_u64().unwrap() * 512))
            .arg(format!("count={}", state["size"].as_u64().unwrap() * 512))
            .args([
                "bs=1M",
                "iflag=skip_bytes,count_bytes",
                "conv=sparse",
                "status=none",
            ]));
        // As at boot, in preen mode (forced): the journal is replayed and
        // what a crash leaves anyway is put right (summary counts, the
        // orphan file); anything else is damage, exit 4 and up.
        let fsck = Command::new("e2fsck")
            .args(["-fp"])
            .arg(&part)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let code = fsck.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "cut {cut}: e2fsck -fp exit {code}, the filesystem is damaged:\n{said}"
        );
        let e2fsck = if said.contains("recovering journal") {
            format!("journal replayed (exit {code})")
        } else {
            format!("clean (exit {code})")
        };
        let cat = |path: &str| -> Option<Vec<u8>> {
            let out = Command::new("debugfs")
                .args(["-R", &format!("cat {path}")])
                .arg(&part)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            (!err.contains("File not found")).then_some(out.stdout)
        };
        let config = cat("/config/local.json").map(|bytes| {
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("cut {cut}: the config is not whole ({e}): {bytes:?}"));
            let hostname = json["hostname"].as_str().unwrap_or_default();
            hostname
                .strip_prefix("cut-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cut {cut}: config {json}"))
        });
        // Written after the config: never newer than it; never torn.
        let counter = cat("/volumes/home/brig/counter").and_then(|bytes| {
            let text = String::from_utf8(bytes.clone())
                .unwrap_or_else(|_| panic!("cut {cut}: counter {bytes:?}"));
            if text.is_empty() {
                return None; // truncated, its new contents not yet written
            }
            let n: u64 = text
                .strip_suffix('\n')
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("cut {cut}: counter {text:?}"));
            assert!(
                n <= config.unwrap_or(0),
                "cut {cut}: counter {n} newer than the config {config:?}"
            );
            Some(n)
        });
        for k in 0..8u64 {
            let Some(bytes) = cat(&format!("/volumes/home/brig/blob-{k}")) else {
                continue;
            };
            let Some(first) = bytes
                .split(|&b| b == b'\n')
                .next()
                .filter(|l| !l.is_empty())
            else {
                assert!(
                    bytes.is_empty(),
                    "cut {cut}: blob-{k} starts with a newline"
                );
                continue;
            };
            let j: u64 = std::str::from_utf8(first)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "cut {cut}: blob-{k} holds {:?}",
                        &bytes[..bytes.len().min(64)]
                    )
                });
            let pattern = format!("{j}\n").repeat(65536 / (first.len() + 1) + 1);
            assert!(
                j % 8 == k
                    && j <= config.unwrap_or(0)
                    && bytes.len() <= 65536
                    && pattern.as_bytes().starts_with(&bytes),
                "cut {cut}: blob-{k} is not a prefix of the pattern of write {j} ({} bytes)",
                bytes.len()
            );
        }
        let _ = std::fs::remove_file(&part);
        OnDisk {
            config,
            counter,
            e2fsck,
        }
    }
}
