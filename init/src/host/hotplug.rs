//! Devices as they come: modules for kernel uevents' MODALIAS, power
//! buttons among new input devices, and the modules config and services
//! name.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use crate::event_loop::watch;
use crate::event_loop::{Init, Source};
use crate::host::coldplug::Outcome;
use crate::host::console::{say, say_error};
use crate::host::system::{PowerAction, System};
use crate::host::{power_button, uevent};

impl<S: System> Init<S> {
    pub(crate) fn drain_uevents(&mut self) {
        let Some(socket) = &self.uevents else { return };
        let mut buf = vec![0u8; 8192];
        let mut outcome = Outcome::default();
        let mut new_inputs = Vec::new();
        while let Some(n) = uevent::receive(socket, &mut buf) {
            let Some(event) = uevent::Uevent::parse(&buf[..n]) else {
                continue;
            };
            if !event.is_add() {
                continue;
            }
            if let Some(modalias) = event.get("MODALIAS") {
                self.coldplug
                    .handle_modalias(&self.sys, modalias, &mut outcome);
            }
            if let Some(name) = event.get("DEVNAME").and_then(|d| d.strip_prefix("input/")) {
                new_inputs.push(name.to_string());
            }
        }
        if !outcome.loaded.is_empty() || !outcome.errors.is_empty() {
            report_modules("hotplug", &outcome);
        }
        for name in new_inputs {
            self.watch_power_button(&name);
        }
    }

    pub(crate) fn watch_power_button(&mut self, event: &str) {
        // Boot both drains uevents and scans /sys: the same device may come twice.
        if self
            .sources
            .values()
            .any(|s| matches!(s, Source::Button(name, _) if name == event))
        {
            return;
        }
        let sysfs = Path::new("/sys");
        let Some(file) = power_button::open_if_power_button(sysfs, event) else {
            return;
        };
        if let Err(e) = watch(&self.epoll, file.as_fd()) {
            return say_error(&format!("watching power button {event}: {e}"));
        }
        let name = fs::read_to_string(sysfs.join("class/input").join(event).join("device/name"))
            .unwrap_or_default();
        say(&format!(
            "power button: /dev/input/{event} ({})",
            name.trim()
        ));
        self.sources
            .insert(file.as_raw_fd(), Source::Button(event.to_string(), file));
    }

    pub(crate) fn handle_button(&mut self, fd: RawFd) {
        let Some(Source::Button(_, file)) = self.sources.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; power_button::EVENT_SIZE * 16];
        let mut pressed = false;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pressed |= power_button::power_pressed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The device went away (ENODEV): stop watching it.
                    self.forget(fd);
                    break;
                }
            }
        }
        if pressed {
            self.power(PowerAction::PowerOff, "power button");
        }
    }

    /// Loads each (module or alias, " (for whom)") of `wanted`; one the image
    /// lacks is an error in the outcome.
    pub(crate) fn load_modules(&mut self, wanted: &[(String, String)]) -> Outcome {
        let mut outcome = Outcome::default();
        for (module, whom) in wanted {
            if !self
                .coldplug
                .load_alias_or_name(&self.sys, module, &mut outcome)
            {
                outcome.errors.push(format!(
                    "module {module}{whom} is not in this image (kernel-config/ selects the modules images carry)"
                ));
            }
        }
        outcome
    }
}

pub(crate) fn report_modules(when: &str, outcome: &Outcome) {
    say(&format!(
        "{when}: loaded {} modules: {}",
        outcome.loaded.len(),
        outcome.loaded.join(" ")
    ));
    for error in &outcome.errors {
        say_error(&format!("{when}: {error}"));
    }
}
