//! The kernel module index that `brig build` writes into the initramfs
//! (`modules.alias` and `modules.dep`, in depmod's formats), and the pure logic
//! of coldplug: which modules match a device's modalias, and in what order to
//! load a module and its dependencies.

use std::collections::{HashMap, HashSet};

/// Aliases and dependencies of the modules shipped in the image.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// `(pattern, module name)` in file order, as modprobe resolves them.
    aliases: Vec<(String, String)>,
    /// Module name -> (path relative to the modules dir, dependency paths).
    modules: HashMap<String, (String, Vec<String>)>,
}

/// Module names compare with `-` and `_` treated alike, as the kernel does.
pub fn module_name(name_or_path: &str) -> String {
    let file = name_or_path.rsplit('/').next().unwrap_or(name_or_path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Parses `modules.alias` and `modules.dep` text. Malformed lines are
    /// skipped and returned as messages, so one bad line costs one module.
    pub fn parse(alias_text: &str, dep_text: &str) -> (ModuleIndex, Vec<String>) {
        let mut index = ModuleIndex::default();
        let mut problems = Vec::new();
        for (n, line) in alias_text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => index
                    .aliases
                    .push((pattern.to_string(), module_name(module))),
                _ => problems.push(format!(
                    "modules.alias line {}: cannot parse {line:?}",
                    n + 1
                )),
            }
        }
        for (n, line) in dep_text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((path, deps)) if !path.trim().is_empty() => {
                    let path = path.trim().to_string();
                    let deps = deps.split_whitespace().map(str::to_string).collect();
                    index.modules.insert(module_name(&path), (path, deps));
                }
                _ => problems.push(format!("modules.dep line {}: cannot parse {line:?}", n + 1)),
            }
        }
        (index, problems)
    }

    /// Names of the modules whose alias patterns match `modalias`, without duplicates.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if brig_spec::glob::glob_match(pattern.as_bytes(), modalias.as_bytes())
                && !found.contains(module)
            {
                found.push(module.clone());
            }
        }
        found
    }

    /// Paths to load for `module`, dependencies first, each once. Paths already
    /// in `loaded` are left out. An unknown module or dependency is an error.
    pub fn load_order(
        &self,
        module: &str,
        loaded: &HashSet<String>,
    ) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        let mut visiting = HashSet::new();
        self.visit(&module_name(module), loaded, &mut visiting, &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        loaded: &HashSet<String>,
        visiting: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        let (path, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        if loaded.contains(path) || order.contains(path) || !visiting.insert(name.to_string()) {
            // Already loaded, already queued, or a dependency cycle (which
            // depmod rejects; loading then fails with a clear kernel error).
            return Ok(());
        }
        for dep in deps {
            self.visit(&module_name(dep), loaded, visiting, order)?;
        }
        order.push(path.clone());
        Ok(())
    }

    /// The paths the module at `path` needs loaded first (modules.dep lists
    /// them all, not only the direct ones).
    pub fn dependencies(&self, path: &str) -> &[String] {
        self.modules
            .get(&module_name(path))
            .map_or(&[], |(_, deps)| deps.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias acpi*:LNXPWRBN:* button
alias of:N*T*Cgpio-keys gpio_keys
alias of:N*T*Cgpio-keysC* gpio_keys
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
alias usb:v*p*d*dc*dsc*dp*ic09isc*ip*in* usbcore
";
    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/drivers/acpi/button.ko:
kernel/drivers/input/keyboard/gpio_keys.ko:
kernel/drivers/input/evdev.ko:
";

    fn index() -> ModuleIndex {
        let (index, problems) = ModuleIndex::parse(ALIAS, DEP);
        assert!(problems.is_empty(), "{problems:?}");
        index
    }

    #[test]
    fn virtio_devices_match_their_drivers() {
        let i = index();
        assert_eq!(i.modules_for("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(i.modules_for("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert!(i.modules_for("virtio:d00000012v00001AF4").is_empty());
        assert_eq!(
            i.modules_for("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert!(i
            .modules_for("pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00")
            .is_empty());
    }

    #[test]
    fn power_buttons_and_input_devices() {
        let i = index();
        assert_eq!(i.modules_for("acpi:LNXPWRBN:"), ["button"]);
        assert_eq!(
            i.modules_for("of:Ngpio-keysT(null)Cgpio-keys"),
            ["gpio_keys"]
        );
        assert_eq!(
            i.modules_for("input:b0019v0000p0001e0000-e0,1,k74,ramlsfw"),
            ["evdev"]
        );
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let i = index();
        let order = i.load_order("virtio-net", &HashSet::new()).unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko"
            ]
        );
        let loaded: HashSet<String> = ["kernel/net/core/failover.ko".to_string()].into();
        assert_eq!(
            i.load_order("virtio_net", &loaded).unwrap(),
            [
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko"
            ]
        );
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = index().load_order("nosuch", &HashSet::new()).unwrap_err();
        assert!(err.contains("nosuch"), "{err}");
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let (index, problems) =
            ModuleIndex::parse("alias onlyone\nalias a* evdev\n", "nocolon\nkernel/x.ko:\n");
        assert_eq!(problems.len(), 2);
        assert_eq!(index.modules_for("abc"), ["evdev"]);
        assert!(index.load_order("x", &HashSet::new()).is_ok());
    }

    #[test]
    fn names_normalise_dashes_and_suffixes() {
        assert_eq!(module_name("kernel/drivers/gpio-keys.ko.xz"), "gpio_keys");
        assert_eq!(module_name("virtio-net"), "virtio_net");
    }
}
