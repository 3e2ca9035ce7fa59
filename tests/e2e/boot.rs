//! What a user sees of booting and stopping, from the serial console:
//! modules coldplugged (a virtio NIC appears), `brig: ready`, a clean
//! power-off from the power button (checked at the end of the console
//! tests, which boot both QEMU boards anyway). Ctrl-Alt-Del, and user data
//! on the kernel command line, are checked in the x86_64 services test.

use crate::guest::Guest;

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
