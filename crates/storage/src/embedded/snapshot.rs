//! Snapshots: `snapshot-<seq>.snap`, a dump of every live profile that covers all WAL segments
//! below `seq`.
//!
//! ```text
//! magic "SGMSNP01"
//! frames [len u32][crc32 u32][payload], payload starting with a kind byte:
//!   0 header   seq u64, floor_ms i64, shard_bits u32
//!   1 shard    shard u32, entries u32, then per entry (in key order):
//!              key [u64; 2] (table order), updated u32, links u32, (segment u32, expiry u32) * links
//!   2 end      profiles u64, links u64
//! ```
//!
//! The dump runs beside the writer: each shard is read in chunks under its read lock, resuming
//! after the last key seen, so a chunk never blocks writers or readers for long. Every key is
//! captured at some point at or after the WAL rotation, which is all replay needs: WAL
//! operations are blind writes, so replaying ones the snapshot already contains changes nothing.
//! Entries come out in key order per shard, so loading is one sequential fill per shard.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use parking_lot::RwLock;

use super::Padded;
use super::codec::{FRAME_HEADER, MAX_PAYLOAD, frame_header};
use super::files::{snapshot_path, snapshot_tmp_path, sync_dir};
use super::mmap::MmapVec;
use super::table::{Key, SHARD_BITS, SHARDS, Slot, Table};

const MAGIC: [u8; 8] = *b"SGMSNP01";
const KIND_HEADER: u8 = 0;
const KIND_SHARD: u8 = 1;
const KIND_END: u8 = 2;
/// Entries read per lock hold while dumping.
const CHUNK: usize = 2048;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotInfo {
    pub(crate) profiles: u64,
    pub(crate) links: u64,
    pub(crate) bytes: u64,
}

fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)
}

/// Writes `snapshot-<seq>.snap` from the live tables, dropping what is expired at `floor_ms`.
pub(crate) fn write_snapshot(
    dir: &Path,
    seq: u64,
    floor_ms: i64,
    expiry_secs: i64,
    shards: &[Padded<RwLock<Table>>],
) -> io::Result<SnapshotInfo> {
    let tmp = snapshot_tmp_path(dir, seq);
    let file = File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(4 << 20, file);
    out.write_all(&MAGIC)?;
    let mut frame = Vec::with_capacity(1 << 20);
    frame.push(KIND_HEADER);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&floor_ms.to_le_bytes());
    frame.extend_from_slice(&SHARD_BITS.to_le_bytes());
    write_frame(&mut out, &frame)?;

    let now_s = floor_ms.div_euclid(1000);
    let mut info = SnapshotInfo {
        profiles: 0,
        links: 0,
        bytes: 0,
    };
    for (index, shard) in shards.iter().enumerate() {
        let mut after: Option<Key> = None;
        loop {
            frame.clear();
            frame.push(KIND_SHARD);
            frame.extend_from_slice(&(index as u32).to_le_bytes());
            frame.extend_from_slice(&0u32.to_le_bytes());
            let mut entries = 0u32;
            let last = shard.0.read().scan_after(
                after,
                CHUNK,
                now_s,
                expiry_secs,
                |key, updated, links| {
                    frame.extend_from_slice(&key.0[0].to_le_bytes());
                    frame.extend_from_slice(&key.0[1].to_le_bytes());
                    frame.extend_from_slice(&updated.to_le_bytes());
                    let count_at = frame.len();
                    frame.extend_from_slice(&0u32.to_le_bytes());
                    let mut count = 0u32;
                    for [segment, expiry] in links {
                        frame.extend_from_slice(&segment.to_le_bytes());
                        frame.extend_from_slice(&expiry.to_le_bytes());
                        count += 1;
                    }
                    frame[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
                    entries += 1;
                    info.links += count as u64;
                },
            );
            if entries > 0 {
                frame[5..9].copy_from_slice(&entries.to_le_bytes());
                write_frame(&mut out, &frame)?;
                info.profiles += entries as u64;
            }
            match last {
                Some(key) => after = Some(key),
                None => break,
            }
        }
    }
    frame.clear();
    frame.push(KIND_END);
    frame.extend_from_slice(&info.profiles.to_le_bytes());
    frame.extend_from_slice(&info.links.to_le_bytes());
    write_frame(&mut out, &frame)?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    info.bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, snapshot_path(dir, seq))?;
    sync_dir(dir)?;
    Ok(info)
}

/// A loaded snapshot.
pub(crate) struct Loaded {
    pub(crate) tables: Vec<Table>,
    pub(crate) floor_ms: i64,
    pub(crate) profiles: u64,
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot {} is corrupt: {what}", path.display()),
    )
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Per-shard entries being collected while a shard's frames are read.
struct Staging {
    shard: usize,
    entries: Vec<Slot>,
    arena: MmapVec<u32>,
    links: usize,
}

