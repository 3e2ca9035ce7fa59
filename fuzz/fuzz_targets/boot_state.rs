//! What PID 1 and an update read off the boot partition or out of a
//! bundle before anything vouches for it: U-Boot's environment file (a
//! cut write, a `saveenv` at the prompt, a card edited elsewhere) and an
//! update bundle's manifest. An error, never a panic.
#![no_main]

use brig_spec::{uboot, update_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vars) = uboot::decode_env(data) {
        let slots = uboot::Slots::from_env(&vars);
        let _ = uboot::encode_env(&slots.to_env());
    }
    if let Ok(manifest) = update_bundle::Manifest::parse(data) {
        let _ = manifest.to_json();
        for part in &manifest.parts {
            if let Some(path) = update_bundle::shared_boot_file(&part.name) {
                let _ = update_bundle::may_share(path);
            }
        }
    }
});
