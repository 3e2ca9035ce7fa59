//! A bench run's results as Markdown (docs/benchmarks.md) and as an SVG
//! plot of the boot-to-ssh times. Pure: the run is measured elsewhere.

use std::fmt::Write;

use super::boot::{Sample, NETWORK_STAGES};
use super::figures::{Spread, SERIAL_STAGES};

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
    /// `brig`, `brig-without-docker`, `debian`, `debian-lean`.
    pub name: String,
    pub label: String,
    /// A Debian baseline: the others' ratios are to each of these.
    pub baseline: bool,
    /// Booted on the baselines' machine and kernel, so compared with them
    /// (and in the plot); the Pi is not.
    pub compared: bool,
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

/// From benchmarks/container-start's table: how many times faster than
/// `crun run` (without a cgroup) `brig-container` starts a container from
/// its image.
fn container_start_ratio(table: &str) -> Option<f64> {
    table
        .lines()
        .find(|l| l.starts_with("brig-container, squashfs image mounted"))?
        .split_whitespace()
        .last()?
        .strip_suffix('x')?
        .parse()
        .ok()
}

/// Every stage's name, in boot order: the serial console's, then the
/// network's (as `Sample::stages` gives their times).
fn stage_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = SERIAL_STAGES.iter().map(|(name, _)| *name).collect();
    names.extend(NETWORK_STAGES);
    names
}

/// Each stage's median over the boots that saw it (None if none did).
fn stage_medians(samples: &[Sample]) -> Vec<Option<f64>> {
    let stages: Vec<Vec<Option<std::time::Duration>>> =
        samples.iter().map(Sample::stages).collect();
    (0..stage_names().len())
        .map(|i| {
            let times: Vec<f64> = stages
                .iter()
                .filter_map(|s| s.get(i).copied().flatten())
                .map(|d| d.as_secs_f64())
                .collect();
            Spread::of(&times).map(|s| s.median)
        })
        .collect()
}

