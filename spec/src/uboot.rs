//! The Raspberry Pi's boot chain for updates (docs/updates.md): the GPU
//! firmware starts Debian's U-Boot, whose environment file `uboot.env`
//! holds both slots' versions and boot counters, and whose boot script
//! `boot.scr` counts a trial's tries as systemd-boot does on the PC. The
//! host tool writes the first environment and the script; PID 1 rewrites
//! the environment to install, bless and roll back. Pure: bytes in, bytes
//! out.

use std::collections::BTreeMap;

use crate::boot_slots::{EntryName, Slot};
use crate::gpt::crc32;
use crate::update_bundle::Version;

/// U-Boot's environment file on the boot partition (Debian's `rpi_arm64`
/// build: `CONFIG_ENV_IS_IN_FAT`, `mmc 0:1`, `uboot.env`).
pub const ENV_FILE: &str = "uboot.env";
/// The copy PID 1 writes beside it: the script reads it when U-Boot could
/// not (a power cut while U-Boot rewrote `uboot.env`).
pub const ENV_BACKUP: &str = "uboot.env.backup";
/// `CONFIG_ENV_SIZE`: U-Boot reads and writes exactly this many bytes.
pub const ENV_SIZE: usize = 0x4000;
/// The boot script, run by the environment's `bootcmd`.
pub const SCRIPT_FILE: &str = "boot.scr";
/// U-Boot itself, started by the firmware (`kernel=` in config.txt).
pub const UBOOT_FILE: &str = "u-boot.bin";

/// What U-Boot needs besides the slots: boot at once, by our script on
/// the first partition of the SD card (mmc 0 on the Pi 3 and 4, 1 in
/// QEMU's raspi4b), without starting USB (the kernel does that). Not
/// U-Boot's standard boot, whose EFI boot manager writes `ubootefi.var` at
/// every boot; it is still what runs our script when the environment
/// cannot be read.
const BASE: [(&str, &str); 3] = [
    (
        "bootcmd",
        "for n in 0 1; do setenv devtype mmc; setenv devnum ${n}; setenv distro_bootpart 1; \
         if load mmc ${n}:1 ${scriptaddr} boot.scr; then source ${scriptaddr}; fi; done",
    ),
    ("bootdelay", "0"),
    ("scriptaddr", "0x02400000"),
];

/// The boot script's source.
///
/// - It reads the slots from `uboot.env` on its own partition (or the
///   backup), whichever device U-Boot loaded its environment from (QEMU's
///   raspi4b has the card on mmc 1).
/// - The slot with the highest generation whose tries have not run out
///   boots; on trial, its counter is lowered and the environment saved
///   before the kernel loads, so a hang or panic uses up a try. If that
///   save fails, the other slot boots instead: a try that is not counted
///   could repeat forever.
/// - A damaged `uboot.env`, or one naming no version (a `saveenv` at the
///   U-Boot prompt), is written again from the backup.
/// - The kernel is gzip'd (it must fit twice on the boot partition);
///   `booti` unpacks it to 0x02800000, with 88 MiB of room before QEMU's
///   device tree at 0x08000000; the packed copy goes to 0x0a000000, the
///   initramfs to 0x0e000000; all under 256 MiB, clear of the script at
///   0x02400000, for the Pi 3 A+'s 512 MiB.
/// - If the kernel cannot be loaded or started, the board resets: the
///   counted try brings it to the other slot in the end.
/// - What the firmware (or QEMU's `-append`) put in the device tree's
///   bootargs follows the slot's command line: the card's `cmdline.txt`
///   adds kernel arguments that way.
pub const BOOT_SCRIPT: &str = r#"# Brig's boot script (docs/updates.md). Made by brig build; do not edit.
setenv brig_part "${devtype} ${devnum}:${distro_bootpart}"
setenv brig_save
if load ${brig_part} 0x02000000 uboot.env && env import -c 0x02000000 0x4000; then true; fi
if test -z "${brig_a_version}${brig_b_version}"; then
  if load ${brig_part} 0x02000000 uboot.env.backup && env import -c 0x02000000 0x4000; then
    echo "brig: uboot.env names no version: using uboot.env.backup"
    setenv brig_save 1
  else
    echo "brig: neither uboot.env nor uboot.env.backup names a version"
  fi
