//! The kernel modules that go into the initramfs: found in the kernel
//! package's module tree, decompressed, closed over their dependencies (read
//! from each module's `.modinfo`), and indexed as depmod would
//! (`modules.dep`, `modules.alias`) for PID 1's coldplug.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use object::{Object, ObjectSection};

use crate::kernel_config::ModuleNeed;

/// A module on its way into the image.
#[derive(Debug)]
pub struct Module {
    pub name: String,
    /// Path relative to `lib/modules/<release>/`, uncompressed (`….ko`).
    pub path: String,
    pub data: Vec<u8>,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    /// The config option that asked for it, or the module that depends on it.
    pub reason: String,
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name -> path (relative to `dir`) of every module file below `dir`.
pub fn scan_tree(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else if let Some(stem) = module_stem(&path) {
                out.insert(
                    normalise(&stem),
                    path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                );
            }
        }
        Ok(())
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// `virtio_net` for `…/virtio_net.ko`, `.ko.xz` or `.ko.zst`.
fn module_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    ["ko", "ko.xz", "ko.zst"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".{ext}")))
        .map(str::to_string)
}

/// The module file's bytes, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?;
    let name = path.to_string_lossy();
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| anyhow!("decompressing {}: {e:?}", path.display()))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        zstd::decode_all(raw.as_slice())
            .with_context(|| format!("decompressing {}", path.display()))
    } else {
        Ok(raw)
    }
}

/// `key=value` entries of the ELF `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>> {
    let file = object::File::parse(elf).context("parsing module ELF")?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("no .modinfo section"))?;
    let data = section.data().context("reading .modinfo")?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The modules `needs` ask for and everything they depend on, from the module
/// tree at `dir` (`lib/modules/<release>`). Sorted by path.
pub fn select(dir: &Path, needs: &[ModuleNeed]) -> Result<Vec<Module>> {
    let tree = scan_tree(&dir.join("kernel"))?;
    let mut chosen: BTreeMap<String, Module> = BTreeMap::new();
    let mut queue: Vec<(String, String)> = needs
        .iter()
        .map(|n| (normalise(&n.module), n.option.clone()))
        .collect();
    while let Some((name, reason)) = queue.pop() {
        if chosen.contains_key(&name) {
            continue;
        }
        let Some(rel) = tree.get(&name) else {
            if reason.starts_with("CONFIG_") {
                bail!(
                    "{reason} is built as a module, but no module named {name:?} is in {}; \
                     name the module in the kernel-config fragment with `# module: <name>`",
                    dir.display()
                );
            }
            bail!(
                "module {name:?}, needed by {reason}, is not in {}",
                dir.display()
            );
        };
        let data = read_module(&dir.join("kernel").join(rel))?;
        let info = modinfo(&data).with_context(|| format!("reading {}", rel.display()))?;
        let depends: Vec<String> = info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|d| !d.is_empty())
            .map(normalise)
            .collect();
        let aliases = info
            .iter()
            .filter(|(k, _)| k == "alias")
            .map(|(_, v)| v.clone())
            .collect();
        for dep in &depends {
            queue.push((dep.clone(), format!("module {name}")));
        }
        let path = format!("kernel/{}", rel.display());
        let path = path
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .to_string();
        chosen.insert(
            name.clone(),
            Module {
                name,
                path,
                data,
                depends,
                aliases,
                reason,
            },
        );
    }
    let mut modules: Vec<Module> = chosen.into_values().collect();
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(modules)
}

/// `modules.dep`: each module with all its transitive dependencies, listed
/// last-loaded-first as depmod does (modprobe loads from the end).
pub fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut out = String::new();
    for module in modules {
        let mut load_order = Vec::new();
        for dep in &module.depends {
            post_order(dep, &by_name, &mut load_order);
        }
        load_order.reverse();
        let deps: Vec<&str> = load_order.iter().map(|m| m.path.as_str()).collect();
        out.push_str(&format!("{}: {}\n", module.path, deps.join(" ")).replace(": \n", ":\n"));
    }
    out
}

fn post_order<'a>(name: &str, by_name: &HashMap<&str, &'a Module>, out: &mut Vec<&'a Module>) {
    let Some(module) = by_name.get(name) else {
        return;
    };
    if out.iter().any(|m| m.name == module.name) {
        return;
    }
    for dep in &module.depends {
        post_order(dep, by_name, out);
    }
    if !out.iter().any(|m| m.name == module.name) {
        out.push(module);
    }
}

/// `modules.alias` in depmod's format.
pub fn modules_alias(modules: &[Module]) -> String {
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for module in modules {
        for alias in &module.aliases {
            out.push_str(&format!("alias {alias} {}\n", module.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str], aliases: &[&str]) -> Module {
        Module {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            data: Vec::new(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            reason: String::new(),
        }
    }

    #[test]
    fn dep_file_lists_transitive_dependencies_last_loaded_first() {
        let modules = [
            module("failover", &[], &[]),
            module("net_failover", &["failover"], &[]),
            module("virtio_net", &["net_failover"], &["virtio:d00000001v*"]),
        ];
        assert_eq!(
            modules_dep(&modules),
            "kernel/failover.ko:\nkernel/net_failover.ko: kernel/failover.ko\n\
             kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko\n"
        );
        assert!(modules_alias(&modules).ends_with("alias virtio:d00000001v* virtio_net\n"));
    }

    #[test]
    fn stems_of_compressed_and_plain_modules() {
        assert_eq!(
            module_stem(Path::new("a/gpio-keys.ko.xz")).as_deref(),
            Some("gpio-keys")
        );
        assert_eq!(
            module_stem(Path::new("a/evdev.ko")).as_deref(),
            Some("evdev")
        );
        assert_eq!(module_stem(Path::new("a/evdev.ko.gz")), None);
        assert_eq!(module_stem(Path::new("a/modules.order")), None);
    }
}
