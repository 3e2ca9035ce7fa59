//! Kernel config fragments (`kernel-config/*.config`) and checking a kernel's
//! config against them.
//!
//! Fragment lines use the kernel's own syntax:
//! - `CONFIG_X=y` (or `=m`): the kernel must have X, built in or as a module;
//!   as a module, it goes into the initramfs with its dependencies. Its module
//!   name is the option name lowercased without `CONFIG_` unless the line says
//!   otherwise with a trailing `# module: name`.
//! - `# CONFIG_X is not set`: the kernel must not have X.
//! - `CONFIG_X=value`: the kernel must have exactly this value.

use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Enabled,
    Disabled,
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub option: String,
    pub want: Want,
    /// Module name to use when the option is built as a module.
    pub module: String,
    /// `file:line` it came from, for error messages.
    pub origin: String,
}

/// Parses one fragment; `name` is used in error messages.
pub fn parse_fragment(name: &str, text: &str) -> Result<Vec<Requirement>, Vec<String>> {
    let mut reqs = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let origin = format!("{name}:{}", n + 1);
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(option) = rest.strip_suffix(" is not set") {
                if option.starts_with("CONFIG_") && !option.contains(char::is_whitespace) {
                    reqs.push(Requirement {
                        option: option.to_string(),
                        want: Want::Disabled,
                        module: String::new(),
                        origin,
                    });
                }
            }
            continue; // any other comment
        }
        let (setting, annotation) = match line.split_once('#') {
            Some((s, a)) => (s.trim(), Some(a.trim())),
            None => (line, None),
        };
        let Some((option, value)) = setting.split_once('=') else {
            errors.push(format!(
                "{origin}: expected CONFIG_NAME=value, found {raw:?}"
            ));
            continue;
        };
        if !option.starts_with("CONFIG_") || option.len() == 7 || value.is_empty() {
            errors.push(format!(
                "{origin}: expected CONFIG_NAME=value, found {raw:?}"
            ));
            continue;
        }
        let module = match annotation.map(|a| a.strip_prefix("module:").map(str::trim)) {
            Some(Some(m)) if !m.is_empty() => m.replace('-', "_"),
            Some(Some(_)) => {
                errors.push(format!("{origin}: `# module:` needs a module name"));
                continue;
            }
            _ => option["CONFIG_".len()..].to_lowercase(),
        };
        let want = match value {
            "y" | "m" => Want::Enabled,
            "n" => Want::Disabled,
            v => Want::Value(v.to_string()),
        };
        reqs.push(Requirement {
            option: option.to_string(),
            want,
            module,
            origin,
        });
    }
    if errors.is_empty() {
        Ok(reqs)
    } else {
        Err(errors)
    }
}

/// A kernel `.config`: option -> value (`y`, `m`, a number, a quoted string).
/// Options that are "not set" are absent.
pub fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An option the kernel builds as a module, and the module that provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleNeed {
    pub option: String,
    pub module: String,
}

#[derive(Debug)]
pub struct Unmet(pub Vec<String>);

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the kernel does not meet {} requirement(s) of kernel-config/:",
            self.0.len()
        )?;
        for line in &self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unmet {}

