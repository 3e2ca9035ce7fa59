//! Datasources reached over the network: user data at a URL
//! (`brig.config=http://…`), a NoCloud seed URL (`ds=nocloud;s=http://…/`)
//! and the EC2 metadata service (IMDSv2, falling back to v1). They are used
//! only when no local datasource is found and the kernel command line names
//! them, or DMI says the machine is an EC2 instance: nothing else waits for
//! them or contacts a metadata address.
//!
//! PID 1 starts the network container first, then fetches in a child
//! process (so a slow network never blocks PID 1) and applies the result.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::http::{self, Response, Url};
use crate::config::nocloud_net::{AtUrl, Layout};
use crate::config::{ec2, Datasource, Seed};
use crate::host::kernel_cmdline::Cmdline;
use ec2::{Dmi, IMDS};

/// How long the helper keeps trying to reach the datasource while the
/// network comes up; then the boot goes on without it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// `brig.config=http://…`: the user data itself.
    UserData(Url),
    /// `ds=nocloud;s=http://…/`: `user-data`, `meta-data` and
    /// `network-config` under that URL.
    NoCloud(Url),
    /// The EC2 metadata service.
    Ec2,
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::UserData(url) => write!(f, "user data at {url} (brig.config=)"),
            Remote::NoCloud(url) => write!(f, "the NoCloud seed at {url} (ds=nocloud)"),
            Remote::Ec2 => write!(f, "the EC2 metadata service at {IMDS}"),
        }
    }
}

/// The network datasource to use, if any: from the kernel command line,
/// else EC2 when DMI says so.
pub fn wanted(cmdline: &Cmdline, dmi: &Dmi) -> Result<Option<Remote>, String> {
    if let Some(value) = cmdline.value("brig.config") {
        if value.contains("://") {
            let url = Url::parse(value).map_err(|e| format!("brig.config=: {e}"))?;
            return Ok(Some(Remote::UserData(url)));
        }
        return Ok(None);
    }
    if let Some(value) = cmdline.value("ds") {
        let mut parts = value.split(';');
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let seed = parts.find_map(|p| {
            p.strip_prefix("s=")
                .or_else(|| p.strip_prefix("seedfrom="))
                .map(String::from)
        });
        match (name.as_str(), seed) {
            ("nocloud" | "nocloud-net", Some(seed)) => {
                // cloud-init appends the file names to the seed URL.
                let seed = if seed.ends_with('/') {
                    seed
                } else {
                    seed + "/"
                };
                let url = Url::parse(&seed).map_err(|e| format!("ds=nocloud: {e}"))?;
                return Ok(Some(Remote::NoCloud(url)));
            }
            ("nocloud" | "nocloud-net", None) => {}
            ("ec2", _) => return Ok(Some(Remote::Ec2)),
            (other, _) => {
                return Err(format!(
                    "ds={other}: Brig knows the datasources nocloud (with s=http://…/) and ec2"
                ))
            }
        }
    }
    Ok(dmi.is_ec2().then_some(Remote::Ec2))
}

/// One HTTP request; the real one retries while the network comes up.
pub trait Fetch {
    fn fetch(
        &mut self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<Response, String>;
}

/// Fetches from `remote`: a seed, or why not.
pub fn read(remote: &Remote, fetcher: &mut dyn Fetch) -> Result<Seed, String> {
    let mut datasource: Box<dyn Datasource + '_> = match remote {
        Remote::UserData(url) => Box::new(AtUrl {
            url,
            layout: Layout::UserData,
            fetcher,
        }),
        Remote::NoCloud(url) => Box::new(AtUrl {
            url,
            layout: Layout::NoCloudSeed,
            fetcher,
        }),
        Remote::Ec2 => Box::new(ec2::Ec2 { fetcher }),
    };
    // Each says why it has nothing; this is for one that forgot to.
    datasource
        .read()?
        .ok_or_else(|| format!("{remote}: nothing there"))
}

/// GET `url`: 200 is the document, 404 is "none", anything else an error.
pub fn get(
    fetcher: &mut dyn Fetch,
    url: &Url,
    headers: &[(&str, &str)],
) -> Result<Option<Vec<u8>>, String> {
    let r = fetcher.fetch("GET", url, headers)?;
    match r.status {
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        status => Err(format!("GET {url}: HTTP {status}")),
    }
}

/// Real requests, retried on connection errors until `deadline` (the
/// network may still be coming up). HTTP answers are returned as they are.
pub struct Network {
    pub deadline: Instant,
}

