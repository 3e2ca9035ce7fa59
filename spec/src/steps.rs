//! What cloud-config asks to be done on the machine, carried out by the
//! console container: `write_files`, `bootcmd` (every boot, before sshd),
//! `runcmd` and `#!` user-data scripts (once per instance). Validated here;
//! the console writes and runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Text,
    Base64,
    Gzip,
    GzipBase64,
}

/// One `write_files` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    /// As given; `encoding` says how to decode it.
    pub content: String,
    pub encoding: Encoding,
    /// Mode bits (`permissions: '0640'`), 0644 by default.
    pub mode: u32,
    /// `user:group` names (or a user alone), root:root by default.
    pub owner: String,
    pub append: bool,
}

/// `write_files:` — a list of mappings; a bad entry is left out.
pub fn parse_write_files(value: &Value) -> (Vec<WriteFile>, Vec<Problem>) {
    let mut problems = Vec::new();
    let Some(items) = value.as_array() else {
        problems.push(Problem::new(
            String::new(),
            format!("expected a list, not {value}"),
        ));
        return (Vec::new(), problems);
    };
    let mut files = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("[{i}]");
        match write_file(item) {
            Ok(file) => files.push(file),
            Err(Problem { key, problem }) => problems.push(Problem::new(
                if key.is_empty() {
                    at
                } else {
                    format!("{at}.{key}")
                },
                format!("{problem}; entry left out"),
            )),
        }
    }
    (files, problems)
}

fn write_file(item: &Value) -> Result<WriteFile, Problem> {
    let bad = |key: &str, p: String| Problem::new(key.to_string(), p);
    let Some(map) = item.as_object() else {
        return Err(bad("", format!("expected a mapping, not {item}")));
    };
    let path = match map.get("path").and_then(Value::as_str) {
        Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.ends_with('/') => p,
        Some(p) => {
            return Err(bad(
                "path",
                format!("{p:?} is not an absolute file path without .."),
            ))
        }
        None => return Err(bad("path", "missing".into())),
    };
    let content = match map.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad("content", format!("expected text, not {other}"))),
    };
    let encoding = match map.get("encoding").and_then(Value::as_str) {
        None | Some("text/plain") => Encoding::Text,
        Some("b64" | "base64") => Encoding::Base64,
        Some("gz" | "gzip") => Encoding::Gzip,
        Some("gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64") => Encoding::GzipBase64,
        Some(other) => {
            return Err(bad(
                "encoding",
                format!("{other:?} is not one of text/plain, b64, gzip, gz+b64"),
            ))
        }
    };
    if matches!(encoding, Encoding::Base64 | Encoding::GzipBase64) {
        crate::cloud_config::decode_base64(&content).map_err(|p| p.under("content"))?;
    }
    let mode = match map.get("permissions") {
        None => 0o644,
        // cloud-init takes a string of octal digits; YAML may also have
        // read an unquoted 0644 as the octal number it is.
        Some(Value::String(s)) => {
            let digits = s.trim_start_matches("0o");
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    bad(
                        "permissions",
                        format!("{s:?} is not an octal mode such as '0644'"),
                    )
                })?
        }
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| bad("permissions", format!("{n} is not a mode")))?,
        Some(other) => {
            return Err(bad(
                "permissions",
                format!("expected a string such as '0644', not {other}"),
            ))
        }
    };
    let owner = match map.get("owner") {
        None => "root:root".to_string(),
        Some(Value::String(o)) => {
            let mut parts = o.splitn(2, ':');
            let valid = parts.all(crate::console::valid_name);
            if !valid {
                return Err(bad("owner", format!("{o:?} is not user:group")));
            }
            o.clone()
        }
        Some(other) => return Err(bad("owner", format!("expected user:group, not {other}"))),
    };
    let append = match map.get("append") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(
                "append",
                format!("expected true or false, not {other}"),
            ))
        }
    };
    for key in map.keys() {
        if ![
            "path",
            "content",
            "encoding",
            "permissions",
            "owner",
            "append",
            "defer",
            "source",
        ]
        .contains(&key.as_str())
        {
            return Err(bad(key, "unknown key".into()));
        }
    }
    if map.contains_key("source") {
        return Err(bad(
            "source",
            "not supported (it fetches from a URL): give `content`".into(),
        ));
    }
    Ok(WriteFile {
        path: path.to_string(),
        content,
        encoding,
        mode,
        owner,
        append,
    })
}

