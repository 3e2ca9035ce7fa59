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
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn sent(actions: &[Action]) -> &Message {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Broadcast(m) | Action::Unicast(_, m) => Some(m),
                _ => None,
            })
            .expect("a message was sent")
    }

    /// The server's reply of `kind` to the client's `request`.
    fn reply(request: &Message, kind: MessageType, lease_secs: u32) -> Message {
        let mut m = Message::request(kind, request.xid, request.chaddr);
        m.op = 2;
        if kind != MessageType::Nak {
            m.yiaddr = ADDRESS;
            m.set(code::SUBNET_MASK, vec![255, 255, 255, 0]);
            m.set(code::ROUTER, SERVER.octets().to_vec());
            m.set(code::LEASE_TIME, lease_secs.to_be_bytes().to_vec());
        }
        m.set(code::SERVER_ID, SERVER.octets().to_vec());
        m
    }

    fn bound(now: Instant, lease_secs: u32) -> Client {
        let mut c = Client::new(MAC, 42);
        let discover = sent(&c.start(now, None)).clone();
        let request =
            sent(&c.receive(&reply(&discover, MessageType::Offer, lease_secs), now)).clone();
        let actions = c.receive(&reply(&request, MessageType::Ack, lease_secs), now);
        assert!(matches!(&actions[..], [Action::Configure(l)] if l.address == ADDRESS));
        c
    }

    #[test]
    fn discover_offer_request_ack() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 7);
        let actions = c.start(t, None);
        let discover = sent(&actions);
        assert_eq!(discover.kind(), Some(MessageType::Discover));
        assert!(matches!(actions[0], Action::Broadcast(_)));
        assert_eq!(
            discover.option(code::PARAMETER_REQUEST_LIST),
            Some(PARAMETERS)
        );
        assert_eq!(c.state, State::Selecting);

        let request = sent(&c.receive(&reply(discover, MessageType::Offer, 3600), t)).clone();
        assert_eq!(request.kind(), Some(MessageType::Request));
        assert_eq!(request.address(code::REQUESTED_IP), Some(ADDRESS));
        assert_eq!(request.address(code::SERVER_ID), Some(SERVER));
        assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);

        let actions = c.receive(&reply(&request, MessageType::Ack, 3600), t);
        assert!(
            matches!(&actions[..], [Action::Configure(l)] if l.address == ADDRESS && l.prefix == 24)
        );
        assert_eq!(c.state, State::Bound);
        assert_eq!(c.next_timeout(), Some(t + Duration::from_secs(1800)));
    }

    #[test]
    fn others_replies_and_stale_ones_are_ignored() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 7);
        let discover = sent(&c.start(t, None)).clone();
        let mut other = reply(&discover, MessageType::Offer, 60);
        other.xid ^= 1;
        assert!(c.receive(&other, t).is_empty());
        let mut other = reply(&discover, MessageType::Offer, 60);
        other.chaddr = [9; 6];
        assert!(c.receive(&other, t).is_empty());
        // An ACK while selecting is not what was asked for.
        assert!(c
            .receive(&reply(&discover, MessageType::Ack, 60), t)
            .is_empty());
        assert_eq!(c.state, State::Selecting);
    }

    #[test]
    fn discover_is_retransmitted_with_exponential_backoff() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 99);
        c.start(t, None);
        let mut now = t;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            let at = c.next_timeout().unwrap();
            gaps.push((at - now).as_secs_f64());
            now = at;
            assert_eq!(sent(&c.timeout(now)).kind(), Some(MessageType::Discover));
        }
        let expected = [4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0];
        for (gap, want) in gaps.iter().zip(expected) {
            assert!((gap - want).abs() <= 1.0, "{gaps:?}");
        }
        // The secs field counts from the start.
        assert!(sent(&c.timeout(c.next_timeout().unwrap())).secs >= 190);
    }

    #[test]
    fn renew_by_unicast_at_t1_then_rebind_by_broadcast_at_t2_then_expire() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        // T1 = 500 s: unicast REQUEST with ciaddr, no requested address.
        let actions = c.timeout(t + Duration::from_secs(500));
        match &actions[..] {
            [Action::Unicast(to, m)] => {
                assert_eq!(*to, SERVER);
                assert_eq!(m.ciaddr, ADDRESS);
                assert_eq!(m.option(code::REQUESTED_IP), None);
                assert_eq!(m.option(code::SERVER_ID), None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.state, State::Renewing);
        // No answer: retries until T2 = 875 s, then broadcasts.
        let mut now = t + Duration::from_secs(500);
        while c.state == State::Renewing {
            now = c.next_timeout().unwrap();
            c.timeout(now);
        }
        assert_eq!(c.state, State::Rebinding);
        assert_eq!(now, t + Duration::from_secs(875));
        // Still no answer: at expiry the address goes and DISCOVER starts.
        let mut last = Vec::new();
        while c.state == State::Rebinding {
            now = c.next_timeout().unwrap();
            last = c.timeout(now);
        }
        assert_eq!(now, t + Duration::from_secs(1000));
        assert!(matches!(&last[0], Action::Deconfigure(l) if l.address == ADDRESS));
        assert_eq!(sent(&last).kind(), Some(MessageType::Discover));
        assert_eq!(c.state, State::Selecting);
    }

    #[test]
    fn a_renewal_ack_extends_the_lease() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let request = sent(&c.timeout(t + Duration::from_secs(500))).clone();
        let actions = c.receive(
            &reply(&request, MessageType::Ack, 1000),
            t + Duration::from_secs(501),
        );
        assert!(
            matches!(&actions[..], [Action::Configure(_)]),
            "same address: no deconfigure"
        );
        assert_eq!(c.state, State::Bound);
        assert_eq!(c.next_timeout(), Some(t + Duration::from_secs(1001)));
    }

    #[test]
    fn a_nak_while_renewing_drops_the_address_and_starts_over() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let request = sent(&c.timeout(t + Duration::from_secs(500))).clone();
        let actions = c.receive(
            &reply(&request, MessageType::Nak, 0),
            t + Duration::from_secs(500),
        );
        assert!(matches!(&actions[0], Action::Deconfigure(_)));
        assert_eq!(sent(&actions).kind(), Some(MessageType::Discover));
    }

    #[test]
    fn init_reboot_keeps_a_remembered_address() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 5);
        let request = sent(&c.start(t, Some(ADDRESS))).clone();
        assert_eq!(request.kind(), Some(MessageType::Request));
        assert_eq!(request.address(code::REQUESTED_IP), Some(ADDRESS));
        assert_eq!(request.option(code::SERVER_ID), None);
        assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);
        let actions = c.receive(&reply(&request, MessageType::Ack, 600), t);
        assert!(matches!(&actions[..], [Action::Configure(l)] if l.address == ADDRESS));
    }

    #[test]
    fn init_reboot_refused_or_unanswered_falls_back_to_discover() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 5);
        let request = sent(&c.start(t, Some(ADDRESS))).clone();
        assert_eq!(
            sent(&c.receive(&reply(&request, MessageType::Nak, 0), t)).kind(),
            Some(MessageType::Discover)
        );

        let mut c = Client::new(MAC, 6);
        c.start(t, Some(ADDRESS));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let at = c.next_timeout().unwrap();
            kinds.push(sent(&c.timeout(at)).kind());
        }
        assert_eq!(
            kinds,
            [Some(MessageType::Request), Some(MessageType::Discover)]
        );
    }

    #[test]
    fn an_unanswered_request_starts_over() {
        let t = Instant::now();
        let mut c = Client::new(MAC, 8);
        let discover = sent(&c.start(t, None)).clone();
        c.receive(&reply(&discover, MessageType::Offer, 60), t);
        let mut last = None;
        for _ in 0..REQUEST_TRIES {
            let at = c.next_timeout().unwrap();
            last = sent(&c.timeout(at)).kind();
        }
        assert_eq!(last, Some(MessageType::Discover));
    }

    #[test]
    fn release_tells_the_server_and_removes_the_address() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let actions = c.release(t);
        match &actions[..] {
            [Action::Unicast(to, m), Action::Deconfigure(l)] => {
                assert_eq!(
                    (*to, m.kind(), m.ciaddr),
                    (SERVER, Some(MessageType::Release), ADDRESS)
                );
                assert_eq!(l.address, ADDRESS);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.state, State::Released);
        assert!(c.next_timeout().is_none());
        assert!(c.release(t).is_empty());
    }

    #[test]
    fn a_different_address_on_ack_replaces_the_old_one() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let request = sent(&c.timeout(t + Duration::from_secs(500))).clone();
        let mut ack = reply(&request, MessageType::Ack, 1000);
        ack.yiaddr = Ipv4Addr::new(10, 0, 2, 16);
        let actions = c.receive(&ack, t + Duration::from_secs(500));
        assert!(
            matches!(&actions[..], [Action::Deconfigure(old), Action::Configure(new)]
            if old.address == ADDRESS && new.address == Ipv4Addr::new(10, 0, 2, 16))
        );
    }

    #[test]
    fn link_back_checks_the_lease_and_keeps_it_when_nobody_answers() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let later = t + Duration::from_secs(100);
        let request = sent(&c.link_returned(later)).clone();
        assert_eq!(request.kind(), Some(MessageType::Request));
        assert_eq!(request.address(code::REQUESTED_IP), Some(ADDRESS));
        assert!(
            request.ciaddr.is_unspecified(),
            "INIT-REBOOT, not a renewal"
        );
        let mut at = c.next_timeout().unwrap();
        let mut actions = c.timeout(at);
        while !actions.is_empty() {
            at = c.next_timeout().unwrap();
            actions = c.timeout(at);
        }
        assert_eq!(c.state, State::Bound, "silence keeps the lease");
        assert_eq!(c.lease.as_ref().map(|l| l.address), Some(ADDRESS));
        assert_eq!(
            c.next_timeout(),
            Some(t + Duration::from_secs(500)),
            "renewal time unchanged"
        );
    }

    #[test]
    fn link_back_on_another_network_drops_the_lease_on_nak() {
        let t = Instant::now();
        let mut c = bound(t, 1000);
        let request = sent(&c.link_returned(t)).clone();
        let nak = reply(&request, MessageType::Nak, 0);
        let actions = c.receive(&nak, t);
        assert!(
            matches!(&actions[..], [Action::Deconfigure(l), Action::Broadcast(d)]
            if l.address == ADDRESS && d.kind() == Some(MessageType::Discover))
        );
    }
}
