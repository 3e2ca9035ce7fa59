use super::*;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn options() -> RunOptions {
    RunOptions {
        ssh_port: 2222,
        serial_log: None,
        headless: false,
        qmp: None,
        accel: Accel::Auto,
        no_reboot: false,
        append: vec![],
        rtc_base: None,
        nics: 1,
        user_net: vec![],
        qemu_arg: vec![],
        user_data: None,
        meta_data: None,
        network_config: None,
        disk: None,
        kernel_boot: false,
        machine: None,
    }
}

fn args_for(board: &str, opts: &RunOptions, kvm: bool) -> Vec<String> {
    let board = Board::load(repo(), board).unwrap();
    let profile = QemuProfile::load(repo(), &board.qemu_profile).unwrap();
    let boot = Boot::Kernel {
        cmdline: board.kernel_cmdline(),
        disk: None,
        system: None,
    };
    arguments(&profile, Path::new("/o"), opts, kvm, &boot)
}

fn value_of<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[i + 1]
}

#[test]
fn a_pi_card_boots_its_own_kernel_and_device_tree_with_the_card_as_sd() {
    let profile = QemuProfile::load(repo(), "raspi3b").unwrap();
    let boot = Boot::RaspberryPi {
        card: "/c/card.img".into(),
        files: "/o/boot".into(),
        device_tree: "bcm2837-rpi-3-b.dtb".into(),
        cmdline: "brig.watchdog=0".into(),
    };
    let opts = RunOptions {
        headless: true,
        user_data: Some("user-data.yaml".into()),
        append: vec!["loglevel=4".into()],
        ..options()
    };
    let args = arguments(&profile, Path::new("/o"), &opts, false, &boot);
    // U-Boot boots the card's slot; its script adds the device tree's
    // bootargs (QEMU's -append) to the slot's command line.
    assert_eq!(value_of(&args, "-kernel"), "/o/boot/u-boot.bin");
    assert!(!args.iter().any(|a| a == "-initrd"), "{args:?}");
    assert_eq!(value_of(&args, "-dtb"), "/o/boot/bcm2837-rpi-3-b.dtb");
    assert_eq!(value_of(&args, "-append"), "brig.watchdog=0 loglevel=4");
    // The card is the SD card, and the only drive: user data goes onto it.
    let drives: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "-drive")
        .map(|w| &w[1])
        .collect();
    assert_eq!(drives, ["file=/c/card.img,format=raw,if=sd"]);
    // The mini UART is the second port: the first is left unconnected.
    let serials: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "-serial")
        .map(|w| &w[1])
        .collect();
    assert_eq!(serials, ["null", "chardev:console"]);
    assert!(value_of(&args, "-device").starts_with("usb-net,netdev=net0"));
    // One host thread for the vCPUs under TCG, so the USB model keeps up.
    assert_eq!(value_of(&args, "-accel"), "tcg,thread=single");
    let kvm = arguments(&profile, Path::new("/o"), &opts, true, &boot);
    assert_eq!(value_of(&kvm, "-accel"), "kvm");
}

#[test]
fn a_serial_console_qemu_can_run_is_added_after_the_slots_command_line() {
    // U-Boot's script appends these to the slot's line: the last console=
    // is /dev/console.
    let raspi4b = QemuProfile::load(repo(), "raspi4b").unwrap();
    let machine = raspi4b.raspberry_pi.unwrap();
    // And the watchdog left alone: QEMU would reset at once (raspi4b.toml).
    assert_eq!(
        qemu_cmdline(&machine),
        "console=ttyAMA0,115200 brig.watchdog=0"
    );
    let raspi3b = QemuProfile::load(repo(), "raspi3b").unwrap();
    assert_eq!(
        qemu_cmdline(&raspi3b.raspberry_pi.unwrap()),
        "brig.watchdog=0"
    );
}

#[test]
fn interactive_run_forwards_ssh_on_loopback_and_puts_the_console_on_stdio() {
    let args = args_for("qemu-x86_64", &options(), false);
    assert_eq!(value_of(&args, "-accel"), "tcg");
    assert_eq!(value_of(&args, "-kernel"), "/o/vmlinuz");
    assert!(value_of(&args, "-netdev").contains("hostfwd=tcp:127.0.0.1:2222-:22"));
    assert!(value_of(&args, "-chardev").starts_with("stdio,"));
    assert!(value_of(&args, "-append").starts_with("console=ttyS0"));
    assert!(!args.contains(&"-no-reboot".to_string()));
}

