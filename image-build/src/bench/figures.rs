//! The pure part of `brig bench`: reading what a guest showed
//! (/proc/meminfo, the boot log) into figures, and the figures' summaries.
//! No I/O here, so all of it is unit tested.

use std::time::Duration;

/// Minimum, median and maximum of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// What /proc/meminfo says about memory in use, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// As free(1) counts "used": total less free, buffers, page cache and
    /// reclaimable slab.
    pub used_kib: u64,
    /// Files in RAM (tmpfs, an unpacked initramfs): counted by the kernel
    /// as page cache, but not reclaimable the way a disk's cache is.
    pub shmem_kib: u64,
}

pub fn memory(meminfo: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
    };
    let cached = field("Cached")?;
    let used = field("MemTotal")?
        .checked_sub(field("MemFree")?)?
        .checked_sub(field("Buffers")?)?
        .checked_sub(cached)?
        .checked_sub(field("SReclaimable")?)?;
    Some(Memory {
        used_kib: used,
        shmem_kib: field("Shmem")?,
    })
}

/// The resident set (`VmRSS`) of a /proc/PID/status, in KiB.
pub fn resident_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// From Brig's boot log: the time from PID 1's start to `brig: ready`,
/// both stamped by PID 1 with the kernel's clock (`[t=5.813s]`).
pub fn pid1_to_ready(serial: &str) -> Option<Duration> {
    let stamp = |is_it: &dyn Fn(&str) -> bool| -> Option<f64> {
        let line = serial.lines().find(|l| is_it(l))?;
        line.rsplit_once("[t=")?.1.strip_suffix("s]")?.parse().ok()
    };
    let started = stamp(&|l| l.contains("started as PID 1"))?;
    // Maybe after a getty's prompt on the same line ("brig login: brig:
    // ready"): the console's getty can print it before the boot is done.
    let ready = stamp(&|l| l.contains("brig: ready"))?;
    (ready >= started).then(|| Duration::from_secs_f64(ready - started))
}

/// A boot's stages seen on its serial console, each with what marks it
/// (the first line that contains one of the texts). The same for every
/// system: the kernel's own lines, then the init's.
pub const SERIAL_STAGES: &[(&str, &[&str])] = &[
    ("kernel's first line", &["Linux version "]),
    // The kernel hands over to the first program: Brig's PID 1, Debian's
    // initramfs-tools script, or systemd where the root file system is
    // the initramfs.
    (
        "init runs",
        &[
            "Run /init as init process",
            "Run /sbin/init as init process",
        ],
    ),
    // Brig: every system container up and ready. systemd: the default
    // target's dependencies done (its status line on the console).
    (
        "services ready",
        &[
            "brig: ready",
            "Reached target multi-user.target",
            "Reached target Multi-User System",
        ],
    ),
];

/// When each of `SERIAL_STAGES` was first seen, from serial lines stamped
/// with the host's time since QEMU started. Terminal colours (systemd's
/// status lines have them) are ignored.
pub fn serial_stages(lines: &[(Duration, String)]) -> Vec<Option<Duration>> {
    let plain: Vec<(Duration, String)> = lines
        .iter()
        .map(|(at, line)| (*at, without_colours(line)))
        .collect();
    SERIAL_STAGES
        .iter()
        .map(|(_, marks)| {
            plain
                .iter()
                .find(|(_, line)| marks.iter().any(|m| line.contains(m)))
                .map(|(at, _)| *at)
        })
        .collect()
}

/// `line` without its ANSI escape sequences (`ESC [ … letter`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The bytes of the regular files in an `unsquashfs -lln` listing: a
/// container image's size unpacked.
pub fn regular_file_bytes(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_or_the_mean_of_the_two_middles() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.min, odd.median, odd.max), (1.0, 2.0, 3.0));
        let even = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((even.min, even.median, even.max), (1.0, 2.5, 4.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn memory_counts_used_as_free_does_and_keeps_shmem_apart() {
        let meminfo = "MemTotal:        1000000 kB\nMemFree:          700000 kB\n\
                       MemAvailable:     800000 kB\nBuffers:            1000 kB\n\
                       Cached:           200000 kB\nShmem:            150000 kB\n\
                       SReclaimable:       9000 kB\n";
        assert_eq!(
            memory(meminfo),
            Some(Memory {
                used_kib: 90_000,
                shmem_kib: 150_000
            })
        );
        assert_eq!(memory("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn resident_memory_comes_from_vmrss() {
        let status = "Name:\tbrig-init\nVmPeak:\t    9000 kB\nVmRSS:\t    1884 kB\n";
        assert_eq!(resident_kib(status), Some(1884));
        assert_eq!(resident_kib("Name:\tx\n"), None);
    }

    #[test]
    fn unpacked_size_counts_regular_files_only() {
        let listing = "drwxr-xr-x 0/0    48 1970-01-01 00:00 squashfs-root\n\
                       -rw-r--r-- 0/0   979 1970-01-01 00:00 squashfs-root/etc/a.conf\n\
                       lrwxrwxrwx 0/0     7 1970-01-01 00:00 squashfs-root/lib -> usr/lib\n\
                       -rwxr-xr-x 0/0  1021 1970-01-01 00:00 squashfs-root/usr/bin/b\n";
        assert_eq!(regular_file_bytes(listing), 2000);
    }

    #[test]
    fn stages_are_the_first_line_with_their_mark_whoever_prints_it() {
        let at = |ms| Duration::from_millis(ms);
        let stamped = |lines: &[(u64, &str)]| -> Vec<(Duration, String)> {
            lines
                .iter()
                .map(|(ms, l)| (at(*ms), l.to_string()))
                .collect()
        };
        let brig = stamped(&[
            (400, "[    0.000000] Linux version 6.12 (gcc)"),
            (1900, "[    1.98] Run /init as init process"),
            (2000, "brig: brig-init 0.1.0 started as PID 1 [t=2.027s]"),
            (4500, "brig: ready [t=4.504s]"),
            (4600, "brig: ready [t=4.6s] (a second one is not the first)"),
        ]);
        assert_eq!(
            serial_stages(&brig),
            [Some(at(400)), Some(at(1900)), Some(at(4500))]
        );
        let debian = stamped(&[
            (500, "[    0.000000] Linux version 6.12"),
            (2100, "[    2.10] Run /sbin/init as init process"),
            (
                8000,
                "[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mpaths.target\u{1b}[0m",
            ),
            (
                9000,
                "[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mmulti-user.target\u{1b}[0m - Multi-User System.",
            ),
        ]);
        assert_eq!(
            serial_stages(&debian),
            [Some(at(500)), Some(at(2100)), Some(at(9000))]
        );
        // A stage never seen is missing, not zero.
        assert_eq!(serial_stages(&debian[..1]), [Some(at(500)), None, None]);
    }

    #[test]
    fn pid1_to_ready_is_read_from_pid1_stamps() {
        let serial = "[    1.0] kernel\nbrig: brig-init 0.1.0 started as PID 1 [t=2.250s]\n\
                      brig: [web] ready [t=3.000s]\nbrig: ready [t=3.750s]\n";
        assert_eq!(pid1_to_ready(serial), Some(Duration::from_millis(1500)));
        assert_eq!(pid1_to_ready("brig: ready [t=3.750s]\n"), None);
        let prompt_first = serial.replace("brig: ready", "brig login: brig: ready");
        assert_eq!(
            pid1_to_ready(&prompt_first),
            Some(Duration::from_millis(1500))
        );
    }
}