fi
setenv brig_use_a 'setenv brig_slot a; setenv brig_dir brig/a-${brig_a_version}; setenv bootargs "${brig_a_cmdline}"'
setenv brig_use_b 'setenv brig_slot b; setenv brig_dir brig/b-${brig_b_version}; setenv bootargs "${brig_b_cmdline}"'
setenv brig_slot
if test -n "${brig_a_version}" && test "${brig_a_left}" != 0; then setenv brig_slot a; fi
if test -n "${brig_b_version}" && test "${brig_b_left}" != 0; then
  if test -z "${brig_slot}" || test ${brig_b_generation} -gt ${brig_a_generation}; then setenv brig_slot b; fi
fi
if test -z "${brig_slot}"; then
  echo "brig: no version has tries left: booting the newest"
  setenv brig_slot a
  if test -n "${brig_b_version}"; then
    if test -z "${brig_a_version}" || test ${brig_b_generation} -gt ${brig_a_generation}; then setenv brig_slot b; fi
  fi
fi
setenv brig_trial
if test ${brig_slot} = a; then
  run brig_use_a
  if test -n "${brig_a_left}" && test "${brig_a_left}" != 0; then
    setexpr brig_a_left ${brig_a_left} - 1
    setexpr brig_a_done ${brig_a_done} + 1
    setenv brig_trial 1
  fi
else
  run brig_use_b
  if test -n "${brig_b_left}" && test "${brig_b_left}" != 0; then
    setexpr brig_b_left ${brig_b_left} - 1
    setexpr brig_b_done ${brig_b_done} + 1
    setenv brig_trial 1
  fi
fi
if test -n "${brig_trial}"; then setenv brig_save 1; fi
if test -n "${brig_save}"; then
  if env export -c -s 0x4000 0x02000000 bootcmd bootdelay scriptaddr brig_a_version brig_a_generation brig_a_left brig_a_done brig_a_cmdline brig_b_version brig_b_generation brig_b_left brig_b_done brig_b_cmdline && fatwrite ${brig_part} 0x02000000 uboot.env 0x4000; then
    true
  elif test -n "${brig_trial}"; then
    echo "brig: uboot.env could not be written: not trying the new version uncounted"
    if test ${brig_slot} = a && test -n "${brig_b_version}"; then run brig_use_b; elif test ${brig_slot} = b && test -n "${brig_a_version}"; then run brig_use_a; fi
  fi
fi
if fdt addr ${fdt_addr} && fdt get value brig_extra /chosen bootargs; then
  setenv bootargs "${bootargs} ${brig_extra}"
fi
echo "brig: booting ${brig_dir} (slot ${brig_slot})"
setenv kernel_comp_addr_r 0x0a000000
setenv kernel_comp_size 0x02000000
if load ${brig_part} 0x02800000 ${brig_dir}/vmlinuz && load ${brig_part} 0x0e000000 ${brig_dir}/initramfs.img; then
  booti 0x02800000 0x0e000000:${filesize} ${fdt_addr}
fi
echo "brig: ${brig_dir} did not boot: resetting"
sleep 3
reset
"#;

/// One slot as the environment holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBoot {
    pub name: EntryName,
    /// The kernel's command line, naming the slot's system partition.
    pub cmdline: String,
}

/// Both slots, read from or written to the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots {
    pub a: Option<SlotBoot>,
    pub b: Option<SlotBoot>,
}

impl Slots {
    pub fn get(&self, slot: Slot) -> Option<&SlotBoot> {
        match slot {
            Slot::A => self.a.as_ref(),
            Slot::B => self.b.as_ref(),
        }
    }

