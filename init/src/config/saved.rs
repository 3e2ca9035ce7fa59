//! The last datasource seen, kept on the state partition: a machine that
//! boots once without its datasource (a seed disk detached) keeps its users
//! and keys.

use std::path::Path;

use crate::config::{Datasource, Seed};
use crate::host::system::System;

/// Keeps `seed`'s files in `dir`, each replaced atomically.
pub fn save(sys: &dyn System, seed: &Seed, dir: &Path) -> Result<(), String> {
    let what = |e: std::io::Error| format!("saving the datasource in {}: {e}", dir.display());
    for (name, data) in [
        ("user-data", seed.user_data.clone()),
        ("meta-data", seed.meta_data.clone().map(String::into_bytes)),
        (
            "network-config",
            seed.network_config.clone().map(String::into_bytes),
        ),
    ] {
        let path = dir.join(name);
        match data {
            Some(data) => sys.write_file(&path, &data, 0o644).map_err(what)?,
            None => sys.remove_file(&path).map_err(what)?,
        }
    }
    Ok(())
}

/// The datasource saved by an earlier boot, if any.
pub fn saved(sys: &dyn System, dir: &Path) -> Option<Seed> {
    let read = |name: &str| sys.read_file(&dir.join(name)).ok();
    let user_data = read("user-data")?;
    Some(Seed {
        source: format!(
            "{} (saved at an earlier boot; no datasource now)",
            dir.display()
        ),
        user_data: Some(user_data),
        meta_data: read("meta-data").map(|d| String::from_utf8_lossy(&d).into_owned()),
        network_config: read("network-config").map(|d| String::from_utf8_lossy(&d).into_owned()),
    })
}

/// The saved datasource as a datasource: the last step of the order.
pub struct Saved<'a> {
    pub sys: &'a dyn System,
    pub dir: &'a Path,
}

impl Datasource for Saved<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        Ok(saved(self.sys, self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::Linux;
    use std::fs;

    #[test]
    fn the_datasource_is_kept_for_boots_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let saved_dir = dir.path().join("datasource");
        assert_eq!(saved(&Linux, &saved_dir), None);
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(b"#cloud-config\nhostname: kept\n".to_vec()),
            meta_data: Some("instance-id: i-1\n".into()),
            network_config: Some("version: 2\n".into()),
        };
        save(&Linux, &seed, &saved_dir).unwrap();
        let again = saved(&Linux, &saved_dir).unwrap();
        assert_eq!(again.user_data, seed.user_data);
        assert_eq!(again.network_config, seed.network_config);
        assert!(again.source.contains("saved at an earlier boot"));
        // A newer datasource without network-config: the old one goes.
        save(
            &Linux,
            &Seed {
                network_config: None,
                ..seed
            },
            &saved_dir,
        )
        .unwrap();
        assert_eq!(saved(&Linux, &saved_dir).unwrap().network_config, None);
        assert_eq!(
            fs::read_dir(&saved_dir).unwrap().count(),
            2,
            "no temporary files"
        );
    }
}
