//! brigctl: operate a Brig machine through PID 1's control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use brig_spec::control::{LogLine, Request, Response, ServiceStatus, SystemStatus, READ_ONLY_GID};
use brig_spec::logs::{Entry, Query};
use brig_spec::network::NetworkStatus;
use brig_spec::paths::CONTROL_SOCKET;
use brig_spec::paths::LOG_QUERY_SOCKET;
use brig_spec::paths::NETWORK_STATUS_SOCKET;
use clap::{Parser, Subcommand};

mod config;

#[derive(Parser)]
#[command(
    name = "brigctl",
    version,
    about = "Operate a Brig machine: services, logs, power"
)]
struct Cli {
    /// Print PID 1's answers as JSON, one object per line.
    #[arg(long, global = true)]
    json: bool,
    /// The control socket.
    #[arg(long, global = true, default_value = CONTROL_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The machine: version, board, kernel, boot, state partition, uptime.
    Status,
    /// List the system services.
    Ps,
    /// Show the logs: a service's (or program's), or everything, from the
    /// log service; a service's recent output from PID 1 when the log
    /// service is not running.
    Logs {
        service: Option<String>,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only the kernel's messages.
        #[arg(long)]
        kernel: bool,
        /// Only lines written at or after this time (RFC 3339 UTC, e.g.
        /// 2026-11-22T10:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The log service's query socket.
        #[arg(long, default_value = LOG_QUERY_SOCKET, hide = true)]
        query_socket: PathBuf,
    },
    /// Start a stopped, failed or crash-looping service.
    Start { service: String },
    /// Stop a service (SIGTERM, then its whole cgroup after the grace period).
    Stop { service: String },
    /// Stop a service and start it again.
    Restart { service: String },
    /// Interfaces, addresses, routes, DNS and DHCP leases (from the
    /// network container).
    Network {
        /// The network container's status socket.
        #[arg(long, default_value = NETWORK_STATUS_SOCKET)]
        status_socket: PathBuf,
    },
    /// The machine's cloud-config: get, set, unset, export, validate.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// The OS itself: update it from a signed bundle, see its versions,
    /// roll it back (docs/updates.md).
    Os {
        #[command(subcommand)]
        action: OsAction,
    },
    /// Install this Brig onto another disk of the machine, erasing it: the
    /// running version (booted from a USB stick) with its boot partition's
    /// config; the disk makes its own state partition at its first boot.
    Install {
        /// The whole disk: /dev/sda, /dev/nvme0n1, /dev/vdb.
        #[arg(long, value_name = "DEVICE")]
        device: String,
        /// Do not ask before erasing the disk.
        #[arg(long)]
        yes: bool,
    },
    /// Stop all services in order and reboot.
    Reboot,
    /// Stop all services in order and power off.
    Poweroff,
}