    pub fn set(&mut self, slot: Slot, boot: Option<SlotBoot>) {
        match slot {
            Slot::A => self.a = boot,
            Slot::B => self.b = boot,
        }
    }

    /// The environment's variables: U-Boot's settings and the slots'.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = BASE
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for slot in [Slot::A, Slot::B] {
            let Some(boot) = self.get(slot) else { continue };
            let key = |what: &str| format!("brig_{}_{what}", prefix(slot));
            vars.insert(key("version"), boot.name.version.to_string());
            vars.insert(key("generation"), boot.name.generation.to_string());
            vars.insert(key("cmdline"), boot.cmdline.clone());
            if let Some((left, done)) = boot.name.counter {
                // Hexadecimal, as the script's setexpr writes them.
                vars.insert(key("left"), format!("{left:x}"));
                vars.insert(key("done"), format!("{done:x}"));
            }
        }
        vars
    }

    /// The slots in an environment; a slot whose variables do not read
    /// back (absent, or not numbers) is empty.
    pub fn from_env(vars: &BTreeMap<String, String>) -> Slots {
        let read = |slot: Slot| -> Option<SlotBoot> {
            let get = |what: &str| vars.get(&format!("brig_{}_{what}", prefix(slot)));
            let number = |what: &str| -> Option<u32> {
                // Hexadecimal: setexpr writes no other.
                get(what).and_then(|t| u32::from_str_radix(t, 16).ok())
            };
            let counter = match get("left") {
                None => None,
                Some(_) => Some((number("left")?, number("done").unwrap_or(0))),
            };
            Some(SlotBoot {
                name: EntryName {
                    generation: get("generation")?.parse().ok()?,
                    version: Version::parse(get("version")?).ok()?,
                    counter,
                },
                cmdline: get("cmdline")?.clone(),
            })
        };
        Slots {
            a: read(Slot::A),
            b: read(Slot::B),
        }
    }
}

fn prefix(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "a",
        Slot::B => "b",
    }
}

