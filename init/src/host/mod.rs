//! The kernel as PID 1 sees it. Every syscall the logic needs goes through
//! the `System` seam (`system.rs`), so the logic is unit tested with a
//! recording fake and the real path runs in QEMU.

pub mod block_devices;
pub mod coldplug;
pub mod console;
pub mod hotplug;
pub mod kernel_cmdline;
pub mod modprobe;
pub mod module_index;
pub mod mounts;
pub mod power_button;
pub mod shutdown;
pub mod system;
pub mod uevent;
pub mod user_mounts;
pub mod watchdog;
