//! System containers in a booted image: PID 1 starts the services of
//! tests/e2e/services/ and an `operator` service drives them with brigctl
//! over the control socket, printing what it sees; the console carries every
//! service's output (`brig.service_output=console`).

use std::time::Duration;

use brig_spec::service::ServiceSpec;

use crate::guest::{brig, source_dir, Guest, Power};
use serde_json::json;

/// The console line a service printed, without PID 1's prefix and timestamp.
fn said<'a>(serial: &'a str, service: &str, starts: &str) -> Option<&'a str> {
    let prefix = format!("brig: [{service}] {starts}");
    serial.lines().find(|l| l.starts_with(&prefix)).map(|l| {
        l["brig: [".len() + service.len() + 2..]
            .rsplit_once(" [t=")
            .map_or(l, |(text, _)| text)
    })
}

/// Adds to the image's system disk a service whose image is garbage and
/// one whose spec is malformed, as a damaged or hand-edited system would
/// have: the system squashfs again with them, written back into the system
/// partition (grown to take it, its GUID kept).
fn add_broken_services(artifacts: &std::path::Path) {
    use brig_spec::gpt::{self, SECTOR};
    use std::os::unix::fs::FileExt;
    let stage = tempfile::tempdir().unwrap();
    let tree = stage.path().join("tree");
    let run = |command: &mut std::process::Command| {
        let status = command.status().unwrap();
        assert!(status.success(), "{command:?}: {status}");
    };
    run(std::process::Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-d"])
        .arg(&tree)
        .arg(artifacts.join("system.squashfs")));
    let dir = tree.join("containers");
    std::fs::write(dir.join("corrupt.squashfs"), vec![0x5a; 8192]).unwrap();
    // As `brig build` writes the specs: JSON.
    let valid =
        r#""command": ["/usr/bin/busybox", "true"], "rootfs": {"packages": ["busybox-static"]}"#;
    std::fs::write(dir.join("corrupt.json"), format!("{{{valid}}}")).unwrap();
    std::fs::write(
        dir.join("malformed.json"),
        format!(r#"{{{valid}, "limits": {{"memory_max": "plenty"}}}}"#),
    )
    .unwrap();
    let squashfs = stage.path().join("system.squashfs");
    run(std::process::Command::new("mksquashfs")
        .arg(&tree)
        .arg(&squashfs)
        .args([
            "-quiet",
            "-no-progress",
            "-noappend",
            "-all-root",
            "-comp",
            "zstd",
        ]));
    let data = std::fs::read(&squashfs).unwrap();

    let path = artifacts.join("system.img");
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let sectors = disk.metadata().unwrap().len() / SECTOR;
    let mut read_at = |offset: u64, length: usize| {
        let mut buf = vec![0u8; length];
        disk.read_exact_at(&mut buf, offset)
            .map(|()| buf)
            .map_err(|e| e.to_string())
    };
    let primary = read_at(0, gpt::PRIMARY_BYTES as usize).unwrap();
    let mut table = gpt::read(&primary, sectors, &mut read_at).unwrap().table;
    let (number, first) = table
        .find("BRIG_SYSTEM")
        .map(|(n, p)| (n, p.first_lba))
        .unwrap();
    let last = first + (data.len() as u64).next_multiple_of(1 << 20) / SECTOR - 1;
    let sectors = last + 1 + 2048;
    table.grow(number, last, sectors).unwrap();
    disk.set_len(sectors * SECTOR).unwrap();
    disk.write_all_at(&table.primary(sectors), 0).unwrap();
    disk.write_all_at(&table.backup(sectors), gpt::Table::backup_offset(sectors))
        .unwrap();
    disk.write_all_at(&data, first * SECTOR).unwrap();
}

/// `board`'s image without Docker, with the services of `dir` (in the
/// source tree), in a directory of its own.
fn built_with_services(board: &str, dir: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let services = source_dir().join(dir);
    let build = brig(
        &[
            "build",
            "--board",
            board,
            "--out",
            out.path().to_str().unwrap(),
            "--services",
            services.to_str().unwrap(),
            "--without",
            "docker",
            crate::guest::FAST[0],
            crate::guest::FAST[1],
        ],
        &[],
    );
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

pub fn qemu_x86_64_runs_services_as_containers_with_limits_readiness_restarts_and_brigctl() {
    services_run_as_containers("qemu-x86_64");
}

pub fn qemu_aarch64_runs_services_as_containers_with_limits_readiness_restarts_and_brigctl() {
    services_run_as_containers("qemu-aarch64");
}

fn services_run_as_containers(board: &str) {
    let out = built_with_services(board, "tests/e2e/services");

    add_broken_services(out.path());

    // On x86_64, the user data also comes on the kernel command line,
    // base64-encoded: "#cloud-config\nhostname: from-cmdline\n".
    let from_cmdline = "brig.config=I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogZnJvbS1jbWRsaW5lCg==";
    let x86 = board == "qemu-x86_64";
    let append: &[&str] = if x86 {
        &["brig.service_output=console", from_cmdline]
    } else {
        &["brig.service_output=console"]
    };
    let mut guest = Guest::boot(board, out.path(), append);
    guest.wait_for("brig: [operator] OPERATOR-DONE", Duration::from_secs(300));
    // The operator can finish before the console's sshd is ready (its host
    // keys are made on a slow, busy CI machine), and so before `brig: ready`.
    let serial = guest.wait_for("brig: ready", Duration::from_secs(300));
    let line = |service: &str, starts: &str| {
        said(&serial, service, starts)
            .unwrap_or_else(|| panic!("no [{service}] {starts}… on the console:\n{serial}"))
    };

    // Namespaces, hostname, capabilities, no_new_privs.
    assert_eq!(line("caps", "hostname"), "hostname caps pid 1");
    // The default set (0x200405fb) plus the NET_ADMIN grant (bit 12).
    assert_eq!(line("caps", "CapEff"), "CapEff:\t00000000200415fb");
    assert_eq!(line("caps", "CapBnd"), "CapBnd:\t00000000200415fb");
    assert_eq!(line("caps", "NoNewPrivs"), "NoNewPrivs:\t1");

    // memory.max: the hog is OOM-killed, restarted with backoff, then crash-loops.
    let oom: u32 = line("operator", "OOM-KILLS")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(oom >= 5, "{oom} OOM kills");
    assert!(line("memhog", "exited with status 137").ends_with("now backoff"));
    assert!(
        serial.contains("brig: [memhog] exited with status 137; now crash-loop"),
        "{serial}"
    );
    assert_eq!(
        line("operator", "TICKER-MEMORY-MAX"),
        "TICKER-MEMORY-MAX 33554432"
    );

    // pids.max: forks beyond the limit fail.
    assert!(line("pidlimit", "sh: can't fork").contains("Resource temporarily unavailable"));
    let pids = line("pidlimit", "pids ");
    let current: u32 = pids
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{pids:?}"));
    assert!(
        pids.ends_with(" of 8") && (2..=8).contains(&current),
        "{pids:?}"
    );

    // Dependency order and readiness: web starts only after the oneshot
    // setup is done, and counts as running only once its path exists.
    let at = |needle: &str| {
        serial
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing:\n{serial}"))
    };
    assert!(at("brig: [setup] exited with status 0; now done") < at("brig: [web] started"));
    assert!(at("brig: [web] started") < at("brig: [web] ready"));
    assert!(at("brig: [web] ready") < at("brig: ready"));
    // Command readiness: the check runs inside db's namespaces and passes
    // only once db has created /tmp/accepting in its own root.
    assert!(at("brig: [db] started") < at("brig: [db] ready"));
    assert!(at("brig: [db] ready") < at("brig: ready"));

    // A service that fills its writable layer fills only that: its own
    // tmpfs of writable_max.
    assert!(
        serial.contains("brig: [filler] dd: error writing '/big': No space left on device"),
        "{serial}"
    );

    // brigctl ps from a container.
    let ps: Vec<&str> = serial
        .lines()
        .skip_while(|l| !l.contains("[operator] PS-BEGIN"))
        .take_while(|l| !l.contains("[operator] PS-END"))
        .collect();
    let row = |name: &str| {
        ps.iter()
            .find(|l| l.contains(&format!("] {name} ")))
            .unwrap_or_else(|| panic!("no {name} in ps:\n{ps:#?}"))
    };
    assert!(row("crashy").contains("crash-loop") && row("crashy").contains("exited with status 1"));
    assert!(row("setup").contains(" done "));
    assert!(row("ticker").contains(" running "));
    let json: serde_json::Value =
        serde_json::from_str(line("operator", "JSON").trim_start_matches("JSON ")).unwrap();
    let ticker = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ticker")
        .unwrap();
    assert!(ticker["memory_bytes"].as_u64().unwrap() > 0, "{ticker}");
    // 11 built services, the system containers made for this board (the
    // image is built `--without docker`, which leaves swarm out too), plus
    // the corrupt image and the malformed spec.
    let system_containers = std::fs::read_dir(source_dir().join("system-containers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("docker") && !p.ends_with("swarm"))
        .filter_map(|p| {
            let file = p.join("service.toml");
            let text = std::fs::read_to_string(&file).ok()?;
            let name = p.file_name().unwrap().to_str().unwrap();
            Some(ServiceSpec::parse(name, &text).unwrap())
        })
        .filter(|spec| spec.boards.is_empty() || spec.boards.iter().any(|b| b == board))
        .count();
    assert_eq!(
        json["services"].as_array().unwrap().len(),
        11 + system_containers + 2
    );

    // Bad input fails only the service concerned, each with a precise reason.
    assert_eq!(
        line("missing", "cannot start"),
        "cannot start: exec /usr/sbin/nosuchd: ENOENT: No such file or directory"
    );
    let corrupt = line("corrupt", "cannot start");
    assert!(
        corrupt.contains("mounting /lib/brig/containers/corrupt.squashfs")
            && corrupt.contains("as squashfs")
            && corrupt.contains("not a valid squashfs image?"),
        "{corrupt}"
    );
    assert!(
        row("malformed").contains(" failed ") && row("malformed").contains("malformed.json"),
        "{}",
        row("malformed")
    );
    assert!(
        row("malformed").contains("memory_max"),
        "{}",
        row("malformed")
    );

    // brigctl restart: SIGTERM is ignored by sh as PID 1, so after the grace
    // period the cgroup is killed and the service starts again.
    let restart = at("brig: [operator] restarting ticker");
    let killed = restart
        + serial[restart..]
            .find("brig: [ticker] killing every process")
            .expect("ticker killed");
    assert!(
        serial[killed..].contains("brig: [ticker] started, pid"),
        "{serial}"
    );
    // brigctl logs shows the service's log.
    let logs: Vec<&str> = serial
        .lines()
        .skip_while(|l| !l.contains("[operator] LOGS-BEGIN"))
        .take_while(|l| !l.contains("[operator] LOGS-END"))
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("(brig) started, pid")),
        "{logs:#?}"
    );

    // brigctl stop: nothing of the service survives in its cgroup.
    assert_eq!(line("operator", "WEB-PROCS"), "WEB-PROCS []");
    assert_eq!(line("operator", "WEB-SLEEPERS"), "WEB-SLEEPERS 0");
    assert!(serial.contains("brig: [web] exited with status 137; now stopped"));
    // A bad request gets a clear error and a failing exit code.
    assert_eq!(
        line("operator", "brigctl: no service"),
        "brigctl: no service \"nosuch\""
    );
    assert_eq!(line("operator", "BAD-SERVICE-EXIT"), "BAD-SERVICE-EXIT 1");

    if x86 {
        for said in [
            "brig: config: from the kernel command line (brig.config=)",
            "brig: hostname from-cmdline (from config)",
        ] {
            assert!(
                serial.contains(said),
                "{said:?} not on the console:\n{serial}"
            );
        }
    }

    // An orderly power-off (the power button; on x86_64, whose PC has a
    // keyboard, a reboot from Ctrl-Alt-Del) stops the services first.
    let (serial, verb) = if x86 {
        let keys: Vec<_> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| json!({"type": "qcode", "data": k}))
            .collect();
        guest.qmp("send-key", json!({ "keys": keys }));
        (guest.goes_down(Power::Reboot, "Ctrl-Alt-Del"), "rebooting")
    } else {
        (guest.press_power_button(), "powering off")
    };
    let down = serial.find(&format!("brig: {verb} (")).expect("going down");
    let ticker_stopped = down
        + serial[down..]
            .find("brig: [ticker] exited with status")
            .expect("ticker stopped");
    assert!(ticker_stopped < serial.find(&format!("brig: {verb} now")).unwrap());
}

/// Hostile services against PID 1, in one boot (tests/e2e/hostile-services):
/// a service writing output as fast as it can three ways (`yes`, `yes ''`,
/// 10 MiB lines without a newline) runs while a prober asks PID 1 for
/// `brigctl ps` once a second for 60 s, on one vCPU, and watches PID 1's resident
/// memory; every call must be answered and the memory must not grow. The
/// machine has a hardware watchdog (QEMU's i6300esb) with a 10 s timeout,
/// which PID 1 keeps fed through all of it. Then the prober wedges PID 1
/// from outside (strace attached, then stopped: PID 1 waits in its next
/// system call for ever) and the watchdog resets the machine, which with
/// `--no-reboot` ends QEMU, with no reboot of PID 1's or the kernel's.
pub fn qemu_x86_64_pid1_stays_responsive_under_a_flood_and_the_watchdog_resets_it_when_wedged() {
    let board = "qemu-x86_64";
    let out = built_with_services(board, "tests/e2e/hostile-services");
    // One vCPU: the flood then has PID 1's processor to fight over, and
    // leaves the host's other core to the tests beside this one (two busy
    // vCPUs for minutes doubled the suite's power-cut test).
    let mut guest = Guest::boot_with(
        board,
        out.path(),
        &["brig.watchdog=10"],
        &["--qemu-arg=-smp", "--qemu-arg=1"],
    );
    let serial = guest.wait_for_line("FLOOD-RESULT", Duration::from_secs(400));
    // The FIFO at /etc/passwd failed that start, with the reason, and
    // held nothing up (the prober's brigctl calls went on).
    let fifo = serial
        .lines()
        .find_map(|l| l.split("FIFO-RESULT ").nth(1))
        .unwrap_or_else(|| panic!("no FIFO-RESULT:\n{serial}"));
    assert!(fifo.contains("/etc/passwd is not a regular file"), "{fifo}");
    let result = serial
        .lines()
        .find_map(|l| l.split("FLOOD-RESULT ").nth(1))
        .unwrap();
    println!("flood: {result}");
    if let Some(note) = serial.lines().find_map(|l| l.split("HELD-BACK ").nth(1)) {
        println!("the log's note: {note}");
    }
    let value = |key: &str| -> u64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {result:?}"))
    };
    assert_eq!(value("flood_running"), 1, "{result}");
    // The log service got the flood's lines up to the rate limit, and a
    // line saying how many more there were, at least once in the minute.
    assert!(value("held_back") >= 1, "{result}");
    // A minute of calls, each given 20 s before it counts as hung: every
    // one answered. How long they took is printed above, not asserted
    // (docs/security.md has the figure).
    assert!(value("calls") >= 3, "{result}");
    assert_eq!(value("failed"), 0, "every brigctl ps answered: {result}");
    // PID 1 reads output in bounded chunks, keeps bounded rings and a
    // queue bounded in bytes: through a minute of flood its resident memory
    // stays under the design's target, < 2 MiB, at every sample.
    assert!(
        value("rss_kib_max") < 2048,
        "PID 1's resident memory went over 2 MiB: {result}"
    );
    // The watchdog was open (10 s) for the whole minute: fed.
    let opened = serial
        .find("brig: watchdog: /dev/watchdog (i6300ESB timer), timeout 10 s, fed every 3333 ms")
        .unwrap_or_else(|| panic!("no watchdog line:\n{serial}"));
    assert!(opened < serial.find("FLOOD-RESULT").unwrap());
    let status = guest.wait_exit(Duration::from_secs(180));
    let serial = guest.serial();
    assert!(serial.contains("WEDGING"), "{serial}");
    assert!(status.success(), "QEMU: {status}\n{serial}");
    for orderly in [
        "brig: rebooting",
        "brig: powering off",
        "reboot: Restarting system",
    ] {
        assert!(
            !serial.contains(orderly),
            "{orderly:?}: not a reset:\n{serial}"
        );
    }
}
