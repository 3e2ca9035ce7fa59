//! The DHCPv4 client state machine (RFC 2131 section 4.4), pure: the caller
//! passes received messages and the time, and carries out the actions
//! (send, configure, deconfigure). Sockets and addresses live elsewhere.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::lease::Lease;
use super::message::{code, Message, MessageType};

/// Options asked for in every request.
pub const PARAMETERS: &[u8] = &[
    code::SUBNET_MASK,
    code::ROUTER,
    code::DNS,
    code::HOSTNAME,
    code::DOMAIN_NAME,
    code::MTU,
    code::BROADCAST,
    code::NTP,
    code::LEASE_TIME,
    code::SERVER_ID,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
    code::DOMAIN_SEARCH,
    code::CLASSLESS_ROUTES,
];
/// First retransmission delay; doubles up to MAX_RETRY (RFC 2131 4.1).
pub const FIRST_RETRY: Duration = Duration::from_secs(4);
pub const MAX_RETRY: Duration = Duration::from_secs(64);
/// REQUESTs sent for an offer (or an INIT-REBOOT) before starting over.
pub const REQUEST_TRIES: u32 = 4;
/// While renewing or rebinding, wait at least this long between retries.
pub const MIN_RENEW_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Init,
    Selecting,
    Requesting {
        offer: Message,
    },
    /// INIT-REBOOT: asking to keep a remembered address. With a lease
    /// still held (the link came back), silence keeps it (RFC 2131 3.7).
    Rebooting {
        address: Ipv4Addr,
    },
    Bound,
    Renewing,
    Rebinding,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send to 255.255.255.255 from 0.0.0.0 (a raw socket: no address yet).
    Broadcast(Message),
    /// Send to the server over the configured address.
    Unicast(Ipv4Addr, Message),
    /// Apply the lease (address, routes, DNS, MTU).
    Configure(Lease),
    /// Remove what the lease applied.
    Deconfigure(Lease),
}

#[derive(Debug)]
pub struct Client {
    mac: [u8; 6],
    pub state: State,
    pub lease: Option<Lease>,
    bound_at: Option<Instant>,
    xid: u32,
    rng: u32,
    tries: u32,
    started: Option<Instant>,
    timer: Option<Instant>,
}

impl Client {
    /// `seed` makes transaction ids and jitter differ between machines.
    pub fn new(mac: [u8; 6], seed: u32) -> Client {
        let mut c = Client {
            mac,
            state: State::Init,
            lease: None,
            bound_at: None,
            xid: 0,
            rng: seed | 1,
            tries: 0,
            started: None,
            timer: None,
        };
        c.xid = c.random();
        c
    }

    fn random(&mut self) -> u32 {
        // xorshift32: enough for transaction ids and jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        self.rng
    }

    /// When the current lease was granted.
    pub fn bound_at(&self) -> Option<Instant> {
        self.bound_at
    }

    /// When `timeout` should be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Starts acquiring: INIT-REBOOT with a remembered address, else DISCOVER.
    pub fn start(&mut self, now: Instant, remembered: Option<Ipv4Addr>) -> Vec<Action> {
        match remembered {
            Some(address) => self.reboot(now, address),
            None => self.discover(now),
        }
    }

    fn reboot(&mut self, now: Instant, address: Ipv4Addr) -> Vec<Action> {
        self.started = Some(now);
        self.tries = 0;
        self.state = State::Rebooting { address };
        self.new_xid();
        vec![self.send_request(now, Some(address), None, None)]
    }

    fn new_xid(&mut self) {
        self.xid = self.random();
    }

    fn discover(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Selecting;
        self.new_xid();
        self.tries = 0;
        self.started = Some(now);
        let mut m = self.message(MessageType::Discover, now);
        m.broadcast = false;
        self.retry_later(now);
        vec![Action::Broadcast(m)]
    }

    fn message(&self, kind: MessageType, now: Instant) -> Message {
        let mut m = Message::request(kind, self.xid, self.mac);
        m.secs = self.started.map_or(0, |s| {
            now.saturating_duration_since(s)
                .as_secs()
                .min(u16::MAX.into()) as u16
        });
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        m.set(code::CLIENT_ID, client_id);
        m.set(code::PARAMETER_REQUEST_LIST, PARAMETERS.to_vec());
        m.set(code::MAX_MESSAGE_SIZE, 1500u16.to_be_bytes().to_vec());
        m
    }

    /// A REQUEST: for an offer (requested + server), INIT-REBOOT (requested
    /// only), or renewing/rebinding (ciaddr only).
    fn send_request(
        &mut self,
        now: Instant,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    ) -> Action {
        let mut m = self.message(MessageType::Request, now);
        if let Some(address) = requested {
            m.set(code::REQUESTED_IP, address.octets().to_vec());
        }
        if let Some(server) = server {
            m.set(code::SERVER_ID, server.octets().to_vec());
        }
        if let Some(address) = ciaddr {
            m.ciaddr = address;
        }
        self.tries += 1;
        self.retry_later(now);
        match (&self.state, &self.lease) {
            (State::Renewing, Some(lease)) => Action::Unicast(lease.server, m),
            _ => Action::Broadcast(m),
        }
    }

    /// Exponential backoff with ±1 s jitter.
    fn retry_later(&mut self, now: Instant) {
        let base = (FIRST_RETRY * (1u32 << self.tries.min(4))).min(MAX_RETRY);
        let jitter_ms = u64::from(self.random() % 2001);
        self.timer = Some(now + base - Duration::from_secs(1) + Duration::from_millis(jitter_ms));
    }

