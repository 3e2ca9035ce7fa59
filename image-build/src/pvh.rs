//! The x86_64 kernel uncompressed, for QEMU to load through its PVH entry
//! point (`CONFIG_PVH`, the ELF note QEMU looks for in `-kernel vmlinux`):
//! no real-mode setup, no firmware's Linux loader, no decompressor. Under
//! TCG the kernel decompressing itself cost about half a second of every
//! boot (docs/benchmarks.md). The same kernel, bit for bit: the ELF image
//! that Debian's bzImage carries, zstd-compressed (`CONFIG_KERNEL_ZSTD`).

use std::io::Read;
use std::path::Path;

/// The name beside `vmlinuz` in a build's directory; `brig run` prefers it.
pub const VMLINUX: &str = "vmlinux";

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The ELF kernel inside `bzimage`: the first zstd frame that decodes to
/// an ELF file.
/// Writes `dir/vmlinux` from the bzImage `vmlinuz`, for QEMU's PVH boot.
/// Ok(Err(why)) when the bzImage holds no kernel it can take out (then
/// nothing is written, and QEMU boots the compressed one).
pub fn write_vmlinux(vmlinuz: &Path, dir: &Path) -> anyhow::Result<Result<(), String>> {
    use anyhow::Context;
    let bzimage =
        std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let elf = match uncompressed_kernel(&bzimage) {
        Ok(elf) => elf,
        Err(why) => return Ok(Err(why)),
    };
    let path = dir.join(VMLINUX);
    std::fs::write(&path, elf).with_context(|| format!("writing {}", path.display()))?;
    Ok(Ok(()))
}

pub fn uncompressed_kernel(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    let mut from = 0;
    while let Some(at) = bzimage[from..]
        .windows(4)
        .position(|w| w == ZSTD_MAGIC)
        .map(|p| from + p)
    {
        let mut elf = Vec::new();
        let decoded = zstd::stream::read::Decoder::new(&bzimage[at..])
            .map(zstd::stream::read::Decoder::single_frame)
            .and_then(|mut d| d.read_to_end(&mut elf));
        if decoded.is_ok() && elf.starts_with(b"\x7fELF") {
            return Ok(elf);
        }
        from = at + 1;
    }
    Err("no zstd-compressed ELF kernel in it (not a CONFIG_KERNEL_ZSTD bzImage?)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elf_kernel_comes_out_of_the_first_frame_that_holds_one() {
        let elf = b"\x7fELF\x02\x01\x01 the kernel".repeat(100);
        let mut image = b"MZ setup code".to_vec();
        // A frame that is no kernel (the setup's own data), then the kernel,
        // then what follows the payload.
        image.extend(zstd::encode_all(&b"not a kernel"[..], 3).unwrap());
        image.extend(zstd::encode_all(elf.as_slice(), 19).unwrap());
        image.extend(b"\0\0\0\0 trailer");
        assert_eq!(uncompressed_kernel(&image).unwrap(), elf);
        let gzip_kernel = b"MZ setup code \x1f\x8b\x08 and so on".to_vec();
        assert!(uncompressed_kernel(&gzip_kernel)
            .unwrap_err()
            .contains("no zstd-compressed ELF kernel"));
    }
}
