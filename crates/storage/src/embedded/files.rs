//! The store directory: its lock, its secret hash key and the names of its files.
//!
//! ```text
//! LOCK                  flock(2)-ed for the life of the open store
//! hash.key              16 random bytes, 0600: the keyed-hash secret of ProfileKeys
//! wal-<seq>.log         write-ahead log segments, seq ascending
//! snapshot-<seq>.snap   a full dump covering every WAL segment below seq
//! *.tmp                 unfinished files; removed on open
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "LOCK";
const HASH_KEY_FILE: &str = "hash.key";

/// Takes the store's exclusive lock; released when the returned file is closed.
pub(crate) fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    // SAFETY: flock on a valid, owned descriptor.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status != 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "store {} is already open in another process or handle",
                    dir.display()
                ),
            ));
        }
        return Err(error);
    }
    Ok(file)
}

/// Reads the store's hash key, creating it (random, mode 0600, durably) on first open.
pub(crate) fn load_or_create_hash_key(dir: &Path) -> io::Result<[u8; 16]> {
    let path = dir.join(HASH_KEY_FILE);
    match File::open(&path) {
        Ok(mut file) => {
            let mut key = [0u8; 16];
            let mut rest = Vec::new();
            file.read_exact(&mut key).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a 16-byte key: {error}", path.display()),
                )
            })?;
            file.read_to_end(&mut rest)?;
            if !rest.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is longer than 16 bytes", path.display()),
                ));
            }
            Ok(key)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let mut key = [0u8; 16];
            getrandom(&mut key)?;
            let tmp = dir.join("hash.key.tmp");
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
            Ok(key)
        }
        Err(error) => Err(error),
    }
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most `buf.len() - filled` bytes into the buffer's tail.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Makes renames and new files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn wal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

pub(crate) fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:020}.snap"))
}

pub(crate) fn snapshot_tmp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:020}.tmp"))
}

/// The WAL segments and snapshots in `dir`, each sorted by sequence number. Removes leftover
/// temporary files.
pub(crate) struct Listing {
    pub(crate) wal_segments: Vec<u64>,
    pub(crate) snapshots: Vec<u64>,
}

pub(crate) fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing {
        wal_segments: Vec::new(),
        snapshots: Vec::new(),
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        } else if let Some(seq) = sequence(name, "wal-", ".log") {
            listing.wal_segments.push(seq);
        } else if let Some(seq) = sequence(name, "snapshot-", ".snap") {
            listing.snapshots.push(seq);
        }
    }
    listing.wal_segments.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

fn sequence(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Keeps an append-only log's durable bytes out of the page cache.
///
/// A log is written once and read again only by recovery and the odd audit read, so its
/// pages would only crowd the cache. Dropping them after each `fdatasync` also hands the next
/// group's `write` recently freed pages instead of memory the machine has not touched yet:
/// on virtual machines that back guest memory lazily, copying 1 MiB into never-used page
/// cache measured 3.9 ms against 0.24 ms into reused pages (see BENCHMARKS.md).
#[derive(Debug, Default)]
pub(crate) struct CacheDropper {
    /// Bytes below this offset have been dropped already. A reopened log starts at 0: its first
    /// drop also takes what recovery read after its last 8 MiB step.
    dropped: u64,
}

impl CacheDropper {
    /// Drops the whole pages of `file` below `durable_len`, which `fdatasync` has made clean.
    /// The page holding the end stays cached: the next append writes into it, and without it
    /// that write would first read the page back from disk.
    pub(crate) fn drop_durable(&mut self, file: &File, durable_len: u64) {
        let end = durable_len & !(CACHE_PAGE - 1);
        if end <= self.dropped {
            return;
        }
        drop_cached(file, self.dropped, end - self.dropped);
        self.dropped = end;
    }

    /// For a file read once from the start: drops the pages below `read_len` in steps of
    /// [`READ_DROP_STEP`], so that reading a large file keeps reusing the same few pages.
    pub(crate) fn drop_read(&mut self, file: &File, read_len: u64) {
        if read_len >= self.dropped + READ_DROP_STEP {
            self.drop_durable(file, read_len);
        }
    }
}

/// Bytes read between two [`CacheDropper::drop_read`] calls that drop anything.
const READ_DROP_STEP: u64 = 8 << 20;

/// Page granularity of [`CacheDropper`] (the kernel drops whole pages only).
const CACHE_PAGE: u64 = 4096;

/// Allocates the blocks of `file` in `offset..offset + len` (`fallocate`, which extends the
/// file's size to cover them; unwritten blocks read as zeros).
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a valid, owned descriptor; it reads no memory of ours.
    let status = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to drop the clean cached pages of `file` in `offset..offset + len`. Only a
/// hint: a failure changes nothing but the cache, so it is ignored.
fn drop_cached(file: &File, offset: u64, len: u64) {
    // SAFETY: posix_fadvise on a valid, owned descriptor; it reads no memory of ours.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}
