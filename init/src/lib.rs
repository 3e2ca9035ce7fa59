//! Brig's PID 1 and its container runtime, as a library: `brig-init` (PID 1)
//! and `brig-container` (one container in the foreground, for tests and
//! benchmarks) are thin binaries over it.

pub mod boot_disk;
pub mod cgroup;
pub mod clone;
pub mod cmdline;
pub mod coldplug;
pub mod console;
pub mod container;
pub mod control;
pub mod datasource;
pub mod http;
pub mod image;
pub mod local_config;
pub mod log_forward;
pub mod log_ring;
pub mod modprobe;
pub mod module_index;
pub mod mounts;
pub mod netns;
pub mod network_datasource;
pub mod power_button;
pub mod services;
pub mod shutdown;
pub mod state;
pub mod supervisor;
pub mod switch_root;
pub mod system;
pub mod uevent;
pub mod user_mounts;
pub mod volume;
