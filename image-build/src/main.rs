//! `brig`: builds Brig images and boots them in QEMU.

mod bench;
mod board;
mod boot_partition;
mod build;
mod bundle_server;
mod containers;
mod debian;
mod disk;
mod flash;
mod hash;
mod host_tools;
mod initramfs;
mod keep;
mod kernel_config;
mod kernel_modules;
mod progress;
mod pvh;
mod qemu;
mod raspberry_pi;
mod seed;
mod update_bundle;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::board::Board;

#[derive(Parser)]
#[command(
    name = "brig",
    version,
    about = "Build Brig images and boot them in QEMU"
)]
struct Cli {
    /// The Brig source tree (with boards/, kernel-config/, qemu/); found from
    /// the current directory by default.
    #[arg(long, global = true)]
    source: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build a board's kernel and initramfs into out/BOARD/.
    Build {
        #[arg(long, default_value = "qemu-x86_64")]
        board: String,
        /// Output directory (default: out/BOARD in the source tree).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fetch the kernel package again even if it is cached.
        #[arg(long)]
        refresh: bool,
        /// Pack every system container image afresh, rather than reuse the
        /// cached one made from the same inputs.
        #[arg(long)]
        rebuild_images: bool,
        /// A further directory of service specs (`<dir>/<name>/service.toml`)
        /// to build into the image, besides system-containers/.
        #[arg(long = "services", value_name = "DIR")]
        services: Vec<PathBuf>,
        /// Leave this system container out of the image (e.g. `docker`, for
        /// a smaller image), and what depends on it; repeatable.
        #[arg(long = "without", value_name = "SERVICE")]
        without: Vec<String>,
        /// cloud-init user data baked into the image as its default config:
        /// a datasource's config merges over it (docs/config.md).
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        /// What to make: kernel, small initramfs and a read-only system
        /// disk; a UEFI disk image (raw or qcow2) with boot, system and (on
        /// first boot) state partitions; or netboot: kernel and one
        /// initramfs holding everything, run from RAM. Default: the board's
        /// (kernel for the QEMU boards, raw for PCs and Pis).
        #[arg(long, value_enum)]
        format: Option<disk::Format>,
        /// Disk image size; what the partitions leave becomes the state
        /// partition on first boot, grown to fill a larger disk.
        #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = disk::parse_size)]
        disk_size: u64,
        /// Size of the boot partition (default 64M; 128M on the Pis, whose
        /// two kernels are larger).
        #[arg(long, value_name = "SIZE", value_parser = disk::parse_size)]
        boot_size: Option<u64>,
        /// Size of the system partition (default: twice the system image,
        /// at least 256M).
        #[arg(long, value_name = "SIZE", value_parser = disk::parse_size)]
        system_size: Option<u64>,
        /// zstd's level for the initramfs and the container images, from 1
        /// (fastest) to 19 (smallest); default 19 for the initramfs and 15
        /// for the images. The tests build with 3.
        #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(1..=19))]
        zstd_level: Option<u8>,
        /// The version this image says it is (MAJOR.MINOR.PATCH; default:
        /// brig's own): what updates compare.
        #[arg(long, value_name = "VERSION", value_parser = brig_spec::update_bundle::Version::parse)]
        os_version: Option<brig_spec::update_bundle::Version>,
        /// The key update bundles are signed with; the image takes only
        /// bundles it signed (default: ~/.config/brig/update.key, made by
        /// the first build).
        #[arg(long, value_name = "FILE")]
        update_key: Option<PathBuf>,
        /// Also write a signed update bundle, brig-BOARD-VERSION.bundle,
        /// for `brigctl os upgrade` on machines running an older version.
        #[arg(long)]
        bundle: bool,
        /// The oldest version the bundle may update (default 0.0.0: any).
        #[arg(long, value_name = "VERSION", default_value = "0.0.0", value_parser = brig_spec::update_bundle::Version::parse)]
        min_from: brig_spec::update_bundle::Version,
        /// A word added to the board's kernel command line (its boot entry,
        /// cmdline.txt and the bundle's), e.g. `quiet` or
        /// `module_blacklist=btusb`; repeatable.
        #[arg(long = "kernel-arg", value_name = "WORD", value_parser = board::kernel_arg)]
        kernel_args: Vec<String>,
    },
    /// Make an update signing key pair: FILE (secret, mode 0600) and the
    /// public half beside it (.pub), for `brig build --update-key FILE`.
    Keygen {
        /// Where the secret key goes (default: ~/.config/brig/update.key).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Update bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Boot a built board in QEMU.
    Run {
        #[arg(long, default_value = "qemu-x86_64")]
        board: String,
        /// Directory of the built artifacts (default: out/BOARD).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        options: qemu::RunOptions,
    },
    /// Say whether `brig run` would use KVM or TCG software emulation for a
    /// board here, and why (KVM only when a probe boot of its built kernel
    /// works).
    Accel {
        #[arg(long, default_value = "qemu-x86_64")]
        board: String,
        /// Directory of the built artifacts (default: out/BOARD).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        options: qemu::RunOptions,
    },
    /// Write a board's card image onto an SD card (or a disk, or a file).
    Flash {
        #[arg(long, default_value = "rpi4")]
        board: String,
        /// Directory of the built artifacts (default: out/BOARD).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        options: flash::FlashOptions,
    },
    /// Measure Brig against plain Debian (systemd, OpenSSH) on the same
    /// kernel: boot to ssh, memory, image sizes, container start
    /// (docs/benchmarks.md).
    Bench {
        #[command(flatten)]
        options: bench::BenchOptions,
    },
    /// List the boards.
    Boards,
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Read a whole bundle as a machine would: its signature, manifest and
    /// every part's hash; print the manifest.
    Check {
        bundle: PathBuf,
        /// The public key machines have (default: the .pub beside the
        /// default update key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Serve the bundles in DIR over HTTP, for `brigctl os upgrade
    /// http://…` and `brig.update.url` (plain HTTP: bundles are signed).
    Serve {
        dir: PathBuf,
        /// The address to listen on; 0.0.0.0 for machines on the network.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("brig: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let source = match cli.source {
        Some(dir) => dir,
        None => find_source()?,
    };
    match cli.command {
        Commands::Build {
            board,
            out,
            refresh,
            rebuild_images,
            services,
            without,
            user_data,
            format,
            disk_size,
            boot_size,
            system_size,
            zstd_level,
            os_version,
            update_key,
            bundle,
            min_from,
            kernel_args,
        } => {
            let mut board = Board::load(&source, &board)?;
            board.cmdline.extend(kernel_args);
            let version = match os_version {
                Some(v) => v,
                None => brig_spec::update_bundle::Version::parse(env!("CARGO_PKG_VERSION"))
                    .map_err(anyhow::Error::msg)?,
            };
            let release = build::Release {
                version,
                min_from,
                update_key: match update_key {
                    Some(path) => update_bundle::load(&path, false)?,
                    None => update_bundle::load(&update_bundle::default_key_path()?, true)?,
                },
                bundle,
            };
            let out = out.unwrap_or_else(|| source.join("out").join(&board.name));
            let output = build::Output {
                format: format.unwrap_or(board.default_format),
                sizes: disk::Sizes {
                    disk: disk_size,
                    boot: boot_size.unwrap_or(if board.raspberry_pi.is_some() {
                        128 << 20
                    } else {
                        64 << 20
                    }),
                    system: system_size,
                },
                zstd_level,
            };
            build::build(
                &source,
                &board,
                &out,
                &build::CacheUse {
                    refresh,
                    reuse_images: !rebuild_images,
                },
                &build::Selection {
                    extra_dirs: services,
                    without,
                },
                user_data.as_deref(),
                &output,
                &release,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Keygen { out } => {
            let path = match out {
                Some(path) => path,
                None => update_bundle::default_key_path()?,
            };
            update_bundle::keygen(&path)?;
            println!(
                "secret key {} (keep it safe), public key {}",
                path.display(),
                update_bundle::public_path(&path).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Commands::Bundle(BundleCommand::Serve { dir, bind, port }) => {
            let listener = std::net::TcpListener::bind((bind.as_str(), port))
                .map_err(|e| anyhow::anyhow!("listening on {bind}:{port}: {e}"))?;
            let bundles = std::fs::read_dir(&dir)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".bundle"))
                .count();
            // The first line says it listens (tests wait for it).
            println!(
                "serving {} ({bundles} bundles) on http://{}/",
                dir.display(),
                listener.local_addr()?
            );
            bundle_server::serve(&dir, listener)?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Bundle(BundleCommand::Check { bundle, key }) => {
            let key = match key {
                Some(path) => path,
                None => update_bundle::public_path(&update_bundle::default_key_path()?),
            };
            let manifest = update_bundle::check(&bundle, &key)?;
            println!("{}", manifest.to_json());
            println!("{}: signature and every part check", bundle.display());
            Ok(ExitCode::SUCCESS)
        }
        Commands::Run {
            board,
            out,
            options,
        } => {
            let board = Board::load(&source, &board)?;
            let out = out.unwrap_or_else(|| source.join("out").join(&board.name));
            let status = qemu::run(&source, &board, &out, &options)?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Commands::Accel {
            board,
            out,
            options,
        } => {
            let board = Board::load(&source, &board)?;
            let out = out.unwrap_or_else(|| source.join("out").join(&board.name));
            println!("{}", qemu::describe_accel(&source, &board, &out, &options)?);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Flash {
            board,
            out,
            options,
        } => {
            let board = Board::load(&source, &board)?;
            let out = out.unwrap_or_else(|| source.join("out").join(&board.name));
            flash::flash(&options, qemu::built_disk(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Bench { options } => {
            bench::bench(&source, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Boards => {
            for name in board::list(&source)? {
                let board = Board::load(&source, &name)?;
                println!(
                    "{name:16} {:8} {}",
                    board.arch.to_string(),
                    board.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The nearest directory upwards from here with boards/ and kernel-config/.
fn find_source() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        if is_source(dir) {
            return Ok(dir.to_path_buf());
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_source(&built_from) {
        return Ok(built_from);
    }
    bail!(
        "not inside a Brig source tree (no boards/ and kernel-config/ above {}); use --source",
        cwd.display()
    )
}

fn is_source(dir: &Path) -> bool {
    dir.join("boards").is_dir() && dir.join("kernel-config").is_dir()
}
