//! The EC2 metadata service (IMDSv2, falling back to v1), used when DMI
//! says the machine is an EC2 instance or the command line says `ds=ec2`.

use crate::config::http::Url;
use crate::config::network::{self, Fetch};
use crate::config::{Datasource, Seed};

/// The metadata service's address (link-local, answered by the hypervisor).
pub const IMDS: &str = "http://169.254.169.254";

/// What DMI says about the machine (/sys/class/dmi/id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_uuid: String,
}

impl Dmi {
    pub fn read() -> Dmi {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/sys/class/dmi/id/{name}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Dmi {
            sys_vendor: read("sys_vendor"),
            product_uuid: read("product_uuid"),
        }
    }

    /// As cloud-init's ds-identify: Nitro instances say so in sys_vendor,
    /// Xen ones in their UUID.
    pub fn is_ec2(&self) -> bool {
        self.sys_vendor == "Amazon EC2" || self.product_uuid.to_ascii_lowercase().starts_with("ec2")
    }
}

/// The EC2 metadata service: a session token first (IMDSv2); a service
/// that refuses tokens (IMDSv1 only) is asked without one.
fn ec2(fetcher: &mut dyn Fetch) -> Result<Seed, String> {
    let base = Url::parse(IMDS)?;
    let token_url = base.join("/latest/api/token");
    let token = fetcher.fetch(
        "PUT",
        &token_url,
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )?;
    let token = match token.status {
        200 => Some(String::from_utf8_lossy(&token.body).trim().to_string()),
        // Not found / not allowed / forbidden: a service without IMDSv2.
        403..=405 => None,
        status => return Err(format!("PUT {token_url}: HTTP {status}")),
    };
    let headers: Vec<(&str, &str)> = match &token {
        Some(t) => vec![("X-aws-ec2-metadata-token", t.as_str())],
        None => vec![],
    };
    let mut get = |path: &str| network::get(fetcher, &base.join(path), &headers);
    let text = |d: Vec<u8>| String::from_utf8_lossy(&d).trim().to_string();
    let instance_id = get("/latest/meta-data/instance-id")?
        .map(text)
        .ok_or("the metadata service has no instance-id")?;
    let mut meta = serde_json::Map::new();
    meta.insert("instance-id".into(), instance_id.into());
    if let Some(name) = get("/latest/meta-data/local-hostname")?.map(text) {
        // `ip-10-0-0-5.ec2.internal`: the host name is its first label.
        let short = name.split('.').next().unwrap_or_default().to_string();
        meta.insert("local-hostname".into(), short.into());
    }
    let mut keys = Vec::new();
    if let Some(list) = get("/latest/meta-data/public-keys/")?.map(text) {
        // Lines of `0=key-name`.
        for index in list.lines().filter_map(|l| l.split('=').next()) {
            if index.bytes().all(|b| b.is_ascii_digit()) && !index.is_empty() {
                if let Some(key) = get(&format!(
                    "/latest/meta-data/public-keys/{index}/openssh-key"
                ))? {
                    keys.push(serde_json::Value::String(text(key)));
                }
            }
        }
    }
    if !keys.is_empty() {
        meta.insert("public-keys".into(), keys.into());
    }
    let version = if token.is_some() { "IMDSv2" } else { "IMDSv1" };
    Ok(Seed {
        source: format!("the EC2 metadata service ({version})"),
        user_data: get("/latest/user-data")?,
        // JSON is YAML: the meta data parser reads it as it is.
        meta_data: Some(serde_json::Value::Object(meta).to_string()),
        network_config: None,
    })
}

pub struct Ec2<'a> {
    pub fetcher: &'a mut dyn Fetch,
}

impl Datasource for Ec2<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        ec2(self.fetcher).map(Some)
    }
}
