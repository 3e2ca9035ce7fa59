//! brig-netd: `brig-netd run` is the network service's daemon;
//! `brig-netd lease IFACE` acquires one DHCPv4 lease and prints it
//! (`--apply` configures it on the link, `--release` gives it back): a
//! debugging tool.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use brig_netd::daemon::{Daemon, Options};
use brig_netd::dhcp4::client::{Action, Client};
use brig_netd::dhcp4::lease::Lease;
use brig_netd::dhcp4::message::{Message, CLIENT_PORT, SERVER_PORT};
use brig_netd::dhcp4::packet;
use brig_netd::netlink;
use brig_netd::raw_socket::{self, RawSocket};
use brig_spec::paths::{self, NETWORK_STATUS_SOCKET};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["run", rest @ ..] => run(rest),
        ["lease", iface, rest @ ..] => lease(
            iface,
            rest.contains(&"--apply"),
            rest.contains(&"--release"),
        ),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brig-netd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What ends a command: this program's own word, or the library's error.
type Failure = Box<dyn std::error::Error>;

const USAGE: &str =
    "usage: brig-netd run [--config FILE] [--state DIR] [--dns DIR] [--ntp DIR] [--socket PATH]
       brig-netd lease IFACE [--apply] [--release]";

fn run(args: &[&str]) -> Result<(), Failure> {
    let mut options = Options {
        config: Some(PathBuf::from("/etc/brig/network.yaml")),
        state_dir: PathBuf::from("/var/lib/brig-netd"),
        dns_dir: PathBuf::from(paths::DNS_DIR),
        ntp_dir: PathBuf::from(paths::NTP_DIR),
        status_socket: PathBuf::from(NETWORK_STATUS_SOCKET),
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .map(PathBuf::from)
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match *flag {
            "--config" => options.config = Some(value),
            "--state" => options.state_dir = value,
            "--dns" => options.dns_dir = value,
            "--ntp" => options.ntp_dir = value,
            "--socket" => options.status_socket = value,
            other => return Err(format!("unknown option {other}\n{USAGE}").into()),
        }
    }
    Ok(Daemon::new(options)?.run()?)
}

const GIVE_UP: Duration = Duration::from_secs(60);

fn lease(iface: &str, apply: bool, release: bool) -> Result<(), Failure> {
    let (index, mac) =
        raw_socket::interface(iface).map_err(|e| format!("interface {iface}: {e}"))?;
    let socket = RawSocket::open(index).map_err(|e| format!("raw socket on {iface}: {e}"))?;
    let seed = u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
    let mut client = Client::new(mac, seed);
    let start = Instant::now();
    let mut actions = client.start(start, None);
    let mut buf = vec![0u8; 4096];
    loop {
        let mut bound = None;
        for action in actions.drain(..) {
            match action {
                Action::Broadcast(m) => {
                    send(&socket, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &m)?
                }
                Action::Unicast(server, m) => send(&socket, m.ciaddr, server, &m)?,
                Action::Configure(lease) => bound = Some(lease),
                Action::Deconfigure(_) => {}
            }
        }
        if let Some(lease) = bound {
            print(&lease, start.elapsed());
            let mut netlink = if apply {
                Some(netlink::Netlink::open()?)
            } else {
                None
            };
            if let Some(nl) = &mut netlink {
                netlink::apply(nl, index as u32, &lease)?;
                println!("applied in {}ms", start.elapsed().as_millis());
            }
            if release {
                for action in client.release(Instant::now()) {
                    if let Action::Unicast(server, m) = action {
                        send(&socket, m.ciaddr, server, &m)?;
                    }
                }
                if let Some(nl) = &mut netlink {
                    netlink::remove(nl, index as u32, &lease)?;
                }
                println!("released");
            }
            return Ok(());
        }
        if start.elapsed() > GIVE_UP {
            return Err(format!("no lease on {iface} within {}s", GIVE_UP.as_secs()).into());
        }
        let wait = client.next_timeout().map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now())
        });
        match socket
            .receive(&mut buf, wait)
            .map_err(|e| format!("receiving on {iface}: {e}"))?
        {
            Some((n, checksum_ready)) => {
                let Some(d) = packet::decode(&buf[..n], checksum_ready) else {
                    continue;
                };
                if d.dst_port != CLIENT_PORT {
                    continue;
                }
                if let Ok(m) = Message::decode(d.payload) {
                    actions = client.receive(&m, Instant::now());
                }
            }
            None => actions = client.timeout(Instant::now()),
        }
    }
}

fn send(socket: &RawSocket, src: Ipv4Addr, dst: Ipv4Addr, m: &Message) -> Result<(), String> {
    let frame = packet::encode(src, dst, CLIENT_PORT, SERVER_PORT, &m.encode());
    socket
        .send_broadcast(&frame)
        .map_err(|e| format!("sending: {e}"))
}

fn print(lease: &Lease, took: Duration) {
    println!("address {}/{}", lease.address, lease.prefix);
    println!("server {}", lease.server);
    for r in &lease.routes {
        println!("route {}/{} via {}", r.destination, r.prefix, r.gateway);
    }
    for d in &lease.dns {
        println!("dns {d}");
    }
    if let Some(domain) = &lease.domain {
        println!("domain {domain}");
    }
    println!(
        "lease {}s renew {}s rebind {}s",
        lease.lease_time.as_secs(),
        lease.renew_after.as_secs(),
        lease.rebind_after.as_secs()
    );
    println!("took {}ms", took.as_millis());
}
