//! Any frame off the wire as the DHCP client reads it: the IPv4/UDP
//! packet, the DHCP message in it, and the lease an ACK would make
//! (routes, search domains). Rejected, never a panic.
#![no_main]

use brig_netd::dhcp4::{lease, message::Message, packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whole packets, checksums checked or left to offloading, and the
    // payload alone (the corpus holds both).
    let payloads = [
        packet::decode(data, true).map(|d| d.payload),
        packet::decode(data, false).map(|d| d.payload),
        Some(data),
    ];
    for payload in payloads.into_iter().flatten() {
        if let Ok(message) = Message::decode(payload) {
            let _ = message.kind();
            let _ = lease::Lease::from_ack(&message);
            if let Some(routes) = message.option(121) {
                let _ = lease::classless_routes(routes);
            }
            if let Some(search) = message.option(119) {
                let _ = lease::domain_search(search);
            }
            let _ = Message::decode(&message.encode());
        }
    }
});