#[test]
fn headless_run_logs_serial_to_a_file_and_offers_qmp() {
    let opts = RunOptions {
        ssh_port: 2300,
        serial_log: Some("/tmp/serial.log".into()),
        headless: true,
        qmp: Some("/tmp/q.sock".into()),
        no_reboot: true,
        append: vec!["brig.hostname=t1".into()],
        rtc_base: Some("2001-01-01".into()),
        user_data: Some("user-data.yaml".into()),
        ..options()
    };
    let args = args_for("qemu-aarch64", &opts, false);
    assert_eq!(
        value_of(&args, "-chardev"),
        "file,id=console,path=/tmp/serial.log"
    );
    assert_eq!(
        value_of(&args, "-qmp"),
        "unix:/tmp/q.sock,server=on,wait=off"
    );
    assert!(value_of(&args, "-netdev").contains("127.0.0.1:2300-:22"));
    assert!(value_of(&args, "-append").starts_with("console=ttyAMA0"));
    assert!(value_of(&args, "-append").ends_with(" brig.hostname=t1"));
    assert!(args.contains(&"-no-reboot".to_string()));
    assert_eq!(value_of(&args, "-rtc"), "base=2001-01-01");
    assert_eq!(
        value_of(&args, "-drive"),
        format!(
            "file=/o/nocloud-seed-{}.img,format=raw,if=virtio,readonly=on",
            std::process::id()
        )
    );
    let opts = RunOptions {
        nics: 2,
        user_net: vec![
            "net=169.254.169.0/24".into(),
            "guestfwd=tcp:169.254.169.254:80-cmd:serve a,b".into(),
        ],
        qemu_arg: vec![
            "-object".into(),
            "filter-dump,id=d,netdev=net1,file=x".into(),
        ],
        ..options()
    };
    let args = args_for("qemu-x86_64", &opts, false).join(" ");
    assert!(
            args.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,net=169.254.169.0/24,guestfwd=tcp:169.254.169.254:80-cmd:serve a,,b -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56")
                && args.contains("-netdev user,id=net1 -device virtio-net-pci,netdev=net1,mac=52:54:00:12:34:57")
                && args.ends_with("-object filter-dump,id=d,netdev=net1,file=x"),
            "{args}"
        );
    assert!(!args_for("qemu-aarch64", &options(), false).contains(&"-rtc".to_string()));
}

#[test]
fn a_disk_image_boots_with_uefi_firmware_as_the_first_virtio_disk() {
    let board = Board::load(repo(), "qemu-x86_64").unwrap();
    let profile = QemuProfile::load(repo(), &board.qemu_profile).unwrap();
    let opts = RunOptions {
        user_data: Some("u".into()),
        ..options()
    };
    let boot = Boot::Uefi {
        disk: "/o/brig-qemu-x86_64.qcow2".into(),
        vars: "/o/vars.fd".into(),
    };
    let args = arguments(&profile, Path::new("/o"), &opts, false, &boot).join(" ");
    assert!(!args.contains("-kernel"), "{args}");
    assert!(
            args.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=/o/vars.fd -drive file=/o/brig-qemu-x86_64.qcow2,format=qcow2,if=virtio"),
            "{args}"
        );
    // The system disk comes before the seed: it is vda.
    let disk = args.find("brig-qemu-x86_64.qcow2").unwrap();
    let seed = args.find("nocloud-seed").unwrap();
    assert!(disk < seed, "{args}");
    let boot = Boot::Kernel {
        cmdline: "console=ttyS0 brig.system=PARTUUID=X".into(),
        disk: Some("/o/brig-qemu-x86_64.img".into()),
        system: None,
    };
    let args = arguments(&profile, Path::new("/o"), &options(), false, &boot).join(" ");
    assert!(
        args.contains("-append console=ttyS0 brig.system=PARTUUID=X")
            && args.contains("-drive file=/o/brig-qemu-x86_64.img,format=raw,if=virtio")
            && !args.contains("pflash"),
        "{args}"
    );
}

#[test]
fn a_kernel_boot_attaches_the_system_disk_read_only_after_every_other_disk() {
    let profile = QemuProfile::load(repo(), "x86_64-q35").unwrap();
    let boot = Boot::Kernel {
        cmdline: "console=ttyS0 brig.system=PARTUUID=X".into(),
        disk: None,
        system: Some("/o/system.img".into()),
    };
    let opts = RunOptions {
        user_data: Some("user-data.yaml".into()),
        qemu_arg: vec!["-drive".into(), "file=/d/data.img,if=virtio".into()],
        ..options()
    };
    let args = arguments(&profile, Path::new("/o"), &opts, false, &boot);
    let drives: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "-drive")
        .map(|w| &w[1])
        .collect();
    assert_eq!(drives.len(), 3, "{drives:?}");
    assert!(drives[0].contains("nocloud-seed"), "{drives:?}");
    assert_eq!(drives[1], "file=/d/data.img,if=virtio");
    assert_eq!(
        drives[2],
        "file=/o/system.img,format=raw,if=virtio,readonly=on"
    );
}

#[test]
fn kvm_uses_the_kvm_cpu_model() {
    let args = args_for("qemu-x86_64", &options(), true);
    assert_eq!(value_of(&args, "-accel"), "kvm");
    assert_eq!(value_of(&args, "-cpu"), "host");
}
