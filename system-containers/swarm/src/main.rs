//! brig-swarm: the swarm container's oneshot. Once the local dockerd is up
//! it makes this node what `brig.docker.swarm` says: the swarm's first
//! manager (`init`), or a worker or manager joining through the managers
//! named (`join`). A join token comes from the config or, without one,
//! from a manager's Docker API over TLS with this node's certificate
//! (`brig.docker.tls`), so a cluster forms from config alone. A node
//! already in a swarm is left as it is: this runs at every boot.
//! Debian's docker CLI does the rest, but the join goes to dockerd's API
//! directly: `docker swarm join --token` would put the token on a command
//! line, where `ps` shows it (docs/docker.md).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use brig_spec::docker_config::{DockerConfig, Swarm, API_TLS_PORT, SWARM_PORT};
use brig_spec::paths::{DOCKER_SOCKET, DOCKER_SOCKET_DIR};

/// The client's copy of this node's TLS files.
const TLS_DIR: &str = "/tmp/brig-swarm-tls";
/// How long to keep trying (the local dockerd, the managers) before giving
/// up; the supervisor then starts this again with backoff.
const PATIENCE: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(5);

fn say(message: &str) {
    eprintln!("brig-swarm: {message}");
}

fn main() -> ExitCode {
    let config: DockerConfig = match std::fs::read(brig_spec::paths::SWARM_CONFIG) {
        Ok(data) => match serde_json::from_slice(&data) {
            Ok(c) => c,
            Err(e) => {
                say(&format!(
                    "error: reading {}: {e}",
                    brig_spec::paths::SWARM_CONFIG
                ));
                return ExitCode::FAILURE;
            }
        },
        Err(_) => DockerConfig::default(),
    };
    let Some(swarm) = &config.swarm else {
        say("no swarm in the config (brig.docker.swarm): nothing to do");
        return ExitCode::SUCCESS;
    };
    let tls = match &config.tls {
        Some(tls) => match tls.write_to(Path::new(TLS_DIR)) {
            Ok(()) => Some(TLS_DIR),
            Err(e) => {
                say(&format!("error: {e}"));
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // The local dockerd may still be starting, or starting again; the
    // managers may not be up yet: keep trying, saying each new reason once.
    let deadline = Instant::now() + PATIENCE;
    let mut last_error = String::new();
    loop {
        match take_part(swarm, tls) {
            Ok(done) => {
                say(&done);
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                if e != last_error {
                    say(&format!("{e}; trying again every {} s", RETRY.as_secs()));
                    last_error = e;
                }
            }
        }
        if Instant::now() > deadline {
            say(&format!(
                "error: not in the swarm after {} s; giving up for now",
                PATIENCE.as_secs()
            ));
            return ExitCode::FAILURE;
        }
        std::thread::sleep(RETRY);
    }
}

/// One attempt to make this node what the config says; what it did.
fn take_part(swarm: &Swarm, tls: Option<&str>) -> Result<String, String> {
    let local = format!("unix://{DOCKER_SOCKET_DIR}/docker.sock");
    let state = node_state(&local).map_err(|e| format!("asking the local dockerd: {e}"))?;
    if state == "active" {
        return Ok("this node is in a swarm already".into());
    }
    if swarm.init {
        docker(&local, &init_args(swarm)).map_err(|e| format!("docker swarm init: {e}"))?;
        return Ok("this node created the swarm and is its first manager".into());
    }
    let manager = join(swarm, tls)?;
    Ok(format!(
        "this node joined the swarm as a {} through {manager}",
        swarm.role.name()
    ))
}

/// Joins through the first manager that answers; returns it.
fn join(swarm: &Swarm, tls: Option<&str>) -> Result<String, String> {
    let mut errors = Vec::new();
    for manager in &swarm.join {
        let (host, port) = host_port(manager, SWARM_PORT);
        let token = match (&swarm.token, tls) {
            (Some(token), _) => token.clone(),
            (None, Some(dir)) => {
                let api = format!("tcp://{host}:{API_TLS_PORT}");
                match docker_tls(&api, dir, &["swarm", "join-token", "-q", swarm.role.name()]) {
                    Ok(token) => token.trim().to_string(),
                    Err(e) => {
                        errors.push(format!("asking {api} for a join token: {e}"));
                        continue;
                    }
                }
            }
            // brig-spec refuses this config.
            (None, None) => return Err("no token and no TLS to ask for one".into()),
        };
        let address = format!("{host}:{port}");
        match engine_post(
            DOCKER_SOCKET,
            "/swarm/join",
            &join_request(swarm, &token, &address),
        ) {
            Ok(_) => return Ok(address),
            Err(e) => errors.push(format!("joining through {address}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn init_args(swarm: &Swarm) -> Vec<String> {
    let mut args = vec!["swarm".to_string(), "init".to_string()];
    if let Some(address) = &swarm.advertise_addr {
        args.push(format!("--advertise-addr={address}"));
    }
    args
}

/// The body of `POST /swarm/join`, with what `docker swarm join` would
/// send for the same flags.
fn join_request(swarm: &Swarm, token: &str, manager: &str) -> String {
    let mut request = serde_json::json!({
        "ListenAddr": format!("0.0.0.0:{SWARM_PORT}"),
        "RemoteAddrs": [manager],
        "JoinToken": token,
    });
    if let Some(address) = &swarm.advertise_addr {
        request["AdvertiseAddr"] = address.clone().into();
    }
    request.to_string()
}

/// POSTs `body` (JSON) to dockerd's API at `path` over `socket`: the
/// answer's body, or dockerd's message when it refuses.
fn engine_post(socket: &str, path: &str, body: &str) -> Result<String, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connecting to {socket}: {e}"))?;
    // A join waits for the manager; dockerd gives up on it well before.
    stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: dockerd closes the connection after its answer.
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("writing to {socket}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading dockerd's answer: {e}"))?;
    engine_answer(&answer)
}

/// dockerd's HTTP answer: its body on success, else its `message`.
fn engine_answer(answer: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                head.lines().next().unwrap_or("")
            )
        })?;
    if (200..300).contains(&status) {
        return Ok(body.to_string());
    }
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Err(format!("{message} (HTTP {status})"))
}

/// `host[:port]` (an IPv6 address in brackets) with `default` as the port.
fn host_port(text: &str, default: u16) -> (String, u16) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (format!("[{host}]"), port.unwrap_or(default));
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_string(), port),
            Err(_) => (text.to_string(), default),
        },
        _ => (text.to_string(), default),
    }
}

