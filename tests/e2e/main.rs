//! End-to-end tests: real images built by `brig build` (real Debian kernels),
//! booted in QEMU by `brig run` (each in a network namespace of its own),
//! driven through the serial console and QMP.
//! Images are built once per board per test run and shared by the tests.

mod boot;
mod build;
mod console;
mod disk_image;
mod guest;
mod isolated_net;
mod metadata;
mod network;
mod raspberry_pi;
mod services;
mod state;
mod user_services;