/// A Markdown table's header and rule for these columns.
fn table_head(columns: &[&str]) -> String {
    format!(
        "| {} |\n|{}",
        columns.join(" | "),
        "---|".repeat(columns.len())
    )
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    Spread::of(&samples.iter().map(f).collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

/// The targets of docs/design.md, each against this run's figure.
fn targets(run: &Run) -> Vec<(String, String, bool)> {
    let find = |name: &str| {
        run.systems
            .iter()
            .find(|s| s.name == name && !s.samples.is_empty())
    };
    let to_ssh = |s: &SystemResult| median_of(&s.samples, |x| x.to_ssh.as_secs_f64());
    let mut rows = Vec::new();
    for (name, limit) in [("brig-without-docker", 5.0), ("brig", 8.0)] {
        let Some(system) = find(name) else { continue };
        let median = to_ssh(system);
        rows.push((
            format!("{}: boot to ssh ≤ {limit:.0} s (median)", system.label),
            format!("{median:.2} s"),
            median <= limit,
        ));
    }
    for name in ["brig-without-docker", "brig"] {
        let Some(system) = find(name) else { continue };
        for baseline in run
            .systems
            .iter()
            .filter(|s| s.baseline && !s.samples.is_empty())
        {
            let ratio = to_ssh(baseline) / to_ssh(system);
            rows.push((
                format!(
                    "{}: ≥ 4× faster to ssh than {} (medians)",
                    system.label, baseline.label
                ),
                format!("{ratio:.1}×"),
                ratio >= 4.0,
            ));
        }
    }
    if let Some(ratio) = container_start_ratio(&run.container_start) {
        rows.push((
            "system container start: `brig-container` (image mounted, seccomp) ≤ 1/5 of `crun run`, \
             whole commands, neither making a cgroup (medians)"
                .to_string(),
            format!("1/{ratio:.1}"),
            ratio >= 5.0,
        ));
    }
    if let Some(system) = find("brig-without-docker") {
        let used = median_of(&system.samples, |x| x.memory.used_kib as f64);
        rows.push((
            format!(
                "{}: memory used once ssh answers ≤ 40 MiB (median)",
                system.label
            ),
            mib(used),
            used <= 40.0 * 1024.0,
        ));
    }
    // Every boot of the Pi reached ssh (one that stalled was booted again,
    // and counts against it here).
    if let Some(pi) = run.systems.iter().find(|s| s.name == super::PI_SYSTEM) {
        let boots = pi.samples.len() + pi.stuck.len();
        let figure = if pi.samples.is_empty() {
            format!("0 of {boots} boots reached ssh")
        } else {
            format!(
                "{} of {boots} boots reached ssh; median {:.1} s, {} used",
                pi.samples.len(),
                median_of(&pi.samples, |x| x.to_ssh.as_secs_f64()),
                mib(median_of(&pi.samples, |x| x.memory.used_kib as f64))
            )
        };
        rows.push((
            format!("{}: boots and serves ssh, every boot", pi.label),
            figure,
            !pi.samples.is_empty() && pi.stuck.is_empty(),
        ));
    }
    for name in ["brig-without-docker", "brig"] {
        let Some(system) = find(name) else { continue };
        let rss = median_of(&system.samples, |x| x.pid1_resident_kib as f64);
        rows.push((
            format!(
                "{}: PID 1 resident memory < 2 MiB once ssh answers (median)",
                system.label
            ),
            mib(rss),
            rss < 2.0 * 1024.0,
        ));
    }
    rows
}

pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Reproduce with `{}`.\n", run.command);
    for line in &run.setting {
        let _ = writeln!(md, "- {line}");
    }
    let baselines: Vec<&SystemResult> = run
        .systems
        .iter()
        .filter(|s| s.baseline && !s.samples.is_empty())
        .collect();

    let _ = writeln!(md, "\n#### Targets\n");
    let _ = writeln!(md, "| target | this run | |");
    let _ = writeln!(md, "|---|---|---|");
    for (target, figure, met) in targets(run) {
        let verdict = if met { "met" } else { "not met" };
        let _ = writeln!(md, "| {target} | {figure} | **{verdict}** |");
    }

    let _ = writeln!(md, "\n#### Boot to ssh\n");
    let _ = writeln!(
        md,
        "From `brig run` starting QEMU until `ssh brig@… true` succeeds.\n"
    );
    let ratios: Vec<String> = (1..=baselines.len())
        .map(|i| format!("faster than baseline {i}"))
        .collect();
    let mut columns = vec!["system", "boots", "min", "median", "max"];
    columns.extend(ratios.iter().map(String::as_str));
    let _ = writeln!(md, "{}", table_head(&columns));
    for system in &run.systems {
        let Some(spread) = Spread::of(&seconds(&system.samples)) else {
            continue;
        };
        let mut row = format!(
            "| {} | {} | {:.2} s | **{:.2} s** | {:.2} s |",
            system.label,
            system.samples.len(),
            spread.min,
            spread.median,
            spread.max
        );
        for baseline in &baselines {
            if system.compared {
                let b = median_of(&baseline.samples, |x| x.to_ssh.as_secs_f64());
                let _ = write!(row, " {:.1}× |", b / spread.median);
            } else {
                row.push_str(" — |");
            }
        }
        let _ = writeln!(md, "{row}");
    }
    for (i, baseline) in baselines.iter().enumerate() {
        let _ = writeln!(md, "\nBaseline {}: {}.", i + 1, baseline.label);
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
        "\n#### Where the time goes (medians, from QEMU's start)\n\n\
         The serial console's lines stamped with the host's clock as QEMU \
         writes them: the kernel's first line, the kernel running the first \
         program (`Run /init as init process`), the services ready (`brig: \
         ready`; systemd's `Reached target multi-user.target`); then the \
         guest's DHCP ACK in QEMU's capture, sshd's first greeting, the ssh \
         login done.\n"
    );
    let mut columns = vec!["system"];
    columns.extend(stage_names());
    let _ = writeln!(md, "{}", table_head(&columns));
    for system in &run.systems {
        if system.samples.is_empty() {
            continue;
        }
        let mut row = format!("| {} |", system.label);
        for stage in stage_medians(&system.samples) {
            match stage {
                Some(at) => {
                    let _ = write!(row, " {at:.2} s |");
                }
                None => row.push_str(" — |"),
            }
        }
        let _ = writeln!(md, "{row}");
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

/// Colours of the stages in the plot, in boot order.
const STAGE_COLOURS: &[&str] = &[
    "#d9d9d9", "#9ecae1", "#6baed6", "#fdae6b", "#a1d99b", "#74c476",
];

/// Boot to ssh as an SVG: a row per system, its stages as a bar of
/// coloured segments (each ends at that stage's median, in time order), a dot per boot's
/// ssh login, a red mark at the median.
pub fn svg(run: &Run) -> String {
    let (left, width, row, top) = (430.0, 440.0, 48.0, 20.0);
    // The systems on one machine; the Pi's minutes would flatten the rest.
    let systems: Vec<&SystemResult> = run.systems.iter().filter(|s| s.compared).collect();
    let max = systems
        .iter()
        .flat_map(|s| seconds(&s.samples))
        .fold(1.0_f64, f64::max);
    // A scale in whole steps of 5 s past the slowest boot.
    let scale_max = (max / 5.0).ceil() * 5.0;
    let x = |seconds: f64| left + seconds / scale_max * width;
    let names = stage_names();
    let legend_rows = names.len().div_ceil(3) as f64;
    let height = top + row * systems.len() as f64 + 50.0 + 18.0 * legend_rows;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">",
        left + width + 30.0
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    for (i, system) in systems.iter().enumerate() {
        let y = top + row * i as f64 + row / 2.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 10.0,
            y + 4.0,
            escape(&system.label)
        );
        // In time order: a stage may end before the one listed before it
        // (Brig's DHCP ACK comes before all its services are ready).
        let mut stages: Vec<(usize, f64)> = stage_medians(&system.samples)
            .into_iter()
            .enumerate()
            .filter_map(|(stage, median)| Some((stage, median?)))
            .collect();
        stages.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut from = 0.0;
        for (stage, to) in stages {
            if to > from {
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"10\" fill=\"{}\"/>",
                    x(from),
                    y - 5.0,
                    x(to) - x(from),
                    STAGE_COLOURS[stage % STAGE_COLOURS.len()]
                );
                from = to;
            }
        }
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
    let axis = top + row * systems.len() as f64;
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
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">boot to ssh from QEMU's start (bars: stage medians; dots: boots; red: median)</text>",
        left + width / 2.0,
        axis + 36.0
    );
    for (i, name) in names.iter().enumerate() {
        let (column, line) = ((i % 3) as f64, (i / 3) as f64);
        let (lx, ly) = (left - 200.0 + column * 230.0, axis + 54.0 + line * 18.0);
        let _ = writeln!(
            svg,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{ly}\">until {}</text>",
            ly - 9.0,
            STAGE_COLOURS[i % STAGE_COLOURS.len()],
            lx + 16.0,
            escape(name)
        );
    }
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
            serial_stages: vec![
                Some(Duration::from_secs_f64(seconds / 10.0)),
                Some(Duration::from_secs_f64(seconds / 5.0)),
                ready.map(|_| Duration::from_secs_f64(seconds / 2.0)),
            ],
        }
    }

    fn run() -> Run {
        Run {
            setting: vec!["date: today".into()],
            command: "scripts/bench".into(),
            systems: vec![
                SystemResult {
                    name: "brig-without-docker".into(),
                    label: "Brig".into(),
                    baseline: false,
                    compared: true,
                    samples: vec![
                        sample(4.0, 30 * 1024, 1500, Some(1.0)),
                        sample(5.0, 32 * 1024, 1600, Some(1.5)),
                        sample(6.0, 34 * 1024, 1700, Some(2.0)),
                    ],
                    stuck: vec![],
                },
                SystemResult {
                    name: "debian".into(),
                    label: "Debian <baseline>".into(),
                    baseline: true,
                    compared: true,
                    samples: vec![
                        sample(20.0, 120 * 1024, 13000, None),
                        sample(21.0, 125 * 1024, 14000, None),
                    ],
                    stuck: vec!["no DHCP ACK within 120s".into()],
                },
                SystemResult {
                    name: crate::bench::PI_SYSTEM.into(),
                    label: "Brig on a Pi".into(),
                    baseline: false,
                    compared: false,
                    samples: vec![
                        sample(90.0, 80 * 1024, 1500, Some(40.0)),
                        sample(110.0, 90 * 1024, 1500, Some(50.0)),
                    ],
                    stuck: vec![],
                },
            ],
            images: vec![Image {
                label: "Brig".into(),
                parts: vec![
                    ("kernel".into(), 10 * 1048576, None),
                    ("initramfs".into(), 20 * 1048576, Some(40 * 1048576)),
                ],
            }],
            container_start: "what                median  vs crun\n\
                crun run, directory rootfs, no cgroup, no seccomp   7.50ms   1.0x\n\
                brig-container, squashfs image mounted, no cgroup, seccomp   2.50ms   3.0x\n"
                .into(),
        }
    }

    #[test]
    fn the_tables_give_spreads_ratios_to_the_baseline_medians_and_totals() {
        let md = markdown(&run());
        assert!(
            md.contains("| Brig | 3 | 4.00 s | **5.00 s** | 6.00 s | 4.1× |"),
            "{md}"
        );
        assert!(md.contains("Baseline 1: Debian <baseline>."), "{md}");
        // Each target against its figure, met or not.
        for row in [
            "| Brig: boot to ssh ≤ 5 s (median) | 5.00 s | **met** |",
            "| Brig: ≥ 4× faster to ssh than Debian <baseline> (medians) | 4.1× | **met** |",
            "| Brig: memory used once ssh answers ≤ 40 MiB (median) | 32.0 MiB | **met** |",
            "| Brig: PID 1 resident memory < 2 MiB once ssh answers (median) | 1.6 MiB | **met** |",
        ] {
            assert!(md.contains(row), "{row:?} not in:\n{md}");
        }
        // The stages: the serial console's, then the network's; a stage no
        // boot saw is a dash.
        assert!(
            md.contains("| Brig | 0.50 s | 1.00 s | 2.50 s | 1.25 s | 3.75 s | 5.00 s |"),
            "{md}"
        );
        assert!(
            md.contains("| Debian <baseline> | 2.05 s | 4.10 s | — | 5.12 s | 15.38 s | 20.50 s |"),
            "{md}"
        );
        assert!(md.contains("| Debian <baseline> | 2 | 20.00 s | **20.50 s** | 21.00 s | 1.0× |"));
        // The Pi: its figures, but no ratio to Debian on another machine.
        assert!(
            md.contains("| Brig on a Pi | 2 | 90.00 s | **100.00 s** | 110.00 s | — |"),
            "{md}"
        );
        assert!(
            md.contains("| Brig on a Pi: boots and serves ssh, every boot | 2 of 2 boots reached ssh; median 100.0 s, 85.0 MiB used | **met** |"),
            "{md}"
        );
        assert!(md.contains("A boot of Debian <baseline> never reached ssh and was booted again (not in the figures): no DHCP ACK within 120s"), "{md}");
        assert!(!md.contains("A boot of Brig "));
        assert!(md.contains("| Brig | **32.0 MiB** | 33.0 MiB | `init` | **1.6 MiB** |"));
        assert!(md.contains("| Brig | 1.00 s | **1.50 s** | 2.00 s |"));
        // Only Brig has a boot log with PID 1's stamps.
        assert!(!md.contains("| Debian <baseline> | —"));
        assert!(md.contains("| kernel | 10.0 MiB | — |"));
        assert!(md.contains("| **total** | **30.0 MiB** | 50.0 MiB |"));
        assert!(
            md.contains("```\nwhat                median  vs crun\n"),
            "{md}"
        );
        assert!(
            md.contains("≤ 1/5 of `crun run`, whole commands, neither making a cgroup (medians) | 1/3.0 | **not met** |"),
            "{md}"
        );
    }

    #[test]
    fn a_pi_boot_that_stalled_counts_against_it() {
        let mut run = run();
        run.systems[2].stuck.push("no DHCP ACK within 300s".into());
        let md = markdown(&run);
        assert!(
            md.contains("| Brig on a Pi: boots and serves ssh, every boot | 2 of 3 boots reached ssh; median 100.0 s, 85.0 MiB used | **not met** |"),
            "{md}"
        );
        run.systems[2].samples.clear();
        assert!(markdown(&run).contains("| 0 of 1 boots reached ssh | **not met** |"));
    }

    #[test]
    fn the_plot_has_a_dot_per_boot_a_median_per_system_and_escaped_labels() {
        let plot = svg(&run());
        // Not the Pi's: minutes on another machine.
        assert!(!plot.contains("Brig on a Pi"));
        assert_eq!(plot.matches("<circle").count(), 5);
        assert_eq!(plot.matches("stroke=\"#c0392b\"").count(), 2);
        assert!(plot.contains("Debian &lt;baseline&gt;"));
        // Stage bars: six for Brig, five for Debian (no `ready` seen),
        // and a legend of six; the background.
        assert_eq!(plot.matches("<rect").count(), 6 + 5 + 6 + 1);
        assert!(plot.contains(">until ssh done</text>"));
        // The scale ends at the next 5 s past the slowest boot (21 s).
        assert!(plot.contains(">25 s</text>") && !plot.contains(">30 s</text>"));
    }
}
