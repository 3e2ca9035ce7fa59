//! The power button: input devices that can send KEY_POWER (the ACPI button on
//! x86_64, gpio-keys on the arm64 `virt` machine and boards) are read through
//! evdev; a press asks for power-off.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: timeval (16) + type, code (2+2) + value (4).
pub const EVENT_SIZE: usize = 24;

/// Whether a `capabilities/key` bitmap from sysfs has the KEY_POWER bit. The
/// bitmap is hex words of the kernel's `long` size, most significant first.
pub fn has_power_key(bitmap: &str) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let bits_per_word = usize::BITS as usize; // the device's `long` matches ours
    let (word, bit) = (
        KEY_POWER as usize / bits_per_word,
        KEY_POWER as usize % bits_per_word,
    );
    let Some(index) = words.len().checked_sub(word + 1) else {
        return false;
    };
    u64::from_str_radix(words[index], 16).is_ok_and(|w| w >> bit & 1 == 1)
}

/// True for a KEY_POWER press (value 1) in a buffer of input events.
pub fn power_pressed(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_SIZE).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Opens `/dev/input/<event>` if its device can send KEY_POWER.
pub fn open_if_power_button(sysfs: &Path, event: &str) -> Option<File> {
    let caps = fs::read_to_string(
        sysfs
            .join("class/input")
            .join(event)
            .join("device/capabilities/key"),
    )
    .ok()?;
    if !has_power_key(&caps) {
        return None;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(Path::new("/dev/input").join(event))
        .ok()
}

/// Names (`event0`, …) of the input event devices present now.
pub fn event_devices(sysfs: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sysfs.join("class/input")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("event"))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_bit_in_sysfs_bitmaps() {
        // KEY_POWER is bit 116: word 1 counted from the right, bit 52.
        // The ACPI power button (x86_64) and gpio-keys (virt) both show this.
        assert!(has_power_key("10000000000000 0\n"));
        assert!(has_power_key("1 10000000000000 0"));
        // A keyboard with every key of word 1 but KEY_POWER.
        assert!(!has_power_key("ffefffffffffffff 0"));
        assert!(!has_power_key("0"));
        assert!(!has_power_key(""));
        assert!(!has_power_key("zz 0"));
    }

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn press_is_detected_release_and_others_are_not() {
        let mut buf = event(EV_KEY, KEY_POWER, 1);
        buf.extend(event(0, 0, 0)); // EV_SYN
        assert!(power_pressed(&buf));
        assert!(!power_pressed(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!power_pressed(&event(EV_KEY, 30, 1)));
        assert!(!power_pressed(&buf[..EVENT_SIZE - 1]));
    }
}
