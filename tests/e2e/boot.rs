//! Boot both QEMU boards from freshly built artifacts and check, from the
//! serial console, what a user would see: modules coldplugged (a virtio NIC
//! appears), `brig: ready`, and a clean power-off from the power button.

use std::time::Duration;

use serde_json::json;

use crate::guest::{built, Guest};

const BOOT: Duration = Duration::from_secs(180);
const SHUTDOWN: Duration = Duration::from_secs(60);

/// Problems that must never appear on the console.
fn assert_clean(serial: &str) {
    for bad in [
        "Kernel panic",
        "brig: error",
        "internal error",
        "emergency:",
    ] {
        assert!(!serial.contains(bad), "console shows {bad:?}:\n{serial}");
    }
}

fn power_button_powers_off(board: &str, button: &str) {
    let mut guest = Guest::boot(board, &built(board), &["brig.hostname=e2e-node"]);
    // PID 1 reports its memory just after `brig: ready`.
    let serial = guest.wait_for("brig: PID 1 resident memory", BOOT);
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
    assert!(serial.contains("brig: hostname e2e-node"), "{serial}");
    assert!(serial.contains("brig: PID 1 resident memory"), "{serial}");

    guest.qmp("system_powerdown", json!({}));
    guest.wait_for("brig: powering off (power button)", SHUTDOWN);
    let status = guest.wait_exit(SHUTDOWN);
    let serial = guest.serial();
    assert!(status.success(), "QEMU exited with {status}:\n{serial}");
    assert!(serial.contains("brig: powering off now"), "{serial}");
    assert!(serial.contains("reboot: Power down"), "{serial}");
    assert_clean(&serial);
}

#[test]
fn qemu_x86_64_boots_and_the_acpi_power_button_powers_it_off() {
    power_button_powers_off("qemu-x86_64", "Power Button");
}

#[test]
fn qemu_aarch64_boots_and_the_gpio_power_button_powers_it_off() {
    power_button_powers_off("qemu-aarch64", "gpio-keys");
}

#[test]
fn ctrl_alt_del_reboots_in_order() {
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
    guest.wait_for("brig: rebooting (Ctrl-Alt-Del)", SHUTDOWN);
    // --no-reboot: QEMU exits when the guest asks for the reset.
    let status = guest.wait_exit(SHUTDOWN);
    let serial = guest.serial();
    assert!(status.success(), "QEMU exited with {status}:\n{serial}");
    assert!(serial.contains("brig: rebooting now"), "{serial}");
    assert!(serial.contains("reboot: Restarting system"), "{serial}");
    assert_clean(&serial);
}
