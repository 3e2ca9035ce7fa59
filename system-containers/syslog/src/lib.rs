//! brig-logd, the log service (docs/logging.md): receives syslog messages
//! (RFC 3164 and RFC 5424) on /dev/log, reads the kernel log, takes each
//! service's output from PID 1; keeps them, bounded and rotated, and
//! forwards them to a remote receiver.

pub mod daemon;
pub mod forward;
pub mod kmsg;
pub mod message;
pub mod query_clients;
pub mod store;
