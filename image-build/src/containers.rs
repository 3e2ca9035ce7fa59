//! System container images: each service's rootfs (Debian packages for the
//! board's arch, our cross-built binaries, files from its directory) packed
//! into one zstd squashfs.
//!
//! Packages are fetched with mmdebstrap's extract variant (signed archive,
//! nothing executed, so any arch works without emulation), trimmed (docs, man
//! pages, locales) and cached as a tarball keyed by suite, arch and package
//! list, so rebuilds are offline and fast. That tar, minus the paths our own
//! files replace, plus our files, is streamed into tar2sqfs, which keeps
//! ownership without root; all timestamps are SOURCE_DATE_EPOCH, so the same
//! inputs give the same image.
//!
//! Longer than 600 lines because the rootfs of one container is one
//! pipeline (packages, trim, cache, overlay of our files, squashfs) whose
//! stages hand each other streams; its tests are in containers/tests.rs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use brig_spec::service::ServiceSpec;

use crate::board::Board;
use crate::hash::fnv1a;
use crate::host_tools;
use crate::keep::{self, Node};
use crate::progress::step;

/// Where the cached package tar holds each package's file list (not put
/// into images).
const PACKAGE_LISTS: &str = ".brig-packages";

/// What is left out of every rootfs.
const TRIM: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "var/cache/apt",
    "var/lib/apt/lists",
];

/// A service found in a services directory, with where it came from.
#[derive(Debug)]
pub struct ServiceSource {
    pub spec: ServiceSpec,
    pub dir: PathBuf,
    /// The spec file's text, shipped next to the image for PID 1.
    pub text: String,
}

