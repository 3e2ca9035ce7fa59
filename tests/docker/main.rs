//! End-to-end tests of the user's Docker Engine: the full default image
//! (with the docker and swarm containers), built once, booted in QEMU. A
//! binary of its own (cargo runs test binaries one after another), so that
//! it never runs beside the other end-to-end tests, and its tests one at a
//! time: the Swarm test boots three guests.

// The e2e tests' helpers; not every one is used here.
#[allow(dead_code)]
#[path = "../e2e/guest.rs"]
mod guest;
#[allow(dead_code)]
#[path = "../e2e/isolated_net.rs"]
mod isolated_net;

mod image;
mod single_node;
mod swarm;

/// Held by each test: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
