//! From the kernel's hand-over to the event loop: leaving the initramfs,
//! the system partition a disk image boots from, and the state partition
//! that keeps the machine's data.

pub mod disk;
pub mod sequence;
pub mod state;
pub mod switch_root;
