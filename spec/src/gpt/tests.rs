use super::*;

const MIB: u64 = ALIGN;

fn part(name: &str, first: u64, last: u64) -> Partition {
    Partition {
        type_guid: types::linux_filesystem(),
        unique_guid: Guid::from_random([7; 16]),
        first_lba: first,
        last_lba: last,
        attributes: 0,
        name: name.into(),
    }
}

fn disk(table: &Table, sectors: u64) -> Vec<u8> {
    let mut d = vec![0u8; (sectors * SECTOR) as usize];
    let p = table.primary(sectors);
    d[..p.len()].copy_from_slice(&p);
    let b = table.backup(sectors);
    let at = Table::backup_offset(sectors) as usize;
    d[at..at + b.len()].copy_from_slice(&b);
    d
}

fn read_disk(d: &[u8]) -> Result<Found, String> {
    let sectors = d.len() as u64 / SECTOR;
    read(&d[..PRIMARY_BYTES as usize], sectors, &mut |at, len| {
        Ok(d[at as usize..at as usize + len].to_vec())
    })
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn guids_print_and_parse_in_the_usual_form() {
    let g = types::efi_system();
    assert_eq!(g.to_string(), types::EFI_SYSTEM);
    assert_eq!(&g.0[..4], &[0x28, 0x73, 0x2A, 0xC1]);
    assert_eq!(Guid::parse("not-a-guid"), None);
    let r = Guid::from_random([0xff; 16]).to_string();
    assert_eq!(&r[14..15], "4", "version 4 in {r}");
    assert!(
        matches!(&r[19..20], "8" | "9" | "A" | "B"),
        "variant in {r}"
    );
}

#[test]
fn a_written_table_reads_back_the_same() {
    let sectors = 64 * MIB;
    let mut t = Table::new(Guid::from_random([1; 16]));
    t.add(
        Partition {
            type_guid: types::efi_system(),
            ..part("BRIG_BOOT", MIB, 17 * MIB - 1)
        },
        sectors,
    )
    .unwrap();
    t.add(part("BRIG_SYSTEM", 17 * MIB, 33 * MIB - 1), sectors)
        .unwrap();
    let found = read_disk(&disk(&t, sectors)).unwrap();
    assert_eq!(found.table, t);
    assert_eq!(found.note, None);
    assert_eq!(found.table.find("BRIG_SYSTEM").unwrap().0, 2);
}

#[test]
fn sfdisk_would_agree_on_the_usable_range_and_the_mbr() {
    let sectors = 2048 * MIB;
    assert_eq!(Table::usable(sectors), (34, sectors - 34));
    let p = Table::new(Guid::default()).primary(sectors);
    assert_eq!(p.len() as u64, PRIMARY_BYTES);
    assert_eq!(&p[510..512], &[0x55, 0xAA]);
    assert_eq!(p[450], 0xEE);
    assert_eq!(&p[512..520], b"EFI PART");
}

#[test]
fn overlapping_or_out_of_range_partitions_are_refused() {
    let sectors = 64 * MIB;
    let mut t = Table::new(Guid::default());
    t.add(part("a", MIB, 10 * MIB - 1), sectors).unwrap();
    let e = t.add(part("b", 9 * MIB, 12 * MIB), sectors).unwrap_err();
    assert!(
        matches!(&e, LayoutError::Overlap(_)) && e.to_string().contains("overlaps partition 1"),
        "{e}"
    );
    let e = t.add(part("c", 20 * MIB, sectors), sectors).unwrap_err();
    assert!(matches!(e, LayoutError::OffTheDisk(_)), "{e}");
    let e = t
        .add(part(&"x".repeat(37), 20 * MIB, 21 * MIB), sectors)
        .unwrap_err();
    assert!(matches!(e, LayoutError::NameTooLong(_)), "{e}");
}

#[test]
fn the_free_tail_is_aligned_and_grows_with_the_disk() {
    let small = 1024 * MIB;
    let mut t = Table::new(Guid::default());
    t.add(part("boot", MIB, 65 * MIB - 1), small).unwrap();
    t.add(part("system", 65 * MIB, 129 * MIB - 1 - 100), small)
        .unwrap();
    // After the system partition, from the next MiB, to the last whole
    // MiB before the backup table.
    assert_eq!(t.free_tail(small), Some((129 * MIB, 1023 * MIB - 1)));
    let big = 4096 * MIB;
    assert_eq!(t.free_tail(big), Some((129 * MIB, 4095 * MIB - 1)));
    let full = 129 * MIB + 40;
    assert_eq!(t.free_tail(full), None);
}

#[test]
fn a_partition_grows_into_free_space_but_not_over_another() {
    let sectors = 256 * MIB;
    let mut t = Table::new(Guid::default());
    t.add(part("a", MIB, 10 * MIB - 1), sectors).unwrap();
    t.add(part("b", 20 * MIB, 30 * MIB - 1), sectors).unwrap();
    t.grow(2, 200 * MIB - 1, sectors).unwrap();
    assert_eq!(t.find("b").unwrap().1.last_lba, 200 * MIB - 1);
    let e = t.grow(1, 25 * MIB, sectors).unwrap_err();
    assert!(e.to_string().contains("overlaps partition 2"), "{e}");
    assert_eq!(t.find("a").unwrap().1.last_lba, 10 * MIB - 1);
    assert_eq!(
        t.grow(5, 30 * MIB, sectors),
        Err(LayoutError::NoPartition(5))
    );
}

#[test]
fn a_table_from_a_smaller_disk_is_read_and_said_to_need_moving() {
    let mut t = Table::new(Guid::from_random([3; 16]));
    t.add(part("system", MIB, 2 * MIB - 1), 16 * MIB).unwrap();
    let mut d = disk(&t, 16 * MIB);
    d.resize((64 * MIB * SECTOR) as usize, 0);
    let found = read_disk(&d).unwrap();
    assert_eq!(found.table, t);
    assert!(found.note.unwrap().contains("the disk is larger"));
}

#[test]
fn a_damaged_primary_falls_back_to_the_backup_and_both_damaged_is_an_error() {
    let sectors = 16 * MIB;
    let mut t = Table::new(Guid::from_random([4; 16]));
    t.add(part("state", MIB, 8 * MIB - 1), sectors).unwrap();
    let mut d = disk(&t, sectors);
    // A power cut in the middle of rewriting the primary entries.
    d[1024 + 40] ^= 0xff;
    let found = read_disk(&d).unwrap();
    assert_eq!(found.table, t);
    assert!(found.note.unwrap().contains("the backup table was used"));
    let last = d.len() - SECTOR as usize;
    d[last + 20] ^= 0xff;
    let e = read_disk(&d).unwrap_err();
    assert!(
        e.contains("primary table: the partition entries fail their checksum"),
        "{e}"
    );
    assert!(e.contains("backup table: GPT header at sector"), "{e}");
    assert!(read_disk(&vec![0u8; (sectors * SECTOR) as usize]).is_err());
}

#[test]
fn a_hybrid_mbr_shows_the_boot_partition_and_protects_the_table() {
    let boot = Partition {
        type_guid: types::efi_system(),
        unique_guid: Guid([7; 16]),
        first_lba: ALIGN,
        last_lba: ALIGN + 131_071,
        attributes: 0,
        name: "BRIG_BOOT".into(),
    };
    let mbr = hybrid_mbr(&boot).unwrap();
    let entry = |slot: usize| &mbr[446 + 16 * slot..446 + 16 * (slot + 1)];
    let u32_at = |e: &[u8], at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
    assert_eq!(entry(0)[4], 0x0C);
    assert_eq!(u32_at(entry(0), 8), 2048);
    assert_eq!(u32_at(entry(0), 12), 131_072);
    // Linux takes a GPT only when the protective entry starts at LBA 1.
    assert_eq!(entry(1)[4], 0xEE);
    assert_eq!(u32_at(entry(1), 8), 1);
    assert_eq!(u32_at(entry(1), 12), 2047);
    assert_eq!(entry(2), [0; 16]);
    assert_eq!(mbr[510..], [0x55, 0xAA]);
    assert!(is_hybrid_mbr(&mbr));
    assert!(!is_hybrid_mbr(&protective_mbr(1 << 21)));
    assert!(!is_hybrid_mbr(&[0; 512]));
    let too_early = Partition {
        first_lba: 20,
        ..boot
    };
    assert!(hybrid_mbr(&too_early).is_err());
}

/// Found by fuzzing: a disk of no sectors (an empty card reader says 0).
#[test]
fn a_disk_too_small_for_a_table_is_an_error() {
    for sectors in [0, 1, 2 + 2 * ENTRY_SECTORS] {
        let err = read(&[], sectors, &mut |_, _| Err("nothing there".into()))
            .err()
            .unwrap();
        assert!(err.contains("too few for a GUID partition table"), "{err}");
    }
}
