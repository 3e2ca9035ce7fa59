//! Where records are kept: one JSON object a line in `current.jsonl`; when
//! it reaches `max_file` bytes it is compressed into `<seq>.jsonl.gz` and a
//! new one begins; the oldest compressed files go when all of them pass
//! `max_total`. A write that fails for lack of room (a full disk) deletes
//! the oldest file and tries again, so logging goes on with the newest
//! records; only when nothing is left to delete is the record dropped (and
//! counted).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

pub use brig_spec::logs::Entry;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

const CURRENT: &str = "current.jsonl";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file: u64,
    pub max_total: u64,
}

pub struct Store {
    dir: PathBuf,
    limits: Limits,
    current: File,
    current_bytes: u64,
    next_seq: u64,
    /// Records that could not be written anywhere.
    pub dropped: u64,
}

impl Store {
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        let path = dir.join(CURRENT);
        let current = OpenOptions::new().create(true).append(true).open(&path)?;
        let current_bytes = current.metadata()?.len();
        let next_seq = rotated(dir)?.last().map_or(1, |(seq, _)| seq + 1);
        Ok(Store {
            dir: dir.to_path_buf(),
            limits,
            current,
            current_bytes,
            next_seq,
            dropped: 0,
        })
    }

    /// Appends one entry; rotates first if it would not fit.
    pub fn append(&mut self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        if self.current_bytes > 0 && self.current_bytes + line.len() as u64 > self.limits.max_file {
            if let Err(e) = self.rotate() {
                eprintln!("brig-logd: rotating {}: {e}", self.dir.display());
            }
        }
        loop {
            match self.current.write_all(&line) {
                Ok(()) => {
                    self.current_bytes += line.len() as u64;
                    return;
                }
                // Full: make room by dropping the oldest, newest records win.
                Err(e) if is_full(&e) && self.delete_oldest() => continue,
                // Nothing older left but this file's own records.
                Err(e) if is_full(&e) && self.current_bytes > 0 => {
                    if self.current.set_len(0).is_err() {
                        self.dropped += 1;
                        return;
                    }
                    self.current_bytes = 0;
                }
                Err(_) => {
                    self.dropped += 1;
                    return;
                }
            }
        }
    }

    /// `current.jsonl` → `<seq>.jsonl.gz`, then the total trimmed.
    fn rotate(&mut self) -> io::Result<()> {
        let from = self.dir.join(CURRENT);
        let to = self.dir.join(format!("{:010}.jsonl.gz", self.next_seq));
        let partial = to.with_extension("partial");
        let compressed = (|| {
            let mut input = File::open(&from)?;
            let mut output =
                GzEncoder::new(File::create(&partial)?, flate2::Compression::default());
            io::copy(&mut input, &mut output)?;
            output.finish()?.sync_all()?;
            fs::rename(&partial, &to)?;
            // The rename is only kept across a power cut once the
            // directory is synced.
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = compressed {
            let _ = fs::remove_file(&partial);
            if !is_full(&e) || !self.delete_oldest() {
                // Keep going in the same file rather than lose records.
                return Err(e);
            }
            return self.rotate();
        }
        self.next_seq += 1;
        self.current = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&from)?;
        self.current_bytes = 0;
        self.trim()
    }

    /// Deletes the oldest compressed files until they all fit `max_total`
    /// (with the current file).
    fn trim(&mut self) -> io::Result<()> {
        let mut files = rotated(&self.dir)?;
        let mut total: u64 = self.current_bytes
            + files
                .iter()
                .map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len()))
                .sum::<u64>();
        while total > self.limits.max_total && !files.is_empty() {
            let (_, oldest) = files.remove(0);
            total -= fs::metadata(&oldest).map_or(0, |m| m.len());
            fs::remove_file(&oldest)?;
        }
        Ok(())
    }

    fn delete_oldest(&mut self) -> bool {
        match rotated(&self.dir).ok().and_then(|f| f.into_iter().next()) {
            Some((_, oldest)) => fs::remove_file(oldest).is_ok(),
            None => false,
        }
    }

    /// Every stored entry, oldest first, that `keep` accepts; the last
    /// `tail` of them if given.
    pub fn read(&self, keep: &dyn Fn(&Entry) -> bool, tail: Option<usize>) -> Vec<Entry> {
        let mut found = Vec::new();
        let mut sources: Vec<Box<dyn Read>> = Vec::new();
        for (_, path) in rotated(&self.dir).unwrap_or_default() {
            if let Ok(file) = File::open(&path) {
                sources.push(Box::new(GzDecoder::new(file)));
            }
        }
        if let Ok(file) = File::open(self.dir.join(CURRENT)) {
            sources.push(Box::new(file));
        }
        for source in sources {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                    if keep(&entry) {
                        found.push(entry);
                    }
                }
            }
            if let Some(n) = tail {
                let excess = found.len().saturating_sub(n);
                found.drain(..excess);
            }
        }
        found
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The compressed files, oldest (lowest sequence) first.
fn rotated(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_suffix(".jsonl.gz")?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry {
            time: format!("2026-11-22T00:00:{:02}.000000Z", n % 60),
            source: "syslog".into(),
            priority: 30,
            host: None,
            app: Some(if n.is_multiple_of(2) { "even" } else { "odd" }.into()),
            pid: None,
            message: format!("message {n} {}", "x".repeat(100)),
        }
    }

    #[test]
    fn entries_read_back_in_order_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file: 4096,
            max_total: 1 << 20,
        };
        let mut store = Store::open(dir.path(), limits).unwrap();
        for n in 0..200 {
            store.append(&entry(n));
        }
        let all = store.read(&|_| true, None);
        assert_eq!(all.len(), 200);
        assert_eq!(all[0], entry(0));
        assert_eq!(all[199], entry(199));
        let files = rotated(dir.path()).unwrap();
        assert!(files.len() > 3, "rotated into {} files", files.len());
        // A reopened store carries on after the last file.
        drop(store);
        let mut store = Store::open(dir.path(), limits).unwrap();
        store.append(&entry(200));
        let odd = store.read(&|e| e.app.as_deref() == Some("odd"), Some(3));
        let messages: Vec<&str> = odd.iter().map(|e| &e.message[..11]).collect();
        assert_eq!(messages, ["message 195", "message 197", "message 199"]);
        assert_eq!(store.read(&|_| true, None).len(), 201);
    }

    #[test]
    fn the_total_stays_bounded_and_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_file: 8192,
            max_total: 16384,
        };
        let mut store = Store::open(dir.path(), limits).unwrap();
        for n in 0..5000 {
            store.append(&entry(n));
        }
        let size: u64 = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(
            size <= limits.max_total + limits.max_file,
            "{size} bytes kept"
        );
        let kept = store.read(&|_| true, None);
        assert_eq!(kept.last(), Some(&entry(4999)));
        // Contiguous: the oldest went, nothing in between.
        let first: usize = kept[0].message.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(kept.len(), 5000 - first);
        assert_eq!(store.dropped, 0);
    }

    #[test]
    fn broken_lines_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CURRENT), "{not json\n").unwrap();
        let limits = Limits {
            max_file: 1 << 20,
            max_total: 1 << 20,
        };
        let mut store = Store::open(dir.path(), limits).unwrap();
        store.append(&entry(1));
        assert_eq!(store.read(&|_| true, None), [entry(1)]);
    }
}
