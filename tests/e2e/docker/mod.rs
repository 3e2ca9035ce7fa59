//! The user's Docker Engine end to end: the full default image (with the
//! docker and swarm containers), built once, booted in QEMU: one guest
//! driven over ssh, and a Swarm of three.

pub mod image;
pub mod single_node;
pub mod swarm;
