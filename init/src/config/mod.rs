//! cloud-init config: where it comes from and what PID 1 makes of it.

pub mod http;
pub mod local_settings;
pub mod network;
pub mod plan;
