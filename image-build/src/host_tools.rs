//! Host programs `brig` runs, and the Debian package that provides each, so a
//! missing one is reported with the exact install command.

use std::path::{Path, PathBuf};

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

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

/// Runs `command` to its end; an error, with what it printed on stderr,
/// unless it succeeds. `what` says what it was doing.
pub fn run(command: &mut Command, what: &str) -> Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("{what}: running {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what}: {:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
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
    fn a_failing_command_is_an_error_with_what_it_said() {
        let e = run(
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            "testing",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("testing: \"sh\" failed (exit status: 3): broken"),
            "{e}"
        );
        assert!(run(&mut Command::new("true"), "testing").is_ok());
    }

    #[test]
    fn finds_tools_on_path() {
        assert!(require("sh", "dash").unwrap().is_absolute());
    }
}
