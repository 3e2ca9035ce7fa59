//! A bench run's results as Markdown (docs/benchmarks.md) and as an SVG
//! plot of the boot-to-ssh times. Pure: the run is measured elsewhere.

use std::fmt::Write;

use super::boot::Sample;
use super::figures::Spread;

pub struct Run {
    /// Date, machine, QEMU, kernel: one line each.
    pub setting: Vec<String>,
    pub command: String,
    pub systems: Vec<SystemResult>,
    pub images: Vec<Image>,
    /// benchmarks/container-start's own table.
    pub container_start: String,
}

pub struct SystemResult {
    pub label: String,
    pub samples: Vec<Sample>,
    /// Why each boot that never reached ssh failed (booted again; not in
    /// the figures).
    pub stuck: Vec<String>,
}

/// An image's parts: (name, bytes as shipped, bytes unpacked if known).
pub struct Image {
    pub label: String,
    pub parts: Vec<(String, u64, Option<u64>)>,
}

fn seconds(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.to_ssh.as_secs_f64()).collect()
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    Spread::of(&samples.iter().map(f).collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Reproduce with `{}`.\n", run.command);
    for line in &run.setting {
        let _ = writeln!(md, "- {line}");
    }
    // The baseline is the last system.
    let baseline = run
        .systems
        .last()
        .and_then(|s| Spread::of(&seconds(&s.samples)));

    let _ = writeln!(md, "\n#### Boot to ssh\n");
    let _ = writeln!(
        md,
        "From `brig run` starting QEMU until `ssh brig@… true` succeeds.\n"
    );
    let _ = writeln!(
        md,
        "| system | boots | min | median | max | faster than the baseline (medians) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for system in &run.systems {
        let Some(spread) = Spread::of(&seconds(&system.samples)) else {
            continue;
        };
        let ratio = baseline.map_or("—".into(), |b| {
            format!("{:.1}×", b.median / spread.median)
        });
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} s | **{:.2} s** | {:.2} s | {ratio} |",
            system.label,
            system.samples.len(),
            spread.min,
            spread.median,
            spread.max
        );
    }
    for system in &run.systems {
        for why in &system.stuck {
            let _ = writeln!(
                md,
                "\nA boot of {} never reached ssh and was booted again (not in the figures): {why}",
                system.label
            );
        }
    }

    let _ = writeln!(
        md,
        "\nOn the way (medians): the guest's DHCP ACK in QEMU's capture, \
         sshd's first greeting, the ssh login done.\n"
    );
    let _ = writeln!(md, "| system | DHCP ACK | sshd greets | ssh done |");
    let _ = writeln!(md, "|---|---|---|---|");
    for system in &run.systems {
        let s = &system.samples;
        if s.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {:.2} s | {:.2} s | {:.2} s |",
            system.label,
            median_of(s, |x| x.to_dhcp_ack.as_secs_f64()),
            median_of(s, |x| x.to_banner.as_secs_f64()),
            median_of(s, |x| x.to_ssh.as_secs_f64())
        );
    }

    let _ = writeln!(md, "\n#### Memory once ssh answers (medians)\n");
    let _ = writeln!(
        md,
        "`used` as free(1) counts it (total − free − buffers − page cache − \
         reclaimable slab); `in-RAM files` is Shmem (tmpfs, an unpacked \
         initramfs), which free(1) counts as cache but cannot be reclaimed.\n"
    );
    let _ = writeln!(
        md,
        "| system | used | used + in-RAM files | PID 1 | PID 1 resident |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for system in &run.systems {
        let s = &system.samples;
        if s.is_empty() {
            continue;
        }
        let used = median_of(s, |x| x.memory.used_kib as f64);
        let with_files = median_of(s, |x| (x.memory.used_kib + x.memory.shmem_kib) as f64);
        let rss = median_of(s, |x| x.pid1_resident_kib as f64);
        let _ = writeln!(
            md,
            "| {} | **{}** | {} | `{}` | **{}** |",
            system.label,
            mib(used),
            mib(with_files),
            s[0].pid1_name,
            mib(rss)
        );
    }

    let ready: Vec<(String, Spread)> = run
        .systems
        .iter()
        .filter_map(|system| {
            let times: Vec<f64> = system
                .samples
                .iter()
                .filter_map(|s| s.pid1_to_ready.map(|d| d.as_secs_f64()))
                .collect();
            Some((system.label.clone(), Spread::of(&times)?))
        })
        .collect();
    if !ready.is_empty() {
        let _ = writeln!(md, "\n#### PID 1 start to `brig: ready` (boot log)\n");
        let _ = writeln!(md, "| system | min | median | max |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (label, s) in ready {
            let _ = writeln!(
                md,
                "| {label} | {:.2} s | **{:.2} s** | {:.2} s |",
                s.min, s.median, s.max
            );
        }
    }

    for image in &run.images {
        let _ = writeln!(md, "\n#### Image: {}\n", image.label);
        let _ = writeln!(md, "| part | as shipped (compressed) | unpacked |");
        let _ = writeln!(md, "|---|---|---|");
        let (mut shipped_total, mut unpacked_total) = (0, 0);
        for (name, shipped, unpacked) in &image.parts {
            shipped_total += shipped;
            unpacked_total += unpacked.unwrap_or(*shipped);
            let _ = writeln!(
                md,
                "| {name} | {} | {} |",
                mib(*shipped as f64 / 1024.0),
                unpacked.map_or("—".into(), |u| mib(u as f64 / 1024.0))
            );
        }
        let _ = writeln!(
            md,
            "| **total** | **{}** | {} |",
            mib(shipped_total as f64 / 1024.0),
            mib(unpacked_total as f64 / 1024.0)
        );
    }

    if !run.container_start.trim().is_empty() {
        let _ = writeln!(
            md,
            "\n#### Container start (`benchmarks/container-start`, medians)\n"
        );
        let _ = writeln!(md, "```\n{}\n```", run.container_start.trim_end());
    }
    md
}

