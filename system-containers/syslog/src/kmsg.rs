//! The kernel log, from /dev/kmsg: one record a read, `PRI,SEQ,USEC,FLAGS;
//! text`, continuation lines (` KEY=value`) after it. Reading starts at the
//! oldest record the kernel still holds, so messages from before logd
//! started (the whole boot, if the ring is large enough) are kept too.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    pub priority: u8,
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC, as the kernel stamps it).
    pub usec: u64,
    pub message: String,
}

/// One record as read from /dev/kmsg; None if it is not one.
pub fn parse(raw: &[u8]) -> Option<KernelRecord> {
    let text = String::from_utf8_lossy(raw);
    let (prefix, rest) = text.split_once(';')?;
    let mut fields = prefix.split(',');
    // The priority field may carry a facility too (userspace writers).
    let pri: u16 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    // The text ends at the first newline; the dictionary follows.
    let message = rest.split('\n').next().unwrap_or_default();
    Some(KernelRecord {
        priority: pri.min(191) as u8,
        seq,
        usec,
        message: unescape(message),
    })
}

/// The kernel writes non-printable bytes as `\xNN`.
fn unescape(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            if let Some(v) = text
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_and_without_a_dictionary() {
        let r = parse(b"6,339,5140900,-;NET: Registered PF_INET6 protocol family\n").unwrap();
        assert_eq!(
            r,
            KernelRecord {
                priority: 6,
                seq: 339,
                usec: 5_140_900,
                message: "NET: Registered PF_INET6 protocol family".into()
            }
        );
        let r = parse(b"3,1200,9000,-,caller=T1;virtio_blk virtio2: [vda] 2097152 512-byte logical blocks\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio2\n").unwrap();
        assert_eq!(r.priority, 3);
        assert_eq!(
            r.message,
            "virtio_blk virtio2: [vda] 2097152 512-byte logical blocks"
        );
    }

    #[test]
    fn escapes_and_junk() {
        let r = parse(b"30,1,2,-;brig: tab\\x09here\n").unwrap();
        assert_eq!(r.priority, 30);
        assert_eq!(r.message, "brig: tab\there");
        assert_eq!(parse(b"no separator"), None);
        assert_eq!(parse(b"x,1,2;text"), None);
        assert_eq!(parse(b"6,1;short prefix"), None);
    }
}
