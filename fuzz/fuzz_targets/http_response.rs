//! Any bytes a metadata server sends back, and any URL a config names: an
//! error, never a panic.
#![no_main]

use brig_init::config::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = http::parse_response(data);
    let _ = http::Url::parse(&String::from_utf8_lossy(data));
});