/// The boot-to-ssh times as an SVG strip plot: a row per system, a dot per
/// boot, a bar at the median.
pub fn svg(run: &Run) -> String {
    let (left, width, row, top) = (370.0, 440.0, 48.0, 20.0);
    let max = run
        .systems
        .iter()
        .flat_map(|s| seconds(&s.samples))
        .fold(1.0_f64, f64::max);
    // A scale in whole steps of 5 s past the slowest boot.
    let scale_max = (max / 5.0).ceil() * 5.0;
    let x = |seconds: f64| left + seconds / scale_max * width;
    let height = top + row * run.systems.len() as f64 + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">",
        left + width + 30.0
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    for (i, system) in run.systems.iter().enumerate() {
        let y = top + row * i as f64 + row / 2.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 10.0,
            y + 4.0,
            escape(&system.label)
        );
        let times = seconds(&system.samples);
        for t in &times {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"4\" fill=\"#3569a8\" fill-opacity=\"0.6\"/>",
                x(*t)
            );
        }
        if let Some(s) = Spread::of(&times) {
            let _ = writeln!(
                svg,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#c0392b\" stroke-width=\"2\"/>",
                x(s.median),
                y - 12.0,
                y + 12.0
            );
        }
    }
    let axis = top + row * run.systems.len() as f64;
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{axis}\" y2=\"{axis}\" stroke=\"black\"/>",
        left + width
    );
    let mut tick = 0.0;
    while tick <= scale_max {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{axis}\" y2=\"{1}\" stroke=\"black\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{tick} s</text>",
            x(tick),
            axis + 5.0,
            axis + 20.0
        );
        tick += 5.0;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">boot to ssh (dots: boots, red: median)</text>",
        left + width / 2.0,
        axis + 36.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    // Markdown's code marks mean nothing in a picture.
    text.replace('`', "")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::figures::Memory;

    fn sample(seconds: f64, used_kib: u64, rss_kib: u64, ready: Option<f64>) -> Sample {
        Sample {
            to_ssh: Duration::from_secs_f64(seconds),
            to_dhcp_ack: Duration::from_secs_f64(seconds / 4.0),
            to_banner: Duration::from_secs_f64(seconds * 0.75),
            memory: Memory {
                used_kib,
                shmem_kib: 1024,
            },
            pid1_name: "init".into(),
            pid1_resident_kib: rss_kib,
            pid1_to_ready: ready.map(Duration::from_secs_f64),
            accel: "TCG".into(),
        }
    }

    fn run() -> Run {
        Run {
            setting: vec!["date: today".into()],
            command: "scripts/bench".into(),
            systems: vec![
                SystemResult {
                    label: "Brig".into(),
                    samples: vec![
                        sample(4.0, 30 * 1024, 1500, Some(1.0)),
                        sample(5.0, 32 * 1024, 1600, Some(1.5)),
                        sample(6.0, 34 * 1024, 1700, Some(2.0)),
                    ],
                    stuck: vec![],
                },
                SystemResult {
                    label: "Debian <baseline>".into(),
                    samples: vec![
                        sample(20.0, 120 * 1024, 13000, None),
                        sample(21.0, 125 * 1024, 14000, None),
                    ],
                    stuck: vec!["no DHCP ACK within 120s".into()],
                },
            ],
            images: vec![Image {
                label: "Brig".into(),
                parts: vec![
                    ("kernel".into(), 10 * 1048576, None),
                    ("initramfs".into(), 20 * 1048576, Some(40 * 1048576)),
                ],
            }],
            container_start: "crun 7.5ms".into(),
        }
    }

    #[test]
    fn the_tables_give_spreads_ratios_to_the_baseline_medians_and_totals() {
        let md = markdown(&run());
        assert!(
            md.contains("| Brig | 3 | 4.00 s | **5.00 s** | 6.00 s | 4.1× |"),
            "{md}"
        );
        assert!(md.contains("| Debian <baseline> | 2 | 20.00 s | **20.50 s** | 21.00 s | 1.0× |"));
        assert!(md.contains("A boot of Debian <baseline> never reached ssh and was booted again (not in the figures): no DHCP ACK within 120s"), "{md}");
        assert!(!md.contains("A boot of Brig "));
        assert!(md.contains("| Brig | 1.25 s | 3.75 s | 5.00 s |"), "{md}");
        assert!(md.contains("| Brig | **32.0 MiB** | 33.0 MiB | `init` | **1.6 MiB** |"));
        assert!(md.contains("| Brig | 1.00 s | **1.50 s** | 2.00 s |"));
        // Only Brig has a boot log with PID 1's stamps.
        assert!(!md.contains("| Debian <baseline> | —"));
        assert!(md.contains("| kernel | 10.0 MiB | — |"));
        assert!(md.contains("| **total** | **30.0 MiB** | 50.0 MiB |"));
        assert!(md.contains("```\ncrun 7.5ms\n```"));
    }

    #[test]
    fn the_plot_has_a_dot_per_boot_a_median_per_system_and_escaped_labels() {
        let plot = svg(&run());
        assert_eq!(plot.matches("<circle").count(), 5);
        assert_eq!(plot.matches("stroke=\"#c0392b\"").count(), 2);
        assert!(plot.contains("Debian &lt;baseline&gt;"));
        // The scale ends at the next 5 s past the slowest boot (21 s).
        assert!(plot.contains(">25 s</text>") && !plot.contains(">30 s</text>"));
    }
}