/// `services` without those named in `without` (`brig build --without`),
/// and without what depends on them, which could not start: returns the
/// rest, and the names left out that way. Naming a service that is not
/// there is an error.
pub fn leave_out(
    services: Vec<ServiceSource>,
    without: &[String],
) -> Result<(Vec<ServiceSource>, Vec<String>)> {
    for name in without {
        if !services.iter().any(|s| &s.spec.name == name) {
            let names: Vec<&str> = services.iter().map(|s| s.spec.name.as_str()).collect();
            bail!(
                "--without {name}: there is no such service (there are: {})",
                names.join(", ")
            );
        }
    }
    let mut gone: Vec<String> = without.to_vec();
    let mut dependents = Vec::new();
    loop {
        let more: Vec<String> = services
            .iter()
            .filter(|s| !gone.contains(&s.spec.name))
            .filter(|s| s.spec.depends_on.iter().any(|d| gone.contains(d)))
            .map(|s| s.spec.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        dependents.extend(more.iter().cloned());
        gone.extend(more);
    }
    let kept = services
        .into_iter()
        .filter(|s| !gone.contains(&s.spec.name))
        .collect();
    Ok((kept, dependents))
}

/// Adds each service's `rootfs.packages_with` lists to its packages where
/// the image has the service they are keyed by (so a console built without
/// the docker container carries no Docker CLI).
pub fn add_packages_with(services: &mut [ServiceSource]) {
    let names: Vec<String> = services.iter().map(|s| s.spec.name.clone()).collect();
    for service in services {
        let rootfs = &mut service.spec.rootfs;
        for (with, packages) in &rootfs.packages_with {
            if names.contains(with) {
                rootfs.packages.extend(packages.iter().cloned());
            }
        }
    }
}

/// Every `<dir>/<name>/service.toml` below `dirs`; an invalid spec fails the
/// build with the file, key and problem.
pub fn discover(dirs: &[PathBuf]) -> Result<Vec<ServiceSource>> {
    let mut found: BTreeMap<String, ServiceSource> = BTreeMap::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading services directory {}", dir.display()))?;
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("service.toml").is_file())
            .collect();
        names.sort();
        for service_dir in names {
            let name = service_dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let file = service_dir.join("service.toml");
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec = ServiceSpec::parse(&name, &text)
                .map_err(|problem| anyhow!("{}: {problem}", file.display()))?;
            if spec.rootfs.image.is_some() {
                bail!("{}: `rootfs.image` is for services added on the device; built-in services list packages, binaries or files", file.display());
            }
            if let Some(other) = found.get(&name) {
                bail!(
                    "service {name:?} is defined twice: {} and {}",
                    other.dir.display(),
                    service_dir.display()
                );
            }
            found.insert(
                name,
                ServiceSource {
                    spec,
                    dir: service_dir,
                    text,
                },
            );
        }
    }
    for service in found.values() {
        if let Some(unknown) =
            (service.spec.rootfs.packages_with.keys()).find(|k| !found.contains_key(*k))
        {
            bail!(
                "{}: `rootfs.packages_with.{unknown}`: there is no service {unknown:?} (there are: {})",
                service.dir.join("service.toml").display(),
                found.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(found.into_values().filter(|s| s.spec.enabled).collect())
}

/// Where packed images are kept for reuse, and whether to reuse them
/// (`brig build --rebuild-images` packs every image afresh).
pub struct ImageCache {
    pub dir: PathBuf,
    pub reuse: bool,
}

/// How many packed images of one service the cache keeps (several image
/// variants built in turn share them).
const CACHED_PER_SERVICE: usize = 3;

/// zstd's level for the images' squashfs blocks. 15 is the knee: on the
/// docker rootfs (255 MiB) level 19 took 67 s and gave 80.8 MiB, 15 took
/// 23 s for 81.4 MiB (+0.8%), 12 took 10 s for 86.2 MiB.
pub const SQUASHFS_ZSTD_LEVEL: u32 = 15;

/// The images' squashfs block size. Debian's kernel keeps one zstd
/// decompressor per CPU for each mounted squashfs, sized by the block:
/// 608 KiB each at squashfs' default of 128 KiB, so 7.3 MiB for six
/// images on two vCPUs. 64 KiB blocks halve the buffers in it.
pub const SQUASHFS_BLOCK_SIZE: u32 = 64 * 1024;

/// Builds `service`'s squashfs at `out` (zstd at `zstd_level`), or copies
/// the one `images` holds for the same inputs; says which. `binaries` maps
/// a binary name to its cross-built file.
#[allow(clippy::too_many_arguments)]
pub fn build_image(
    service: &ServiceSource,
    board: &Board,
    cache: &Path,
    images: &ImageCache,
    binaries: &BTreeMap<String, PathBuf>,
    mtime: u32,
    zstd_level: u32,
    out: &Path,
) -> Result<Packed> {
    let spec = &service.spec;
    // Our files, by path in the rootfs (without leading /): (mode, bytes).
    let mut ours: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    for name in &spec.rootfs.binaries {
        let path = binaries
            .get(name)
            .with_context(|| format!("service {}: binary {name} was not built", spec.name))?;
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        ours.insert(format!("usr/bin/{name}"), (0o755, data));
    }
    for (target, source) in &spec.rootfs.files {
        let path = service.dir.join(source);
        let data = std::fs::read(&path)
            .with_context(|| format!("service {}: reading file {}", spec.name, path.display()))?;
        ours.insert(
            target.trim_start_matches('/').to_string(),
            (mode_of(&path), data),
        );
    }
    let packages = if spec.rootfs.packages.is_empty() {
        None
    } else {
        Some(package_tar(cache, board, &spec.rootfs.packages)?)
    };

    let key = image_key(
        &service.text,
        packages.as_deref(),
        &ours,
        mtime,
        zstd_level,
        board.arch.debian(),
    )?;
    let cached = images
        .dir
        .join(format!("{}-{key:016x}.squashfs", spec.name));
    // Made under another name and renamed when whole: a failed build never
    // leaves a truncated image where the last good one was.
    let partial = out.with_extension("partial");
    if images.reuse && cached.exists() {
        std::fs::copy(&cached, &partial)
            .with_context(|| format!("copying {} from the cache", cached.display()))?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("moving {} into place", out.display()))?;
        return Ok(Packed::Reused);
    }
    let tar2sqfs = host_tools::require("tar2sqfs", "squashfs-tools-ng")?;
    let mut child = Command::new(tar2sqfs)
        .args([
            "--quiet",
            "--force",
            "--no-skip",
            "--no-keep-time",
            "--compressor",
            "zstd",
            "--comp-extra",
            &format!("level={zstd_level}"),
            "--block-size",
            &SQUASHFS_BLOCK_SIZE.to_string(),
        ])
        .args([
            "--defaults",
            &format!("uid=0,gid=0,mode=0755,mtime={mtime}"),
        ])
        .arg(&partial)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting tar2sqfs")?;
    let stdin = child.stdin.take().context("tar2sqfs stdin")?;
    let selection = Selection {
        keep: &spec.rootfs.keep,
        drop: &spec.rootfs.drop,
        triplet: board.arch.multiarch(),
    };
    let written = write_tar(stdin, packages.as_deref(), &selection, &ours, mtime);
    let status = child.wait().context("waiting for tar2sqfs")?;
    let finished = written
        .with_context(|| format!("streaming the rootfs of {} into tar2sqfs", spec.name))
        .and_then(|()| match status.success() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(
                "tar2sqfs failed for {} ({status})",
                spec.name
            )),
        });
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    // A cache that cannot be written only makes the next build slower.
    if let Err(e) = keep_in_cache(out, &cached, &spec.name) {
        step(&format!(
            "warning: not caching the image of {}: {e:#}",
            spec.name
        ));
    }
    Ok(Packed::Built)
}

