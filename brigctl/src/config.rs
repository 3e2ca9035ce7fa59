//! `brigctl config`: the machine's cloud-config. `get` and `export` read the
//! effective config PID 1 wrote at boot; `set` and `unset` ask PID 1 to
//! save a setting for the next boot; `validate` checks a file (or the user
//! data the machine booted with) and reports every problem with its line
//! and column.

use std::path::Path;
use std::process::ExitCode;

use brig_spec::cloud_config::report;
use brig_spec::key_path;
use brig_spec::paths::{EFFECTIVE_FILE, USER_DATA_FILE};
use serde_json::{Map, Value};

fn effective() -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(EFFECTIVE_FILE).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("{EFFECTIVE_FILE}: no config was read at boot (no datasource, nothing set)")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "reading {EFFECTIVE_FILE}: {e} (config can hold secrets: sudo brigctl config ...)"
            )
        }
        _ => format!("reading {EFFECTIVE_FILE}: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{EFFECTIVE_FILE}: {e}"))
}

/// A value as users read it: text as it is, anything else as JSON (which
/// is YAML).
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => {
            serde_json::to_string_pretty(value).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

pub fn get(key: &str, json: bool) -> Result<ExitCode, String> {
    let document = effective()?;
    match key_path::get(&document, key).map_err(|p| p.to_string())? {
        Some(value) if json => println!("{value}"),
        Some(value) => println!("{}", show(value)),
        None => return Err(format!("{key} is not set")),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export() -> Result<ExitCode, String> {
    let document = effective()?;
    println!(
        "#cloud-config\n{}",
        serde_json::to_string_pretty(&Value::Object(document)).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every problem in `file` (default: the user data this machine booted
/// with), `FILE:LINE:COLUMN: problem` where the key can be placed.
pub fn validate(file: Option<&Path>) -> Result<ExitCode, String> {
    let path = file.unwrap_or(Path::new(USER_DATA_FILE));
    let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let lines = report(&path.display().to_string(), &data);
    for line in &lines {
        println!("{line}");
    }
    if lines.is_empty() {
        println!("{}: valid", path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
