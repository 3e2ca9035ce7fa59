//! The brig-netd daemon: configures every link the network config (or the
//! default) claims, keeps DHCPv4 leases on them, follows link events, writes
//! resolv.conf and the DHCP NTP servers, answers status requests, and
//! releases its leases on SIGTERM.
//!
//! Longer than 600 lines because it is one event loop over one state (the
//! links, their leases, the files written from them); every handler reads
//! and changes that state. The pure parts are elsewhere (plan.rs, dhcp4/,
//! resolv.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brig_spec::network::{
    format_mac, DeviceKind, InterfaceStatus, LeaseStatus, NetworkConfig, NetworkStatus,
    RouteStatus, Settings,
};
use netlink_packet_route::route::RouteProtocol;

use crate::chrony;
use crate::dhcp4::client::{Action, Client, State};
use crate::dhcp4::message::{Message, CLIENT_PORT, SERVER_PORT};
use crate::dhcp4::packet;
use crate::netlink::{self, LinkMonitor, LinkState, Netlink, RouteSpec};
use crate::plan::{self, Assignment, LinkInfo};
use crate::raw_socket::RawSocket;
use crate::resolv::{self, Dns};
use crate::Error;

pub struct Options {
    /// The network config (netplan v2); none means the default.
    pub config: Option<PathBuf>,
    /// Remembered leases (a persistent volume when there is state).
    pub state_dir: PathBuf,
    /// Where resolv.conf goes; other containers see this directory.
    pub dns_dir: PathBuf,
    /// Where DHCP-provided NTP servers go (a chrony sourcedir).
    pub ntp_dir: PathBuf,
    pub status_socket: PathBuf,
}

struct Managed {
    state: LinkState,
    assignment: Assignment,
    dhcp: Option<Dhcp>,
}

struct Dhcp {
    client: Client,
    raw: Option<RawSocket>,
    /// Bound to the leased address: carries unicast renewals and releases.
    udp: Option<UdpSocket>,
    /// When acquiring started, until the first lease: for the boot log.
    acquiring_since: Option<Instant>,
}

pub struct Daemon {
    options: Options,
    netlink: Netlink,
    monitor: LinkMonitor,
    config: NetworkConfig,
    config_errors: Vec<String>,
    links: BTreeMap<u32, Managed>,
    /// Links seen but not ours (loopback, docker's veths...), for status.
    others: BTreeMap<u32, LinkState>,
    listener: UnixListener,
    signals: OwnedFd,
    dns_written: Option<String>,
    ntp_written: Option<String>,
    /// Bonds, bridges and VLANs already created (or that failed): each is
    /// tried once, not at every link event.
    virtual_tried: BTreeSet<String>,
    /// (port, master) pairs tried likewise.
    ports_tried: BTreeSet<(u32, u32)>,
}

fn say(text: &str) {
    println!("brig-netd: {text}");
}