#[derive(Subcommand)]
enum OsAction {
    /// Install the update bundle at URL (http://…) or in FILE in the other
    /// slot; it starts at the next boot and must come up healthy, else this
    /// version boots again.
    Upgrade {
        /// http://host[:port]/path, or a file on this machine.
        #[arg(value_name = "URL|FILE")]
        source: String,
        /// Install an older version than the running one.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// The running version and slot, the other slot, why this one booted,
    /// and the last update's result.
    Status,
    /// Boot the other slot's version next (or cancel an update installed
    /// but not yet booted).
    Rollback,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print a value of the effective cloud-config by dotted key
    /// (`hostname`, `brig.console.autologin`, `users[1].name`); without
    /// a key, all of it (as `export`).
    Get { key: Option<String> },
    /// Save a setting over the datasource's; it applies from the next boot
    /// (`brig.docker`, `brig.logging`: at a restart of docker, syslog).
    /// VALUE is YAML: `true`, `10`, `[a, b]`, `{k: v}`, or text.
    Set { key: String, value: String },
    /// Remove a saved setting: the datasource's value applies again.
    Unset { key: String },
    /// Print the effective cloud-config.
    Export,
    /// Check cloud-config user data (default: what this machine booted with)
    /// and print every problem with its line and column.
    Validate { file: Option<PathBuf> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("brigctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    // `os upgrade FILE`: the bundle's open file, passed with the request.
    let mut passed = None;
    let (request, follow) = match &cli.command {
        Command::Network { status_socket } => return network(status_socket, cli.json),
        Command::Config { action } => match action {
            ConfigAction::Get { key: Some(key) } => return config::get(key, cli.json),
            ConfigAction::Get { key: None } => return config::export(),
            ConfigAction::Export => return config::export(),
            ConfigAction::Validate { file } => return config::validate(file.as_deref()),
            ConfigAction::Set { key, value } => (
                Request::ConfigSet {
                    key: key.clone(),
                    value: brig_spec::key_path::parse_value(value),
                },
                false,
            ),
            ConfigAction::Unset { key } => (Request::ConfigUnset { key: key.clone() }, false),
        },
        Command::Status => (Request::Status, false),
        Command::Ps => (Request::Ps, false),
        Command::Logs {
            service,
            follow,
            tail,
            kernel,
            since,
            query_socket,
        } => {
            let query = Query {
                service: service.clone(),
                kernel: *kernel,
                since: since.clone(),
                tail: *tail,
                follow: *follow,
            };
            match UnixStream::connect(query_socket) {
                Ok(stream) => return logs(stream, &query, cli.json),
                // The log service runs, and this user may not ask it.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(connect_error(query_socket, &e))
                }
                Err(_) => {}
            }
            // No log service: PID 1 keeps each service's recent output.
            let Some(service) = service.clone().filter(|_| !*kernel && since.is_none()) else {
                return Err(format!(
                    "the log service is not running ({} does not answer): only a service's recent output is available, from PID 1 (brigctl logs SERVICE)",
                    query_socket.display()
                ));
            };
            (
                Request::Logs {
                    service,
                    tail: *tail,
                    follow: *follow,
                },
                *follow,
            )
        }
        Command::Start { service } => (
            Request::Start {
                service: service.clone(),
            },
            false,
        ),
        Command::Stop { service } => (
            Request::Stop {
                service: service.clone(),
            },
            false,
        ),
        Command::Restart { service } => (
            Request::Restart {
                service: service.clone(),
            },
            false,
        ),
        Command::Os { action } => (
            match action {
                OsAction::Upgrade {
                    source,
                    allow_downgrade,
                } if source.contains("://") => Request::OsUpgrade {
                    url: source.clone(),
                    allow_downgrade: *allow_downgrade,
                },
                OsAction::Upgrade {
                    source,
                    allow_downgrade,
                } => {
                    passed = Some(open_bundle(source)?);
                    Request::OsUpgradeFile {
                        name: source.clone(),
                        allow_downgrade: *allow_downgrade,
                    }
                }
                OsAction::Status => Request::OsStatus,
                OsAction::Rollback => Request::OsRollback,
            },
            false,
        ),
        Command::Install { device, yes } => {
            if !*yes {
                confirm_erase(device)?;
            }
            (
                Request::Install {
                    device: device.clone(),
                },
                false,
            )
        }
        Command::Reboot => (Request::Reboot, false),
        Command::Poweroff => (Request::Poweroff, false),
    };
    let mut stream =
        UnixStream::connect(&cli.socket).map_err(|e| connect_error(&cli.socket, &e))?;
    let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    line.push('\n');
    // PID 1 may turn a connection away before it reads the request (too
    // many at once): the write fails, and its answer is there to read.
    let sent = match &passed {
        Some(file) => send_with_file(&stream, line.as_bytes(), file),
        None => stream.write_all(line.as_bytes()),
    };
    let mut reader = BufReader::new(stream);
    let mut code = ExitCode::SUCCESS;
    loop {
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(0) => {
                if let Err(e) = sent {
                    return Err(format!("sending the request: {e}"));
                }
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
        let response: Response = serde_json::from_str(&reply)
            .map_err(|e| format!("unexpected answer {reply:?}: {e}"))?;
        // A long request's steps come before its one answer.
        let more = follow || matches!(response, Response::Progress { .. });
        if cli.json {
            print!("{reply}");
        } else {
            match response {
                Response::Progress { message } => println!("{message}"),
                Response::Os { status } => print!("{}", os_status_text(&status)),
                Response::Ok { message } => println!("{message}"),
                Response::Error { error } => {
                    eprintln!("brigctl: {error}");
                    code = ExitCode::FAILURE;
                }
                Response::Services { services } => print_services(&services),
                Response::Log { lines } => print_lines(&lines),
                Response::Status { status } => print!("{}", status_text(&status)),
            }
        }
        let _ = std::io::stdout().flush();
        if !more {
            break;
        }
    }
    Ok(code)
}

/// Asks on the terminal before a disk is erased; without a terminal,
/// `--yes` must say it.
fn confirm_erase(device: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "this erases {device}: pass --yes to go on (no terminal to ask on)"
        ));
    }
    print!(
        "This erases everything on {device} and installs this Brig onto it. Type yes to go on: "
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if answer.trim() != "yes" {
        return Err(format!("{device} was left alone"));
    }
    Ok(())
}

fn os_status_text(status: &brig_spec::control::OsStatus) -> String {
    let mut out = format!(
        "running  {}{}\nbooted   {}\n",
        status.running,
        status
            .slot
            .as_ref()
            .map_or(String::new(), |s| format!(" (slot {s})")),
        status.booted
    );
    if let Some(other) = &status.other {
        out += &format!("other    {other}\n");
    }
    if let Some(last) = &status.last_update {
        out += &format!("last     {}\n", last.trim());
    }
    out
}

/// Opens a bundle to pass to PID 1: here, with this user's rights and in
/// this container's files (PID 1 sees neither).
fn open_bundle(path: &str) -> Result<std::fs::File, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("reading {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    Ok(file)
}

/// Sends `line` with `file`'s descriptor attached (SCM_RIGHTS).
fn send_with_file(stream: &UnixStream, line: &[u8], file: &std::fs::File) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let fds = [file.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    // The descriptor goes with the first byte; the rest follows plainly.
    let first = [std::io::IoSlice::new(&line[..1])];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &first,
        &control,
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    (&*stream).write_all(&line[1..])
}

/// Why a socket of the machine did not answer, and what to do.
fn connect_error(socket: &std::path::Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "{}: permission denied: reading the machine's state needs root or the group adm \
             (gid {READ_ONLY_GID}); changes need root (sudo brigctl …)",
            socket.display()
        )
    } else {
        format!(
            "connecting to {} (is this a Brig machine?): {e}",
            socket.display()
        )
    }
}