impl Fetch for Network {
    fn fetch(
        &mut self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        loop {
            match http::fetch(method, url, headers, Duration::from_secs(5), self.deadline) {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() >= self.deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

/// Starts a child process that reads `remote` and writes the outcome as
/// JSON (`{"Ok": seed}` or `{"Err": why}`) to the returned pipe.
pub fn spawn(remote: &Remote) -> Result<OwnedFd, String> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("making a pipe: {e}"))?;
    // SAFETY: PID 1 is single-threaded, so the child has a consistent heap;
    // it only computes, writes to the pipe and _exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read_end);
            let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
            let outcome = std::panic::catch_unwind(|| {
                read(
                    remote,
                    &mut Network {
                        deadline: Instant::now() + GIVE_UP_AFTER,
                    },
                )
            })
            .unwrap_or_else(|_| Err("the fetch crashed".into()));
            let json = serde_json::to_vec(&outcome).unwrap_or_default();
            // SAFETY: write_end is this child's own open fd, owned once here.
            let mut pipe = unsafe { std::fs::File::from_raw_fd(write_end.as_raw_fd()) };
            std::mem::forget(write_end);
            let _ = pipe.write_all(&json);
            // SAFETY: leave without running PID 1's destructors.
            unsafe { libc::_exit(0) }
        }
        // The central reaper collects the helper when it exits.
        Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(read_end),
        Err(e) => Err(format!("forking the datasource helper: {e}")),
    }
}

