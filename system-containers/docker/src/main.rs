//! brig-dockerd: the docker container's entry, run by tini. It writes
//! `/etc/docker/daemon.json` from `brig.docker` (what PID 1 parsed into
//! docker.json), makes the iptables commands dockerd calls, moves itself
//! out of the container's cgroup root so that dockerd may make cgroups for
//! the user's containers, and execs dockerd (docs/docker.md).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use brig_spec::docker_config::{DockerConfig, DOCKER_GROUP};
use brig_spec::paths::DOCKER_SOCKET;
use serde_json::{Map, Value};

const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// The TLS files of `brig.docker.tls`, for the API on TCP.
const TLS_DIR: &str = "/etc/docker/tls";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Debian's iptables commands are links that its maintainer scripts make
/// (update-alternatives), which never run in an unpacked rootfs.
const XTABLES: &str = "/usr/sbin/xtables-nft-multi";
const IPTABLES_COMMANDS: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];
const LINKS_DIR: &str = "/usr/local/sbin";
/// What a dockerd that did not stop cleanly leaves under /run (which lives
/// as long as the container's writable layer, the whole boot): pid files
/// that make the next dockerd think containerd still runs ("process with
/// PID 10 is still running") and containerd's state. (The socket, the
/// readiness path, PID 1 removes before each start.)
const STALE: &[&str] = &["/run/docker.pid", "/run/docker", "/run/containerd"];

fn say(message: &str) {
    eprintln!("brig-dockerd: {message}");
}

fn main() -> ExitCode {
    let config = read_config(Path::new(brig_spec::paths::DOCKER_CONFIG));
    if let Some(tls) = &config.tls {
        if let Err(e) = tls.write_to(Path::new(TLS_DIR)) {
            say(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    }
    let daemon = daemon_json(&config);
    let text = serde_json::to_string_pretty(&Value::Object(daemon)).unwrap_or_default();
    if let Err(e) = fs::create_dir_all("/etc/docker").and_then(|()| fs::write(DAEMON_JSON, text)) {
        say(&format!("error: writing {DAEMON_JSON}: {e}"));
        return ExitCode::FAILURE;
    }
    for problem in iptables_links(Path::new(XTABLES), Path::new(LINKS_DIR)) {
        say(&format!("error: {problem}"));
    }
    // dockerd keeps its state under /var/run; the image has no base-files,
    // which would make it the link to /run it is on Debian.
    if fs::symlink_metadata("/var/run").is_err() {
        if let Err(e) = std::os::unix::fs::symlink("/run", "/var/run") {
            say(&format!("error: linking /var/run to /run: {e}"));
        }
    }
    // Every process of the last run is gone: PID 1 killed the cgroup.
    for problem in remove_all(Path::new("/"), STALE) {
        say(&format!("error: {problem}"));
    }
    if let Err(e) = nest_cgroup(Path::new(CGROUP_ROOT)) {
        say(&format!(
            "error: {e}; containers' resource limits and `docker stats` will not work"
        ));
    }
    let socket = DOCKER_SOCKET;
    // Tools inside use the default path.
    let _ = fs::remove_file("/var/run/docker.sock");
    let _ = std::os::unix::fs::symlink(socket, "/var/run/docker.sock");
    let args = dockerd_args(&config, socket);
    say(&format!("starting dockerd {}", args.join(" ")));
    let error = Command::new("/usr/sbin/dockerd")
        .args(&args)
        .env(
            "PATH",
            format!("{LINKS_DIR}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .exec();
    say(&format!("error: running /usr/sbin/dockerd: {error}"));
    ExitCode::FAILURE
}

/// Removes `paths` (files or whole directories) under `root`; what could
/// not be removed. A path that is not there is no problem.
fn remove_all(root: &Path, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|path| {
            let path = root.join(path.trim_start_matches('/'));
            let removed = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            removed
                .err()
                .map(|e| format!("removing {}: {e}", path.display()))
        })
        .collect()
}

/// `brig.docker` as PID 1 wrote it; the defaults when there is none or it
/// cannot be read (said): Docker still starts.
fn read_config(path: &Path) -> DockerConfig {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
            say(&format!(
                "error: reading {}: {e}; starting with the defaults",
                path.display()
            ));
            DockerConfig::default()
        }),
        Err(_) => DockerConfig::default(),
    }
}

/// daemon.json: the user's settings, TLS for the API on TCP, and bounded
/// container logs (the state partition may be an SD card) unless the user
/// chose how to log.
fn daemon_json(config: &DockerConfig) -> Map<String, Value> {
    let mut daemon = config.daemon.clone();
    if config.tls.is_some() {
        daemon.insert("tlsverify".into(), true.into());
        for (key, file) in [
            ("tlscacert", "ca.pem"),
            ("tlscert", "cert.pem"),
            ("tlskey", "key.pem"),
        ] {
            daemon.insert(key.into(), format!("{TLS_DIR}/{file}").into());
        }
    }
    let driver = daemon.get("log-driver").and_then(Value::as_str);
    if driver.is_none_or(|d| d == "json-file") && !daemon.contains_key("log-opts") {
        daemon.insert("log-driver".into(), "json-file".into());
        daemon.insert(
            "log-opts".into(),
            serde_json::json!({"max-size": "10m", "max-file": "3"}),
        );
    }
    daemon
}

