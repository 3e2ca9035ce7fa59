//! Any disk start as PID 1 reads a boot disk's table: the primary copy,
//! and, when it is damaged, the backup fetched from the end of the
//! "disk" (the input itself). An error, never a panic.
#![no_main]

use brig_spec::gpt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sectors = data.len() as u64 / gpt::SECTOR;
    let mut read_at = |offset: u64, length: usize| -> Result<Vec<u8>, String> {
        let start = usize::try_from(offset).map_err(|e| e.to_string())?;
        data.get(start..start.saturating_add(length))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "past the end".to_string())
    };
    if let Ok(found) = gpt::read(data, sectors, &mut read_at) {
        let table = found.table;
        let _ = table.free_tail(sectors);
        let _ = table.primary(sectors);
    }
    let _ = gpt::is_hybrid_mbr(data);
});