/// The helper's answer, from what it wrote.
pub fn outcome(data: &[u8]) -> Result<Seed, String> {
    serde_json::from_slice::<Result<Seed, String>>(data).unwrap_or_else(|e| {
        Err(format!(
            "the datasource helper ended without an answer ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cmdline(text: &str) -> Cmdline {
        Cmdline::parse(text)
    }

    #[test]
    fn which_network_datasource() {
        let none = Dmi::default();
        let ec2 = Dmi {
            sys_vendor: "Amazon EC2".into(),
            ..Dmi::default()
        };
        assert_eq!(wanted(&cmdline("quiet"), &none), Ok(None));
        assert_eq!(wanted(&cmdline("quiet"), &ec2), Ok(Some(Remote::Ec2)));
        let xen = Dmi {
            product_uuid: "EC2E1916-9099-7CAF-FD21-012345ABCDEF".into(),
            ..Dmi::default()
        };
        assert_eq!(wanted(&cmdline(""), &xen), Ok(Some(Remote::Ec2)));
        assert_eq!(wanted(&cmdline("ds=ec2"), &none), Ok(Some(Remote::Ec2)));
        assert_eq!(
            wanted(&cmdline("ds=nocloud;s=http://10.0.2.2:8000/node1"), &ec2),
            Ok(Some(Remote::NoCloud(
                Url::parse("http://10.0.2.2:8000/node1/").unwrap()
            )))
        );
        assert_eq!(
            wanted(&cmdline("ds=nocloud-net;seedfrom=http://seed/"), &none),
            Ok(Some(Remote::NoCloud(Url::parse("http://seed/").unwrap())))
        );
        assert_eq!(
            wanted(&cmdline("brig.config=http://10.0.2.2/u.yaml"), &none),
            Ok(Some(Remote::UserData(
                Url::parse("http://10.0.2.2/u.yaml").unwrap()
            )))
        );
        // base64 user data is local; it wins over DMI.
        assert_eq!(
            wanted(&cmdline("brig.config=I2Nsb3VkLWNvbmZpZwo="), &ec2),
            Ok(None)
        );
        assert!(wanted(&cmdline("brig.config=https://x/"), &none)
            .unwrap_err()
            .contains("https"));
        assert!(wanted(&cmdline("ds=azure"), &none)
            .unwrap_err()
            .contains("nocloud"));
        // ds=nocloud without a URL is the local kind: nothing to fetch.
        assert_eq!(wanted(&cmdline("ds=nocloud"), &none), Ok(None));
    }

    /// A metadata service in memory: path -> (status, body); records requests.
    struct Fake {
        answers: HashMap<String, (u16, &'static str)>,
        token: Option<&'static str>,
        requests: Vec<String>,
    }

    impl Fetch for Fake {
        fn fetch(
            &mut self,
            method: &str,
            url: &Url,
            headers: &[(&str, &str)],
        ) -> Result<Response, String> {
            let sent = headers
                .iter()
                .find(|(n, _)| *n == "X-aws-ec2-metadata-token")
                .map(|(_, v)| *v);
            self.requests
                .push(format!("{method} {} {}", url.path, sent.unwrap_or("-")));
            if method == "PUT" {
                return Ok(match self.token {
                    Some(t) => Response {
                        status: 200,
                        body: t.into(),
                    },
                    None => Response {
                        status: 403,
                        body: vec![],
                    },
                });
            }
            if self.token.is_some() && sent != self.token {
                return Ok(Response {
                    status: 401,
                    body: vec![],
                });
            }
            let (status, body) = self.answers.get(&url.path).copied().unwrap_or((404, ""));
            Ok(Response {
                status,
                body: body.into(),
            })
        }
    }

    fn imds(token: Option<&'static str>) -> Fake {
        let answers = [
            (
                "/latest/meta-data/instance-id",
                (200, "i-0123456789abcdef0"),
            ),
            (
                "/latest/meta-data/local-hostname",
                (200, "ip-10-0-0-5.ec2.internal"),
            ),
            ("/latest/meta-data/public-keys/", (200, "0=my-key\n1=other")),
            (
                "/latest/meta-data/public-keys/0/openssh-key",
                (200, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 my-key\n"),
            ),
            (
                "/latest/meta-data/public-keys/1/openssh-key",
                (200, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC8 other"),
            ),
            (
                "/latest/user-data",
                (200, "#cloud-config\nhostname: web1\n"),
            ),
        ];
        Fake {
            answers: answers
                .into_iter()
                .map(|(p, a)| (p.to_string(), a))
                .collect(),
            token,
            requests: Vec::new(),
        }
    }

    #[test]
    fn imdsv2_token_then_every_request_with_it() {
        let mut fake = imds(Some("AQAEAtoken=="));
        let seed = read(&Remote::Ec2, &mut fake).unwrap();
        assert_eq!(seed.source, "the EC2 metadata service (IMDSv2)");
        assert_eq!(
            seed.user_data.as_deref(),
            Some(&b"#cloud-config\nhostname: web1\n"[..])
        );
        let meta: serde_json::Value =
            serde_json::from_str(seed.meta_data.as_deref().unwrap()).unwrap();
        assert_eq!(meta["instance-id"], "i-0123456789abcdef0");
        assert_eq!(meta["local-hostname"], "ip-10-0-0-5");
        assert_eq!(
            meta["public-keys"][1],
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC8 other"
        );
        assert_eq!(fake.requests[0], "PUT /latest/api/token -");
        assert!(fake.requests[1..]
            .iter()
            .all(|r| r.starts_with("GET ") && r.ends_with(" AQAEAtoken==")));
    }

    #[test]
    fn imdsv1_when_tokens_are_refused_and_errors_are_said() {
        let mut fake = imds(None);
        let seed = read(&Remote::Ec2, &mut fake).unwrap();
        assert_eq!(seed.source, "the EC2 metadata service (IMDSv1)");
        assert!(fake.requests[1..].iter().all(|r| r.ends_with(" -")));
        // No user data is fine; no instance id is not a metadata service.
        let mut fake = imds(None);
        fake.answers.remove("/latest/user-data");
        assert_eq!(read(&Remote::Ec2, &mut fake).unwrap().user_data, None);
        let mut fake = imds(None);
        fake.answers.remove("/latest/meta-data/instance-id");
        assert!(read(&Remote::Ec2, &mut fake)
            .unwrap_err()
            .contains("no instance-id"));
        let mut fake = imds(None);
        fake.answers
            .insert("/latest/user-data".into(), (500, "oops"));
        assert!(read(&Remote::Ec2, &mut fake)
            .unwrap_err()
            .contains("HTTP 500"));
    }

    #[test]
    fn nocloud_seed_urls_and_plain_user_data() {
        let mut fake = Fake {
            answers: [
                ("/seed/user-data".to_string(), (200, "#cloud-config\n")),
                ("/seed/meta-data".to_string(), (200, "instance-id: iid-1\n")),
            ]
            .into(),
            token: None,
            requests: Vec::new(),
        };
        let url = Url::parse("http://10.0.2.2/seed/").unwrap();
        let seed = read(&Remote::NoCloud(url.clone()), &mut fake).unwrap();
        assert_eq!(seed.meta_data.as_deref(), Some("instance-id: iid-1\n"));
        assert_eq!(seed.network_config, None, "404: none");
        let missing = read(&Remote::NoCloud(url.join("/nothing/")), &mut fake).unwrap_err();
        assert!(
            missing.contains("/nothing/user-data: HTTP 404"),
            "{missing}"
        );
        let seed = read(&Remote::UserData(url.join("user-data")), &mut fake).unwrap();
        assert_eq!(seed.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    }

    #[test]
    fn the_helpers_answer() {
        let seed = Seed {
            source: "x".into(),
            user_data: Some(b"#cloud-config\n".to_vec()),
            ..Seed::default()
        };
        let ok: Result<Seed, String> = Ok(seed.clone());
        assert_eq!(outcome(&serde_json::to_vec(&ok).unwrap()), Ok(seed));
        let err: Result<Seed, String> = Err("no route".into());
        assert_eq!(
            outcome(&serde_json::to_vec(&err).unwrap()),
            Err("no route".into())
        );
        assert!(outcome(b"").unwrap_err().contains("without an answer"));
    }
}