/// Whether `build_image` packed the image or reused a cached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    Built,
    Reused,
}

/// What an image is made of, hashed: this `brig` program (so a change to
/// how images are packed never reuses an old one), the spec, the package
/// tar (its name is a hash of the package list; it is never rewritten),
/// our files, the timestamp, the zstd level and the board's arch.
fn image_key(
    spec_text: &str,
    packages: Option<&Path>,
    ours: &BTreeMap<String, (u32, Vec<u8>)>,
    mtime: u32,
    zstd_level: u32,
    arch: &str,
) -> Result<u64> {
    let exe = std::env::current_exe().context("finding this program, for the image cache")?;
    let exe_meta = std::fs::metadata(&exe)
        .with_context(|| format!("reading the metadata of {}", exe.display()))?;
    let mut key = Vec::new();
    key.extend_from_slice(
        format!("{}\0{:?}\0", exe_meta.len(), exe_meta.modified().ok()).as_bytes(),
    );
    key.extend_from_slice(spec_text.as_bytes());
    if let Some(tar) = packages {
        let len = std::fs::metadata(tar)
            .with_context(|| format!("reading the metadata of {}", tar.display()))?
            .len();
        key.extend_from_slice(format!("\0{}\0{len}", tar.display()).as_bytes());
    }
    let mut hash = fnv1a(&key);
    for (path, (mode, data)) in ours {
        hash ^= fnv1a(format!("\0{path}\0{mode}\0").as_bytes());
        hash = hash.rotate_left(17) ^ fnv1a(data);
    }
    Ok(hash ^ fnv1a(format!("{mtime} {zstd_level} {arch}").as_bytes()))
}

/// Copies a freshly packed image into the cache, leaving only the newest
/// few of that service there.
fn keep_in_cache(image: &Path, cached: &Path, name: &str) -> Result<()> {
    let dir = cached.parent().context("the image cache directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Per process, as the package tars: two builds at once each finish
    // their own, and the rename is atomic.
    let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
    std::fs::copy(image, &partial)
        .with_context(|| format!("copying {} to {}", image.display(), partial.display()))?;
    std::fs::rename(&partial, cached)
        .with_context(|| format!("moving {} into place", cached.display()))?;
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| {
                    rest.len() == 16 + ".squashfs".len() && rest.ends_with(".squashfs")
                })
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kept.sort();
    let surplus = kept.len().saturating_sub(CACHED_PER_SERVICE);
    for (_, old) in kept.into_iter().take(surplus) {
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| {
            if m.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        })
        .unwrap_or(0o644)
}

/// Which of the packages' paths go into the image (`rootfs.keep`, `rootfs.drop`).
struct Selection<'a> {
    keep: &'a [String],
    drop: &'a [String],
    /// The multiarch directory, where the loader looks for libraries.
    triplet: &'a str,
}

