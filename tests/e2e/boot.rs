//! What a user sees of booting and stopping, from the serial console:
//! modules coldplugged (a virtio NIC appears), `brig: ready`, a clean
//! power-off from the power button (checked at the end of the console
//! tests, which boot both QEMU boards anyway), and Ctrl-Alt-Del.

use std::time::Duration;

use serde_json::json;

use crate::guest::{built, Guest, Power};

const BOOT: Duration = Duration::from_secs(180);

/// Problems that must never appear on the console; `expected` are the
/// `brig: error` lines the test caused on purpose (a line with one of them
/// is no problem).
pub fn assert_clean(serial: &str, expected: &[&str]) {
    for bad in ["Kernel panic", "internal error", "emergency:"] {
        assert!(!serial.contains(bad), "console shows {bad:?}:\n{serial}");
    }
    let unexpected = serial
        .lines()
        .find(|l| l.contains("brig: error") && !expected.iter().any(|e| l.contains(e)));
    assert!(
        unexpected.is_none(),
        "console shows {unexpected:?}:\n{serial}"
    );
}

/// What any boot must have shown, then a clean power-off from the power
/// button (`button`: the kernel's name for it). The guest was booted with
/// `brig.hostname=e2e-node`. Its tests fold this in rather than boot once
/// more for it (each boot is CI time under TCG).
pub fn boots_and_the_power_button_powers_it_off(
    guest: &mut Guest,
    button: &str,
    expected_errors: &[&str],
) {
    let serial = guest.serial();
    // Coldplug found the virtio NIC through modules.alias and loaded its driver.
    assert!(
        serial.contains("network interfaces: eth0 (virtio_net)"),
        "{serial}"
    );
    let coldplug = serial
        .lines()
        .find(|l| l.contains("brig: coldplug: loaded"))
        .expect("coldplug line");
    assert!(
        coldplug.contains("virtio_net") && coldplug.contains("evdev"),
        "{coldplug}"
    );
    assert!(
        serial.contains(&format!("({button})")),
        "no power button {button:?}:\n{serial}"
    );
    // PID 1's hostname from the kernel command line, before any config.
    assert!(serial.contains("brig: hostname e2e-node"), "{serial}");
    assert!(serial.contains("brig: PID 1 resident memory"), "{serial}");

    let serial = guest.press_power_button();
    assert_clean(&serial, expected_errors);
}

pub fn ctrl_alt_del_reboots_in_order() {
    let board = "qemu-x86_64";
    // User data can also come on the kernel command line, base64-encoded:
    // "#cloud-config\nhostname: from-cmdline\n".
    let config = "brig.config=I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogZnJvbS1jbWRsaW5lCg==";
    let mut guest = Guest::boot(board, &built(board), &[config]);
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("brig: config: from the kernel command line (brig.config=)"),
        "{serial}"
    );
    assert!(
        serial.contains("brig: hostname from-cmdline (from config)"),
        "{serial}"
    );
    let keys: Vec<_> = ["ctrl", "alt", "delete"]
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    guest.qmp("send-key", json!({ "keys": keys }));
    // --no-reboot: QEMU exits when the guest asks for the reset.
    let serial = guest.goes_down(Power::Reboot, "Ctrl-Alt-Del");
    assert_clean(&serial, &[]);
}
