//! `brig bench`: Brig measured side by side with what users would run
//! instead, in one run on one machine — boot to ssh and memory against
//! plain Debian with systemd and OpenSSH on the same kernel, QEMU options
//! and memory; image sizes; PID 1's start to `brig: ready`; and container
//! start latency against crun and runc (benchmarks/container-start).
//! docs/benchmarks.md says how each figure is taken.

mod baseline;
mod boot;
mod figures;
mod report;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::board::Board;
use crate::build;
use crate::disk;
use crate::progress::step;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Boots of each system (Brig with and without Docker, the baseline),
    /// taken in turn so a change in the host's load touches all alike.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub boots: u32,
    /// Boots of Brig on QEMU's Raspberry Pi 3 A+ (raspi3ap: 512 MiB, four
    /// emulated Cortex-A53 on one host thread), after the others; 0 leaves
    /// the Pi out.
    #[arg(long, default_value_t = 2)]
    pub pi_boots: u32,
    /// Starts of each container runtime in benchmarks/container-start.
    #[arg(long, default_value_t = 200)]
    pub runs: u32,
    /// Leave out the container start benchmark.
    #[arg(long)]
    pub no_container_start: bool,
    /// Working directory: builds, the baseline, logs, results.md and
    /// boot-to-ssh.svg (default: target/bench in the source tree).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Put the results into docs/benchmarks.md (between its
    /// `<!-- brig bench -->` markers) and the plot into docs/.
    #[arg(long)]
    pub write_docs: bool,
}

const BOARD: &str = "qemu-x86_64";
/// The Pi of the bench: the smallest memory Brig supports.
const PI_BOARD: &str = "rpi3";
const PI_MACHINE: &str = "raspi3ap";
/// The Pi's system in the results.
pub const PI_SYSTEM: &str = "brig-rpi3-512m";
/// A Pi boot under TCG reaches `brig: ready` in 60–100 s, its lease after.
const PI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const BEGIN: &str = "<!-- brig bench: begin -->";
const END: &str = "<!-- brig bench: end -->";
const PLOT: &str = "benchmarks-boot-to-ssh.svg";

