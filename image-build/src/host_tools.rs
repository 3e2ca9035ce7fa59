//! Host programs `brig` runs, and the Debian package that provides each, so a
//! missing one is reported with the exact install command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Finds `program` on PATH, or fails naming the package to install.
pub fn require(program: &str, package: &str) -> Result<PathBuf> {
    match find(program) {
        Some(path) => Ok(path),
        None => bail!(
            "`{program}` is not installed: install it with `sudo apt-get install {package}` \
             (or run scripts/setup-host, which installs everything brig needs)"
        ),
    }
}

pub fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let err = require("brig-no-such-tool", "brig-pkg")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`brig-no-such-tool`") && err.contains("sudo apt-get install brig-pkg"),
            "{err}"
        );
    }

    #[test]
    fn finds_tools_on_path() {
        assert!(require("sh", "dash").unwrap().is_absolute());
    }
}