/// Checks `config` against every requirement. Returns the modules that
/// must go into the initramfs, or every unmet requirement.
pub fn check(
    reqs: &[Requirement],
    config: &HashMap<String, String>,
) -> Result<Vec<ModuleNeed>, Unmet> {
    let mut modules = Vec::new();
    let mut unmet = Vec::new();
    for req in reqs {
        let have = config.get(&req.option).map(String::as_str);
        match (&req.want, have) {
            (Want::Enabled, Some("y")) => {}
            (Want::Enabled, Some("m")) => modules.push(ModuleNeed {
                option: req.option.clone(),
                module: req.module.clone(),
            }),
            (Want::Enabled, other) => unmet.push(format!(
                "{} is required ({}) but is {}",
                req.option,
                req.origin,
                other.map_or("not set".to_string(), |v| format!("={v}"))
            )),
            (Want::Disabled, None) | (Want::Disabled, Some("n")) => {}
            (Want::Disabled, Some(v)) => unmet.push(format!(
                "{} must not be set ({}) but is ={v}",
                req.option, req.origin
            )),
            (Want::Value(want), Some(v)) if v == want => {}
            (Want::Value(want), other) => unmet.push(format!(
                "{} must be {want} ({}) but is {}",
                req.option,
                req.origin,
                other.map_or("not set".to_string(), |v| format!("={v}"))
            )),
        }
    }
    if unmet.is_empty() {
        Ok(modules)
    } else {
        Err(Unmet(unmet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "\
# Devices
CONFIG_DEVTMPFS=y
CONFIG_VIRTIO_NET=y
CONFIG_OVERLAY_FS=y  # module: overlay
CONFIG_INPUT_EVDEV=m # module: evdev
# CONFIG_MODULE_SIG_FORCE is not set
CONFIG_HZ=250
";

    fn config(text: &str) -> HashMap<String, String> {
        parse_kernel_config(text)
    }

    #[test]
    fn parses_requirements_with_module_names() {
        let reqs = parse_fragment("base.config", FRAGMENT).unwrap();
        assert_eq!(reqs.len(), 6);
        assert_eq!(reqs[1].module, "virtio_net");
        assert_eq!(reqs[2].module, "overlay");
        assert_eq!(reqs[3].module, "evdev");
        assert_eq!(reqs[4].want, Want::Disabled);
        assert_eq!(reqs[5].want, Want::Value("250".into()));
        assert_eq!(reqs[2].origin, "base.config:4");
    }

    #[test]
    fn all_present_builtin_gives_no_modules() {
        let reqs = parse_fragment("f", FRAGMENT).unwrap();
        let kernel = config("CONFIG_DEVTMPFS=y\nCONFIG_VIRTIO_NET=y\nCONFIG_OVERLAY_FS=y\nCONFIG_INPUT_EVDEV=y\n# CONFIG_MODULE_SIG_FORCE is not set\nCONFIG_HZ=250\n");
        assert_eq!(check(&reqs, &kernel).unwrap(), vec![]);
    }

    #[test]
    fn options_built_as_modules_are_listed_with_their_module() {
        let reqs = parse_fragment("f", FRAGMENT).unwrap();
        let kernel = config("CONFIG_DEVTMPFS=y\nCONFIG_VIRTIO_NET=m\nCONFIG_OVERLAY_FS=m\nCONFIG_INPUT_EVDEV=m\nCONFIG_HZ=250\n");
        let modules = check(&reqs, &kernel).unwrap();
        let names: Vec<&str> = modules.iter().map(|m| m.module.as_str()).collect();
        assert_eq!(names, ["virtio_net", "overlay", "evdev"]);
        assert_eq!(modules[1].option, "CONFIG_OVERLAY_FS");
    }

    #[test]
    fn missing_options_are_each_named_with_their_origin() {
        let reqs = parse_fragment("base.config", FRAGMENT).unwrap();
        let kernel = config("# CONFIG_DEVTMPFS is not set\nCONFIG_VIRTIO_NET=m\nCONFIG_INPUT_EVDEV=m\nCONFIG_MODULE_SIG_FORCE=y\nCONFIG_HZ=1000\n");
        let unmet = check(&reqs, &kernel).unwrap_err();
        let text = unmet.to_string();
        assert_eq!(unmet.0.len(), 4, "{text}");
        assert!(
            text.contains("CONFIG_DEVTMPFS is required (base.config:2) but is not set"),
            "{text}"
        );
        assert!(
            text.contains("CONFIG_OVERLAY_FS is required (base.config:4)"),
            "{text}"
        );
        assert!(
            text.contains("CONFIG_MODULE_SIG_FORCE must not be set (base.config:6) but is =y"),
            "{text}"
        );
        assert!(
            text.contains("CONFIG_HZ must be 250 (base.config:7) but is =1000"),
            "{text}"
        );
    }

    #[test]
    fn malformed_fragment_lines_are_errors_with_location() {
        let errors = parse_fragment(
            "x.config",
            "CONFIG_A=y\nVIRTIO=y\nCONFIG_B\nCONFIG_C=y # module:\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("x.config:2:"));
        assert!(errors[1].starts_with("x.config:3:"));
        assert!(errors[2].starts_with("x.config:4:") && errors[2].contains("module name"));
    }

    #[test]
    fn kernel_config_parsing_skips_comments() {
        let c = config(
            "#\n# Automatically generated\nCONFIG_A=y\nCONFIG_S=\"str=x\"\n# CONFIG_B is not set\n",
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c["CONFIG_S"], "\"str=x\"");
    }
}
