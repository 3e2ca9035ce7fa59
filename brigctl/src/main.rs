//! brigctl: operate a Brig machine through PID 1's control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use brig_spec::control::{LogLine, Request, Response, ServiceStatus, SOCKET};
use clap::{Parser, Subcommand};

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
    #[arg(long, global = true, default_value = SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the system services.
    Ps,
    /// Show a service's output.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Start a stopped, failed or crash-looping service.
    Start { service: String },
    /// Stop a service (SIGTERM, then its whole cgroup after the grace period).
    Stop { service: String },
    /// Stop a service and start it again.
    Restart { service: String },
    /// Stop all services in order and reboot.
    Reboot,
    /// Stop all services in order and power off.
    Poweroff,
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
    let (request, follow) = match &cli.command {
        Command::Ps => (Request::Ps, false),
        Command::Logs {
            service,
            follow,
            tail,
        } => (
            Request::Logs {
                service: service.clone(),
                tail: *tail,
                follow: *follow,
            },
            *follow,
        ),
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
        Command::Reboot => (Request::Reboot, false),
        Command::Poweroff => (Request::Poweroff, false),
    };
    let mut stream = UnixStream::connect(&cli.socket).map_err(|e| {
        format!(
            "connecting to {} (is this a Brig machine, and are you root?): {e}",
            cli.socket.display()
        )
    })?;
    let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut code = ExitCode::SUCCESS;
    loop {
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
        if cli.json {
            print!("{reply}");
        } else {
            let response: Response = serde_json::from_str(&reply)
                .map_err(|e| format!("unexpected answer {reply:?}: {e}"))?;
            match response {
                Response::Ok { message } => println!("{message}"),
                Response::Error { error } => {
                    eprintln!("brigctl: {error}");
                    code = ExitCode::FAILURE;
                }
                Response::Services { services } => print_services(&services),
                Response::Log { lines } => print_lines(&lines),
            }
        }
        let _ = std::io::stdout().flush();
        if !follow {
            break;
        }
    }
    Ok(code)
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
    fn human_units() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(36_000), "10h");
        assert_eq!(duration(864_000), "10d");
        assert_eq!(size(512), "512B");
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(size(300 << 10), "300K");
    }
}