/// The package tar's entries (except those ours replace; with `keep`, only
/// the paths it keeps and needs, see keep.rs; without those `drop` names),
/// then ours.
fn write_tar(
    to: impl Write,
    packages: Option<&Path>,
    selection: &Selection,
    ours: &BTreeMap<String, (u32, Vec<u8>)>,
    mtime: u32,
) -> Result<()> {
    let mut out = tar::Builder::new(to);
    if let Some(path) = packages {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut entries = Vec::new();
        let mut package_files = BTreeMap::new();
        for entry in tar::Archive::new(file).entries()? {
            let mut entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if path.is_empty() || ours.contains_key(&path) {
                continue;
            }
            if let Some(name) = path.strip_prefix(&format!("{PACKAGE_LISTS}/")) {
                let mut list = String::new();
                std::io::Read::read_to_string(&mut entry, &mut list)?;
                if let Some(package) = name.strip_suffix(".list") {
                    package_files.insert(package.to_string(), list);
                }
                continue;
            }
            if path == PACKAGE_LISTS {
                continue;
            }
            // From the entry, not its header: names past 100 bytes live in
            // GNU extension entries the header does not carry.
            let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            entries.push(PackageEntry {
                path,
                header: entry.header().clone(),
                link,
                data,
            });
        }
        // mmdebstrap's extract variant does not merge /usr: trixie's
        // packages ship everything under /usr, and programs expect the
        // loader at /lib64 or /lib.
        for dir in ["bin", "sbin", "lib", "lib64"] {
            let usr = format!("usr/{dir}");
            let has = |p: &str| entries.iter().any(|e| e.path == p);
            if !has(dir) && has(&usr) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                header.set_mtime(mtime.into());
                entries.push(PackageEntry {
                    path: dir.to_string(),
                    header,
                    link: Some(usr),
                    data: Vec::new(),
                });
            }
        }
        if let Some(bundle) = ca_bundle(&entries, mtime) {
            entries.push(bundle);
        }
        if !selection.drop.is_empty() {
            let dropped = keep::dropped_files(selection.drop, &package_files)?;
            let is_dropped = |e: &PackageEntry| {
                dropped.contains(&e.path) || keep::dropped(selection.drop, &e.path)
            };
            // What is left must still run: every program's libraries and
            // every hard link's target are still there, unless they were
            // missing before (plugins whose loader finds their libraries
            // itself, such as glibc's gconv modules).
            {
                let after = tree_of(entries.iter().filter(|e| !is_dropped(e)));
                let files: Vec<String> = entries
                    .iter()
                    .filter(|e| {
                        !is_dropped(e)
                            && matches!(
                                e.header.entry_type(),
                                tar::EntryType::Regular | tar::EntryType::Link
                            )
                    })
                    .map(|e| format!("/{}", e.path))
                    .collect();
                let check = |tree: &BTreeMap<String, Node>, files: &[String]| {
                    keep::closure(tree, files, selection.triplet, "a file left in")
                };
                if check(&after, &files).is_err() {
                    let before = tree_of(&entries);
                    for file in files.chunks(1) {
                        if check(&before, file).is_ok() {
                            check(&after, file)
                                .context("rootfs.drop left out something that is still needed")?;
                        }
                    }
                }
            }
            entries.retain(|e| !is_dropped(e));
        }
        let kept = match selection.keep {
            [] => None,
            paths => Some(keep::closure(
                &tree_of(&entries),
                paths,
                selection.triplet,
                "rootfs.keep",
            )?),
        };
        for e in &entries {
            if !kept.as_ref().is_none_or(|k| k.contains(&e.path)) {
                continue;
            }
            let mut header = e.header.clone();
            match &e.link {
                Some(target) => out.append_link(&mut header, &e.path, target)?,
                None => out.append_data(&mut header, &e.path, e.data.as_slice())?,
            }
        }
    }
    for (path, (mode, data)) in ours {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime.into());
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, path, data.as_slice())?;
    }
    out.into_inner()?.flush()?;
    Ok(())
}

/// An entry of the cached package tar, read into memory.
struct PackageEntry {
    path: String,
    header: tar::Header,
    /// Symlink or hard link target.
    link: Option<String>,
    data: Vec<u8>,
}

