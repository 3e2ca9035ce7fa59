//! Any bytes as user data (cloud-config, scripts, MIME multipart): the
//! parser reports problems, it never panics. Also the source locations
//! `brigctl config validate` computes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brig_spec::cloud_config::parse_user_data(data);
    let _ = brig_spec::cloud_config::parse_meta_data(&String::from_utf8_lossy(data));
    let _ = brig_spec::key_path::locations(&String::from_utf8_lossy(data));
});