pub fn bench(source: &Path, options: &BenchOptions) -> Result<()> {
    let work = options
        .work
        .clone()
        .unwrap_or_else(|| source.join("target/bench"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let board = Board::load(source, BOARD)?;
    let brig = std::env::current_exe().context("finding this brig program")?;

    let key = work.join("id_ed25519");
    if !key.exists() {
        crate::host_tools::run(
            Command::new(crate::host_tools::require("ssh-keygen", "openssh-client")?)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "brig-bench", "-f"])
                .arg(&key),
            "making the benchmark's ssh key",
        )?;
    }
    let public_key = std::fs::read_to_string(key.with_extension("pub"))
        .context("reading the benchmark's public key")?;
    let user_data = work.join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nssh_authorized_keys:\n  - {}\n",
            public_key.trim()
        ),
    )
    .context("writing the benchmark's user-data")?;

    // Brig as users get it (with Docker) and without Docker, the variant
    // the memory target is set for.
    let variants = [
        ("brig", "Brig, default image (with Docker)", vec![]),
        (
            "brig-without-docker",
            "Brig without Docker (`--without docker`)",
            vec!["docker".to_string()],
        ),
    ];
    // The bench makes no bundles; its images trust a key of its own.
    let release = build::Release {
        version: brig_spec::update_bundle::Version::parse(env!("CARGO_PKG_VERSION"))
            .map_err(anyhow::Error::msg)?,
        min_from: brig_spec::update_bundle::Version(0, 0, 0),
        update_key: crate::update_bundle::load(&work.join("update.key"), true)?,
        bundle: false,
    };
    // Every image the bench boots, built alike: cached images reused, no
    // bundle, the default compression.
    let build_into = |board: &Board, dir: &str, without: &[String], format, boot: u64| {
        build::build(
            source,
            board,
            &work.join(dir),
            &build::CacheUse {
                refresh: false,
                reuse_images: true,
            },
            &build::Selection {
                extra_dirs: vec![],
                without: without.to_vec(),
            },
            None,
            &build::Output {
                format,
                sizes: disk::Sizes {
                    disk: 1 << 30,
                    boot,
                    system: None,
                },
                zstd_level: None,
            },
            &release,
        )
    };
    for (dir, label, without) in &variants {
        step(&format!("building {label}"));
        build_into(&board, dir, without, disk::Format::Kernel, 64 << 20)?;
    }
    // The Pi's card as users flash it, without Docker as the memory target
    // is set.
    let pi_board = Board::load(source, PI_BOARD)?;
    if options.pi_boots > 0 {
        step("building Brig for the Raspberry Pi 3 (its card, without Docker)");
        let without = ["docker".to_string()];
        build_into(&pi_board, PI_SYSTEM, &without, disk::Format::Raw, 128 << 20)?;
    }
    let cache = crate::debian::cache_dir()?;
    let kernel = crate::debian::kernel(&cache, &board, false)?;
    let pi_kernel = match options.pi_boots {
        0 => None,
        _ => Some(crate::debian::kernel(&cache, &pi_board, false)?.release),
    };
    let baselines = [
        ("debian", baseline::Kind::CloudVm),
        ("debian-lean", baseline::Kind::Lean),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let made = baseline::make(&work.join(name), kind, &board, &kernel, public_key.trim())?;
        Ok((name, kind, made))
    })
    .collect::<Result<Vec<_>>>()?;

    let mut systems: Vec<boot::System> = variants
        .iter()
        .map(|(dir, label, _)| boot::System {
            name: dir.to_string(),
            label: label.to_string(),
            board: BOARD.into(),
            artifacts: work.join(dir),
            run_args: vec!["--user-data".into(), user_data.display().to_string()],
            baseline: false,
            card: None,
            timeout: boot::TIMEOUT,
            banner_wait: boot::BannerWait::QUICK,
        })
        .collect();
    for (name, kind, made) in &baselines {
        let mut run_args = vec!["--kernel-boot".to_string()];
        if let Some(disk) = &made.disk {
            run_args.extend([
                "--disk".into(),
                disk.display().to_string(),
                // Every boot from the same disk: writes go to a scratch file.
                "--qemu-arg=-snapshot".into(),
            ]);
        }
        systems.push(boot::System {
            name: name.to_string(),
            label: kind.label(&board.suite),
            board: BOARD.into(),
            artifacts: made.artifacts.clone(),
            run_args,
            baseline: true,
            card: None,
            timeout: boot::TIMEOUT,
            banner_wait: boot::BannerWait::QUICK,
        });
    }
    let pi = boot::System {
        name: PI_SYSTEM.into(),
        label: "Brig without Docker on a Raspberry Pi 3 A+ in 512 MiB (QEMU raspi3ap)".into(),
        board: PI_BOARD.into(),
        artifacts: work.join(PI_SYSTEM),
        run_args: vec![
            "--user-data".into(),
            user_data.display().to_string(),
            "--machine".into(),
            PI_MACHINE.into(),
        ],
        baseline: false,
        card: Some(
            work.join(PI_SYSTEM)
                .join(build::disk_image_name(&pi_board, disk::Format::Raw)),
        ),
        timeout: PI_TIMEOUT,
        banner_wait: boot::BannerWait::SLOW,
    };

    let mut results: Vec<report::SystemResult> = systems
        .iter()
        .map(|s| report::SystemResult {
            name: s.name.clone(),
            label: s.label.clone(),
            baseline: s.baseline,
            compared: true,
            samples: vec![],
            stuck: vec![],
        })
        .collect();
    let port = free_port()?;
    let ssh = boot::Ssh { key: &key, port };
    for round in 1..=options.boots {
        for (system, result) in systems.iter().zip(&mut results) {
            let sample = measure_again_if_stuck(&brig, source, system, &ssh, &work, result)?;
            say_boot(round, options.boots, system, &sample);
            result.samples.push(sample);
        }
    }
    // The Pi after the others, alone: its QEMU runs four vCPUs on one
    // thread, and another board's boots beside it would say nothing of
    // either. Not compared with Debian on x86_64. A Pi that cannot boot is
    // a result (in the table), not the end of the run.
    if options.pi_boots > 0 {
        let mut result = report::SystemResult {
            name: pi.name.clone(),
            label: pi.label.clone(),
            baseline: false,
            compared: false,
            samples: vec![],
            stuck: vec![],
        };
        for round in 1..=options.pi_boots {
            match measure_again_if_stuck(&brig, source, &pi, &ssh, &work, &mut result) {
                Ok(sample) => {
                    say_boot(round, options.pi_boots, &pi, &sample);
                    result.samples.push(sample);
                }
                Err(e) => {
                    step(&format!("{}: giving up on its boots: {e:#}", pi.name));
                    result.stuck.push(e.root_cause().to_string());
                    break;
                }
            }
        }
        results.push(result);
    }

    let container_start = if options.no_container_start {
        String::new()
    } else {
        container_start(source, options.runs)?
    };

    let images = variants
        .iter()
        .map(|(dir, label, _)| image_parts(&work.join(dir), label))
        .collect::<Result<Vec<_>>>()?;
    let run = report::Run {
        setting: setting(
            &kernel.release,
            pi_kernel.as_deref(),
            &results,
            &work.join("debian"),
            options,
        )?,
        command: "scripts/bench".into(),
        systems: results,
        images,
        container_start,
    };
    let markdown = report::markdown(&run);
    let results_file = work.join("results.md");
    std::fs::write(&results_file, &markdown)
        .with_context(|| format!("writing {}", results_file.display()))?;
    std::fs::write(work.join("boot-to-ssh.svg"), report::svg(&run)).context("writing the plot")?;
    println!("{markdown}");
    step(&format!("results in {}", results_file.display()));
    if options.write_docs {
        let docs = source.join("docs/benchmarks.md");
        let text = std::fs::read_to_string(&docs)
            .with_context(|| format!("reading {}", docs.display()))?;
        let text = replace_between(&text, BEGIN, END, &markdown)
            .with_context(|| format!("{} has no {BEGIN} … {END} markers", docs.display()))?;
        std::fs::write(&docs, text).with_context(|| format!("writing {}", docs.display()))?;
        std::fs::write(source.join("docs").join(PLOT), report::svg(&run))
            .context("writing the plot into docs/")?;
        step(&format!("written into {} and docs/{PLOT}", docs.display()));
    }
    Ok(())
}