impl Daemon {
    pub fn new(options: Options) -> Result<Daemon, Error> {
        let (config, config_errors) = load_config(options.config.as_deref());
        for e in &config_errors {
            say(e);
        }
        for dir in [&options.state_dir, &options.dns_dir, &options.ntp_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::system(format!("creating {}", dir.display()), e))?;
        }
        if let Some(parent) = options.status_socket.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::system(format!("creating {}", parent.display()), e))?;
        }
        let _ = std::fs::remove_file(&options.status_socket);
        let listener = UnixListener::bind(&options.status_socket).map_err(|e| {
            let doing = format!("listening on {}", options.status_socket.display());
            Error::system(doing, e)
        })?;
        // Root's, and the read-only group's (`brigctl network` without sudo).
        if let Err(e) = brig_spec::control::open_to_read_only_group(&options.status_socket) {
            say(&format!(
                "error: {}: opening it to the read-only group: {e}",
                options.status_socket.display()
            ));
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::system("status socket", e))?;
        Ok(Daemon {
            monitor: LinkMonitor::open()?,
            netlink: Netlink::open()?,
            options,
            config,
            config_errors,
            links: BTreeMap::new(),
            others: BTreeMap::new(),
            listener,
            signals: termination_signals()?,
            dns_written: None,
            ntp_written: None,
            virtual_tried: BTreeSet::new(),
            ports_tried: BTreeSet::new(),
        })
    }

    /// Runs until SIGTERM or SIGINT, then releases the leases.
    pub fn run(&mut self) -> Result<(), Error> {
        // Subscribed before listing, so no change falls between the two.
        for link in self.netlink.links()? {
            self.link_seen(link);
        }
        self.reconcile_virtual();
        self.write_dns();
        say("running");
        let mut buf = vec![0u8; 4096];
        loop {
            let now = Instant::now();
            let next = self
                .links
                .values()
                .filter_map(|m| m.dhcp.as_ref()?.client.next_timeout())
                .min();
            let wait = next.map_or(-1, |t| {
                t.saturating_duration_since(now)
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            });
            let mut fds = vec![
                poll_fd(self.signals.as_raw_fd()),
                poll_fd(self.monitor.as_raw_fd()),
                poll_fd(self.listener.as_raw_fd()),
            ];
            let mut owners = Vec::new();
            for (index, m) in &self.links {
                if let Some(d) = &m.dhcp {
                    if let Some(raw) = &d.raw {
                        fds.push(poll_fd(raw.as_raw_fd()));
                        owners.push((*index, true));
                    }
                    if let Some(udp) = &d.udp {
                        fds.push(poll_fd(udp.as_raw_fd()));
                        owners.push((*index, false));
                    }
                }
            }
            // SAFETY: poll on a vector of pollfds that lives across the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::system("poll", e));
            }
            if fds[0].revents != 0 {
                self.shutdown();
                return Ok(());
            }
            if fds[1].revents != 0 {
                let (changed, removed) = self.monitor.read();
                for link in changed {
                    self.link_seen(link);
                }
                for index in removed {
                    self.link_removed(index);
                }
                self.reconcile_virtual();
            }
            if fds[2].revents != 0 {
                self.serve_status();
            }
            for (fd, (index, raw)) in fds[3..].iter().zip(owners) {
                if fd.revents != 0 {
                    self.receive(index, raw, &mut buf);
                }
            }
            let now = Instant::now();
            let due: Vec<u32> = self
                .links
                .iter()
                .filter(|(_, m)| {
                    m.dhcp
                        .as_ref()
                        .and_then(|d| d.client.next_timeout())
                        .is_some_and(|t| t <= now)
                })
                .map(|(i, _)| *i)
                .collect();
            for index in due {
                let actions = match self.links.get_mut(&index).and_then(|m| m.dhcp.as_mut()) {
                    Some(d) => d.client.timeout(now),
                    None => continue,
                };
                self.perform(index, actions);
            }
        }
    }

    /// A link appeared or changed.
    fn link_seen(&mut self, state: LinkState) {
        if let Some(m) = self.links.get_mut(&state.index) {
            let was = m.state.carrier;
            let mac_changed = m.state.mac != state.mac;
            m.state = state.clone();
            // A bridge or bond takes its first port's MAC: the DHCP client's
            // identity changes, and answers go to the new address.
            if let (true, Some(d), Some(mac)) = (mac_changed, m.dhcp.as_mut(), state.mac) {
                if d.client.lease.is_none() {
                    say(&format!(
                        "{}: MAC address now {}; asking DHCP again",
                        state.name,
                        format_mac(&mac)
                    ));
                    d.client = Client::new(mac, seed(&state));
                    if state.carrier {
                        self.carrier_changed(state.index, true);
                    }
                    return;
                }
            }
            if state.carrier != was {
                self.carrier_changed(state.index, state.carrier);
            }
            return;
        }
        if state.name == "lo" {
            if !state.up {
                if let Err(e) = self.netlink.link_up(state.index, None) {
                    say(&e.to_string());
                }
            }
            self.others.insert(state.index, state);
            return;
        }
        let info = link_info(&state);
        let Some(assignment) = plan::assign(&self.config, &info) else {
            self.others.insert(state.index, state);
            return;
        };
        let from = assignment.entry.as_deref().unwrap_or("the default (DHCP)");
        say(&format!("{}: configuring from {from}", state.name));
        self.configure_static(&state, &assignment.settings);
        let dhcp = assignment.settings.dhcp4.then(|| Dhcp {
            client: Client::new(state.mac.unwrap_or_default(), seed(&state)),
            raw: None,
            udp: None,
            acquiring_since: None,
        });
        let index = state.index;
        let carrier = state.carrier;
        self.links.insert(
            index,
            Managed {
                state,
                assignment,
                dhcp,
            },
        );
        if carrier {
            self.carrier_changed(index, true);
        }
    }

    /// Creates the bonds, bridges and VLANs of the config that do not exist
    /// yet (a VLAN once its parent link is there), and makes the links of
    /// member entries ports of their bond or bridge. Run after link changes;
    /// the new links then arrive as link events and get their own config.
    fn reconcile_virtual(&mut self) {
        let all: Vec<LinkState> = self
            .links
            .values()
            .map(|m| m.state.clone())
            .chain(self.others.values().cloned())
            .collect();
        let named = |name: &str| all.iter().find(|l| l.name == name).map(|l| l.index);
        // The link a config entry stands for: the one it claimed, or for a
        // bond or bridge the one of that name.
        let link_of = |entry: &str| {
            self.links
                .iter()
                .find(|(_, m)| m.assignment.entry.as_deref() == Some(entry))
                .map(|(i, _)| *i)
                .or_else(|| named(entry))
        };
        let mut create = Vec::new();
        for d in plan::virtual_devices(&self.config) {
            if named(&d.id).is_some() || self.virtual_tried.contains(&d.id) {
                continue;
            }
            let parent = match &d.kind {
                DeviceKind::Vlan { link, .. } => match link_of(link) {
                    Some(index) => Some(index),
                    None => continue,
                },
                _ => None,
            };
            create.push((d.clone(), parent));
        }
        let mut ports = Vec::new();
        for (index, m) in &self.links {
            let Some(entry) = &m.assignment.entry else {
                continue;
            };
            let Some(master) = plan::master_of(&self.config, entry) else {
                continue;
            };
            let Some(master_index) = named(&master.id) else {
                continue;
            };
            if m.state.master != Some(master_index)
                && !self.ports_tried.contains(&(*index, master_index))
            {
                let primary = matches!(&master.kind,
                    DeviceKind::Bond { primary: Some(p), .. } if p == entry);
                ports.push((
                    *index,
                    m.state.name.clone(),
                    master_index,
                    master.id.clone(),
                    primary,
                ));
            }
        }
        for (device, parent) in create {
            self.virtual_tried.insert(device.id.clone());
            match self.netlink.create_link(&device.id, &device.kind, parent) {
                Ok(()) => say(&format!("{}: created", device.id)),
                Err(e) => say(&format!("{}: {e}", device.id)),
            }
        }
        for (index, name, master, master_name, primary) in ports {
            self.ports_tried.insert((index, master));
            let mut result = self.netlink.set_master(index, master);
            if primary {
                result = result.and_then(|()| self.netlink.set_bond_primary(master, index));
            }
            match result {
                Ok(()) => say(&format!("{name}: port of {master_name}")),
                Err(e) => say(&format!("{name}: {e}")),
            }
        }
    }

    fn link_removed(&mut self, index: u32) {
        self.others.remove(&index);
        if let Some(m) = self.links.remove(&index) {
            say(&format!("{}: removed", m.state.name));
            self.write_dns();
        }
    }

    fn configure_static(&mut self, state: &LinkState, s: &Settings) {
        let index = state.index;
        let report = |r: Result<(), Error>| {
            if let Err(e) = r {
                say(&format!("{}: {e}", state.name));
            }
        };
        if let Some(mac) = s.mac {
            report(self.netlink.set_mac(index, mac));
        }
        report(self.netlink.link_up(index, s.mtu));
        if let Some(accept) = s.accept_ra {
            // Router advertisements are the kernel's job; this is its switch.
            let path = format!("/proc/sys/net/ipv6/conf/{}/accept_ra", state.name);
            report(
                std::fs::write(&path, if accept { "1" } else { "0" })
                    .map_err(|e| Error::system(format!("writing {path}"), e)),
            );
        }
        for address in &s.addresses {
            report(self.netlink.add_static_address(index, *address));
        }
        for r in &s.routes {
            let spec = RouteSpec {
                to: r.to,
                via: r.via,
                metric: r.metric,
                on_link: r.on_link,
                table: r.table,
            };
            report(self.netlink.add_route(index, &spec, RouteProtocol::Static));
        }
    }

    fn carrier_changed(&mut self, index: u32, carrier: bool) {
        let Some(m) = self.links.get_mut(&index) else {
            return;
        };
        let name = m.state.name.clone();
        let Some(d) = m.dhcp.as_mut() else {
            say(&format!(
                "{name}: carrier {}",
                if carrier { "up" } else { "down" }
            ));
            return;
        };
        if !carrier {
            say(&format!(
                "{name}: carrier lost; keeping the lease until the link returns"
            ));
            return;
        }
        if d.raw.is_none() {
            match RawSocket::open(index as i32) {
                Ok(raw) => d.raw = Some(raw),
                Err(e) => {
                    say(&format!("{name}: DHCP socket: {e}"));
                    return;
                }
            }
        }
        let now = Instant::now();
        let actions = match d.client.state {
            State::Init => {
                d.acquiring_since = Some(now);
                let remembered = m
                    .state
                    .mac
                    .and_then(|mac| remembered_lease(&self.options.state_dir, &mac));
                if let Some(a) = remembered {
                    say(&format!("{name}: asking to keep {a} (INIT-REBOOT)"));
                }
                d.client.start(now, remembered)
            }
            _ => {
                say(&format!("{name}: carrier back; checking the lease"));
                d.client.link_returned(now)
            }
        };
        self.perform(index, actions);
    }

    fn receive(&mut self, index: u32, raw: bool, buf: &mut [u8]) {
        let Some(d) = self.links.get_mut(&index).and_then(|m| m.dhcp.as_mut()) else {
            return;
        };
        let message = if raw {
            let Some(socket) = &d.raw else { return };
            match socket.receive(buf, Duration::ZERO) {
                Ok(Some((n, checksum_ready))) => packet::decode(&buf[..n], checksum_ready)
                    .filter(|p| p.dst_port == CLIENT_PORT)
                    .and_then(|p| Message::decode(p.payload).ok()),
                _ => None,
            }
        } else {
            let Some(socket) = &d.udp else { return };
            match socket.recv(buf) {
                Ok(n) => Message::decode(&buf[..n]).ok(),
                Err(_) => None,
            }
        };
        if let Some(m) = message {
            let actions = d.client.receive(&m, Instant::now());
            self.perform(index, actions);
        }
    }

    fn perform(&mut self, index: u32, actions: Vec<Action>) {
        let Some(m) = self.links.get_mut(&index) else {
            return;
        };
        let name = m.state.name.clone();
        let overrides = m.assignment.settings.dhcp4_overrides.clone();
        let mut dns_changed = false;
        let mut new_address = false;
        for action in actions {
            let Some(d) = m.dhcp.as_mut() else { return };
            match action {
                Action::Broadcast(message) => {
                    let frame = packet::encode(
                        message.ciaddr,
                        Ipv4Addr::BROADCAST,
                        CLIENT_PORT,
                        SERVER_PORT,
                        &message.encode(),
                    );
                    if let Some(Err(e)) = d.raw.as_ref().map(|r| r.send_broadcast(&frame)) {
                        say(&format!("{name}: sending DHCP broadcast: {e}"));
                    }
                }
                Action::Unicast(server, message) => {
                    if d.udp.is_none() {
                        d.udp = UdpSocket::bind(SocketAddrV4::new(message.ciaddr, CLIENT_PORT))
                            .and_then(|s| s.set_nonblocking(true).map(|()| s))
                            .map_err(|e| say(&format!("{name}: DHCP unicast socket: {e}")))
                            .ok();
                    }
                    if let Some(udp) = &d.udp {
                        if let Err(e) =
                            udp.send_to(&message.encode(), SocketAddrV4::new(server, SERVER_PORT))
                        {
                            say(&format!("{name}: sending to DHCP server {server}: {e}"));
                        }
                    }
                }
                Action::Configure(lease) => {
                    let took = d
                        .acquiring_since
                        .take()
                        .map(|t| format!(", {} ms after the link came up", t.elapsed().as_millis()))
                        .unwrap_or_default();
                    let mut routes = netlink::lease_routes(&lease, overrides.route_metric);
                    if !overrides.use_routes {
                        routes.clear();
                    }
                    let mtu = lease.mtu.filter(|_| overrides.use_mtu).map(u32::from);
                    let valid = lease.lease_time.as_secs().min(u64::from(u32::MAX - 1)) as u32;
                    let mut result = self.netlink.link_up(index, mtu).and_then(|()| {
                        self.netlink
                            .add_address(index, lease.address, lease.prefix, valid)
                    });
                    for r in &routes {
                        result = result
                            .and_then(|()| self.netlink.add_route(index, r, RouteProtocol::Dhcp));
                    }
                    match result {
                        Ok(()) => say(&format!(
                            "{name}: bound {}/{} from {} for {}s{took}",
                            lease.address,
                            lease.prefix,
                            lease.server,
                            lease.lease_time.as_secs(),
                        )),
                        Err(e) => say(&format!("{name}: applying the lease: {e}")),
                    }
                    if d.udp
                        .as_ref()
                        .and_then(|u| u.local_addr().ok())
                        .map(|a| a.ip())
                        != Some(IpAddr::V4(lease.address))
                    {
                        // A new address, not a renewal: names may resolve now.
                        d.udp = None;
                        new_address = true;
                    }
                    if let Some(mac) = m.state.mac {
                        remember_lease(&self.options.state_dir, &mac, lease.address);
                    }
                    dns_changed = true;
                }
                Action::Deconfigure(lease) => {
                    d.udp = None;
                    if let Err(e) = netlink::remove(&mut self.netlink, index, &lease) {
                        say(&format!("{name}: {e}"));
                    }
                    say(&format!(
                        "{name}: removed {}/{}",
                        lease.address, lease.prefix
                    ));
                    dns_changed = true;
                }
            }
        }
        if dns_changed {
            self.write_dns();
        }
        if new_address {
            self.tell_chrony(chrony::Command::Refresh);
        }
    }

    /// resolv.conf and the NTP source file, from static config and leases.
    fn write_dns(&mut self) {
        let mut sources = Vec::new();
        let mut ntp = Vec::new();
        for m in self.links.values() {
            let s = &m.assignment.settings;
            sources.push(Dns {
                servers: s.nameservers.clone(),
                search: s.search.clone(),
            });
        }
        for m in self.links.values() {
            let o = &m.assignment.settings.dhcp4_overrides;
            if let Some(lease) = m.dhcp.as_ref().and_then(|d| d.client.lease.as_ref()) {
                if o.use_dns {
                    let mut search = lease.search.clone();
                    if search.is_empty() && o.use_domains {
                        search.extend(lease.domain.clone());
                    }
                    sources.push(Dns {
                        servers: lease.dns.iter().map(|a| IpAddr::V4(*a)).collect(),
                        search: if o.use_domains { search } else { Vec::new() },
                    });
                }
                if o.use_ntp {
                    ntp.extend(lease.ntp.iter().map(|a| IpAddr::V4(*a)));
                }
            }
        }
        let text = resolv::render_resolv_conf(&resolv::merge(&sources));
        if self.dns_written.as_deref() != Some(&text) {
            let path = self.options.dns_dir.join("resolv.conf");
            match write_atomically(&path, &text) {
                Ok(()) => self.dns_written = Some(text),
                Err(e) => say(&e.to_string()),
            }
        }
        let text = resolv::render_ntp_sources(&ntp);
        if self.ntp_written.as_deref() != Some(&text) {
            let path = self.options.ntp_dir.join("dhcp.sources");
            match write_atomically(&path, &text) {
                Ok(()) => {
                    self.ntp_written = Some(text);
                    self.tell_chrony(chrony::Command::ReloadSources);
                }
                Err(e) => say(&e.to_string()),
            }
        }
    }

    /// Best effort: chronyd may not run (yet), and time keeps working
    /// without the hint, only later.
    fn tell_chrony(&self, command: chrony::Command) {
        // The socket chronyd binds (system-containers/ntp/chrony.conf).
        let socket = self.options.ntp_dir.join("chronyd.sock");
        if socket.exists() {
            if let Err(e) = chrony::send(&socket, command) {
                say(&format!("telling chronyd to {command:?}: {e}"));
            }
        }
    }

    fn shutdown(&mut self) {
        say("stopping: releasing leases");
        let indexes: Vec<u32> = self.links.keys().copied().collect();
        for index in indexes {
            let actions = match self.links.get_mut(&index).and_then(|m| m.dhcp.as_mut()) {
                Some(d) => d.client.release(Instant::now()),
                None => continue,
            };
            self.perform(index, actions);
        }
    }

    fn serve_status(&mut self) {
        let Ok((stream, _)) = self.listener.accept() else {
            return;
        };
        // The status is the answer to connecting: nothing is read, so a
        // client that connects and says nothing holds up nobody (the socket
        // is open to the read-only group). The write never blocks either:
        // the status fits in the socket's buffer, or the client goes
        // without.
        let _ = stream.set_nonblocking(true);
        let status = self.status();
        let mut text = serde_json::to_string(&status).unwrap_or_default();
        text.push('\n');
        let _ = (&stream).write_all(text.as_bytes());
    }

    pub fn status(&mut self) -> NetworkStatus {
        let links = self.netlink.links().unwrap_or_default();
        let addresses = self.netlink.addresses().unwrap_or_default();
        let routes = self.netlink.routes().unwrap_or_default();
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.index == index)
                .map_or_else(|| index.to_string(), |l| l.name.clone())
        };
        let now = Instant::now();
        let interfaces = links
            .iter()
            .map(|l| {
                let managed = self.links.get(&l.index);
                InterfaceStatus {
                    name: l.name.clone(),
                    mac: l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                    kind: match (&l.kind, l.ether, l.name.as_str()) {
                        (_, _, "lo") => "loopback".into(),
                        (Some(k), _, _) => k.clone(),
                        (None, true, _) => "ethernet".into(),
                        (None, false, _) => "other".into(),
                    },
                    up: l.up,
                    carrier: l.carrier,
                    mtu: l.mtu,
                    addresses: addresses
                        .iter()
                        .filter(|a| a.index == l.index)
                        .map(|a| a.address.to_string())
                        .collect(),
                    config: managed.map(|m| {
                        m.assignment
                            .entry
                            .clone()
                            .unwrap_or_else(|| "default".into())
                    }),
                    dhcp4: managed
                        .and_then(|m| m.dhcp.as_ref())
                        .map(|d| lease_status(&d.client, now)),
                }
            })
            .collect();
        let dns_text = self.dns_written.clone().unwrap_or_default();
        let field = |prefix: &str| -> Vec<String> {
            dns_text
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .flat_map(|rest| rest.split_whitespace().map(String::from))
                .collect()
        };
        NetworkStatus {
            interfaces,
            routes: routes
                .iter()
                .filter(|r| r.protocol != "kernel" || r.to.prefix == 0)
                .map(|r| RouteStatus {
                    destination: if r.to.prefix == 0 {
                        "default".into()
                    } else {
                        r.to.to_string()
                    },
                    gateway: r.via.map(|v| v.to_string()),
                    interface: r.index.map(name_of).unwrap_or_default(),
                    protocol: r.protocol.clone(),
                    metric: r.metric,
                })
                .collect(),
            dns: field("nameserver "),
            search: field("search "),
            config_errors: self.config_errors.clone(),
        }
    }
}

