//! Just enough MIME (RFC 2046 multipart) for cloud-init user data: the
//! parts' content types and bodies, with base64 transfer encoding decoded
//! and nested multiparts flattened.

/// One leaf part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Lower case, without parameters (`text/cloud-config`).
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Whether user data is a MIME multipart message (its headers come first).
pub fn is_multipart(text: &str) -> bool {
    headers_of(text.trim_start()).iter().any(|(name, value)| {
        name == "content-type" && value.to_ascii_lowercase().starts_with("multipart/")
    })
}

/// The headers at the start of `text` (names lower-cased, folded lines
/// joined), up to the first empty line.
fn headers_of(text: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            break;
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    headers
}

/// A header parameter (`boundary="abc"`).
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The leaf parts of a multipart message, in order.
pub fn parts(data: &[u8]) -> Result<Vec<Part>, String> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    collect(text.trim_start(), &mut out, 0)?;
    Ok(out)
}

fn collect(entity: &str, out: &mut Vec<Part>, depth: usize) -> Result<(), String> {
    if depth > 8 {
        return Err("multipart nested more than 8 deep".into());
    }
    let headers = headers_of(entity);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let content_type = header("content-type").unwrap_or_else(|| "text/plain".into());
    let body = match entity.find("\n\n").or_else(|| entity.find("\r\n\r\n")) {
        Some(at) => entity[at..].trim_start_matches(['\r', '\n']),
        None if headers.is_empty() => entity,
        None => "",
    };
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let boundary = parameter(&content_type, "boundary")
            .filter(|b| !b.is_empty())
            .ok_or("a multipart Content-Type without a boundary")?;
        let delimiter = format!("--{boundary}");
        let mut sections = body.split(&delimiter);
        sections.next(); // the preamble
        let mut closed = false;
        for section in sections {
            if section.starts_with("--") {
                closed = true;
                break;
            }
            let section = section
                .strip_prefix("\r\n")
                .or_else(|| section.strip_prefix('\n'))
                .unwrap_or(section);
            // The line break before the next delimiter belongs to it.
            let section = section
                .strip_suffix("\r\n")
                .or_else(|| section.strip_suffix('\n'))
                .unwrap_or(section);
            collect(section, out, depth + 1)?;
        }
        if !closed {
            return Err(format!("no closing boundary --{boundary}--"));
        }
        return Ok(());
    }
    let encoding = header("content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => body.as_bytes().to_vec(),
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            crate::cloud_config::decode_base64(&joined)
                .map_err(|e| format!("a {kind} part: {e}"))?
        }
        other => {
            return Err(format!(
                "a {kind} part: transfer encoding {other:?} is not supported"
            ))
        }
    };
    out.push(Part {
        content_type: kind,
        body,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As cloud-init's `make-mime` writes them.
    const MESSAGE: &str =
        "Content-Type: multipart/mixed; boundary=\"===============4291038100093149247==\"
MIME-Version: 1.0

--===============4291038100093149247==
Content-Type: text/cloud-config; charset=\"us-ascii\"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename=\"config.yaml\"

#cloud-config
hostname: first

--===============4291038100093149247==
Content-Type: text/x-shellscript; charset=\"us-ascii\"
MIME-Version: 1.0
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=\"script.sh\"

IyEvYmluL3NoCmVjaG8gaGkK

--===============4291038100093149247==--
";

    #[test]
    fn parts_of_a_make_mime_message() {
        assert!(is_multipart(MESSAGE));
        assert!(!is_multipart("#cloud-config\nhostname: x\n"));
        let parts = parts(MESSAGE.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type, "text/cloud-config");
        assert_eq!(parts[0].body, b"#cloud-config\nhostname: first\n");
        assert_eq!(parts[1].content_type, "text/x-shellscript");
        assert_eq!(parts[1].body, b"#!/bin/sh\necho hi\n");
    }

    #[test]
    fn nested_and_broken_messages() {
        let nested = "Content-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/cloud-config\n\n#cloud-config\n--inner--\n--outer--\n";
        let p = parts(nested.as_bytes()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].body, b"#cloud-config");
        let e = parts(b"Content-Type: multipart/mixed\n\nbody").unwrap_err();
        assert_eq!(e, "a multipart Content-Type without a boundary");
        let e = parts(b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n").unwrap_err();
        assert_eq!(e, "no closing boundary --b--");
        let e = parts(b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\nx\n--b--\n")
            .unwrap_err();
        assert!(e.contains("quoted-printable"), "{e}");
    }
}
