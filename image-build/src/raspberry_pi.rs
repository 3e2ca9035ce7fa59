//! A Raspberry Pi's boot partition: the GPU firmware loads `config.txt`,
//! then Debian's U-Boot, whose script boots slot A or B with a boot
//! counter in U-Boot's environment (docs/updates.md, docs/raspberry-pi.md).

use std::path::Path;

use anyhow::{Context, Result};
use brig_spec::boot_slots::{self, EntryName, Slot};
use brig_spec::uboot::{self, SlotBoot, Slots};
use brig_spec::update_bundle::Version;

use crate::board::{Board, RaspberryPi};

/// What goes on a Pi's boot partition besides the firmware.
pub struct PiBoot<'a> {
    pub uboot: &'a Path,
    /// The kernel as the slot holds it: gzip'd (`gzip_kernel`).
    pub vmlinuz: Vec<u8>,
    pub initramfs: Vec<u8>,
    pub version: Version,
    /// The kernel's command line, naming slot A's system partition.
    pub cmdline: &'a str,
}

/// The boot partition's files (path in the FAT volume → bytes): firmware
/// from `firmware_dir`, device trees from `device_trees_dir`, U-Boot, its
/// script and environment, slot A's kernel and initramfs, `config.txt`,
/// an empty `cmdline.txt`, and the example user data.
pub fn boot_files(
    board: &Board,
    pi: &RaspberryPi,
    firmware_dir: &Path,
    device_trees_dir: &Path,
    boot: PiBoot,
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
    // The card boots slot A, the first install: no boot counting for it.
    let slots = Slots {
        a: Some(SlotBoot {
            name: EntryName {
                generation: 1,
                version: boot.version,
                counter: None,
            },
            cmdline: boot.cmdline.to_string(),
        }),
        b: None,
    };
    let env = uboot::encode_env(&slots.to_env()).map_err(anyhow::Error::msg)?;
    let dir = boot_slots::kernel_dir(Slot::A, boot.version);
    files.push((uboot::UBOOT_FILE.into(), read(boot.uboot)?));
    files.push((
        uboot::SCRIPT_FILE.into(),
        uboot::script_image(uboot::BOOT_SCRIPT),
    ));
    files.push((uboot::ENV_FILE.into(), env.clone()));
    files.push((uboot::ENV_BACKUP.into(), env));
    files.push((format!("{dir}/vmlinuz"), boot.vmlinuz));
    files.push((format!("{dir}/initramfs.img"), boot.initramfs));
    files.push(("config.txt".into(), config_txt(board, pi).into_bytes()));
    // U-Boot's script adds what the firmware passes on from here.
    files.push(("cmdline.txt".into(), b"\n".to_vec()));
    files.push(("user-data".into(), USER_DATA_EXAMPLE.as_bytes().to_vec()));
    Ok(files)
}

/// The kernel gzip'd: Debian's arm64 `vmlinuz` is an uncompressed Image
/// (38 MB), and two must fit on the boot partition with room to spare;
/// U-Boot's `booti` unpacks it.
pub fn gzip_kernel(image: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(image).context("compressing the kernel")?;
    encoder.finish().context("compressing the kernel")
}

/// The firmware's settings: 64-bit, U-Boot as the kernel, the UART on
/// for a serial console, the upstream kernel's device tree names.
pub fn config_txt(board: &Board, pi: &RaspberryPi) -> String {
    let mut text = format!(
        "# Made by brig build for board {}; read by the Pi's firmware at power-on.\n\
         arm_64bit=1\n\
         # U-Boot boots Brig's slot A or B (boot.scr, uboot.env).\n\
         kernel={}\n\
         # The UART on GPIO 14/15 (pins 8 and 10): Brig's serial console.\n\
         enable_uart=1\n\
         # Device trees by their names in the upstream (Debian) kernel.\n\
         upstream_kernel=1\n\
         disable_splash=1\n",
        board.name,
        uboot::UBOOT_FILE
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
            "kernel=u-boot.bin",
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
        std::fs::write(dir.path().join("u-boot.bin"), b"u-boot").unwrap();
        let uboot = dir.path().join("u-boot.bin");
        let pi_boot = |vmlinuz: &[u8]| PiBoot {
            uboot: &uboot,
            vmlinuz: vmlinuz.to_vec(),
            initramfs: b"initrd".to_vec(),
            version: Version(0, 1, 0),
            cmdline: "console=ttyS1,115200 panic=10 brig.system=PARTUUID=x",
        };
        let files = boot_files(&board, pi, &firmware, &trees, pi_boot(b"kernel")).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bootcode.bin",
                "start.elf",
                "bcm2837-rpi-3-b.dtb",
                "u-boot.bin",
                "boot.scr",
                "uboot.env",
                "uboot.env.backup",
                "brig/a-0.1.0/vmlinuz",
                "brig/a-0.1.0/initramfs.img",
                "config.txt",
                "cmdline.txt",
                "user-data"
            ]
        );
        // U-Boot's environment boots slot A, counting nothing.
        let vars = uboot::decode_env(&files[5].1).unwrap();
        let slots = Slots::from_env(&vars);
        let a = slots.a.unwrap();
        assert_eq!((a.name.version, a.name.counter), (Version(0, 1, 0), None));
        assert!(
            a.cmdline.ends_with("brig.system=PARTUUID=x"),
            "{}",
            a.cmdline
        );
        assert_eq!(slots.b, None);
        assert_eq!(files[5].1, files[6].1);
        assert_eq!(files[7].1, b"kernel");
        // A device tree the kernel lacks is named.
        std::fs::remove_file(trees.join("broadcom/bcm2837-rpi-3-b.dtb")).unwrap();
        let e = boot_files(&board, pi, &firmware, &trees, pi_boot(b""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("broadcom/bcm2837-rpi-3-b.dtb"), "{e}");
    }

    #[test]
    fn the_kernel_is_gzipd_and_unpacks_to_itself() {
        use std::io::Read;
        let image: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = gzip_kernel(&image).unwrap();
        assert_eq!(&packed[..2], &[0x1f, 0x8b]);
        assert!(packed.len() < image.len() / 4);
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, image);
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
