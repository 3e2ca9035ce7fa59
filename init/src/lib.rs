//! Brig's PID 1, as a library under the thin `brig-init` binary; the
//! containers it starts come from the `brig-runtime` crate.

pub mod boot_disk;
pub mod cmdline;
pub mod coldplug;
pub mod console;
pub mod control;
pub mod datasource;
pub mod http;
pub mod local_config;
pub mod log_forward;
pub mod log_ring;
pub mod modprobe;
pub mod module_index;
pub mod mounts;
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
