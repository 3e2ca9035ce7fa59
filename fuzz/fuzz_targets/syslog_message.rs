//! Any datagram a container sends to /dev/log, and any /dev/kmsg record:
//! a record, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brig_logd::message::parse(data);
    let _ = brig_logd::kmsg::parse(data);
});
