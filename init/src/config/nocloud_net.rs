//! Datasources at a URL named on the kernel command line: a NoCloud seed
//! (`ds=nocloud;s=http://…/`, as cloud-init's NoCloud seed URLs) and plain
//! user data (`brig.config=http://…`).

use crate::config::http::Url;
use crate::config::network::{get, Fetch};
use crate::config::{Datasource, Seed};

/// What the URL holds.
pub enum Layout {
    /// `user-data` (required), `meta-data` and `network-config` under it.
    NoCloudSeed,
    /// The user data itself.
    UserData,
}

pub struct AtUrl<'a> {
    pub url: &'a Url,
    pub layout: Layout,
    pub fetcher: &'a mut dyn Fetch,
}

impl Datasource for AtUrl<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let url = self.url;
        let mut fetch = |url: &Url| get(self.fetcher, url, &[]);
        let required =
            |url: &Url, found: Option<Vec<u8>>| found.ok_or_else(|| format!("GET {url}: HTTP 404"));
        let text = |data: Vec<u8>| String::from_utf8_lossy(&data).into_owned();
        Ok(Some(match self.layout {
            Layout::UserData => Seed {
                source: format!("{url} (brig.config=)"),
                user_data: Some(required(url, fetch(url)?)?),
                ..Seed::default()
            },
            Layout::NoCloudSeed => {
                let user_data = url.join("user-data");
                Seed {
                    source: format!("{url} (NoCloud seed URL)"),
                    user_data: Some(required(&user_data, fetch(&user_data)?)?),
                    meta_data: fetch(&url.join("meta-data"))?.map(text),
                    network_config: fetch(&url.join("network-config"))?.map(text),
                }
            }
        }))
    }
}
