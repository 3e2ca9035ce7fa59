//! Brig's container runtime, as a library: PID 1 (`brig-init`) starts its
//! services with it, and `brig-container` runs one container in the
//! foreground with the same code (for root tests and benchmarks). It knows
//! service specs and the host's kernel, and nothing of services'
//! supervision or of config.
//!
//! - `plan`: the pure decisions (mounts, capabilities, user, namespaces);
//! - `spawn`: the parent side, `child`: what runs in the new namespaces;
//! - `clone3`: starting a child in this process's memory until it execs;
//! - `error`: why a container did not start, by kind;
//! - `cgroup`, `netns`, `image`: a container's cgroup, prepared network
//!   namespaces and read-only root image.

pub mod cgroup;
mod child;
pub mod clone3;
mod error;
mod exec_in;
pub mod image;
mod in_root;
pub mod netns;
pub mod plan;
pub mod seccomp;
pub mod spawn;

pub use error::Error;
pub use exec_in::exec_in;
pub use plan::{MountOp, Paths};
pub use spawn::{set_nonblocking, spawn, spawn_in, Started};