/// One boot's figures, as a progress line.
fn say_boot(round: u32, boots: u32, system: &boot::System, sample: &boot::Sample) {
    step(&format!(
        "boot {round}/{boots}: {}: {}DHCP ACK {:.2} s, sshd banner {:.2} s, ssh after {:.2} s, {} KiB used, PID 1 {} KiB{}",
        system.name,
        figures::SERIAL_STAGES
            .iter()
            .zip(&sample.serial_stages)
            .map(|((name, _), at)| match at {
                Some(at) => format!("{name} {:.2} s, ", at.as_secs_f64()),
                None => format!("{name} not seen, "),
            })
            .collect::<String>(),
        sample.to_dhcp_ack.as_secs_f64(),
        sample.to_banner.as_secs_f64(),
        sample.to_ssh.as_secs_f64(),
        sample.memory.used_kib,
        sample.pid1_resident_kib,
        sample
            .pid1_to_ready
            .map(|d| format!(", PID 1 to ready {:.2} s", d.as_secs_f64()))
            .unwrap_or_default()
    ));
}

/// A port on 127.0.0.1 nothing listens on now, for ssh's forwarding.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The machine, versions and date of this run.
fn setting(
    kernel: &str,
    pi_kernel: Option<&str>,
    results: &[report::SystemResult],
    baseline: &Path,
    options: &BenchOptions,
) -> Result<Vec<String>> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "?".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib as f64 / 1048576.0))
        })
        .unwrap_or_else(|| "?".into());
    let first_line = |program: &str, arg: &str| -> String {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.lines().next().map(str::to_string))
            .unwrap_or_else(|| format!("{program}: ?"))
    };
    let date = first_line("date", "--utc");
    let accel = results
        .first()
        .and_then(|r| r.samples.first())
        .map_or("?", |s| s.accel.as_str());
    let versions = std::fs::read_to_string(baseline.join("versions")).unwrap_or_default();
    let mut lines = vec![
        format!("date: {date}"),
        format!("host: {cpu}, {cores} cores, {memory} RAM"),
        format!(
            "QEMU: {} ({accel}), the qemu-x86_64 profile (q35, 2 vCPUs, 1 GiB) for every system but the Pi, the kernel loaded uncompressed (PVH)",
            first_line("qemu-system-x86_64", "--version")
        ),
        format!("kernel: Debian's {kernel} for every system but the Pi"),
        format!(
            "baseline packages: {}",
            versions
                .split_whitespace()
                .collect::<Vec<_>>()
                .chunks(2)
                .map(|p| p.join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "{} boots of each system, in turn; container start: {} runs of each runtime",
            options.boots, options.runs
        ),
    ];
    if let Some(pi_kernel) = pi_kernel {
        lines.push(format!(
            "the Pi: QEMU's raspi3ap (Raspberry Pi 3 A+: 512 MiB, four Cortex-A53 emulated on one host thread), \
             Debian's {pi_kernel}, booted from a fresh copy of its card through U-Boot, {} boots after the others, \
             each a first boot",
            options.pi_boots
        ));
    }
    Ok(lines)
}

