//! The datasource's meta data (NoCloud's `meta-data`; what the EC2 and
//! ConfigDrive datasources give becomes the same): instance id, host name,
//! public keys.

use super::*;

/// The datasource's meta data (NoCloud's `meta-data` file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    pub instance_id: Option<String>,
    pub local_hostname: Option<String>,
    /// `public-keys`: for the default user, beside user data's keys (as
    /// cloud-init does with a cloud's key pairs).
    pub public_keys: Vec<String>,
}

/// Parses meta data (YAML; other keys are the datasource's business).
pub fn parse_meta_data(text: &str) -> (MetaData, Vec<Problem>) {
    let mut meta = MetaData::default();
    let mut problems = Vec::new();
    let value: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let problem = e.to_string().lines().collect::<Vec<_>>().join(" ");
            problems.push(Problem {
                key: "meta-data".into(),
                problem: format!("not valid YAML: {problem}"),
            });
            return (meta, problems);
        }
    };
    if let Some(id) = value.get("instance-id") {
        match id {
            Value::String(s) => meta.instance_id = Some(s.clone()),
            Value::Number(n) => meta.instance_id = Some(n.to_string()),
            other => problems.push(Problem {
                key: "meta-data.instance-id".into(),
                problem: format!("expected a string, not {other}"),
            }),
        }
    }
    if let Some(name) = value.get("local-hostname") {
        match host_name(name, 64) {
            Ok(h) => meta.local_hostname = Some(h),
            Err(e) => problems.push(Problem {
                key: "meta-data.local-hostname".into(),
                problem: e,
            }),
        }
    }
    if let Some(keys) = value.get("public-keys") {
        // A key, a list of keys, or (EC2, ConfigDrive) a mapping of key
        // names to keys.
        let listed = match keys {
            Value::Object(named) => Value::Array(named.values().cloned().collect()),
            other => other.clone(),
        };
        match ssh_keys(&listed) {
            Ok(keys) => meta.public_keys = keys,
            Err(e) => problems.push(Problem {
                key: "meta-data.public-keys".into(),
                problem: e,
            }),
        }
    }
    (meta, problems)
}
