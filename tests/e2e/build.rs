//! `brig build` as a user meets it: the manifest, reproducible output, a
//! kernel that lacks a required option, an offline rebuild from the cache.

use std::path::Path;

use serde_json::Value;

use crate::guest::{brig, built, source_dir, FAST};

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

pub fn manifest_describes_the_image() {
    let out = built("qemu-x86_64");
    let m = manifest(&out);
    assert_eq!(m["board"], "qemu-x86_64");
    assert_eq!(m["kernel"]["package"], "linux-image-cloud-amd64");
    let release = m["kernel"]["release"].as_str().unwrap();
    assert!(release.ends_with("-cloud-amd64"), "{release}");
    let debs = m["kernel"]["debs"].as_array().unwrap();
    assert!(
        debs.iter().any(|d| d
            .as_str()
            .unwrap()
            .contains(&format!("linux-image-{release}_"))),
        "{debs:?}"
    );
    // Modules asked for by kernel-config/ come with their dependencies.
    let modules = m["modules"].as_array().unwrap();
    let needed_by = |name: &str| {
        modules
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["needed_by"].clone())
    };
    assert_eq!(needed_by("virtio_net").unwrap(), "CONFIG_VIRTIO_NET");
    assert_eq!(needed_by("net_failover").unwrap(), "module virtio_net");
    assert_eq!(needed_by("button").unwrap(), "CONFIG_ACPI_BUTTON");
    // Sizes are the real file sizes.
    let size = std::fs::metadata(out.join("initramfs.img")).unwrap().len();
    assert_eq!(m["initramfs"]["size"].as_u64().unwrap(), size);
    let contents = m["contents"].as_array().unwrap();
    assert!(contents
        .iter()
        .any(|c| c["path"] == "/init" && c["size"] == m["brig_init_size"]));
    assert!(contents
        .iter()
        .any(|c| c["path"].as_str().unwrap().ends_with("/modules.alias")));
    // The system containers are on the system disk the kernel boots with,
    // which its command line names; none is in the initramfs.
    assert!(
        !contents
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with(".squashfs")),
        "{contents:?}"
    );
    let system = out.join(m["system_disk"]["path"].as_str().unwrap());
    assert_eq!(
        m["system_disk"]["size"].as_u64().unwrap(),
        std::fs::metadata(&system).unwrap().len()
    );
    // The kernel uncompressed beside it, for QEMU to load through PVH.
    let vmlinux = std::fs::read(out.join("vmlinux")).unwrap();
    assert!(vmlinux.starts_with(b"\x7fELF"));
    assert_eq!(
        m["kernel"]["vmlinux_size"].as_u64().unwrap(),
        vmlinux.len() as u64
    );
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    assert!(cmdline.contains(" brig.system=PARTUUID="), "{cmdline}");
    assert_eq!(m["cmdline"].as_str().unwrap(), cmdline.trim());
}