fn lease_status(client: &Client, now: Instant) -> LeaseStatus {
    let state = match &client.state {
        State::Init => "init",
        State::Selecting => "selecting",
        State::Requesting { .. } => "requesting",
        State::Rebooting { .. } => "rebooting",
        State::Bound => "bound",
        State::Renewing => "renewing",
        State::Rebinding => "rebinding",
        State::Released => "released",
    };
    let lease = client.lease.as_ref();
    let left = |after: Duration| {
        client
            .bound_at()
            .map(|b| (b + after).saturating_duration_since(now).as_secs())
    };
    LeaseStatus {
        state: state.into(),
        address: lease.map(|l| format!("{}/{}", l.address, l.prefix)),
        server: lease.map(|l| l.server.to_string()),
        renew_in: lease.and_then(|l| left(l.renew_after)),
        rebind_in: lease.and_then(|l| left(l.rebind_after)),
        expires_in: lease.and_then(|l| left(l.lease_time)),
        hostname: lease.and_then(|l| l.hostname.clone()),
        ntp: lease
            .map(|l| l.ntp.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
    }
}

fn load_config(path: Option<&Path>) -> (NetworkConfig, Vec<String>) {
    let Some(path) = path else {
        return (NetworkConfig::default(), Vec::new());
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (NetworkConfig::default(), Vec::new())
        }
        Err(e) => {
            return (
                NetworkConfig::default(),
                vec![format!(
                    "reading {}: {e}; using the default (DHCP on every ethernet)",
                    path.display()
                )],
            )
        }
    };
    let parsed = NetworkConfig::parse(&text);
    let mut errors: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| format!("{}: network config: {e}", path.display()))
        .collect();
    if parsed.rejected {
        errors.push("using the default: DHCP on every ethernet".into());
    }
    (parsed.config, errors)
}

