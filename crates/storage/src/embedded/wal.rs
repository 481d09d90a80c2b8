//! Write-ahead-log segments: `wal-<seq>.log` files of framed records (see [`super::codec`]).
//!
//! A segment starts with a 16-byte header (magic, sequence number). Records are appended and
//! made durable with one `fdatasync` per group commit. Reading stops at the first short or
//! corrupt frame; in the newest segment that is a torn tail of a write that was never
//! acknowledged, and recovery truncates it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::codec::{FRAME_HEADER, MAX_PAYLOAD, MIN_PAYLOAD, frame_header};
use super::files::{CacheDropper, sync_dir, wal_path};

const MAGIC: [u8; 8] = *b"SGMWAL01";
/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER: u64 = 16;

/// The segment being appended to.
pub(crate) struct Wal {
    dir: PathBuf,
    seq: u64,
    file: File,
    len: u64,
    cache: CacheDropper,
}

impl Wal {
    /// Creates segment `seq` (header written and durable, directory entry too).
    pub(crate) fn create(dir: &Path, seq: u64) -> io::Result<Wal> {
        let path = wal_path(dir, seq);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&seq.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: SEGMENT_HEADER,
            cache: CacheDropper::default(),
        })
    }

    /// Reopens segment `seq` for appending after its last valid record at `valid_len`,
    /// durably cutting off anything after it.
    pub(crate) fn reopen(dir: &Path, seq: u64, valid_len: u64) -> io::Result<Wal> {
        if valid_len < SEGMENT_HEADER {
            return Wal::create(dir, seq);
        }
        let file = OpenOptions::new().write(true).open(wal_path(dir, seq))?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: valid_len,
            cache: CacheDropper::default(),
        };
        wal.seek_end()?;
        Ok(wal)
    }

    fn seek_end(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::Start(self.len))?;
        Ok(())
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends framed records and makes them durable.
    pub(crate) fn append(&mut self, records: &[u8]) -> io::Result<()> {
        self.file.write_all(records)?;
        self.file.sync_data()?;
        self.len += records.len() as u64;
        self.cache.drop_durable(&self.file, self.len);
        Ok(())
    }

    /// Starts segment `seq + 1`; the current one is already durable.
    pub(crate) fn rotate(&mut self) -> io::Result<()> {
        *self = Wal::create(&self.dir, self.seq + 1)?;
        Ok(())
    }
}

/// What reading a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentRead {
    /// Bytes up to the end of the last valid record (0 if even the header is torn).
    pub(crate) valid_len: u64,
    pub(crate) file_len: u64,
    pub(crate) records: u64,
}

impl SegmentRead {
    pub(crate) fn is_torn(&self) -> bool {
        self.valid_len < self.file_len
    }
}

/// Reads segment `seq`, handing each valid record payload to `on_record`, until the end or the
/// first short or corrupt frame.
pub(crate) fn read_segment(
    dir: &Path,
    seq: u64,
    mut on_record: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<SegmentRead> {
    let path = wal_path(dir, seq);
    let file = File::open(&path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut read = SegmentRead {
        valid_len: 0,
        file_len,
        records: 0,
    };
    let mut header = [0u8; SEGMENT_HEADER as usize];
    if !read_full(&mut reader, &mut header)? {
        return Ok(read);
    }
    if header[..8] != MAGIC || header[8..] != seq.to_le_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not WAL segment {seq}", path.display()),
        ));
    }
    read.valid_len = SEGMENT_HEADER;
    let mut payload = Vec::new();
    // Recovery reads each segment once: what it has read leaves the page cache as it goes.
    let mut cache = CacheDropper::default();
    loop {
        let mut frame = [0u8; FRAME_HEADER];
        if !read_full(&mut reader, &mut frame)? {
            break;
        }
        let (len, crc) = frame_header(frame);
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            || read.valid_len + (FRAME_HEADER + len) as u64 > file_len
        {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
            break;
        }
        on_record(&payload)?;
        read.valid_len += (FRAME_HEADER + len) as u64;
        cache.drop_read(reader.get_ref(), read.valid_len);
        read.records += 1;
    }
    Ok(read)
}

/// Fills `buf`; `false` if the input ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}
