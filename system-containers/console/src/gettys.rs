//! Which gettys to run: one on each console the kernel writes to
//! (/sys/class/tty/console/active), so the serial console and a screen both
//! offer a login prompt.

/// A getty's command line for each active console. `tty0` (the current
/// virtual terminal) means `tty1`. Serial lines get a serial terminal type.
pub fn commands(active: &str, autologin: Option<&str>) -> Vec<Vec<String>> {
    let mut ttys: Vec<String> = Vec::new();
    for name in active.split_whitespace() {
        let name = if name == "tty0" { "tty1" } else { name };
        if !ttys.iter().any(|t| t == name) {
            ttys.push(name.to_string());
        }
    }
    ttys.into_iter()
        .map(|tty| {
            let mut args: Vec<String> = vec!["/usr/sbin/agetty".into(), "--noclear".into()];
            if let Some(user) = autologin {
                args.extend(["--autologin".into(), user.to_string()]);
            }
            if is_virtual_terminal(&tty) {
                args.extend([tty, "linux".into()]);
            } else {
                // -L: a local line, no modem control; the kernel's console
                // speed is kept, the others are tried on a break.
                args.extend([
                    "-L".into(),
                    "--keep-baud".into(),
                    tty,
                    "115200,57600,38400,9600".into(),
                    "vt220".into(),
                ]);
            }
            args
        })
        .collect()
}

fn is_virtual_terminal(tty: &str) -> bool {
    tty.strip_prefix("tty")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_getty_per_console() {
        let c = commands("tty0 ttyS0\n", None);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], ["/usr/sbin/agetty", "--noclear", "tty1", "linux"]);
        assert_eq!(
            c[1],
            [
                "/usr/sbin/agetty",
                "--noclear",
                "-L",
                "--keep-baud",
                "ttyS0",
                "115200,57600,38400,9600",
                "vt220"
            ]
        );
        let c = commands("ttyAMA0", Some("brig"));
        assert_eq!(
            &c[0][..4],
            ["/usr/sbin/agetty", "--noclear", "--autologin", "brig"]
        );
        assert_eq!(c[0][6], "ttyAMA0");
        assert!(commands("", None).is_empty());
        assert_eq!(
            commands("tty0 tty1", None).len(),
            1,
            "the same terminal once"
        );
    }
}
