use super::*;

fn service_dir(root: &Path, name: &str, toml: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("service.toml"), toml).unwrap();
}

#[test]
fn services_are_left_out_with_what_depends_on_them() {
    let root = tempfile::tempdir().unwrap();
    let spec = "command = [\"/bin/x\"]\n[rootfs]\npackages = [\"x\"]\n";
    service_dir(root.path(), "network", spec);
    service_dir(
        root.path(),
        "docker",
        &format!("depends_on = [\"network\"]\n{spec}"),
    );
    service_dir(
        root.path(),
        "swarm",
        &format!("depends_on = [\"docker\"]\n{spec}"),
    );
    let all = || discover(&[root.path().to_path_buf()]).unwrap();
    let names = |kept: &[ServiceSource]| -> Vec<String> {
        kept.iter().map(|s| s.spec.name.clone()).collect()
    };
    let (kept, dependents) = leave_out(all(), &["swarm".into()]).unwrap();
    assert_eq!(
        (names(&kept), dependents),
        (vec!["docker".into(), "network".into()], vec![])
    );
    let (kept, dependents) = leave_out(all(), &["docker".into()]).unwrap();
    assert_eq!(
        (names(&kept), dependents),
        (vec!["network".into()], vec!["swarm".into()])
    );
    let (kept, dependents) = leave_out(all(), &["network".into()]).unwrap();
    assert!(kept.is_empty());
    assert_eq!(dependents, ["docker", "swarm"]);
    let e = leave_out(all(), &["dockr".into()]).unwrap_err().to_string();
    assert_eq!(
        e,
        "--without dockr: there is no such service (there are: docker, network, swarm)"
    );
}

#[test]
fn packages_with_a_service_come_only_with_it() {
    let root = tempfile::tempdir().unwrap();
    let spec = "command = [\"/bin/x\"]\n[rootfs]\npackages = [\"x\"]\n";
    service_dir(root.path(), "docker", spec);
    service_dir(
            root.path(),
            "console",
            "command = [\"/bin/x\"]\n[rootfs]\npackages = [\"bash\"]\npackages_with = { docker = [\"docker-cli\"] }\n",
        );
    let console_packages = |without: &[String]| {
        let all = discover(&[root.path().to_path_buf()]).unwrap();
        let (mut kept, _) = leave_out(all, without).unwrap();
        add_packages_with(&mut kept);
        kept.into_iter()
            .find(|s| s.spec.name == "console")
            .unwrap()
            .spec
            .rootfs
            .packages
    };
    assert_eq!(console_packages(&[]), ["bash", "docker-cli"]);
    assert_eq!(console_packages(&["docker".into()]), ["bash"]);

    service_dir(
            root.path(),
            "other",
            "command = [\"/bin/x\"]\n[rootfs]\npackages = [\"x\"]\npackages_with = { dockr = [\"y\"] }\n",
        );
    let e = format!("{:#}", discover(&[root.path().into()]).unwrap_err());
    assert!(
            e.contains("other/service.toml: `rootfs.packages_with.dockr`: there is no service \"dockr\" (there are: console, docker, other)"),
            "{e}"
        );
}

#[test]
fn discovers_enabled_services_and_reports_bad_specs_precisely() {
    let root = tempfile::tempdir().unwrap();
    service_dir(
        root.path(),
        "b",
        "command = [\"/bin/b\"]\n[rootfs]\npackages = [\"x\"]\n",
    );
    service_dir(
        root.path(),
        "a",
        "command = [\"/bin/a\"]\n[rootfs]\nbinaries = [\"a\"]\n",
    );
    service_dir(
        root.path(),
        "off",
        "enabled = false\ncommand = [\"/bin/a\"]\n[rootfs]\nbinaries = [\"a\"]\n",
    );
    std::fs::create_dir(root.path().join("not-a-service")).unwrap();
    let names: Vec<String> = discover(&[root.path().into()])
        .unwrap()
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["a", "b"]);

    service_dir(
        root.path(),
        "bad",
        "command = [\"/bin/a\"]\n[rootfs]\npackages = [\"x\"]\n[limits]\nmemory_max = \"lots\"\n",
    );
    let e = format!("{:#}", discover(&[root.path().into()]).unwrap_err());
    assert!(
        e.contains("bad/service.toml") && e.contains("memory_max") && e.contains("lots"),
        "{e}"
    );
}

#[test]
fn a_service_defined_twice_is_an_error() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for root in [&one, &two] {
        service_dir(
            root.path(),
            "dup",
            "command = [\"/bin/a\"]\n[rootfs]\nbinaries = [\"a\"]\n",
        );
    }
    let e = discover(&[one.path().into(), two.path().into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"dup\" is defined twice"), "{e}");
}

/// A package tar of regular files, directories for paths ending in `/`
/// and hard links for `=target` data.
fn package_tar_of(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let packages = dir.join("p.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&packages).unwrap());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(0);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
            continue;
        }
        match data.strip_prefix('=') {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, path, target).unwrap();
            }
            None => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap();
    packages
}

const ALL: Selection = Selection {
    keep: &[],
    drop: &[],
    triplet: "x86_64-linux-gnu",
};

/// The entries of a stream: path and text.
fn read_stream(stream: &[u8]) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for entry in tar::Archive::new(stream).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        seen.push((entry.path().unwrap().display().to_string(), text));
    }
    seen
}

