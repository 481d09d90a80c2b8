//! Log segments: `ledger-<seq>.log` files of framed records (see [`super::codec`]).
//!
//! A segment starts with a 16-byte header (magic, sequence number). Group commits are appended
//! with one `write` and one `fdatasync` each; a group never spans two segments.
//!
//! **Allocated ahead.** The writer keeps the file's blocks allocated (`fallocate`, which also
//! sets the file's size) up to [`ALLOCATE_STEP`] past what it has written, so that a group
//! commit's `fdatasync` does not also run the file system's block allocator and commit a new
//! size: on the reference disk, an `fdatasync` of a growing file stalled for up to a second
//! where one of an allocated file stayed within milliseconds (BENCHMARKS.md). Allocated blocks
//! that were never written read as zeros, so a segment may end in zeros: reading stops at the
//! first frame that is not valid and treats an all-zero rest as the end of the records, not as
//! damage. Allocation is a hint: where the file system refuses it, appends grow the file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::embedded::files::{CacheDropper, allocate, sync_dir};

use super::codec::{FRAME_HEADER, MAX_PAYLOAD, MIN_PAYLOAD, PayloadHeader, frame_header};

const MAGIC: [u8; 8] = *b"SGMLDG01";
/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER: u64 = 16;

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("ledger-{seq:010}.log"))
}

/// The log segments in `dir`, sorted by sequence number.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix("ledger-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|seq| seq.parse().ok())
        {
            segments.push(seq);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// How far past the written end a segment's blocks are allocated, each time the end comes
/// within half of it.
pub(crate) const ALLOCATE_STEP: u64 = 16 << 20;

/// The segment being appended to.
pub(crate) struct LogWriter {
    dir: PathBuf,
    seq: u64,
    file: File,
    len: u64,
    cache: CacheDropper,
    /// The file's size: blocks are allocated up to here.
    allocated: u64,
    /// `false` once the file system refused to allocate ahead.
    allocate: bool,
}

impl LogWriter {
    /// Creates segment `seq` (header written and durable, directory entry too).
    pub(crate) fn create(dir: &Path, seq: u64) -> io::Result<LogWriter> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(segment_path(dir, seq))?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&seq.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: SEGMENT_HEADER,
            cache: CacheDropper::default(),
            allocated: SEGMENT_HEADER,
            allocate: true,
        })
    }

    /// Reopens segment `seq` for appending at `valid_len`, durably cutting off anything after.
    pub(crate) fn reopen(dir: &Path, seq: u64, valid_len: u64) -> io::Result<LogWriter> {
        if valid_len < SEGMENT_HEADER {
            return LogWriter::create(dir, seq);
        }
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, seq))?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: valid_len,
            cache: CacheDropper::default(),
            allocated: valid_len,
            allocate: true,
        })
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends framed records at the end and makes them durable; returns how long the
    /// `write` and the `fdatasync` took.
    pub(crate) fn append(&mut self, frames: &[u8]) -> io::Result<(Duration, Duration)> {
        let started = Instant::now();
        let end = self.len + frames.len() as u64;
        if self.allocate && end + ALLOCATE_STEP / 2 > self.allocated {
            self.allocate_ahead(end);
        }
        self.file.write_all_at(frames, self.len)?;
        let written = Instant::now();
        self.file.sync_data()?;
        let synced = written.elapsed();
        self.len += frames.len() as u64;
        self.cache.drop_durable(&self.file, self.len);
        Ok((written - started, synced))
    }

    /// Allocates the file's blocks up to `ALLOCATE_STEP` past `end`. The new size needs no
    /// `fsync` of its own: it becomes durable with the next group's `fdatasync`, and if it is
    /// lost the file is only shorter.
    fn allocate_ahead(&mut self, end: u64) {
        let to = end + ALLOCATE_STEP;
        match allocate(&self.file, self.allocated, to - self.allocated) {
            Ok(()) => self.allocated = to,
            Err(error) => {
                tracing::debug!(%error, "the ledger log cannot allocate ahead; appends grow it");
                self.allocate = false;
            }
        }
    }

    /// Starts segment `seq + 1`; the current one is already durable.
    pub(crate) fn rotate(&mut self) -> io::Result<()> {
        *self = LogWriter::create(&self.dir, self.seq + 1)?;
        Ok(())
    }
}