fn node_state(local: &str) -> Result<String, String> {
    docker(
        local,
        &[
            "info".into(),
            "--format".into(),
            "{{.Swarm.LocalNodeState}}".into(),
        ],
    )
    .map(|s| s.trim().to_string())
}

/// Runs the docker CLI against `host`; its standard output, or why not.
fn docker(host: &str, args: &[String]) -> Result<String, String> {
    run(Command::new("/usr/bin/docker")
        .arg(format!("--host={host}"))
        .args(args))
}

/// As `docker`, against a remote API with this node's client certificate.
fn docker_tls(host: &str, dir: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new("/usr/bin/docker")
        .arg("--tlsverify")
        .arg(format!("--tlscacert={dir}/ca.pem"))
        .arg(format!("--tlscert={dir}/cert.pem"))
        .arg(format!("--tlskey={dir}/key.pem"))
        .arg(format!("--host={host}"))
        .args(args))
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&output.stderr);
        Err(format!("{} ({})", said.trim(), output.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::docker_config::SwarmRole;

    fn swarm() -> Swarm {
        Swarm {
            init: false,
            join: vec!["10.77.0.11".into()],
            role: SwarmRole::Manager,
            token: None,
            advertise_addr: Some("eth1".into()),
        }
    }

    #[test]
    fn commands_from_the_config() {
        assert_eq!(
            init_args(&swarm()),
            ["swarm", "init", "--advertise-addr=eth1"]
        );
        // The token goes in the API request's body, not on a command line.
        let request: serde_json::Value =
            serde_json::from_str(&join_request(&swarm(), "SWMTKN-1-x", "10.77.0.11:2377")).unwrap();
        assert_eq!(
            request,
            serde_json::json!({
                "ListenAddr": "0.0.0.0:2377",
                "AdvertiseAddr": "eth1",
                "RemoteAddrs": ["10.77.0.11:2377"],
                "JoinToken": "SWMTKN-1-x",
            })
        );
    }

    #[test]
    fn dockerd_answers() {
        assert_eq!(
            engine_answer(b"HTTP/1.0 200 OK\r\nApi-Version: 1.47\r\n\r\n"),
            Ok(String::new())
        );
        assert_eq!(
            engine_answer(
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"message\":\"This node is already part of a swarm.\"}\n"
            ),
            Err("This node is already part of a swarm. (HTTP 503)".into())
        );
        assert!(engine_answer(b"garbage").is_err());
    }

    #[test]
    fn manager_addresses() {
        assert_eq!(host_port("10.77.0.11", 2377), ("10.77.0.11".into(), 2377));
        assert_eq!(host_port("m1.lan:4000", 2377), ("m1.lan".into(), 4000));
        assert_eq!(
            host_port("[fd00::1]:4000", 2377),
            ("[fd00::1]".into(), 4000)
        );
        assert_eq!(host_port("[fd00::1]", 2377), ("[fd00::1]".into(), 2377));
    }
}
