//! The user's Docker Engine, as a user drives it from the console over ssh,
//! with no registry in reach: an image made on the host (a static binary in
//! a tar) is imported and run, the Remote API answers on the socket, the
//! config's settings reach dockerd, a `--restart always` container is back
//! after `brigctl reboot` (images and containers on the state partition)
//! after `brigctl restart docker` (which applies a `brigctl config set
//! brig.docker…`) and after dockerd is killed, its logs are there, and
//! `docker stats` reads its memory from cgroup v2.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::image::{built_with_docker, image_tar};
use crate::guest::{key_pair, run, Guest, Power};

const BOOT: Duration = Duration::from_secs(240);

pub fn qemu_x86_64_runs_the_users_containers_with_docker() {
    let board = "qemu-x86_64";
    let built = built_with_docker(board);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "BRIG_STATE"])
        .arg(&state)
        .arg("2G"));
    let (key, public) = key_pair(dir.path(), "key");
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nssh_authorized_keys: ['{}']\n\
             brig:\n  docker:\n    registry_mirrors: ['https://mirror.brig-e2e.test']\n\
             \x20   log_opts: {{max-size: 5m, max-file: 2}}\n",
            public.trim()
        ),
    )
    .unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let state_drive = format!("--qemu-arg=file={},format=raw,if=virtio", state.display());
    let tar = image_tar(dir.path());

    let mut guest = Guest::boot_with(
        board,
        &built,
        &[],
        &[
            "--user-data",
            user_data.to_str().unwrap(),
            "--qemu-arg=-drive",
            &state_drive,
        ],
    );
    guest.wait_for("brig: ready", BOOT);
    let ssh = |guest: &Guest, command: &str| guest.ssh_ok("brig", &key, &known_hosts, command);
    // dockerd may still be starting when ssh answers.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !guest
        .ssh("brig", &key, &known_hosts, "docker version >/dev/null 2>&1")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer: {}",
            ssh(
                &guest,
                "docker version 2>&1; id; ls -la /var/run/docker.sock /run/brig/docker; \
                 sudo brigctl ps; sudo brigctl logs docker --tail 30"
            )
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Docker idle, no container yet: the service's cgroup (page cache of
    // its binaries included) and the daemons' resident memory.
    let idle = ssh(
        &guest,
        "sudo brigctl ps | grep -E '^(NAME|docker) '; \
         ps -o rss=,comm= -C dockerd,containerd,tini",
    );
    println!("docker idle:\n{idle}");
    // Compose, as a CLI plugin.
    let compose = ssh(&guest, "docker compose version");
    assert!(compose.starts_with("Docker Compose version "), "{compose}");
    guest.scp_to("brig", &key, &known_hosts, &tar);
    let out = ssh(
        &guest,
        "docker import --change 'CMD [\"/hello\"]' hello.tar brig-e2e/hello:1 >/dev/null && \
         docker run --rm brig-e2e/hello:1",
    );
    assert_eq!(out, "hello from a container on brig\n");
    // The Remote API on the socket, as the user asks it.
    let version = ssh(
        &guest,
        "curl -s --unix-socket /var/run/docker.sock http://localhost/version",
    );
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert!(version["ApiVersion"].is_string(), "{version}");
    // brig.docker reached daemon.json.
    let info = ssh(
        &guest,
        "docker info --format '{{json .RegistryConfig.Mirrors}} {{.CgroupVersion}} {{.Driver}}'",
    );
    assert_eq!(
        info.trim(),
        "[\"https://mirror.brig-e2e.test/\"] 2 overlay2",
        "{info}"
    );
    ssh(
        &guest,
        "docker run -d --name keeper --restart always brig-e2e/hello:1 /hello serve >/dev/null",
    );
    let stats = wait_for_stats(&guest, &ssh);
    println!("docker stats: {stats}");
    let memory = ssh(&guest, "sudo brigctl ps");
    println!("{memory}");
    guest.brigctl_power(&key, &known_hosts, Power::Reboot);
    drop(guest);

    // Second boot, the state disk only: the container comes back.
    let mut guest = Guest::boot_with(board, &built, &[], &["--qemu-arg=-drive", &state_drive]);
    guest.wait_for("brig: ready", BOOT);
    let dockerd = wait_for_keeper(&guest, &key, &known_hosts, "");
    // A setting changed while it runs, applied by restarting dockerd (its
    // cgroup, which it split into a child per container, is made fit again
    // for the new process).
    let said = ssh(
        &guest,
        "sudo brigctl config set brig.docker.registry_mirrors '[https://other.brig-e2e.test]'",
    );
    assert!(
        said.contains("`sudo brigctl restart docker` applies it now"),
        "{said}"
    );
    ssh(&guest, "sudo brigctl restart docker");
    let dockerd = wait_for_keeper(&guest, &key, &known_hosts, &dockerd);
    let mirrors = ssh(
        &guest,
        "docker info --format '{{json .RegistryConfig.Mirrors}}'",
    );
    assert_eq!(mirrors.trim(), "[\"https://other.brig-e2e.test/\"]");
    // dockerd crashing leaves its pid files and socket behind; the service
    // comes back, and so does the container.
    ssh(&guest, "sudo pkill -KILL -x dockerd");
    wait_for_keeper(&guest, &key, &known_hosts, &dockerd);
    let docker = ssh(&guest, "sudo brigctl ps | grep '^docker '");
    assert!(docker.contains(" running "), "{docker}");
    // Its logs, from both boots, the restart and the crash.
    let logs = ssh(&guest, "docker logs keeper");
    assert_eq!(logs.matches("serving, holding 8 MiB").count(), 4, "{logs}");
    wait_for_stats(&guest, &ssh);
    guest.press_power_button();
}

/// Waits for a dockerd other than `previous` (its pid) to run `keeper`;
/// returns that dockerd's pid.
fn wait_for_keeper(guest: &Guest, key: &Path, known_hosts: &Path, previous: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = guest.ssh(
            "brig",
            key,
            known_hosts,
            "echo $(pidof dockerd) $(docker inspect --format '{{.State.Running}}' keeper)",
        );
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some((pid, "true")) = said.trim().split_once(' ') {
            if pid != previous {
                return pid.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "keeper not running under a new dockerd: {said}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(
                &guest
                    .ssh(
                        "brig",
                        key,
                        known_hosts,
                        "sudo brigctl ps; sudo brigctl logs docker --tail 20"
                    )
                    .stdout
            )
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `docker stats` of `keeper` once it shows the 8 MiB it holds.
fn wait_for_stats(guest: &Guest, ssh: &dyn Fn(&Guest, &str) -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = ssh(
            guest,
            "docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' keeper",
        );
        // "keeper 8.4MiB / 1.9GiB"
        let used = stats
            .split_whitespace()
            .nth(1)
            .and_then(|m| m.strip_suffix("MiB"))
            .and_then(|m| m.parse::<f64>().ok());
        if used.is_some_and(|m| m >= 8.0) {
            return stats.trim().to_string();
        }
        assert!(Instant::now() < deadline, "docker stats: {stats}");
        std::thread::sleep(Duration::from_secs(2));
    }
}