/// The environment file: a CRC32 of the rest, then `name=value` strings,
/// each ended by a NUL, an empty one last, zeros to `ENV_SIZE`.
pub fn encode_env(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; 4];
    for (name, value) in vars {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!("U-Boot environment: {name:?} cannot be stored"));
        }
        data.extend_from_slice(format!("{name}={value}").as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > ENV_SIZE {
        return Err(format!(
            "U-Boot environment: {} bytes do not fit in {ENV_SIZE}",
            data.len()
        ));
    }
    data.resize(ENV_SIZE, 0);
    let crc = crc32(&data[4..]);
    data[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(data)
}

pub fn decode_env(data: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if data.len() != ENV_SIZE {
        return Err(format!(
            "it is {} bytes, not U-Boot's {ENV_SIZE}",
            data.len()
        ));
    }
    let stored = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
    if crc32(&data[4..]) != stored {
        return Err("its CRC32 does not match (a write was cut short?)".into());
    }
    let mut vars = BTreeMap::new();
    for item in data[4..].split(|b| *b == 0) {
        if item.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(item);
        if let Some((name, value)) = text.split_once('=') {
            vars.insert(name.to_string(), value.to_string());
        }
    }
    Ok(vars)
}

/// `boot.scr`: the script in a U-Boot legacy image (type script, no
/// compression), as `mkimage -T script` makes it, with time 0 so that
/// builds are reproducible.
pub fn script_image(text: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(text.len() + 8);
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text.as_bytes());
    let mut header = [0u8; 64];
    header[0..4].copy_from_slice(&0x2705_1956u32.to_be_bytes());
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    header[24..28].copy_from_slice(&crc32(&data).to_be_bytes());
    // OS Linux, architecture arm64, type script, no compression.
    header[28..32].copy_from_slice(&[5, 22, 6, 0]);
    let name = b"Brig boot script";
    header[32..32 + name.len()].copy_from_slice(name);
    let crc = crc32(&header);
    header[4..8].copy_from_slice(&crc.to_be_bytes());
    let mut image = header.to_vec();
    image.extend_from_slice(&data);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(generation: u32, version: &str, counter: Option<(u32, u32)>) -> SlotBoot {
        SlotBoot {
            name: EntryName {
                generation,
                version: Version::parse(version).unwrap(),
                counter,
            },
            cmdline: format!("console=ttyS1,115200 brig.system=PARTUUID=x-{version}"),
        }
    }

    #[test]
    fn slots_survive_the_environment_file() {
        let slots = Slots {
            a: Some(boot(1, "0.1.0", None)),
            b: Some(boot(12, "0.2.0", Some((2, 1)))),
        };
        let bytes = encode_env(&slots.to_env()).unwrap();
        assert_eq!(bytes.len(), ENV_SIZE);
        let vars = decode_env(&bytes).unwrap();
        assert!(vars["bootcmd"].contains("source ${scriptaddr}"));
        assert_eq!(vars["brig_b_left"], "2");
        assert!(
            !vars.contains_key("brig_a_left"),
            "a good slot counts nothing"
        );
        assert_eq!(Slots::from_env(&vars), slots);

        let one = Slots {
            a: Some(boot(1, "0.1.0", None)),
            b: None,
        };
        assert_eq!(Slots::from_env(&one.to_env()), one);
    }

    #[test]
    fn a_damaged_or_foreign_environment_is_refused() {
        let mut bytes = encode_env(&Slots::default().to_env()).unwrap();
        bytes[100] ^= 1;
        assert!(decode_env(&bytes).unwrap_err().contains("CRC32"));
        assert!(decode_env(&bytes[..100]).unwrap_err().contains("100 bytes"));
        let huge: BTreeMap<String, String> = [("x".to_string(), "y".repeat(ENV_SIZE))].into();
        assert!(encode_env(&huge).unwrap_err().contains("do not fit"));
        let bad: BTreeMap<String, String> = [("a=b".to_string(), "c".to_string())].into();
        assert!(encode_env(&bad).is_err());
    }

    #[test]
    fn counters_u_boot_lowered_read_back() {
        // As the script leaves them after a boot: setexpr's output.
        let mut vars = Slots {
            a: Some(boot(1, "0.1.0", None)),
            b: Some(boot(2, "0.2.0", Some((3, 0)))),
        }
        .to_env();
        vars.insert("brig_b_left".into(), "0".into());
        vars.insert("brig_b_done".into(), "3".into());
        vars.insert("fdt_addr".into(), "8000000".into());
        let slots = Slots::from_env(&vars);
        assert_eq!(slots.b.unwrap().name.counter, Some((0, 3)));
        // A counter that is not a number: that slot is not trusted.
        vars.insert("brig_b_left".into(), "lots".into());
        assert_eq!(Slots::from_env(&vars).b, None);
    }

    #[test]
    fn the_script_image_has_mkimages_header() {
        let image = script_image("echo hi\n");
        assert_eq!(&image[..4], &[0x27, 0x05, 0x19, 0x56]);
        let mut header = image[..64].to_vec();
        let stored = u32::from_be_bytes(header[4..8].try_into().unwrap());
        header[4..8].fill(0);
        assert_eq!(crc32(&header), stored);
        let data = &image[64..];
        assert_eq!(u32::from_be_bytes(image[12..16].try_into().unwrap()), 16);
        assert_eq!(
            u32::from_be_bytes(image[24..28].try_into().unwrap()),
            crc32(data)
        );
        assert_eq!(&data[8..], b"echo hi\n");
        // Every variable the script saves is one the environment has.
        let both = Slots {
            a: Some(boot(1, "0.1.0", Some((1, 2)))),
            b: Some(boot(2, "0.2.0", Some((1, 2)))),
        };
        let export = BOOT_SCRIPT
            .lines()
            .find(|l| l.contains("env export -c"))
            .unwrap();
        for name in both.to_env().keys() {
            assert!(
                export.split_whitespace().any(|w| w == name),
                "the script does not save {name}"
            );
        }
    }
}
