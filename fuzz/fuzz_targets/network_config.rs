//! Any text as network config v2: problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brig_spec::network::NetworkConfig::parse(&String::from_utf8_lossy(data));
});