/// Boots that did not reach ssh a system may have before the run gives up.
const STUCK_BOOTS_ALLOWED: usize = 2;

/// One boot of `system`, measured; a boot that never reaches ssh (a TCG
/// guest now and then stalls with a vCPU's timer lost) is noted in
/// `result.stuck` with its serial log kept, and booted again.
fn measure_again_if_stuck(
    brig: &Path,
    source: &Path,
    system: &boot::System,
    ssh: &boot::Ssh,
    work: &Path,
    result: &mut report::SystemResult,
) -> Result<boot::Sample> {
    loop {
        match boot::measure(brig, source, system, ssh, work) {
            Ok(sample) => return Ok(sample),
            Err(e) if result.stuck.len() < STUCK_BOOTS_ALLOWED => {
                let kept = work.join(format!(
                    "{}-stuck-{}-serial.log",
                    system.name,
                    result.stuck.len() + 1
                ));
                let _ = std::fs::rename(boot::serial_log(work, system), &kept);
                step(&format!(
                    "{}: a boot did not reach ssh, booting again: {e:#} (serial log kept as {})",
                    system.name,
                    kept.display()
                ));
                result.stuck.push(e.root_cause().to_string());
            }
            Err(e) => return Err(e),
        }
    }
}

/// benchmarks/container-start's tables (from the line that heads them).
fn container_start(source: &Path, runs: u32) -> Result<String> {
    step("container start latency: benchmarks/container-start");
    let output = Command::new(source.join("benchmarks/container-start"))
        .env("RUNS", runs.to_string())
        .current_dir(source)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running benchmarks/container-start")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "benchmarks/container-start failed ({}):\n{text}",
            output.status
        );
    }
    Ok(text
        .find("\nwhat ")
        .map_or(&*text, |at| &text[at + 1..])
        .to_string())
}

/// A build's parts from its manifest, each container's unpacked size from
/// its squashfs listing.
fn image_parts(artifacts: &Path, label: &str) -> Result<report::Image> {
    let manifest_path = artifacts.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let containers = manifest["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let container_bytes: u64 = containers.iter().map(|c| number(&c["size"])).sum();
    let unsquashfs = crate::host_tools::require("unsquashfs", "squashfs-tools")?;
    let mut parts = vec![(
        "kernel (`vmlinuz`, compressed by itself)".to_string(),
        number(&manifest["kernel"]["vmlinuz_size"]),
        None,
    )];
    // The initramfs: PID 1, modules and config in a zstd cpio. The
    // container images are on the system disk (a kernel build's
    // `system.img`), each a zstd squashfs.
    let initramfs = number(&manifest["initramfs"]["size"]);
    let compressed = number(&manifest["initramfs"]["compressed_size"]);
    let stored = initramfs.saturating_sub(compressed);
    parts.push((
        "initramfs: PID 1, kernel modules, config (zstd)".to_string(),
        compressed,
        Some(number(&manifest["initramfs"]["uncompressed_size"]).saturating_sub(stored)),
    ));
    let system_disk = number(&manifest["system_disk"]["size"]);
    parts.push((
        "system disk: its table, the container specs, free space".to_string(),
        system_disk.saturating_sub(container_bytes),
        None,
    ));
    for container in &containers {
        let name = container["name"].as_str().unwrap_or("?");
        let image = artifacts
            .join("containers")
            .join(format!("{name}.squashfs"));
        let listing = crate::host_tools::run(
            Command::new(&unsquashfs).arg("-lln").arg(&image),
            &format!("listing {}", image.display()),
        )?;
        parts.push((
            format!("system disk: container `{name}` (squashfs, zstd)"),
            number(&container["size"]),
            Some(figures::regular_file_bytes(&String::from_utf8_lossy(
                &listing.stdout,
            ))),
        ));
    }
    Ok(report::Image {
        label: label.to_string(),
        parts,
    })
}

/// `text` with what lies between the `begin` and `end` lines replaced.
fn replace_between(text: &str, begin: &str, end: &str, with: &str) -> Option<String> {
    let start = text.find(begin)? + begin.len();
    let stop = start + text[start..].find(end)?;
    Some(format!(
        "{}\n{}\n{}",
        &text[..start],
        with.trim_end(),
        &text[stop..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_replace_only_what_lies_between_the_markers() {
        let doc = format!("intro\n{BEGIN}\nold results\n{END}\nafter\n");
        assert_eq!(
            replace_between(&doc, BEGIN, END, "new\n").unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        assert_eq!(replace_between("no markers", BEGIN, END, "x"), None);
    }
}
