//! Loads the kernel modules the hardware needs: every device in /sys with a
//! `modalias` is matched against the image's `modules.alias` (coldplug), and
//! devices announced later by uevents go through the same path (hotplug).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::module_index::{module_name, ModuleIndex};
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
        let names: Vec<&str> = modules.iter().map(String::as_str).collect();
        self.load_all_named(sys, &names, outcome);
        !modules.is_empty()
    }

    /// Loads what `modalias` needs, once per distinct modalias.
    pub fn handle_modalias(&mut self, sys: &dyn System, modalias: &str, outcome: &mut Outcome) {
        let mut wanted = Vec::new();
        self.want(modalias, &mut wanted);
        self.load_side_by_side(sys, wanted, outcome);
    }

    /// Adds to `wanted` the modules a new `modalias` needs, each once, as
    /// (module, " (for modalias)"); a modalias seen before, or a module
    /// that failed before, adds nothing.
    fn want(&mut self, modalias: &str, wanted: &mut Vec<(String, String)>) {
        if !self.seen.insert(modalias.to_string()) {
            return;
        }
        for module in self.index.modules_for(modalias) {
            if !self.failed.contains(&module) && !wanted.iter().any(|(m, _)| *m == module) {
                wanted.push((module, format!(" (for {modalias})")));
            }
        }
    }

    /// Loads modules by name with their dependencies, side by side where
    /// they do not depend on one another (the filesystems and loop that
    /// containers need: no device asks for them). A module the image lacks
    /// is not an error: it may be built into the kernel.
    pub fn load_all_named(&mut self, sys: &dyn System, modules: &[&str], outcome: &mut Outcome) {
        let wanted = self.named(modules);
        self.load_side_by_side(sys, wanted, outcome);
    }

    /// `modules` as wanted: those the image has.
    fn named(&self, modules: &[&str]) -> Vec<(String, String)> {
        modules
            .iter()
            .filter(|m| self.index.load_order(m, &self.loaded).is_ok())
            .map(|m| (m.to_string(), String::new()))
            .collect()
    }

    /// Walks `sysfs/devices` until a pass loads nothing new: loading a bus
    /// driver (virtio_pci) creates the devices (virtio net, block) that need
    /// the next modules.
    pub fn scan(&mut self, sys: &dyn System, sysfs: &Path) -> Outcome {
        self.scan_with(sys, sysfs, &[])
    }

    /// As `scan`, with `modules` (by name, as `load_all_named`) loaded in
    /// the first pass, side by side with the devices' own: the rounds are
    /// shared instead of run one after the other.
    pub fn scan_with(&mut self, sys: &dyn System, sysfs: &Path, modules: &[&str]) -> Outcome {
        let mut outcome = Outcome::default();
        if self.index.is_empty() {
            return outcome;
        }
        let mut named = self.named(modules);
        loop {
            let before = outcome.loaded.len();
            let mut modaliases = Vec::new();
            collect_modaliases(&sysfs.join("devices"), &mut modaliases);
            let mut wanted = std::mem::take(&mut named);
            for modalias in modaliases {
                self.want(&modalias, &mut wanted);
            }
            self.load_side_by_side(sys, wanted, &mut outcome);
            if outcome.loaded.len() == before {
                return outcome;
            }
        }
    }

    /// Loads each (module, " (for whom)") with its dependencies, in rounds:
    /// every module whose dependencies are in goes in the same round, side
    /// by side. A module that fails is reported and not retried, and what
    /// needs it is not loaded.
    fn load_side_by_side(
        &mut self,
        sys: &dyn System,
        wanted: Vec<(String, String)>,
        outcome: &mut Outcome,
    ) {
        // Each path to load, with whom it is for (the first to ask).
        let mut pending: Vec<(String, String)> = Vec::new();
        let mut wanted_paths: Vec<(String, Vec<String>)> = Vec::new();
        for (module, whom) in wanted {
            match self.index.load_order(&module, &self.loaded) {
                Ok(order) => {
                    for path in &order {
                        if !pending.iter().any(|(p, _)| p == path) {
                            pending.push((path.clone(), whom.clone()));
                        }
                    }
                    wanted_paths.push((module, order));
                }
                Err(e) => {
                    outcome.errors.push(format!("{e}{whom}"));
                    self.failed.insert(module);
                }
            }
        }
        let mut broken: Vec<String> = Vec::new();
        while !pending.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(path, _)| {
                self.index
                    .dependencies(path)
                    .iter()
                    .all(|dep| self.loaded.contains(dep))
            });
            if ready.is_empty() {
                // What is left needs a module that failed (reported above),
                // or modules.dep has a cycle (depmod rejects those).
                let cycle = broken.is_empty();
                for (path, whom) in waiting {
                    if cycle {
                        outcome.errors.push(format!(
                            "not loading module {}: its dependencies in modules.dep form a cycle{whom}",
                            self.modules_dir.join(&path).display()
                        ));
                    }
                    broken.push(path);
                }
                break;
            }
            let files: Vec<(PathBuf, &str)> = ready
                .iter()
                .map(|(path, _)| (self.modules_dir.join(path), options(&module_name(path))))
                .collect();
            let results = sys.load_modules(&files);
            for (((path, whom), (file, _)), result) in ready.iter().zip(&files).zip(results) {
                match result {
                    Ok(()) => {
                        outcome.loaded.push(module_name(path));
                        self.loaded.insert(path.clone());
                    }
                    Err(e) => {
                        outcome
                            .errors
                            .push(format!("loading module {}: {e}{whom}", file.display()));
                        broken.push(path.clone());
                    }
                }
            }
            pending = waiting;
        }
        for (module, order) in wanted_paths {
            if order.iter().any(|path| broken.contains(path)) {
                self.failed.insert(module);
            }
        }
        for path in broken {
            self.failed.insert(module_name(&path));
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
    fn modules_load_side_by_side_once_their_dependencies_are_in() {
        let sysfs = tempfile::tempdir().unwrap();
        device(sysfs.path(), "a/virtio0", "virtio:d00000001v00001AF4");
        device(sysfs.path(), "b/virtio1", "virtio:d00000002v00001AF4");
        device(sysfs.path(), "c/input0", "input:b0019");
        let alias = format!("{ALIAS}alias input:b* evdev\n");
        let dep = format!("{DEP}kernel/evdev.ko:\n");
        let (index, _) = ModuleIndex::parse(&alias, &dep);
        let mut coldplug = Coldplug::new(index, "/m".into());
        let sys = Recorder::default();
        let outcome = coldplug.scan(&sys, sysfs.path());
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let mut rounds = sys.module_rounds.borrow().clone();
        rounds.iter_mut().for_each(|round| round.sort());
        // virtio_net waits for failover; the rest go together. The last
        // pass finds nothing new.
        assert_eq!(
            rounds,
            [vec!["evdev", "failover", "virtio_blk"], vec!["virtio_net"]]
        );
        let mut loaded = outcome.loaded.clone();
        loaded.sort();
        assert_eq!(loaded, ["evdev", "failover", "virtio_blk", "virtio_net"]);
    }

    #[test]
    fn what_needs_a_module_that_failed_is_not_loaded_and_the_rest_is() {
        let sysfs = tempfile::tempdir().unwrap();
        device(sysfs.path(), "a/virtio0", "virtio:d00000001v00001AF4");
        device(sysfs.path(), "b/virtio1", "virtio:d00000002v00001AF4");
        let (index, _) = ModuleIndex::parse(ALIAS, DEP);
        let mut coldplug = Coldplug::new(index, "/m".into());
        let mut sys = Recorder::default();
        sys.failures
            .insert("load /m/kernel/failover.ko".into(), libc::ENOEXEC);
        let outcome = coldplug.scan(&sys, sysfs.path());
        assert_eq!(outcome.loaded, ["virtio_blk"]);
        assert_eq!(
            outcome.errors,
            ["loading module /m/kernel/failover.ko: Exec format error (os error 8) (for virtio:d00000001v00001AF4)"]
        );
        assert!(
            !sys.calls().iter().any(|c| c.contains("virtio_net")),
            "{:?}",
            sys.calls()
        );
        // A device that asks for virtio_net again does not try again.
        device(sysfs.path(), "c/virtio2", "virtio:d00000001v00001AF5");
        let again = coldplug.scan(&sys, sysfs.path());
        assert_eq!(again, Outcome::default());
    }

    #[test]
    fn container_modules_load_together() {
        let dep = "kernel/loop.ko:\nkernel/squashfs.ko:\nkernel/overlay.ko:\n";
        let (index, _) = ModuleIndex::parse("", dep);
        let mut coldplug = Coldplug::new(index, "/m".into());
        let sys = Recorder::default();
        let mut outcome = Outcome::default();
        // ext4 is not in this image: built into the kernel, not an error.
        coldplug.load_all_named(&sys, &["loop", "squashfs", "overlay", "ext4"], &mut outcome);
        assert_eq!(outcome.loaded, ["loop", "squashfs", "overlay"]);
        assert!(outcome.errors.is_empty());
        assert_eq!(
            *sys.module_rounds.borrow(),
            [vec!["loop", "squashfs", "overlay"]]
        );
    }

    #[test]
    fn named_modules_share_the_first_pass_rounds_with_the_devices_own() {
        let sysfs = tempfile::tempdir().unwrap();
        device(
            sysfs.path(),
            "pci0000:00/0000:00:02.0/virtio0",
            "virtio:d00000001v00001AF4",
        );
        let dep = format!("{DEP}kernel/loop.ko:\nkernel/fat.ko:\nkernel/vfat.ko: kernel/fat.ko\n");
        let (index, _) = ModuleIndex::parse(ALIAS, &dep);
        let mut coldplug = Coldplug::new(index, "/m".into());
        let sys = Recorder::default();
        // ext4 is not in this image: built into the kernel, not an error.
        let outcome = coldplug.scan_with(&sys, sysfs.path(), &["loop", "vfat", "ext4"]);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let mut loaded = outcome.loaded.clone();
        loaded.sort();
        assert_eq!(loaded, ["failover", "fat", "loop", "vfat", "virtio_net"]);
        let mut rounds = sys.module_rounds.borrow().clone();
        rounds.iter_mut().for_each(|r| r.sort());
        assert_eq!(
            rounds,
            [vec!["failover", "fat", "loop"], vec!["vfat", "virtio_net"]]
        );
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