impl Staging {
    fn new(shard: usize) -> Staging {
        let mut arena = MmapVec::new();
        arena.push(0);
        Staging {
            shard,
            entries: Vec::new(),
            arena,
            links: 0,
        }
    }
}

/// Loads and fully verifies `snapshot-<seq>.snap`.
pub(crate) fn load_snapshot(dir: &Path, seq: u64) -> io::Result<Loaded> {
    let path = snapshot_path(dir, seq);
    let mut reader = BufReader::with_capacity(4 << 20, File::open(&path)?);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|_| invalid(&path, "short header"))?;
    if magic != MAGIC {
        return Err(invalid(&path, "bad magic"));
    }
    let mut tables: Vec<Table> = (0..SHARDS).map(|_| Table::new()).collect();
    let mut payload = Vec::new();
    let mut floor_ms = None;
    let mut staging: Option<Staging> = None;
    let mut profiles = 0u64;
    let mut links_total = 0u64;
    let mut next_shard = 0usize;
    loop {
        let mut frame = [0u8; FRAME_HEADER];
        reader
            .read_exact(&mut frame)
            .map_err(|_| invalid(&path, "missing end frame"))?;
        let (len, crc) = frame_header(frame);
        if len == 0 || len > MAX_PAYLOAD {
            return Err(invalid(&path, "bad frame length"));
        }
        payload.resize(len, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|_| invalid(&path, "truncated frame"))?;
        if crc32fast::hash(&payload) != crc {
            return Err(invalid(&path, "checksum mismatch"));
        }
        let mut cursor = Cursor(&payload[1..]);
        match payload[0] {
            KIND_HEADER => {
                let file_seq = cursor.u64().ok_or_else(|| invalid(&path, "header"))?;
                let floor = cursor.u64().ok_or_else(|| invalid(&path, "header"))? as i64;
                let bits = cursor.u32().ok_or_else(|| invalid(&path, "header"))?;
                if file_seq != seq || bits != SHARD_BITS {
                    return Err(invalid(&path, "header does not match this store"));
                }
                floor_ms = Some(floor);
            }
            KIND_SHARD => {
                let shard = cursor.u32().ok_or_else(|| invalid(&path, "shard frame"))? as usize;
                let entries = cursor.u32().ok_or_else(|| invalid(&path, "shard frame"))?;
                if floor_ms.is_none() || shard >= SHARDS || shard < next_shard {
                    return Err(invalid(&path, "shard frames out of order"));
                }
                if staging.as_ref().is_some_and(|s| s.shard != shard) {
                    let done = staging.take().expect("checked");
                    profiles += done.entries.len() as u64;
                    links_total += done.links as u64;
                    tables[done.shard] = Table::from_sorted(&done.entries, done.arena, done.links);
                }
                next_shard = shard;
                let stage = staging.get_or_insert_with(|| Staging::new(shard));
                for _ in 0..entries {
                    let hi = cursor.u64().ok_or_else(|| invalid(&path, "entry"))?;
                    let lo = cursor.u64().ok_or_else(|| invalid(&path, "entry"))?;
                    let key = Key([hi, lo]);
                    let updated = cursor.u32().ok_or_else(|| invalid(&path, "entry"))?;
                    let count = cursor.u32().ok_or_else(|| invalid(&path, "entry"))? as usize;
                    let links = cursor
                        .take(count * 8)
                        .ok_or_else(|| invalid(&path, "entry links"))?;
                    if key.shard() != shard || stage.entries.last().is_some_and(|e| e.key >= key) {
                        return Err(invalid(&path, "entries out of order"));
                    }
                    let block = if count == 0 {
                        super::table::NO_LINKS
                    } else {
                        let offset = stage.arena.len() as u32;
                        stage.arena.reserve(1 + 2 * count);
                        stage.arena.push(count as u32);
                        for word in links.chunks_exact(4) {
                            stage
                                .arena
                                .push(u32::from_le_bytes(word.try_into().expect("4 bytes")));
                        }
                        offset
                    };
                    stage.entries.push(Slot {
                        key,
                        block,
                        updated,
                    });
                    stage.links += count;
                }
                if !cursor.0.is_empty() {
                    return Err(invalid(&path, "trailing bytes in shard frame"));
                }
            }
            KIND_END => {
                if let Some(done) = staging.take() {
                    profiles += done.entries.len() as u64;
                    links_total += done.links as u64;
                    tables[done.shard] = Table::from_sorted(&done.entries, done.arena, done.links);
                }
                let expected_profiles = cursor.u64().ok_or_else(|| invalid(&path, "end"))?;
                let expected_links = cursor.u64().ok_or_else(|| invalid(&path, "end"))?;
                if expected_profiles != profiles || expected_links != links_total {
                    return Err(invalid(&path, "counts do not match"));
                }
                let floor_ms = floor_ms.ok_or_else(|| invalid(&path, "no header"))?;
                return Ok(Loaded {
                    tables,
                    floor_ms,
                    profiles,
                });
            }
            _ => return Err(invalid(&path, "unknown frame kind")),
        }
    }
}
