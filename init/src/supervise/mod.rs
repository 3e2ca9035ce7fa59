//! The services: the supervisor's decisions as a pure state machine
//! (`supervisor`), carried out with the container runtime (`services`),
//! and what they print (`log_ring`, `log_forward`).

pub mod containers;
pub mod log_forward;
pub mod log_ring;
pub mod services;
pub mod supervisor;
