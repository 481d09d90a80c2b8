//! Append-only log with group commit: the durability half of the in-memory designs.
//!
//! Each batch becomes one frame: `[payload bytes u32 LE][profiles u32 LE][records]`, records as
//! [`encode_log_record`]. Frames are buffered and every `group` batches the buffer goes out in
//! one `write` followed by one `fdatasync`. (No checksums here; a real log needs them.)
//! Restart replays the frames into a fresh in-memory store.

use crate::data::{BATCH_PROFILES, Batch, decode_log_frame, encode_log_record};
use crate::store::Store;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

pub struct LogWriter {
    file: File,
    buffer: Vec<u8>,
    group: usize,
    pending: usize,
    pub bytes: u64,
    pub commits: u64,
}

impl LogWriter {
    pub fn create(path: &Path, group: usize) -> std::io::Result<Self> {
        Ok(LogWriter {
            file: File::create(path)?,
            buffer: Vec::with_capacity(group * BATCH_PROFILES * 128),
            group: group.max(1),
            pending: 0,
            bytes: 0,
            commits: 0,
        })
    }

    /// Appends one batch. Returns `true` when this call wrote and fsynced the group.
    pub fn append(&mut self, batch: &Batch) -> std::io::Result<bool> {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&[0u8; 8]);
        for (key, updated_at, links) in batch.iter() {
            encode_log_record(key, updated_at, links, &mut self.buffer);
        }
        let payload = (self.buffer.len() - start - 8) as u32;
        self.buffer[start..start + 4].copy_from_slice(&payload.to_le_bytes());
        self.buffer[start + 4..start + 8].copy_from_slice(&(batch.len() as u32).to_le_bytes());
        self.pending += 1;
        if self.pending == self.group {
            self.commit()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes and fsyncs whatever is buffered.
    pub fn commit(&mut self) -> std::io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        self.file.write_all(&self.buffer)?;
        self.file.sync_data()?;
        self.bytes += self.buffer.len() as u64;
        self.commits += 1;
        self.buffer.clear();
        self.pending = 0;
        Ok(())
    }
}

/// Replays every frame of the log at `path` into `store`; returns the profiles read.
pub fn replay(path: &Path, store: &mut dyn Store) -> anyhow::Result<u64> {
    let mut input = BufReader::with_capacity(4 << 20, File::open(path)?);
    let mut frame = Vec::new();
    let mut batch = Batch::with_capacity(BATCH_PROFILES);
    let mut profiles = 0;
    let mut header = [0u8; 8];
    loop {
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let payload = u32::from_le_bytes(header[..4].try_into()?) as usize;
        frame.resize(payload, 0);
        input.read_exact(&mut frame)?;
        decode_log_frame(&frame, &mut batch);
        anyhow::ensure!(
            batch.len() == u32::from_le_bytes(header[4..].try_into()?) as usize,
            "bad log frame"
        );
        profiles += batch.len() as u64;
        store.apply(&batch)?;
    }
    Ok(profiles)
}
