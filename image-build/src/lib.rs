//! The pure parts of the `brig` host tool that its end-to-end tests share.

pub mod pcap;
