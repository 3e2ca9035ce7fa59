//! `brig.config=` on the kernel command line, with the user data in base64
//! (a URL there is fetched over the network: `network`, `nocloud_net`).

use crate::config::{Datasource, Seed};
use crate::host::kernel_cmdline::Cmdline;

/// `brig.config=`'s value, when it holds the user data itself.
pub struct KernelCommandLine<'a> {
    value: Option<&'a str>,
}

impl<'a> KernelCommandLine<'a> {
    pub fn new(cmdline: &'a Cmdline) -> Self {
        let value = cmdline.value("brig.config").filter(|v| !v.contains("://"));
        KernelCommandLine { value }
    }
}

impl Datasource for KernelCommandLine<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        self.value.map(from_cmdline).transpose()
    }
}

/// User data from the kernel command line: `brig.config=` with base64.
pub fn from_cmdline(value: &str) -> Result<Seed, String> {
    let user_data = brig_spec::cloud_config::decode_base64(value)
        .map_err(|e| format!("brig.config= on the kernel command line: {e}"))?;
    Ok(Seed {
        source: "the kernel command line (brig.config=)".into(),
        user_data: Some(user_data),
        ..Seed::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::plan;
    use serde_json::Map;

    #[test]
    fn user_data_on_the_command_line() {
        // "#cloud-config\nhostname: from-cmdline\n"
        let seed = from_cmdline("I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogZnJvbS1jbWRsaW5lCg==").unwrap();
        assert_eq!(
            plan(&seed, None, &Map::new()).hostname.as_deref(),
            Some("from-cmdline")
        );
        let e = from_cmdline("%%%").unwrap_err();
        assert!(
            e.starts_with("brig.config= on the kernel command line: not valid base64"),
            "{e}"
        );
    }

    #[test]
    fn a_url_is_not_read_here_and_no_value_is_no_datasource() {
        let read = |line: &str| KernelCommandLine::new(&Cmdline::parse(line)).read();
        assert_eq!(read("quiet"), Ok(None));
        assert_eq!(read("brig.config=http://10.0.2.2/user-data"), Ok(None));
        assert!(read("brig.config=%%%").is_err());
    }
}