/// `bootcmd:` / `runcmd:` as a shell script, as cloud-init renders them: a
/// string item is a line of shell, a list item one command with each word
/// quoted.
pub fn shell_script(value: &Value) -> Result<String, Problem> {
    let Some(items) = value.as_array() else {
        return Err(Problem::new(
            String::new(),
            format!("expected a list, not {value}"),
        ));
    };
    let mut script = String::from("#!/bin/sh\n");
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(line) => script += line,
            Value::Array(words) => {
                let mut quoted = Vec::new();
                for word in words {
                    let word = match word {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(Problem::new(
                                format!("[{i}]"),
                                format!("{other} is not a word of a command"),
                            ))
                        }
                    };
                    quoted.push(format!("'{}'", word.replace('\'', "'\\''")));
                }
                script += &quoted.join(" ");
            }
            other => {
                return Err(Problem::new(
                    format!("[{i}]"),
                    format!("{other} is neither a line of shell nor a list of words"),
                ))
            }
        }
        script.push('\n');
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        yaml_reporting(text, &mut Vec::new())
    }

    fn yaml_reporting(text: &str, problems: &mut Vec<Problem>) -> Value {
        crate::cloud_config::load_yaml(text, problems).unwrap()
    }

    #[test]
    fn write_files_as_cloud_init_documents_them() {
        // From cloud-init's documented examples for write_files.
        let mut read = Vec::new();
        let (files, problems) = parse_write_files(&yaml_reporting(
            r#"
- encoding: b64
  content: CiMgVGhpcyBmaWxlIGNvbnRyb2xzIHRoZSBzdGF0ZSBvZiBTRUxpbnV4...
  owner: root:root
  path: /etc/sysconfig/selinux
  permissions: '0644'
- content: |
    # My new /etc/sysconfig/samba file

    SMBDOPTIONS="-D"
  path: /etc/sysconfig/samba
- content: !!binary |
    f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAwARAAAAAAABAAAAAAAAAAJAVAAAAAA==
  path: /bin/arch
  permissions: '0555'
- path: /root/CLOUD_INIT_WAS_HERE
- path: /etc/nginx/conf.d/example.com.conf
  content: |
    server { listen 80; }
  owner: 'nginx:nginx'
  permissions: '0640'
  defer: true
- path: /var/log/notes
  content: one more line
  append: true
  permissions: 0600
"#,
            &mut read,
        ));
        // A binary program cannot be a string: reported, kept as base64 text.
        assert_eq!(read.len(), 1);
        assert!(
            read[0].problem.starts_with("line 13: `!!binary`"),
            "{read:?}"
        );
        // The first example's content is cut short in cloud-init's docs.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "[0].content");
        let by_path = |p: &str| files.iter().find(|f| f.path == p).unwrap();
        assert_eq!(by_path("/etc/sysconfig/samba").mode, 0o644);
        assert_eq!(by_path("/etc/sysconfig/samba").owner, "root:root");
        assert!(by_path("/etc/sysconfig/samba")
            .content
            .contains("SMBDOPTIONS"));
        assert_eq!(by_path("/root/CLOUD_INIT_WAS_HERE").content, "");
        let nginx = by_path("/etc/nginx/conf.d/example.com.conf");
        assert_eq!((nginx.mode, nginx.owner.as_str()), (0o640, "nginx:nginx"));
        let notes = by_path("/var/log/notes");
        assert!(notes.append);
        assert_eq!(notes.mode, 0o600, "an unquoted 0600 is octal in YAML 1.1");
    }

    #[test]
    fn bad_entries_are_left_out_with_the_reason() {
        let (files, problems) = parse_write_files(&yaml(
            r#"
- {path: etc/relative, content: x}
- {path: /etc/../shadow, content: x}
- {path: /a, encoding: rot13, content: x}
- {path: /b, encoding: b64, content: '%%%'}
- {path: /c, permissions: 'rwx'}
- {path: /d, owner: 'Root Beer'}
- {path: /e, source: {uri: 'http://example.com/x'}}
- {content: nowhere}
- {path: /b64, content: 'not base64!', encoding: gz+b64}
"#,
        ));
        assert!(files.is_empty(), "{files:?}");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "[0].path",
                "[1].path",
                "[2].encoding",
                "[3].content",
                "[4].permissions",
                "[5].owner",
                "[6].source",
                "[7].path",
                "[8].content"
            ]
        );
        assert!(problems
            .iter()
            .all(|Problem { key: _, problem: p }| p.ends_with("; entry left out")));
    }

    #[test]
    fn commands_become_a_shell_script() {
        let script = shell_script(&yaml(
            r#"
- echo hello > /tmp/greeting
- [ sh, -xc, "echo $(date) ': hello world!'" ]
- [ touch, "/tmp/it's here", 42 ]
"#,
        ))
        .unwrap();
        assert_eq!(
            script,
            "#!/bin/sh\necho hello > /tmp/greeting\n'sh' '-xc' 'echo $(date) '\\'': hello world!'\\'''\n'touch' '/tmp/it'\\''s here' '42'\n"
        );
        assert_eq!(shell_script(&yaml("[[a, {b: c}]]")).unwrap_err().key, "[0]");
        assert!(
            shell_script(&yaml("echo hi")).is_err(),
            "a string is not a list"
        );
    }
}