fn link_info(state: &LinkState) -> LinkInfo {
    let sys = PathBuf::from("/sys/class/net").join(&state.name);
    let driver = std::fs::read_link(sys.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    LinkInfo {
        index: state.index,
        name: state.name.clone(),
        mac: state.permanent_mac.or(state.mac).unwrap_or_default(),
        driver,
        physical: state.ether && state.kind.is_none() && sys.join("device").exists(),
        ethernet: state.ether
            && state.mac.is_some()
            && matches!(state.kind.as_deref(), None | Some("veth")),
    }
}

fn seed(state: &LinkState) -> u32 {
    let mac = state.mac.unwrap_or_default();
    u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id() ^ state.index
}

fn lease_file(dir: &Path, mac: &[u8; 6]) -> PathBuf {
    dir.join(format!("dhcp4-{}.lease", format_mac(mac).replace(':', "-")))
}

fn remembered_lease(dir: &Path, mac: &[u8; 6]) -> Option<Ipv4Addr> {
    std::fs::read_to_string(lease_file(dir, mac))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn remember_lease(dir: &Path, mac: &[u8; 6], address: Ipv4Addr) {
    if let Err(e) = write_atomically(&lease_file(dir, mac), &format!("{address}\n")) {
        say(&e.to_string());
    }
}

/// Write, fsync, rename, fsync the directory: readers see the old file or
/// the new one, whole, and so does the next boot after a power cut.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("/"));
    let result = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    result
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| Error::system(format!("writing {}", path.display()), e))
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// SIGTERM and SIGINT as a readable descriptor (blocked for normal delivery).
fn termination_signals() -> Result<OwnedFd, Error> {
    // SAFETY: sigset manipulation on a local set, then sigprocmask and
    // signalfd on it; results checked.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(Error::system(
                "blocking signals",
                std::io::Error::last_os_error(),
            ));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(Error::system("signalfd", std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
