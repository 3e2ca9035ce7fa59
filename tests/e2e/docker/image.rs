//! The tests' Docker image: tests/e2e/docker/hello-image/hello.rs built static
//! for the guest, alone in a root filesystem tar that `docker import` takes
//! (no registry in reach).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest::{built_variant, run, source_dir};

/// The board's default image, with every system container.
pub fn built_with_docker(board: &str) -> PathBuf {
    built_variant(board, "kernel", "full", &[])
}

/// tests/e2e/docker/hello-image/hello.rs built static for the guest's
/// architecture, alone in a root filesystem tar.
pub fn image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
        ])
        .args([
            "--target",
            "x86_64-unknown-linux-musl",
            "-C",
            "linker=rust-lld",
        ])
        .arg("-o")
        .arg(root.join("hello"))
        .arg(source_dir().join("tests/e2e/docker/hello-image/hello.rs")));
    let tar = dir.join("hello.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("hello"));
    tar
}