    /// A message arrived on the client port.
    pub fn receive(&mut self, m: &Message, now: Instant) -> Vec<Action> {
        if m.op != 2 || m.xid != self.xid || m.chaddr != self.mac {
            return Vec::new(); // someone else's, or stale
        }
        match (self.state.clone(), m.kind()) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let Some(server) = m.address(code::SERVER_ID) else {
                    return Vec::new();
                };
                if m.yiaddr.is_unspecified() {
                    return Vec::new();
                }
                self.state = State::Requesting { offer: m.clone() };
                self.tries = 0;
                vec![self.send_request(now, Some(m.yiaddr), Some(server), None)]
            }
            (
                State::Requesting { .. }
                | State::Rebooting { .. }
                | State::Renewing
                | State::Rebinding,
                Some(MessageType::Ack),
            ) => {
                match Lease::from_ack(m) {
                    Ok(lease) => self.bind(lease, now),
                    // An unusable ACK is treated like a NAK.
                    Err(_) => self.restart(now),
                }
            }
            (
                State::Requesting { .. }
                | State::Rebooting { .. }
                | State::Renewing
                | State::Rebinding,
                Some(MessageType::Nak),
            ) => self.restart(now),
            _ => Vec::new(),
        }
    }

    fn bind(&mut self, lease: Lease, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(old) = &self.lease {
            if old.address != lease.address || old.prefix != lease.prefix {
                actions.push(Action::Deconfigure(old.clone()));
            }
        }
        self.timer = Some(now + lease.renew_after);
        self.bound_at = Some(now);
        self.lease = Some(lease.clone());
        self.state = State::Bound;
        self.tries = 0;
        actions.push(Action::Configure(lease));
        actions
    }

    /// Drops any lease and starts over with DISCOVER.
    fn restart(&mut self, now: Instant) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .lease
            .take()
            .map(Action::Deconfigure)
            .into_iter()
            .collect();
        self.bound_at = None;
        actions.extend(self.discover(now));
        actions
    }

    /// The timer fired.
    pub fn timeout(&mut self, now: Instant) -> Vec<Action> {
        if self.timer.is_none_or(|t| t > now) {
            return Vec::new();
        }
        self.timer = None;
        let (lease, bound_at) = match (&self.lease, self.bound_at) {
            (Some(l), Some(b)) => (Some(l.clone()), Some(b)),
            _ => (None, None),
        };
        match self.state.clone() {
            State::Init | State::Released => Vec::new(),
            State::Selecting => {
                self.tries += 1;
                let m = self.message(MessageType::Discover, now);
                self.retry_later(now);
                vec![Action::Broadcast(m)]
            }
            State::Requesting { offer } => {
                if self.tries >= REQUEST_TRIES {
                    return self.restart(now);
                }
                let server = offer.address(code::SERVER_ID);
                vec![self.send_request(now, Some(offer.yiaddr), server, None)]
            }
            State::Rebooting { address } => {
                if self.tries >= 2 {
                    if let (Some(lease), Some(bound_at)) = (lease, bound_at) {
                        if now < bound_at + lease.lease_time {
                            // No answer to the check: keep using the lease
                            // and carry on with its renewal times.
                            self.state = State::Bound;
                            self.timer = Some((bound_at + lease.renew_after).max(now));
                            return Vec::new();
                        }
                    }
                    return self.restart(now);
                }
                vec![self.send_request(now, Some(address), None, None)]
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let (Some(lease), Some(bound_at)) = (lease, bound_at) else {
                    return self.restart(now);
                };
                let (t2, expiry) = (bound_at + lease.rebind_after, bound_at + lease.lease_time);
                if now >= expiry {
                    return self.restart(now);
                }
                if now >= t2 && self.state != State::Rebinding {
                    self.state = State::Rebinding;
                    self.new_xid();
                } else if self.state == State::Bound {
                    self.state = State::Renewing;
                    self.new_xid();
                }
                let action = self.send_request(now, None, None, Some(lease.address));
                // Retry after half the time left to the next deadline, but
                // not more often than every minute (RFC 2131 4.4.5).
                let deadline = if self.state == State::Renewing {
                    t2
                } else {
                    expiry
                };
                let wait = (deadline.saturating_duration_since(now) / 2).max(MIN_RENEW_RETRY);
                self.timer = Some((now + wait).min(deadline));
                vec![action]
            }
        }
    }

    /// The link came back (cable plugged in again): check the lease with
    /// the network we are now on (INIT-REBOOT); with no lease, start over.
    pub fn link_returned(&mut self, now: Instant) -> Vec<Action> {
        match self.lease.as_ref().map(|l| l.address) {
            Some(address) => self.reboot(now, address),
            None => self.discover(now),
        }
    }

    /// Orderly stop: tell the server the address is free again.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        self.timer = None;
        let Some(lease) = self.lease.take() else {
            self.state = State::Released;
            return Vec::new();
        };
        self.state = State::Released;
        let mut m = self.message(MessageType::Release, now);
        m.ciaddr = lease.address;
        m.set(code::SERVER_ID, lease.server.octets().to_vec());
        m.options.remove(&code::PARAMETER_REQUEST_LIST);
        vec![Action::Unicast(lease.server, m), Action::Deconfigure(lease)]
    }
}

#[cfg(test)]
mod tests;