/// A source tree like ours whose board requires one more option.
fn source_with_fragment(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // Kernel config is what these builds are about: no system containers.
    std::fs::create_dir(dir.path().join("system-containers")).unwrap();
    for sub in ["boards", "kernel-config", "qemu"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(source_dir().join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    let path = dir.path().join("kernel-config/x86_64.config");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
    dir
}

/// Builds qemu-x86_64 with `extra` added to its fragment; expects the build to
/// fail without writing an image, and returns what brig said.
fn failed_build_with_fragment(extra: &str) -> String {
    built("qemu-x86_64"); // the kernel is in the cache from here on
    let src = source_with_fragment(extra);
    let out = tempfile::tempdir().unwrap();
    let (src_dir, out_dir) = (src.path().to_str().unwrap(), out.path().to_str().unwrap());
    let output = brig(
        &[
            "--source",
            src_dir,
            "build",
            "--board",
            "qemu-x86_64",
            "--out",
            out_dir,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(!out.path().join("initramfs.img").exists());
    stderr
}

pub fn a_missing_kernel_option_fails_the_build_naming_it() {
    let stderr = failed_build_with_fragment(
        "CONFIG_BRIG_TEST_NO_SUCH_OPTION=y\n# CONFIG_VIRTIO_NET is not set\n",
    );
    // The two lines come after the fragment's own.
    let lines =
        std::fs::read_to_string(crate::guest::source_dir().join("kernel-config/x86_64.config"))
            .unwrap()
            .lines()
            .count();
    let missing = format!(
        "CONFIG_BRIG_TEST_NO_SUCH_OPTION is required (kernel-config/x86_64.config:{}) but is not set",
        lines + 1
    );
    assert!(stderr.contains(&missing), "{stderr}");
    let forbidden = format!(
        "CONFIG_VIRTIO_NET must not be set (kernel-config/x86_64.config:{}) but is =m",
        lines + 2
    );
    assert!(stderr.contains(&forbidden), "{stderr}");
}

pub fn a_module_the_fragment_misnames_is_reported_with_the_fix() {
    // CONFIG_ISO9660_FS is a module called `isofs`, not `iso9660_fs`.
    let stderr = failed_build_with_fragment("CONFIG_ISO9660_FS=y\n");
    let wrong_name = "CONFIG_ISO9660_FS is built as a module, but no module named \"iso9660_fs\"";
    assert!(stderr.contains(wrong_name), "{stderr}");
    assert!(stderr.contains("# module: <name>"), "{stderr}");
}

pub fn offline_rebuild_uses_the_cache() {
    let first = built("qemu-x86_64");
    let out = tempfile::tempdir().unwrap();
    // apt honours http_proxy: a closed loopback port makes every download fail.
    let offline = [
        ("http_proxy", "http://127.0.0.1:9"),
        ("https_proxy", "http://127.0.0.1:9"),
    ];
    let output = brig(
        &[
            "build",
            "--refresh",
            "--board",
            "qemu-x86_64",
            "--without",
            "docker",
            FAST[0],
            FAST[1],
            "--out",
            out.path().to_str().unwrap(),
        ],
        &offline,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("fetching failed") && stderr.contains("using the cached copy"),
        "{stderr}"
    );
    assert_eq!(manifest(out.path())["kernel"], manifest(&first)["kernel"]);

    // With nothing cached, offline is a clear error.
    let empty_cache = tempfile::tempdir().unwrap();
    let mut env = offline.to_vec();
    env.push(("XDG_CACHE_HOME", empty_cache.path().to_str().unwrap()));
    let output = brig(
        &[
            "build",
            "--board",
            "qemu-x86_64",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("mmdebstrap could not fetch linux-image-cloud-amd64 for amd64"),
        "{stderr}"
    );
    // The failed fetch left nothing in the cache (no partial directory).
    let kernels = empty_cache.path().join("brig/kernels");
    let left: Vec<_> = std::fs::read_dir(&kernels)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", kernels.display());
}

/// Reproducible builds: the same inputs built twice with nothing reused
/// between them (`--rebuild-images`, and each build with an image cache of
/// its own; the kernel and the Debian packages, which are inputs, come from
/// the shared cache), at the compression levels Brig ships with: every file
/// of the two outputs is the same, byte for byte — the container images,
/// the initramfs, the kernel, the manifest and the disk image. The image is
/// a qemu-x86_64 disk image with the test services too (their own rootfs
/// from Debian packages).
pub fn two_builds_of_the_same_inputs_are_identical() {
    // The shared cache holds the kernel, boot loader and packages from here on.
    crate::guest::built_as("qemu-x86_64", "raw");
    let shared = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"))
        .join("brig");
    let services = source_dir().join("tests/e2e/services");
    let build = || {
        let out = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("brig")).unwrap();
        for entry in std::fs::read_dir(&shared).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "images" {
                std::os::unix::fs::symlink(
                    entry.path(),
                    cache.path().join("brig").join(entry.file_name()),
                )
                .unwrap();
            }
        }
        let args = [
            "build",
            "--board",
            "qemu-x86_64",
            "--format",
            "raw",
            "--out",
            out.path().to_str().unwrap(),
            "--services",
            services.to_str().unwrap(),
            "--without",
            "docker",
            "--rebuild-images",
        ];
        let output = brig(&args, &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())]);
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{said}");
        // Every image packed here, none taken from a cache.
        assert!(
            !said.contains("the cached image of the same inputs"),
            "{said}"
        );
        let packed = said.matches("packing system container").count();
        assert!(packed >= 15, "only {packed} images packed:\n{said}");
        out
    };
    let (first, second) = (build(), build());
    // Every file of either build, relative to its output directory.
    let files = |root: &Path| {
        let mut all = Vec::new();
        let mut pending = vec![std::path::PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(root.join(&dir)).unwrap() {
                let entry = entry.unwrap();
                let name = dir.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    pending.push(name);
                } else {
                    all.push(name);
                }
            }
        }
        all.sort();
        all
    };
    let listed = files(first.path());
    assert_eq!(
        listed,
        files(second.path()),
        "the two builds made different files"
    );
    let mut differ = Vec::new();
    for name in &listed {
        let a = std::fs::read(first.path().join(name)).unwrap();
        let b = std::fs::read(second.path().join(name)).unwrap();
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y);
            differ.push(format!(
                "{} ({} and {} bytes; first difference at byte {at:?})",
                name.display(),
                a.len(),
                b.len()
            ));
        }
    }
    let compared: Vec<String> = listed.iter().map(|n| n.display().to_string()).collect();
    assert!(differ.is_empty(), "two builds differ: {differ:#?}");
    for wanted in [
        "initramfs.img",
        "vmlinuz",
        "manifest.json",
        "brig-qemu-x86_64.img",
        "containers/operator.squashfs",
        "containers/console.squashfs",
    ] {
        assert!(
            compared.iter().any(|c| c == wanted),
            "{wanted} not built: {compared:?}"
        );
    }
    // The manifest lists every container with its size and packages.
    let m = manifest(first.path());
    let operator = m["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "operator")
        .unwrap();
    assert!(operator["size"].as_u64().unwrap() > 0);
    assert_eq!(operator["packages"][0], "busybox-static");
    assert!(
        m["initramfs"]["compression"]
            .as_str()
            .unwrap()
            .starts_with("zstd -19"),
        "not the shipped level: {m}"
    );
}
