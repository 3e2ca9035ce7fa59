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
    let request = sent(&c.receive(&reply(&discover, MessageType::Offer, lease_secs), now)).clone();
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
