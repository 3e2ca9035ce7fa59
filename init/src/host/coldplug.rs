//! Loads the kernel modules the hardware needs: every device in /sys with a
//! `modalias` is matched against the image's `modules.alias` (coldplug), and
//! devices announced later by uevents go through the same path (hotplug).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::module_index::ModuleIndex;
use crate::host::system::System;

/// Module options, as distributions set them in modprobe.d: modules that
/// would otherwise create devices of their own when loaded (a `bond0` in
/// balance-rr mode before the network container asks for its own).
fn options(module: &str) -> &'static str {
    match module {
        "bonding" => "max_bonds=0",
        "dummy" => "numdummies=0",
        _ => "",
    }
}

pub struct Coldplug {
    index: ModuleIndex,
    modules_dir: PathBuf,
    /// Module paths loaded (or found already loaded).
    loaded: HashSet<String>,
    /// Modaliases already handled, so rescans only look at new devices.
    seen: HashSet<String>,
    /// Modules that failed once; not retried on every matching device.
    failed: HashSet<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub loaded: Vec<String>,
    pub errors: Vec<String>,
}

impl Coldplug {
    pub fn new(index: ModuleIndex, modules_dir: PathBuf) -> Coldplug {
        Coldplug {
            index,
            modules_dir,
            loaded: HashSet::new(),
            seen: HashSet::new(),
            failed: HashSet::new(),
        }
    }

    /// Reads `modules.alias` and `modules.dep` from `modules_dir`. A missing
    /// index means an image without modules: an empty index, not an error.
    pub fn from_dir(modules_dir: &Path) -> (Coldplug, Vec<String>) {
        let read = |name: &str| fs::read_to_string(modules_dir.join(name)).unwrap_or_default();
        let (index, problems) = ModuleIndex::parse(&read("modules.alias"), &read("modules.dep"));
        (Coldplug::new(index, modules_dir.to_path_buf()), problems)
    }

    /// Loads a module by name with its dependencies (filesystems, loop: no
    /// device asks for them). A module the image lacks is not an error: it
    /// may be built into the kernel.
    pub fn load_named(&mut self, sys: &dyn System, module: &str, outcome: &mut Outcome) {
        if let Ok(order) = self.index.load_order(module, &self.loaded) {
            if let Err(e) = self.load_in_order(sys, order, outcome) {
                outcome.errors.push(e);
            }
        }
    }

    /// Loads a module named `name` or the modules an alias `name` stands for
    /// (modprobe's lookup). False if neither exists in the image.
    pub fn load_alias_or_name(
        &mut self,
        sys: &dyn System,
        name: &str,
        outcome: &mut Outcome,
    ) -> bool {
        let modules = match self.index.load_order(name, &self.loaded) {
            Ok(_) => vec![name.to_string()],
            Err(_) => self.index.modules_for(name),
        };
        for module in &modules {
            self.load_named(sys, module, outcome);
        }
        !modules.is_empty()
    }

    /// Loads what `modalias` needs, once per distinct modalias.
    pub fn handle_modalias(&mut self, sys: &dyn System, modalias: &str, outcome: &mut Outcome) {
        if !self.seen.insert(modalias.to_string()) {
            return;
        }
        for module in self.index.modules_for(modalias) {
            if self.failed.contains(&module) {
                continue;
            }
            let loaded = self
                .index
                .load_order(&module, &self.loaded)
                .and_then(|order| self.load_in_order(sys, order, outcome));
            if let Err(e) = loaded {
                outcome.errors.push(format!("{e} (for {modalias})"));
                self.failed.insert(module);
            }
        }
    }

    /// Loads module files (dependencies first); stops at the first failure.
    fn load_in_order(
        &mut self,
        sys: &dyn System,
        order: Vec<String>,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        for path in order {
            let file = self.modules_dir.join(&path);
            let name = crate::host::module_index::module_name(&path);
            sys.load_module(&file, options(&name))
                .map_err(|e| format!("loading module {}: {e}", file.display()))?;
            outcome.loaded.push(name);
            self.loaded.insert(path);
        }
        Ok(())
    }

    /// Walks `sysfs/devices` until a pass loads nothing new: loading a bus
    /// driver (virtio_pci) creates the devices (virtio net, block) that need
    /// the next modules.
    pub fn scan(&mut self, sys: &dyn System, sysfs: &Path) -> Outcome {
        let mut outcome = Outcome::default();
        if self.index.is_empty() {
            return outcome;
        }
        loop {
            let before = outcome.loaded.len();
            let mut modaliases = Vec::new();
            collect_modaliases(&sysfs.join("devices"), &mut modaliases);
            for modalias in modaliases {
                self.handle_modalias(sys, &modalias, &mut outcome);
            }
            if outcome.loaded.len() == before {
                return outcome;
            }
        }
    }
}

