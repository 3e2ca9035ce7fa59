//! Types shared by the host tool (`brig`), PID 1 (`brig-init`) and `brigctl`.

pub mod boot_slots;
pub mod cloud_config;
pub mod console;
pub mod control;
pub mod docker_config;
pub mod failed;
pub mod glob;
pub mod gpt;
pub mod key_path;
pub mod log_config;
pub mod logs;
pub mod mime;
pub mod mountinfo;
pub mod mounts;
pub mod network;
pub mod paths;
pub mod problem;
pub mod seccomp;
pub mod service;
pub mod steps;
pub mod uboot;
pub mod update_bundle;
pub mod update_config;
pub mod wifi;
