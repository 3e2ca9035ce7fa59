//! Datasources at a URL named on the kernel command line: a NoCloud seed
//! (`ds=nocloud;s=http://…/`, as cloud-init's NoCloud seed URLs) and plain
//! user data (`brig.config=http://…`).

use crate::config::http::Url;
use crate::config::network::{get, Fetch};
use crate::config::{Datasource, Seed};

/// `user-data` (required), `meta-data` and `network-config` under `url`.
pub struct NoCloudNet<'a> {
    pub url: &'a Url,
    pub fetcher: &'a mut dyn Fetch,
}

impl Datasource for NoCloudNet<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let url = self.url;
        let text = |d: Vec<u8>| String::from_utf8_lossy(&d).into_owned();
        let user_data = get(self.fetcher, &url.join("user-data"), &[])?
            .ok_or_else(|| format!("GET {}: HTTP 404", url.join("user-data")))?;
        Ok(Some(Seed {
            source: format!("{url} (NoCloud seed URL)"),
            user_data: Some(user_data),
            meta_data: get(self.fetcher, &url.join("meta-data"), &[])?.map(text),
            network_config: get(self.fetcher, &url.join("network-config"), &[])?.map(text),
        }))
    }
}

/// The user data itself at `url`.
pub struct UserDataUrl<'a> {
    pub url: &'a Url,
    pub fetcher: &'a mut dyn Fetch,
}

impl Datasource for UserDataUrl<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        let url = self.url;
        let user_data =
            get(self.fetcher, url, &[])?.ok_or_else(|| format!("GET {url}: HTTP 404"))?;
        Ok(Some(Seed {
            source: format!("{url} (brig.config=)"),
            user_data: Some(user_data),
            ..Seed::default()
        }))
    }
}