#[test]
fn our_files_replace_package_files_in_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let packages = package_tar_of(
        dir.path(),
        &[("./etc/motd", "debian"), ("./etc/issue", "kept")],
    );
    let ours = BTreeMap::from([("etc/motd".to_string(), (0o644, b"brig".to_vec()))]);
    let mut stream = Vec::new();
    write_tar(&mut stream, Some(&packages), &ALL, &ours, 42).unwrap();
    assert_eq!(
        read_stream(&stream),
        [
            ("etc/issue".to_string(), "kept".to_string()),
            ("etc/motd".to_string(), "brig".to_string())
        ]
    );
}

#[test]
fn certificates_are_bundled_as_the_maintainer_script_would() {
    let dir = tempfile::tempdir().unwrap();
    let packages = package_tar_of(
        dir.path(),
        &[
            ("./usr/share/ca-certificates/mozilla/B.crt", "b"),
            ("./usr/share/ca-certificates/mozilla/A.crt", "a\n"),
        ],
    );
    let mut stream = Vec::new();
    write_tar(&mut stream, Some(&packages), &ALL, &BTreeMap::new(), 42).unwrap();
    let seen = read_stream(&stream);
    assert_eq!(
        seen.last().unwrap(),
        &(
            "etc/ssl/certs/ca-certificates.crt".to_string(),
            "a\nb\n".to_string()
        )
    );
}

#[test]
fn dropped_paths_are_left_out_unless_something_left_in_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let packages = package_tar_of(
        dir.path(),
        &[
            ("./usr/", ""),
            ("./usr/bin/", ""),
            ("./usr/bin/keep", "k"),
            ("./usr/lib/", ""),
            ("./usr/lib/systemd/", ""),
            ("./usr/lib/systemd/a", "a"),
            ("./usr/lib/systemd/b", "b"),
        ],
    );
    let drop = ["/usr/lib/systemd".to_string()];
    let selection = Selection { drop: &drop, ..ALL };
    let mut stream = Vec::new();
    write_tar(
        &mut stream,
        Some(&packages),
        &selection,
        &BTreeMap::new(),
        42,
    )
    .unwrap();
    let paths: Vec<String> = read_stream(&stream).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        ["usr", "usr/bin", "usr/bin/keep", "usr/lib", "bin", "lib"]
    );

    // A hard link left in whose target is dropped would break the image.
    let packages = package_tar_of(
        dir.path(),
        &[
            ("./usr/", ""),
            ("./usr/bin/", ""),
            ("./usr/lib/", ""),
            ("./usr/lib/systemd/", ""),
            ("./usr/lib/systemd/a", "a"),
            ("./usr/bin/a", "=./usr/lib/systemd/a"),
        ],
    );
    let e = write_tar(
        Vec::new(),
        Some(&packages),
        &selection,
        &BTreeMap::new(),
        42,
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("rootfs.drop left out something that is still needed")
            && e.contains("/usr/bin/a (needed by a file left in)"),
        "{e}"
    );
}

#[test]
fn an_image_is_reused_only_for_the_same_inputs() {
    let ours =
        |data: &[u8]| BTreeMap::from([("usr/bin/brig-netd".to_string(), (0o755, data.to_vec()))]);
    let key = |text: &str, files, mtime, level, arch| {
        image_key(text, None, &files, mtime, level, arch).unwrap()
    };
    let base = key("name = \"network\"", ours(b"netd v1"), 1, 15, "amd64");
    assert_eq!(
        base,
        key("name = \"network\"", ours(b"netd v1"), 1, 15, "amd64")
    );
    for other in [
        key("name = \"network\" ", ours(b"netd v1"), 1, 15, "amd64"),
        key("name = \"network\"", ours(b"netd v2"), 1, 15, "amd64"),
        key("name = \"network\"", ours(b"netd v1"), 2, 15, "amd64"),
        key("name = \"network\"", ours(b"netd v1"), 1, 3, "amd64"),
        key("name = \"network\"", ours(b"netd v1"), 1, 15, "arm64"),
    ] {
        assert_ne!(base, other);
    }
}

#[test]
fn the_image_cache_keeps_the_newest_few_of_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("images");
    let image = dir.path().join("console.squashfs");
    std::fs::write(&image, b"hsqs").unwrap();
    std::fs::create_dir(&cache).unwrap();
    // Another service's image, and a service whose name starts the same.
    std::fs::write(cache.join(format!("ntp-{:016x}.squashfs", 1)), b"").unwrap();
    std::fs::write(
        cache.join(format!("console-extra-{:016x}.squashfs", 1)),
        b"",
    )
    .unwrap();
    let base = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    for key in 0..5u64 {
        let cached = cache.join(format!("console-{key:016x}.squashfs"));
        keep_in_cache(&image, &cached, "console").unwrap();
        let file = std::fs::File::options().write(true).open(&cached).unwrap();
        file.set_modified(base + std::time::Duration::from_secs(key))
            .unwrap();
    }
    let mut left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let expected: Vec<String> = [
        "console-0000000000000002.squashfs",
        "console-0000000000000003.squashfs",
        "console-0000000000000004.squashfs",
        "console-extra-0000000000000001.squashfs",
        "ntp-0000000000000001.squashfs",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(left, expected);
}
