//! `rootfs.keep`: a container needs a program from a package, not what the
//! package's maintainer scripts need (perl, debconf, adduser, ...). From the
//! package tree this keeps the listed paths, every symlink on the way to
//! them, and for ELF programs and libraries their interpreter and the shared
//! libraries they need, recursively, found where the dynamic loader looks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{bail, Result};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, Endianness, FileKind};

/// One entry of the package tree (paths relative to the root, no `./`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(String),
}

/// Whether `rootfs.drop` leaves out `path` (relative, no leading `/`): a
/// path pattern (`/…`) names it or a directory above it; `*` matches within
/// a component.
pub fn dropped(patterns: &[String], path: &str) -> bool {
    let components: Vec<&str> = path.split('/').collect();
    patterns
        .iter()
        .filter(|p| p.starts_with('/'))
        .any(|pattern| {
            let wanted: Vec<&str> = pattern.trim_matches('/').split('/').collect();
            wanted.len() <= components.len()
                && wanted
                    .iter()
                    .zip(&components)
                    .all(|(w, c)| brig_spec::glob::glob_match(w.as_bytes(), c.as_bytes()))
        })
}

/// The files `rootfs.drop` leaves out by package name: each named
/// package's files (`lists`: package -> `tar -t` of its contents) that no
/// other package also ships. Directories stay.
pub fn dropped_files(
    drop: &[String],
    lists: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>> {
    let paths = |list: &str| -> Vec<String> {
        list.lines()
            .filter(|l| !l.ends_with('/'))
            .map(|l| l.trim_start_matches("./").to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let packages: Vec<&String> = drop.iter().filter(|d| !d.starts_with('/')).collect();
    let mut files = BTreeSet::new();
    for package in &packages {
        let Some(list) = lists.get(*package) else {
            bail!("rootfs.drop: package {package:?} is not among the packages fetched");
        };
        files.extend(paths(list));
    }
    for (package, list) in lists {
        if !packages.contains(&package) {
            for path in paths(list) {
                files.remove(&path);
            }
        }
    }
    Ok(files)
}

/// The paths to put in the image: `keep`, and what they need.
/// `triplet` is the multiarch directory (`x86_64-linux-gnu`); `asked_by`
/// names who wants `keep`, for errors.
pub fn closure(
    tree: &BTreeMap<String, Node<'_>>,
    keep: &[String],
    triplet: &str,
    asked_by: &str,
) -> Result<BTreeSet<String>> {
    let search: Vec<String> = [
        format!("lib/{triplet}"),
        format!("usr/lib/{triplet}"),
        "lib".into(),
        "usr/lib".into(),
    ]
    .into();
    let mut kept = BTreeSet::new();
    let mut queue: VecDeque<(String, String)> = keep
        .iter()
        .map(|p| (p.clone(), asked_by.to_string()))
        .collect();
    while let Some((path, wanted_by)) = queue.pop_front() {
        let Some(real) = resolve(tree, &path, &mut kept) else {
            bail!("{path} (needed by {wanted_by}) is not in the packages");
        };
        if !kept.insert(real.clone()) {
            continue;
        }
        match &tree[&real] {
            Node::Dir => {
                let prefix = format!("{real}/");
                for (p, _) in tree.range(prefix.clone()..) {
                    if !p.starts_with(&prefix) {
                        break;
                    }
                    queue.push_back((p.clone(), real.clone()));
                }
            }
            Node::File(data) => {
                let Some(needs) = elf_needs(data) else {
                    continue;
                };
                if let Some(interp) = needs.interpreter {
                    queue.push_back((interp, real.clone()));
                }
                for lib in needs.libraries {
                    let dirs = needs.runpath.iter().chain(&search);
                    let found = dirs
                        .map(|d| format!("{}/{lib}", d.trim_matches('/')))
                        .find(|p| resolve(tree, p, &mut BTreeSet::new()).is_some());
                    match found {
                        Some(p) => queue.push_back((p, real.clone())),
                        None => bail!("{real} needs {lib}, which is not in the packages"),
                    }
                }
            }
            Node::Symlink(_) => unreachable!("resolve follows symlinks"),
        }
    }
    // Parent directories, so owners and modes come from the packages.
    let parents: Vec<String> = kept
        .iter()
        .flat_map(|p| {
            p.match_indices('/')
                .map(|(i, _)| p[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    kept.extend(parents);
    Ok(kept)
}

/// Follows `path` through the tree as the kernel would, adding each symlink
/// passed to `links`; the final path, or None if it does not exist.
fn resolve(
    tree: &BTreeMap<String, Node<'_>>,
    path: &str,
    links: &mut BTreeSet<String>,
) -> Option<String> {
    let mut todo: VecDeque<String> = path.split('/').map(String::from).collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => at.push(part),
        }
        let here = at.join("/");
        match tree.get(&here)? {
            Node::Symlink(target) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                links.insert(here);
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                for p in target.split('/').rev() {
                    todo.push_front(p.to_string());
                }
            }
            Node::File(_) if !todo.iter().all(|p| p.is_empty() || p == ".") => return None,
            _ => {}
        }
    }
    (!at.is_empty()).then(|| at.join("/"))
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Needs {
    interpreter: Option<String>,
    libraries: Vec<String>,
    runpath: Vec<String>,
}

/// An ELF file's interpreter, DT_NEEDED and DT_RUNPATH/RPATH; None if it is
/// not a dynamic ELF file.
fn elf_needs(data: &[u8]) -> Option<Needs> {
    match FileKind::parse(data).ok()? {
        FileKind::Elf64 => parse_elf::<elf::FileHeader64<Endianness>>(data),
        FileKind::Elf32 => parse_elf::<elf::FileHeader32<Endianness>>(data),
        _ => None,
    }
}

fn parse_elf<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Option<Needs> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut needs = Needs::default();
    for segment in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = segment.interpreter(endian, data) {
            needs.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header.sections(endian, data).ok()?;
    let table = sections.dynamic_table(endian, data).ok()?;
    for entry in table.iter() {
        let text = || {
            table
                .string(entry)
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        match entry.tag {
            elf::DT_NEEDED => needs.libraries.extend(text().ok()),
            elf::DT_RUNPATH | elf::DT_RPATH => {
                // $ORIGIN-relative entries are not followed.
                if let Ok(paths) = text() {
                    needs.runpath.extend(
                        paths
                            .split(':')
                            .filter(|p| p.starts_with('/'))
                            .map(String::from),
                    );
                }
            }
            _ => {}
        }
    }
    Some(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree<'a>(entries: &[(&str, Node<'a>)]) -> BTreeMap<String, Node<'a>> {
        entries
            .iter()
            .map(|(p, n)| (p.to_string(), n.clone()))
            .collect()
    }

    #[test]
    fn dropped_paths_and_what_is_under_them() {
        let drop = ["/usr/lib/systemd".to_string(), "/usr/lib/*/perl*".into()];
        assert!(dropped(&drop, "usr/lib/systemd"));
        assert!(dropped(&drop, "usr/lib/systemd/systemd-executor"));
        assert!(dropped(
            &drop,
            "usr/lib/x86_64-linux-gnu/perl-base/strict.pm"
        ));
        assert!(dropped(&drop, "usr/lib/aarch64-linux-gnu/perl5"));
        assert!(!dropped(&drop, "usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(
            !dropped(&drop, "usr/lib/systemd-extra"),
            "whole components only"
        );
        assert!(!dropped(&drop, "usr/lib"), "not the directories above");
    }

    #[test]
    fn dropped_packages_lose_the_files_no_other_package_ships() {
        let lists = BTreeMap::from([
            (
                "systemd".to_string(),
                "./\n./usr/\n./usr/bin/systemctl\n./usr/lib/shared.conf\n".to_string(),
            ),
            (
                "openssh-server".into(),
                "./usr/\n./usr/lib/shared.conf\n".into(),
            ),
        ]);
        let files = dropped_files(&["systemd".into(), "/usr/x".into()], &lists).unwrap();
        assert_eq!(files.into_iter().collect::<Vec<_>>(), ["usr/bin/systemctl"]);
        let e = dropped_files(&["perl".into()], &lists)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "rootfs.drop: package \"perl\" is not among the packages fetched"
        );
    }

    #[test]
    fn symlinks_are_followed_through_directories_and_kept() {
        let t = tree(&[
            ("lib64", Node::Symlink("usr/lib64".into())),
            ("usr", Node::Dir),
            ("usr/lib64", Node::Dir),
            (
                "usr/lib64/ld.so",
                Node::Symlink("../lib/x86_64-linux-gnu/ld.so".into()),
            ),
            ("usr/lib", Node::Dir),
            ("usr/lib/x86_64-linux-gnu", Node::Dir),
            ("usr/lib/x86_64-linux-gnu/ld.so", Node::File(&[])),
            ("loop", Node::Symlink("/loop".into())),
        ]);
        let mut links = BTreeSet::new();
        assert_eq!(
            resolve(&t, "/lib64/ld.so", &mut links).as_deref(),
            Some("usr/lib/x86_64-linux-gnu/ld.so")
        );
        assert_eq!(
            links.into_iter().collect::<Vec<_>>(),
            ["lib64", "usr/lib64/ld.so"]
        );
        assert_eq!(resolve(&t, "/loop", &mut BTreeSet::new()), None);
        assert_eq!(resolve(&t, "/usr/nothing", &mut BTreeSet::new()), None);
        assert_eq!(
            resolve(
                &t,
                "/usr/lib/x86_64-linux-gnu/ld.so/x",
                &mut BTreeSet::new()
            ),
            None
        );

        let kept = closure(
            &t,
            &["/usr/lib64".into()],
            "x86_64-linux-gnu",
            "rootfs.keep",
        )
        .unwrap();
        assert!(kept.contains("usr/lib/x86_64-linux-gnu/ld.so"), "{kept:?}");
        assert!(kept.contains("usr/lib/x86_64-linux-gnu") && kept.contains("usr"));
        assert!(!kept.contains("loop"));
        let e = closure(
            &t,
            &["/etc/nothing".into()],
            "x86_64-linux-gnu",
            "rootfs.keep",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("/etc/nothing (needed by rootfs.keep) is not in the packages"),
            "{e}"
        );
    }

    #[test]
    fn a_real_program_brings_its_loader_and_libraries() {
        // This test binary itself: dynamically linked against libc.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let needs = elf_needs(&exe).unwrap();
        let interp = needs.interpreter.clone().unwrap();
        assert!(interp.starts_with("/lib"), "{needs:?}");
        assert!(
            needs.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{needs:?}"
        );
        assert_eq!(elf_needs(b"#!/bin/sh\n"), None);

        let mut entries = vec![
            ("usr".to_string(), Node::Dir),
            ("usr/bin".to_string(), Node::Dir),
            ("usr/bin/prog".to_string(), Node::File(&exe)),
            ("usr/lib".to_string(), Node::Dir),
        ];
        let interp = interp.trim_start_matches('/').to_string();
        for (i, _) in interp.match_indices('/') {
            entries.push((interp[..i].to_string(), Node::Dir));
        }
        entries.push((interp.clone(), Node::File(&[])));
        for lib in &needs.libraries {
            entries.push((format!("usr/lib/{lib}"), Node::File(&[])));
        }
        let mut t: BTreeMap<String, Node<'_>> = entries.into_iter().collect();
        let kept = closure(
            &t,
            &["/usr/bin/prog".into()],
            "x86_64-linux-gnu",
            "rootfs.keep",
        )
        .unwrap();
        assert!(kept.contains(&interp));
        assert!(kept.contains(&format!("usr/lib/{}", needs.libraries[0])));

        t.remove(&format!("usr/lib/{}", needs.libraries[0]));
        let e = closure(
            &t,
            &["/usr/bin/prog".into()],
            "x86_64-linux-gnu",
            "rootfs.keep",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "usr/bin/prog needs {}, which is not in the packages",
                needs.libraries[0]
            )),
            "{e}"
        );
    }
}