/// ca-certificates' bundle, which its maintainer script would make (the
/// packages are unpacked, not installed): every certificate it ships, in
/// name order, at the path OpenSSL and curl read.
fn ca_bundle(entries: &[PackageEntry], mtime: u32) -> Option<PackageEntry> {
    const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
    if entries.iter().any(|e| e.path == BUNDLE) {
        return None;
    }
    let mut certs: Vec<&PackageEntry> = entries
        .iter()
        .filter(|e| {
            e.path.starts_with("usr/share/ca-certificates/")
                && e.path.ends_with(".crt")
                && e.header.entry_type() == tar::EntryType::Regular
        })
        .collect();
    if certs.is_empty() {
        return None;
    }
    certs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut data = Vec::new();
    for cert in certs {
        data.extend_from_slice(&cert.data);
        if !data.ends_with(b"\n") {
            data.push(b'\n');
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime.into());
    Some(PackageEntry {
        path: BUNDLE.into(),
        header,
        link: None,
        data,
    })
}

/// The package tar as a tree for keep::closure.
fn tree_of<'a>(entries: impl IntoIterator<Item = &'a PackageEntry>) -> BTreeMap<String, Node<'a>> {
    entries
        .into_iter()
        .map(|e| {
            let node = match (e.header.entry_type(), &e.link) {
                (tar::EntryType::Directory, _) => Node::Dir,
                // A hard link names its target from the root.
                (tar::EntryType::Link, Some(l)) => {
                    Node::Symlink(format!("/{}", l.trim_start_matches("./")))
                }
                (_, Some(l)) => Node::Symlink(l.clone()),
                _ => Node::File(&e.data),
            };
            (e.path.clone(), node)
        })
        .collect()
}

/// The cached, trimmed tarball of `packages` for the board's arch and suite;
/// fetched with mmdebstrap when missing.
fn package_tar(cache: &Path, board: &Board, packages: &[String]) -> Result<PathBuf> {
    let mut sorted = packages.to_vec();
    sorted.sort();
    sorted.dedup();
    // v2: with the package file lists.
    let key = format!(
        "v2-{}-{}-{:016x}",
        board.suite,
        board.arch.debian(),
        fnv1a(sorted.join(" ").as_bytes())
    );
    let dir = cache.join("rootfs");
    let tar = dir.join(format!("{key}.tar"));
    if tar.exists() {
        return Ok(tar);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mmdebstrap = host_tools::require("mmdebstrap", "mmdebstrap")?;
    step(&format!(
        "rootfs: fetching {} ({} {}) with mmdebstrap",
        sorted.join(" "),
        board.suite,
        board.arch.debian()
    ));
    // Named by this process: two builds filling the cache at once (two
    // boards, two test threads) each finish their own, and the rename of
    // a whole file into place is atomic.
    let partial = dir.join(format!("{key}.partial-{}.tar", std::process::id()));
    let trim: Vec<String> = TRIM.iter().map(|p| format!("\"$1\"/{p}")).collect();
    // Each package's file list, for `rootfs.drop` by package name.
    let lists = format!(
        "mkdir \"$1\"/{PACKAGE_LISTS} && for deb in \"$1\"/var/cache/apt/archives/*.deb; do \
         dpkg-deb --fsys-tarfile \"$deb\" | tar -t > \"$1\"/{PACKAGE_LISTS}/$(dpkg-deb --field \"$deb\" Package).list || exit 1; done"
    );
    let status = Command::new(mmdebstrap)
        .args(["--variant=extract", "--format=tar"])
        .arg(format!("--architectures={}", board.arch.debian()))
        .arg(format!("--include={}", sorted.join(",")))
        .arg(format!("--extract-hook={lists}"))
        .arg(format!("--extract-hook=rm -rf {}", trim.join(" ")))
        .arg(&board.suite)
        .arg(&partial)
        .status()
        .context("running mmdebstrap")?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "mmdebstrap could not fetch {} for {} ({status})",
            sorted.join(" "),
            board.arch.debian()
        );
    }
    std::fs::write(
        dir.join(format!("{key}.packages")),
        sorted.join("\n") + "\n",
    )?;
    std::fs::rename(&partial, &tar)
        .with_context(|| format!("moving {} into place", tar.display()))?;
    Ok(tar)
}

#[cfg(test)]
mod tests;
