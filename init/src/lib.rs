//! Brig's PID 1, as a library under the thin `brig-init` binary; the
//! containers it starts come from the `brig-runtime` crate. One folder a
//! concern:
//!
//! - `boot`: from the kernel's hand-over to the event loop (switch root,
//!   the system and state partitions);
//! - `host`: the kernel as PID 1 sees it, behind the `System` seam (mounts,
//!   modules, uevents, the power button, block devices, shutdown, the
//!   console);
//! - `config`: where cloud-init config comes from (one module a datasource)
//!   and what PID 1 makes of it;
//! - `supervise`: the services: the supervisor's decisions, carrying them
//!   out with the runtime, their logs;
//! - `control`: the control socket `brigctl` talks to.

pub mod boot;
pub mod config;
pub mod control;
pub mod event_loop;
pub mod host;
pub mod supervise;
pub mod update;

/// This build of Brig, for the boot log and `brigctl status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
