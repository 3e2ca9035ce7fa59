//! brig-init as the kernel's module loader. The kernel runs
//! `/sbin/modprobe -q -- NAME` (a symlink to PID 1's binary) when something
//! asks for a feature that is a module: `ip link add type bond` asks for
//! `rtnl-link-bond`, a bridge for `rtnl-link-bridge`, a VLAN for
//! `rtnl-link-vlan`. NAME is a module or an alias from the image's
//! `modules.alias`; the module is loaded with its dependencies from the
//! image's modules, as coldplug does at boot.

use std::path::Path;

use crate::host::coldplug::{Coldplug, Outcome};
use crate::host::system::System;

/// Where PID 1 puts the symlink; the kernel's default modprobe path.
pub const PATH: &str = "/sbin/modprobe";

/// The module names or aliases in a modprobe command line (options such as
/// `-q` and `--` are accepted and ignored).
pub fn requested(args: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    let mut options_done = false;
    for arg in args {
        if !options_done && arg == "--" {
            options_done = true;
        } else if !options_done && arg.starts_with('-') {
            continue;
        } else {
            names.push(arg.clone());
        }
    }
    names
}

/// Loads each of `names` (a module or an alias). Returns what was loaded,
/// or what went wrong; a name that matches nothing is an error, as for
/// modprobe.
pub fn load(
    coldplug: &mut Coldplug,
    sys: &dyn System,
    names: &[String],
) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    for name in names {
        if !coldplug.load_alias_or_name(sys, name, &mut outcome) {
            return Err(format!("no module for {name:?} in this image"));
        }
    }
    match outcome.errors.first() {
        Some(e) => Err(e.clone()),
        None => Ok(outcome),
    }
}

/// Prefixes of the names the kernel asks for on speculation, where a miss
/// only means "not supported here" and the caller carries on: an
/// executable of an unknown format (`binfmt-464c`, which Docker's probe
/// for emulators causes), a socket family, a device by name or number, a
/// filesystem type, a cipher.
const SPECULATIVE: &[&str] = &[
    "binfmt-",
    "net-pf-",
    "netdev-",
    "char-major-",
    "block-major-",
    "fs-",
    "crypto-",
];

/// The kernel log level for a failed request of `names`: a speculative
/// miss is debug (kept in the kernel log, off the console), anything else
/// a warning (a bond, a VLAN or a module a user named that is not there).
pub fn failure_level(names: &[String]) -> u8 {
    let speculative = |name: &String| SPECULATIVE.iter().any(|p| name.starts_with(p));
    if !names.is_empty() && names.iter().all(speculative) {
        7
    } else {
        4
    }
}

/// The `modprobe` personality: exit status 0 when everything was loaded.
pub fn main(sys: &dyn System, modules_dir: &Path, args: &[String]) -> i32 {
    let (mut coldplug, _) = Coldplug::from_dir(modules_dir);
    let names = requested(args);
    match load(&mut coldplug, sys, &names) {
        Ok(_) => 0,
        Err(e) => {
            // The kernel discards our output: say it in the kernel log, at
            // a level that keeps expected misses off the console.
            let level = failure_level(&names);
            let _ = std::fs::write("/dev/kmsg", format!("<{level}>brig: modprobe: {e}\n"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::module_index::ModuleIndex;
    use crate::host::system::fake::Recorder;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn names_come_after_the_options() {
        assert_eq!(requested(&args("-q -- rtnl-link-bond")), ["rtnl-link-bond"]);
        assert_eq!(requested(&args("bridge 8021q")), ["bridge", "8021q"]);
        assert_eq!(requested(&args("-q -- -odd")), ["-odd"]);
    }

    #[test]
    fn speculative_misses_are_debug_and_the_rest_warnings() {
        for probe in [
            "binfmt-464c",
            "net-pf-38",
            "netdev-docker0",
            "char-major-10-200",
            "fs-btrfs",
        ] {
            assert_eq!(failure_level(&args(probe)), 7, "{probe}");
        }
        for wanted in ["rtnl-link-team", "no_such_module", "binfmt-464c bonding"] {
            assert_eq!(failure_level(&args(wanted)), 4, "{wanted}");
        }
        assert_eq!(failure_level(&[]), 4);
    }

    #[test]
    fn aliases_and_names_load_with_their_dependencies() {
        let (index, problems) = ModuleIndex::parse(
            "alias rtnl-link-bridge bridge\nalias rtnl-link-vlan 8021q\nalias rtnl-link-bond bonding\n",
            "kernel/net/bridge.ko: kernel/net/stp.ko kernel/net/llc.ko\nkernel/net/stp.ko: kernel/net/llc.ko\nkernel/net/llc.ko:\nkernel/net/8021q.ko:\nkernel/net/bonding.ko:\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let mut coldplug = Coldplug::new(index, "/lib/modules/6.12".into());
        let sys = Recorder::default();
        let outcome = load(&mut coldplug, &sys, &args("rtnl-link-bridge 8021q")).unwrap();
        assert_eq!(outcome.loaded, ["llc", "stp", "bridge", "8021q"]);
        assert_eq!(
            sys.calls(),
            [
                "load /lib/modules/6.12/kernel/net/llc.ko",
                "load /lib/modules/6.12/kernel/net/stp.ko",
                "load /lib/modules/6.12/kernel/net/bridge.ko",
                "load /lib/modules/6.12/kernel/net/8021q.ko",
            ]
        );
        // bonding would make a bond0 of its own without max_bonds=0.
        load(
            &mut coldplug,
            &sys,
            &requested(&args("-q -- rtnl-link-bond")),
        )
        .unwrap();
        assert_eq!(
            sys.calls().last().unwrap(),
            "load /lib/modules/6.12/kernel/net/bonding.ko max_bonds=0"
        );
        let e = load(&mut coldplug, &sys, &args("rtnl-link-team")).unwrap_err();
        assert_eq!(e, "no module for \"rtnl-link-team\" in this image");
    }
}