fn status_text(status: &SystemStatus) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let state = match (
        &status.state.device,
        status.state.size_bytes,
        status.state.used_bytes,
    ) {
        (Some(device), Some(size), Some(used)) => format!(
            "{device} at /var/lib/brig: {:.1} MiB of {:.1} MiB used ({:.0}%)",
            mib(used),
            mib(size),
            used as f64 * 100.0 / size.max(1) as f64
        ),
        (Some(device), ..) => format!("{device} at /var/lib/brig"),
        (None, ..) => status
            .state
            .detail
            .trim_start_matches("state: ")
            .to_string(),
    };
    let up = status.uptime_seconds;
    format!(
        "version  {}\nboard    {}\nkernel   {}\nboot     {}\nuptime   {}h {:02}m {:02}s\nstate    {state}\n",
        status.version,
        status.board,
        status.kernel,
        status.boot,
        up / 3600,
        up / 60 % 60,
        up % 60
    )
}

/// Asks brig-netd (not PID 1) for the network's state.
fn network(socket: &PathBuf, json: bool) -> Result<ExitCode, String> {
    // The network container answers a connection with its status.
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => connect_error(socket, &e),
        _ => format!(
            "connecting to the network container at {} (is it running? `brigctl ps`): {e}",
            socket.display()
        ),
    })?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("reading the network container's answer: {e}"))?;
    let status: NetworkStatus =
        serde_json::from_str(&reply).map_err(|e| format!("unexpected answer {reply:?}: {e}"))?;
    if json {
        print!("{reply}");
    } else {
        print!("{}", network_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn network_text(status: &NetworkStatus) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:<6} {:>5}  {:<17}  {:<10} ADDRESSES\n",
        "INTERFACE", "KIND", "STATE", "MTU", "MAC", "CONFIG"
    );
    for i in &status.interfaces {
        let state = match (i.up, i.carrier) {
            (false, _) => "down",
            (true, false) => "no-carrier",
            (true, true) => "up",
        };
        out += &format!(
            "{:<12} {:<9} {:<6} {:>5}  {:<17}  {:<10} {}\n",
            i.name,
            i.kind,
            state,
            i.mtu,
            i.mac,
            i.config.as_deref().unwrap_or("-"),
            i.addresses.join(" ")
        );
    }
    let leases: Vec<_> = status
        .interfaces
        .iter()
        .filter_map(|i| Some((&i.name, i.dhcp4.as_ref()?)))
        .collect();
    if !leases.is_empty() {
        out += "\nDHCPv4\n";
        for (name, l) in leases {
            out += &format!("{name}: {}", l.state);
            if let (Some(a), Some(s)) = (&l.address, &l.server) {
                out += &format!(" {a} from {s}");
            }
            if let (Some(r), Some(e)) = (l.renew_in, l.expires_in) {
                out += &format!(", renews in {}, expires in {}", duration(r), duration(e));
            }
            if let Some(h) = &l.hostname {
                out += &format!(", host name {h}");
            }
            if !l.ntp.is_empty() {
                out += &format!(", NTP {}", l.ntp.join(" "));
            }
            out += "\n";
        }
    }
    out += "\nROUTES\n";
    for r in &status.routes {
        out += &r.destination;
        if let Some(g) = &r.gateway {
            out += &format!(" via {g}");
        }
        out += &format!(" dev {} proto {}", r.interface, r.protocol);
        if let Some(m) = r.metric {
            out += &format!(" metric {m}");
        }
        out += "\n";
    }
    out += &format!(
        "\nDNS {}\n",
        if status.dns.is_empty() {
            "(none)".to_string()
        } else {
            status.dns.join(" ")
        }
    );
    if !status.search.is_empty() {
        out += &format!("SEARCH {}\n", status.search.join(" "));
    }
    for e in &status.config_errors {
        out += &format!("CONFIG ERROR {e}\n");
    }
    out
}