/// dockerd's command line: the socket and its group, then the user's.
fn dockerd_args(config: &DockerConfig, socket: &str) -> Vec<String> {
    let mut args = vec![
        format!("--host=unix://{socket}"),
        format!("--group={DOCKER_GROUP}"),
        format!("--config-file={DAEMON_JSON}"),
    ];
    // Only with TLS (brig-spec refuses `listen` without it).
    if config.tls.is_some() {
        args.extend(config.listen.iter().map(|l| format!("--host={l}")));
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// Links `iptables`, `ip6tables` and their -save/-restore to the nf_tables
/// multi-call binary in `dir`. Returns what went wrong.
fn iptables_links(xtables: &Path, dir: &Path) -> Vec<String> {
    if !xtables.exists() {
        return vec![format!(
            "{} is missing: dockerd cannot set up container networking",
            xtables.display()
        )];
    }
    if let Err(e) = fs::create_dir_all(dir) {
        return vec![format!("making {}: {e}", dir.display())];
    }
    IPTABLES_COMMANDS
        .iter()
        .filter_map(|name| {
            let link = dir.join(name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(xtables, &link)
                .err()
                .map(|e| format!("linking {}: {e}", link.display()))
        })
        .collect()
}

/// cgroup v2 lets a cgroup hand controllers to its children only while no
/// process sits in it. The container's cgroup namespace has its root at the
/// docker service's cgroup, where tini and this process are: move them all
/// to a child, `init`, then enable every controller there is for children
/// (dockerd makes `docker/<id>` per container).
fn nest_cgroup(root: &Path) -> Result<(), String> {
    let procs = root.join("cgroup.procs");
    let read =
        |p: &Path| fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let init = root.join("init");
    match fs::create_dir(&init) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making {}: {e}", init.display())),
    }
    for pid in read(&procs)?.lines().filter(|l| !l.trim().is_empty()) {
        // A process that exited meanwhile is gone; that is no error.
        if let Err(e) = fs::write(init.join("cgroup.procs"), pid) {
            if e.raw_os_error() != Some(3) {
                return Err(format!("moving {pid} to {}: {e}", init.display()));
            }
        }
    }
    let controllers = read(&root.join("cgroup.controllers"))?;
    let enable: Vec<String> = controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return Err("no cgroup controllers were handed to the docker container".into());
    }
    let control = root.join("cgroup.subtree_control");
    fs::write(&control, enable.join(" ")).map_err(|e| {
        format!(
            "enabling {} in {}: {e}",
            enable.join(" "),
            control.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::docker_config;

    #[test]
    fn a_crashed_runs_state_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("run/docker/containerd")).unwrap();
        fs::write(r.join("run/docker/containerd/containerd.pid"), "10").unwrap();
        fs::write(r.join("run/docker.pid"), "9").unwrap();
        fs::create_dir_all(r.join("run/brig/docker")).unwrap();
        fs::write(r.join("run/brig/docker/keep"), "").unwrap();
        assert_eq!(remove_all(r, STALE), Vec::<String>::new());
        assert!(!r.join("run/docker").exists());
        assert!(!r.join("run/docker.pid").exists());
        assert!(r.join("run/brig/docker/keep").exists());
    }

    #[test]
    fn the_users_settings_go_over_brigs() {
        let (config, problems) = docker_config::parse(&serde_json::json!({
            "log_opts": {"max-size": "1m"},
            "live_restore": true,
            "extra_args": ["--experimental"],
        }));
        assert_eq!(problems, []);
        let daemon = daemon_json(&config);
        assert_eq!(daemon["log-opts"], serde_json::json!({"max-size": "1m"}));
        assert_eq!(daemon["live-restore"], true);
        let defaults = daemon_json(&DockerConfig::default());
        assert_eq!(defaults["log-driver"], "json-file");
        assert_eq!(defaults["log-opts"]["max-size"], "10m");
        // Another driver gets none of json-file's options.
        let (syslog, _) = docker_config::parse(&serde_json::json!({"log_driver": "syslog"}));
        assert_eq!(
            Value::Object(daemon_json(&syslog)),
            serde_json::json!({"log-driver": "syslog"})
        );
        assert_eq!(
            dockerd_args(&config, DOCKER_SOCKET),
            [
                "--host=unix:///run/brig/docker/docker.sock",
                "--group=docker",
                "--config-file=/etc/docker/daemon.json",
                "--experimental"
            ]
        );
    }

    #[test]
    fn the_api_on_tcp_requires_client_certificates() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let (config, problems) = docker_config::parse(&serde_json::json!({
            "listen": ["tcp://0.0.0.0:2376"],
            "tls": {"ca": pem, "cert": pem, "key": "-----BEGIN PRIVATE KEY-----\n"},
        }));
        assert_eq!(problems, []);
        let daemon = daemon_json(&config);
        assert_eq!(daemon["tlsverify"], true);
        assert_eq!(daemon["tlskey"], "/etc/docker/tls/key.pem");
        let args = dockerd_args(&config, "/s");
        assert!(
            args.contains(&"--host=tcp://0.0.0.0:2376".to_string()),
            "{args:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        config.tls.as_ref().unwrap().write_to(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn iptables_commands_link_to_the_nft_binary() {
        let dir = tempfile::tempdir().unwrap();
        let xtables = dir.path().join("xtables-nft-multi");
        fs::write(&xtables, "").unwrap();
        let links = dir.path().join("sbin");
        assert_eq!(iptables_links(&xtables, &links), Vec::<String>::new());
        assert_eq!(
            fs::read_link(links.join("ip6tables-restore")).unwrap(),
            xtables
        );
        // Again (a restart): the links are made anew, no error.
        assert_eq!(iptables_links(&xtables, &links), Vec::<String>::new());
        let missing = iptables_links(&dir.path().join("nothing"), &links);
        assert!(missing[0].contains("is missing"), "{missing:?}");
    }
}
