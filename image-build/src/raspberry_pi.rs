//! A Raspberry Pi's boot partition: the GPU firmware loads `config.txt`,
//! then the kernel, the initramfs and the model's device tree, and passes
//! `cmdline.txt` on. No boot loader of ours runs (docs/raspberry-pi.md).

use std::path::Path;

use anyhow::{Context, Result};

use crate::board::{Board, RaspberryPi};

/// The boot partition's files (path in the FAT volume → bytes): firmware
/// from `firmware_dir`, device trees from `device_trees_dir`, the kernel and
/// initramfs, `config.txt`, `cmdline.txt`, and the example user data.
pub fn boot_files(
    board: &Board,
    pi: &RaspberryPi,
    firmware_dir: &Path,
    device_trees_dir: &Path,
    vmlinuz: Vec<u8>,
    initramfs: Vec<u8>,
    cmdline: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut files = Vec::new();
    for name in &pi.firmware {
        files.push((name.clone(), read(&firmware_dir.join(name))?));
    }
    for path in &pi.device_trees {
        // The firmware looks for them at the top, by file name.
        let name = Path::new(path)
            .file_name()
            .with_context(|| format!("device tree {path:?} names no file"))?;
        files.push((
            name.to_string_lossy().into_owned(),
            read(&device_trees_dir.join(path))
                .with_context(|| format!("the kernel package lacks device tree {path}"))?,
        ));
    }
    files.push((KERNEL.into(), vmlinuz));
    files.push((INITRAMFS.into(), initramfs));
    files.push(("config.txt".into(), config_txt(board, pi).into_bytes()));
    files.push(("cmdline.txt".into(), format!("{cmdline}\n").into_bytes()));
    files.push(("user-data".into(), USER_DATA_EXAMPLE.as_bytes().to_vec()));
    Ok(files)
}

pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.img";

/// The firmware's settings: 64-bit, our kernel and initramfs, the UART on
/// for a serial console, the upstream kernel's device tree names.
pub fn config_txt(board: &Board, pi: &RaspberryPi) -> String {
    let mut text = format!(
        "# Made by brig build for board {}; read by the Pi's firmware at power-on.\n\
         arm_64bit=1\n\
         kernel={KERNEL}\n\
         initramfs {INITRAMFS} followkernel\n\
         # The UART on GPIO 14/15 (pins 8 and 10): Brig's serial console.\n\
         enable_uart=1\n\
         # Device trees by their names in the upstream (Debian) kernel.\n\
         upstream_kernel=1\n\
         disable_splash=1\n",
        board.name
    );
    for line in &pi.config {
        text += line;
        text += "\n";
    }
    text
}

/// What the boot partition's `user-data` says until the user edits it:
/// valid cloud-config that changes nothing, with the common settings
/// commented out.
pub const USER_DATA_EXAMPLE: &str = "#cloud-config
# Brig reads this file at every boot (docs/raspberry-pi.md, docs/config.md).
# Edit it after flashing: the boot partition is the FAT one your computer
# shows. Remove the # in front of the lines you want.

# hostname: pi-one

# Your public ssh key, to log in as user brig:
# ssh_authorized_keys:
#   - ssh-ed25519 AAAA... you@laptop

# Wi-Fi (the wired port works without any of this):
# network:
#   version: 2
#   ethernets:
#     eth0: {dhcp4: true, optional: true}
#   wifis:
#     wlan0:
#       dhcp4: true
#       regulatory-domain: DE
#       access-points:
#         my-network: {password: my-passphrase}
";

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Board {
        toml::from_str(
            "description = 'test'\narch = 'aarch64'\nkernel_package = 'linux-image-arm64'\n\
             kernel_config = []\nconsole = 'tty1'\nqemu_profile = 'raspi3b'\n\
             [raspberry_pi]\nfirmware = ['bootcode.bin', 'start.elf']\n\
             device_trees = ['broadcom/bcm2837-rpi-3-b.dtb']\nconfig = ['gpu_mem=16']\n",
        )
        .map(|mut b: Board| {
            b.name = "rpi3".into();
            b
        })
        .unwrap()
    }

    #[test]
    fn config_txt_names_our_files_and_adds_the_boards_lines() {
        let board = board();
        let text = config_txt(&board, board.raspberry_pi.as_ref().unwrap());
        for line in [
            "arm_64bit=1",
            "kernel=vmlinuz",
            "initramfs initramfs.img followkernel",
            "enable_uart=1",
            "upstream_kernel=1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("gpu_mem=16\n"), "{text}");
    }

    #[test]
    fn the_boot_partition_holds_firmware_device_trees_kernel_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let (firmware, trees) = (dir.path().join("fw"), dir.path().join("dtbs"));
        std::fs::create_dir_all(&firmware).unwrap();
        std::fs::create_dir_all(trees.join("broadcom")).unwrap();
        std::fs::write(firmware.join("bootcode.bin"), b"boot").unwrap();
        std::fs::write(firmware.join("start.elf"), b"start").unwrap();
        std::fs::write(trees.join("broadcom/bcm2837-rpi-3-b.dtb"), b"dtb").unwrap();
        let board = board();
        let pi = board.raspberry_pi.as_ref().unwrap();
        let files = boot_files(
            &board,
            pi,
            &firmware,
            &trees,
            b"kernel".to_vec(),
            b"initrd".to_vec(),
            "console=ttyS1,115200 panic=10",
        )
        .unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bootcode.bin",
                "start.elf",
                "bcm2837-rpi-3-b.dtb",
                "vmlinuz",
                "initramfs.img",
                "config.txt",
                "cmdline.txt",
                "user-data"
            ]
        );
        assert_eq!(files[6].1, b"console=ttyS1,115200 panic=10\n");
        // A device tree the kernel lacks is named.
        std::fs::remove_file(trees.join("broadcom/bcm2837-rpi-3-b.dtb")).unwrap();
        let e = boot_files(&board, pi, &firmware, &trees, vec![], vec![], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("broadcom/bcm2837-rpi-3-b.dtb"), "{e}");
    }

    #[test]
    fn the_example_user_data_is_valid_and_sets_nothing() {
        let data = USER_DATA_EXAMPLE.as_bytes();
        assert_eq!(
            brig_spec::cloud_config::report("user-data", data),
            Vec::<String>::new()
        );
        let (read, _) = brig_spec::cloud_config::read_user_data(data);
        assert!(read.is_none_or(|r| r.document.is_empty()));
    }
}