/// Every `modalias` file's content below `dir`, without following symlinks
/// (sysfs links back up the tree).
fn collect_modaliases(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_modaliases(&entry.path(), out);
        } else if kind.is_file() && entry.file_name() == "modalias" {
            if let Ok(text) = fs::read_to_string(entry.path()) {
                let text = text.trim();
                if !text.is_empty() {
                    out.push(text.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    const ALIAS: &str = "alias pci:v00001AF4d00001000* virtio_pci\nalias virtio:d00000001v* virtio_net\nalias virtio:d00000002v* virtio_blk\n";
    const DEP: &str = "kernel/virtio_pci.ko:\nkernel/virtio_net.ko: kernel/failover.ko\nkernel/failover.ko:\nkernel/virtio_blk.ko:\n";

    fn device(sysfs: &Path, path: &str, modalias: &str) {
        let dir = sysfs.join("devices").join(path);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("modalias"), format!("{modalias}\n")).unwrap();
    }

    #[test]
    fn loads_matching_modules_with_dependencies_once() {
        let sysfs = tempfile::tempdir().unwrap();
        device(
            sysfs.path(),
            "pci0000:00/0000:00:02.0/virtio0",
            "virtio:d00000001v00001AF4",
        );
        device(
            sysfs.path(),
            "pci0000:00/0000:00:03.0/virtio1",
            "virtio:d00000001v00001AF4",
        );
        device(sysfs.path(), "platform/serial8250", "platform:serial8250");
        let (index, _) = ModuleIndex::parse(ALIAS, DEP);
        let mut coldplug = Coldplug::new(index, "/lib/modules/6.12".into());
        let sys = Recorder::default();
        let outcome = coldplug.scan(&sys, sysfs.path());
        assert_eq!(outcome.loaded, ["failover", "virtio_net"]);
        assert!(outcome.errors.is_empty());
        assert_eq!(
            sys.calls(),
            [
                "load /lib/modules/6.12/kernel/failover.ko",
                "load /lib/modules/6.12/kernel/virtio_net.ko"
            ]
        );
    }

    #[test]
    fn devices_appearing_after_a_load_are_picked_up_by_the_next_pass() {
        let sysfs = tempfile::tempdir().unwrap();
        device(
            sysfs.path(),
            "pci0000:00/0000:00:04.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000002bc01sc00i00",
        );
        let (index, _) = ModuleIndex::parse(ALIAS, DEP);
        let mut coldplug = Coldplug::new(index, "/m".into());
        // Like the kernel: loading virtio_pci makes the virtio block device appear.
        let root = sysfs.path().to_path_buf();
        let sys = Recorder {
            on_load: Some(Box::new(move |path| {
                if path.ends_with("virtio_pci.ko") {
                    device(
                        &root,
                        "pci0000:00/0000:00:04.0/virtio2",
                        "virtio:d00000002v00001AF4",
                    );
                }
            })),
            ..Recorder::default()
        };
        let outcome = coldplug.scan(&sys, sysfs.path());
        assert_eq!(outcome.loaded, ["virtio_pci", "virtio_blk"]);
    }

    #[test]
    fn a_failing_module_is_reported_and_not_retried() {
        let sysfs = tempfile::tempdir().unwrap();
        device(sysfs.path(), "a/virtio0", "virtio:d00000001v00001AF4");
        device(sysfs.path(), "b/virtio1", "virtio:d00000001v00001AF5");
        let (index, _) = ModuleIndex::parse(ALIAS, DEP);
        let mut coldplug = Coldplug::new(index, "/m".into());
        let mut sys = Recorder::default();
        sys.failures
            .insert("load /m/kernel/failover.ko".into(), libc::ENOEXEC);
        let outcome = coldplug.scan(&sys, sysfs.path());
        assert!(outcome.loaded.is_empty());
        assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
        assert!(
            outcome.errors[0].contains("/m/kernel/failover.ko"),
            "{}",
            outcome.errors[0]
        );
        assert_eq!(sys.calls().len(), 1);
    }

    #[test]
    fn no_index_means_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (mut coldplug, problems) = Coldplug::from_dir(dir.path());
        assert!(problems.is_empty());
        let sys = Recorder::default();
        assert_eq!(coldplug.scan(&sys, dir.path()), Outcome::default());
    }
}