impl Drop for LogWriter {
    /// Gives back the blocks allocated past the end, so that a segment closed in order ends
    /// with its last record (best effort: after a crash the zeros stay, and reading accepts
    /// them).
    fn drop(&mut self) {
        if self.allocated > self.len && self.file.set_len(self.len).is_ok() {
            let _ = self.file.sync_all();
        }
    }
}

/// What reading a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// Bytes up to the end of the last valid frame (0 if even the header is short).
    pub(crate) valid_len: u64,
    pub(crate) file_len: u64,
    /// Everything after `valid_len` reads as zeros (allocated ahead and never written, or
    /// nothing at all): the records end there, nothing was torn.
    pub(crate) zero_tail: bool,
}

/// Reads segment `seq`, handing each valid frame's offset and payload to `on_frame`, until the
/// end or the first short or corrupt frame.
pub(crate) fn scan_segment(
    dir: &Path,
    seq: u64,
    mut on_frame: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<SegmentScan> {
    let path = segment_path(dir, seq);
    let file = File::open(&path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = SegmentScan {
        valid_len: 0,
        file_len,
        zero_tail: false,
    };
    let mut header = [0u8; SEGMENT_HEADER as usize];
    if !read_full(&mut reader, &mut header)? {
        return Ok(scan);
    }
    if header[..8] != MAGIC || header[8..] != seq.to_le_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not ledger segment {seq}", path.display()),
        ));
    }
    scan.valid_len = SEGMENT_HEADER;
    let mut payload = Vec::new();
    // Recovery reads each segment once: what it has read leaves the page cache as it goes.
    let mut cache = CacheDropper::default();
    loop {
        let mut frame = [0u8; FRAME_HEADER];
        if !read_full(&mut reader, &mut frame)? {
            break;
        }
        let (len, crc) = frame_header(&frame);
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            || scan.valid_len + (FRAME_HEADER + len) as u64 > file_len
        {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
            break;
        }
        on_frame(scan.valid_len, &payload)?;
        scan.valid_len += (FRAME_HEADER + len) as u64;
        cache.drop_read(reader.get_ref(), scan.valid_len);
    }
    scan.zero_tail = zeros(reader.get_ref(), scan.valid_len, file_len)?;
    Ok(scan)
}

/// Whether `file` reads as zeros only in `from..to`.
fn zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether the bytes of segment `seq` from `from` on hold a valid frame of a group that
/// starts after `torn_first_seq` — proof that the damaged group before it had been made
/// durable (the writer starts a group only after the previous one's `fdatasync`), so the damage
/// is corruption, not a torn write.
pub(crate) fn later_group_after(
    dir: &Path,
    seq: u64,
    from: u64,
    torn_first_seq: u64,
) -> io::Result<Option<u64>> {
    let file = File::open(segment_path(dir, seq))?;
    let file_len = file.metadata()?.len();
    if from >= file_len {
        return Ok(None);
    }
    let mut tail = vec![0u8; (file_len - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    for at in 0..tail.len().saturating_sub(FRAME_HEADER) {
        let (len, crc) = frame_header(&tail[at..]);
        let start = at + FRAME_HEADER;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || start + len > tail.len() {
            continue;
        }
        let payload = &tail[start..start + len];
        let Ok(header) = PayloadHeader::decode(payload) else {
            continue;
        };
        if header.group_first() > torn_first_seq && crc32fast::hash(payload) == crc {
            return Ok(Some(from + at as u64));
        }
    }
    Ok(None)
}

/// Fills `buf`; `false` if the input ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}