fn print_services(services: &[ServiceStatus]) {
    println!(
        "{:<16} {:<11} {:>7} {:>9} {:>8} {:>9}  DETAIL",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY"
    );
    for s in services {
        println!(
            "{:<16} {:<11} {:>7} {:>9} {:>8} {:>9}  {}",
            s.name,
            s.state,
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.uptime_seconds.map_or("-".into(), duration),
            s.restarts,
            s.memory_bytes.map_or("-".into(), size),
            s.detail.as_deref().unwrap_or(""),
        );
    }
}

/// Asks the log service and prints what it sends until it closes.
fn logs(mut stream: UnixStream, query: &Query, json: bool) -> Result<ExitCode, String> {
    let mut line = serde_json::to_string(query).map_err(|e| e.to_string())?;
    line.push('\n');
    // The log service may turn a connection away before it reads the
    // query (too many at once): the write fails, and its answer is there.
    let sent = stream.write_all(line.as_bytes());
    let mut stdout = std::io::stdout().lock();
    let mut answered = false;
    for reply in BufReader::new(stream).lines() {
        answered = true;
        let reply = reply.map_err(|e| format!("reading from the log service: {e}"))?;
        let text = if json {
            reply
        } else {
            match serde_json::from_str::<Entry>(&reply) {
                Ok(entry) => entry.line(),
                Err(_) => return Err(format!("the log service said: {reply}")),
            }
        };
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the reader went away (| head)
        }
    }
    match sent {
        Err(e) if !answered => Err(format!("asking the log service: {e}")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn print_lines(lines: &[LogLine]) {
    for l in lines {
        let marker = match l.stream.as_str() {
            "stderr" => " (stderr)",
            "brig" => " (brig)",
            _ => "",
        };
        println!("[{:>10.3}]{marker} {}", l.time, l.text);
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 10 << 10 => format!("{b}B"),
        b if b < 10 << 20 => format!("{}K", b >> 10),
        b if b < 10 << 30 => format!("{}M", b >> 20),
        b => format!("{}G", b >> 30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_status_as_text() {
        use brig_spec::network::{InterfaceStatus, LeaseStatus, RouteStatus};
        let status = NetworkStatus {
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mac: "52:54:00:12:34:56".into(),
                kind: "ethernet".into(),
                up: true,
                carrier: true,
                mtu: 1500,
                addresses: vec!["10.0.2.15/24".into()],
                config: Some("default".into()),
                dhcp4: Some(LeaseStatus {
                    state: "bound".into(),
                    address: Some("10.0.2.15/24".into()),
                    server: Some("10.0.2.2".into()),
                    renew_in: Some(43_000),
                    rebind_in: Some(75_000),
                    expires_in: Some(86_000),
                    hostname: Some("guest".into()),
                    ntp: vec!["10.0.2.2".into()],
                }),
            }],
            routes: vec![RouteStatus {
                destination: "default".into(),
                gateway: Some("10.0.2.2".into()),
                interface: "eth0".into(),
                protocol: "dhcp".into(),
                metric: None,
            }],
            dns: vec!["10.0.2.3".into()],
            search: vec![],
            config_errors: vec!["network config: `x`: bad".into()],
        };
        let text = network_text(&status);
        assert!(
            text.contains(
                "eth0         ethernet  up      1500  52:54:00:12:34:56  default    10.0.2.15/24"
            ),
            "{text}"
        );
        assert!(
            text.contains("eth0: bound 10.0.2.15/24 from 10.0.2.2, renews in 11h, expires in 23h, host name guest, NTP 10.0.2.2"),
            "{text}"
        );
        assert!(
            text.contains("default via 10.0.2.2 dev eth0 proto dhcp\n"),
            "{text}"
        );
        assert!(text.contains("DNS 10.0.2.3\n"), "{text}");
        assert!(
            text.contains("CONFIG ERROR network config: `x`: bad"),
            "{text}"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(36_000), "10h");
        assert_eq!(duration(864_000), "10d");
        assert_eq!(size(512), "512B");
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(size(300 << 10), "300K");
    }

    #[test]
    fn status_with_and_without_a_state_partition() {
        use brig_spec::control::StateStatus;
        let mut status = SystemStatus {
            version: "0.1.0".into(),
            board: "qemu-x86_64".into(),
            kernel: "6.12.117+deb13-cloud-amd64".into(),
            boot: "kernel and initramfs".into(),
            uptime_seconds: 3725,
            state: StateStatus {
                device: Some("/dev/vdb".into()),
                size_bytes: Some(256 << 20),
                used_bytes: Some(64 << 20),
                detail: "state: /dev/vdb (BRIG_STATE, ext4) mounted at /var/lib/brig".into(),
            },
        };
        assert_eq!(
            status_text(&status),
            "version  0.1.0\nboard    qemu-x86_64\nkernel   6.12.117+deb13-cloud-amd64\n\
             boot     kernel and initramfs\nuptime   1h 02m 05s\n\
             state    /dev/vdb at /var/lib/brig: 64.0 MiB of 256.0 MiB used (25%)\n"
        );
        status.state = StateStatus {
            device: None,
            size_bytes: None,
            used_bytes: None,
            detail: "state: no state partition (BRIG_STATE): running from RAM".into(),
        };
        assert!(status_text(&status)
            .ends_with("state    no state partition (BRIG_STATE): running from RAM\n"));
    }
}
