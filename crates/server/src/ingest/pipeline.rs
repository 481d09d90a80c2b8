//! One data file, start to finish: check the gzip stream whole while the parse side follows the
//! inflated text (parse → resolve → key → write batches), then write the batches to the store,
//! with every rejected line written to the rejects file.
//!
//! The check ([`check_gzip`]) inflates on a thread of its own and writes the text beside the
//! spooled file; the parse side ([`ParseAhead`]) runs on a blocking thread from the start and
//! reads that text as it is written ([`TextFeed`]). Until the check has passed it only holds the
//! [`WriteBatch`]es of [`IngestSettings::batch_lines`](super::IngestSettings::batch_lines) lines it
//! resolves, at most [`ParseContext::ahead_bytes`] of them, waiting when the bound is reached;
//! [`apply_data_file`] then writes them to the profile store one after the other, in file order,
//! so a later line about the same profile always lands after an earlier one, while the parse
//! side goes on. A failed check drops them ([`ParseAhead::abandon`]): nothing is written. Memory
//! holds at most the bound of batches, whatever the file size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use segmart_domain::profile::ResolvedUpdate;
use segmart_domain::{IdType, SegmentNum, Timestamp};
use segmart_ingest::reader::DEFAULT_MAX_LINE_BYTES;
use segmart_ingest::{
    BatchItem, BatchReader, LineError, LineSource, ParallelGzipLines, ParsedLine, ProfileKey,
    ReadError, RejectReason, Rejection, ResolvedUser, is_blank, parse_line,
};
use segmart_storage::catalog::{Folder, IngestCounts, IngestRejection};
use segmart_storage::profile::{
    ProfileKey as StoreKey, ProfileKeyer, ProfileStore, ProfileStoreError, WriteBatch,
};

use super::{IngestProgress, UserMatcher};
use crate::directory::Directory;
use crate::segment_map::{Located, SegmentMap};

/// Why a line the parser accepted was still not applied. Names are stable, like
/// [`RejectReason`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApplyReject {
    /// A segment id the folder does not have (the line is refused whole, as the profile API
    /// refuses an item).
    UnknownSegment,
    /// A non-selectable hierarchy node in SEGMENTS_TO_ADD.
    NotSelectable,
    /// The same segment in SEGMENTS_TO_ADD and SEGMENTS_TO_REMOVE.
    AddAndRemove,
    /// A desktop id, but the provider has no cookie folder.
    NoCookieFolder,
    /// A mobile id, but the provider has no maid folder.
    NoMaidFolder,
}

impl ApplyReject {
    pub const ALL: [ApplyReject; 5] = [
        ApplyReject::UnknownSegment,
        ApplyReject::NotSelectable,
        ApplyReject::AddAndRemove,
        ApplyReject::NoCookieFolder,
        ApplyReject::NoMaidFolder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ApplyReject::UnknownSegment => "unknown_segment",
            ApplyReject::NotSelectable => "not_selectable",
            ApplyReject::AddAndRemove => "add_and_remove",
            ApplyReject::NoCookieFolder => "no_cookie_folder",
            ApplyReject::NoMaidFolder => "no_maid_folder",
        }
    }
}

/// Where the lines of one provider's data file go: desktop ids to its cookie folder, mobile ids
/// (`m_md5:<hex>`) to its maid folder.
pub struct Targets {
    cookie: Option<Target>,
    maid: Option<Target>,
}

struct Target {
    folder_num: u32,
    segments: SegmentMap,
}

impl Targets {
    /// The provider's first cookie folder and first maid folder (by folder number), with a copy
    /// of their segments taken now: the whole file resolves against one view.
    pub fn new(folders: &[Folder], directory: &Directory) -> Targets {
        let pick = |id_type: &IdType| {
            let folder = folders
                .iter()
                .filter(|f| &f.id_type == id_type)
                .min_by_key(|f| f.num)?;
            let segments = directory
                .with_segments(folder.id, SegmentMap::clone)
                .unwrap_or_default();
            Some(Target {
                folder_num: folder.num,
                segments,
            })
        };
        Targets {
            cookie: pick(&IdType::Cookie),
            maid: pick(&IdType::Maid),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cookie.is_none() && self.maid.is_none()
    }
}

/// What the parse side needs.
pub struct ParseContext {
    /// The spooled gzip file (inflated again only when the check's text could not be kept).
    pub path: PathBuf,
    pub rejects_path: PathBuf,
    pub targets: Targets,
    pub keyer: ProfileKeyer,
    pub matcher: Arc<dyn UserMatcher>,
    pub apply_at: Timestamp,
    pub batch_lines: usize,
    /// Bytes of resolved write batches the parse side may hold ahead of the store
    /// ([`IngestSettings::resolve_ahead_bytes`](super::IngestSettings::resolve_ahead_bytes)).
    pub ahead_bytes: u64,
}

/// The counts of a data file as the parse side keeps them.
#[derive(Debug, Clone, Default)]
pub struct DataCounts {
    pub lines_read: u64,
    pub blank_lines: u64,
    pub lines_applied: u64,
    pub lines_rejected: u64,
    pub parse_rejects: [u64; RejectReason::ALL.len()],
    pub apply_rejects: [u64; ApplyReject::ALL.len()],
    pub memberships_added: u64,
    pub memberships_removed: u64,
    /// Unknown segment id → lines naming it (at most [`MAX_UNKNOWN_SEGMENTS`] ids kept).
    pub unknown_segments: HashMap<String, u64>,
    /// Distinct unknown ids beyond the ones kept.
    pub unknown_segments_dropped: u64,
}

/// Distinct unknown segment ids a report lists.
pub const MAX_UNKNOWN_SEGMENTS: usize = 1000;

impl DataCounts {
    pub fn into_report(self, check_millis: u64, duration_millis: u64) -> IngestCounts {
        let mut rejects: Vec<(String, u64)> = RejectReason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), self.parse_rejects[r.index()]))
            .chain(
                ApplyReject::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.name().to_owned(), self.apply_rejects[i])),
            )
            .filter(|(_, n)| *n > 0)
            .collect();
        rejects.sort();
        let mut unknown: Vec<(String, u64)> = self.unknown_segments.into_iter().collect();
        unknown.sort();
        IngestCounts {
            lines_read: self.lines_read,
            lines_applied: self.lines_applied,
            lines_rejected: self.lines_rejected,
            blank_lines: self.blank_lines,
            memberships_added: self.memberships_added,
            memberships_removed: self.memberships_removed,
            segments_upserted: 0,
            rejects,
            unknown_segments: unknown,
            check_millis,
            duration_millis,
        }
    }
}

/// Why applying a data file stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file is not a complete gzip stream: rejected whole, nothing applied.
    #[error("{0}")]
    Unreadable(#[from] ReadError),
    /// The file read fine in the check but not while applying (the disk failed, or the file
    /// changed): lines before it were applied.
    #[error("the file could not be read to its end while it was applied: {0}")]
    ChangedWhileApplying(ReadError),
    /// The profile store refused (shutting down, failing): the delivery stays applying and is
    /// redone from its first line at the next start.
    #[error("profile store: {0}")]
    Store(ProfileStoreError),
    /// Stopped on request (shutdown): the delivery stays applying and is redone.
    #[error("stopped before the end of the file")]
    Stopped,
    /// The check pass could not keep the inflated text the parse side was following (a full
    /// disk); the parse side starts again from the gzip file once the check is over.
    #[error("the check pass could not keep the inflated text")]
    TextLost,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PipelineError {
    /// The whole-file rejection this error means, when it is one.
    pub fn rejection(&self) -> Option<IngestRejection> {
        match self {
            PipelineError::Unreadable(error) => Some(IngestRejection {
                code: error.code().to_owned(),
                message: error.to_string(),
            }),
            PipelineError::ChangedWhileApplying(error) => Some(IngestRejection {
                code: "read_failed_while_applying".into(),
                message: self.to_string() + &format!(" ({})", error.code()),
            }),
            _ => None,
        }
    }
}

/// What the check pass leaves for the apply pass.
#[derive(Debug, Default)]
pub struct Checked {
    /// Lines in the file, header included.
    pub lines: u64,
    /// The inflated text, when it could be kept whole: the parse side reads it (from the first
    /// line while the check still runs) instead of inflating the file a second time. Removed
    /// once the file is applied.
    pub text: Option<PathBuf>,
    /// Lines longer than the reader's limit (number, full length): the text holds only their
    /// first KiB, and the parse side rejects them as the reader would have.
    pub overlong: Vec<(u64, u64)>,
    /// Bytes of inflated text.
    pub text_bytes: u64,
}

/// How the check pass ended for the parse side following its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedEnd {
    /// The check passed and the text is whole.
    Complete,
    /// The text could not be kept: the check goes on, the follower gives up.
    Lost,
    /// The check failed or was stopped: nothing of the file may be applied.
    Failed,
}

#[derive(Debug, Default)]
struct FeedState {
    /// The text file exists and may be opened.
    opened: bool,
    /// Bytes of text in the file so far: a follower may read this far.
    written: u64,
    /// Over-long lines so far (number, full length), in line order. An entry is added before
    /// any byte of its line is counted in `written`.
    overlong: Vec<(u64, u64)>,
    end: Option<FeedEnd>,
    /// How far the follower has read (it waits for more here).
    consumed: u64,
}

/// The check pass's inflated text as it grows, for the parse side to resolve lines while the
/// check still runs (on the core the single-threaded inflate leaves idle).
#[derive(Debug, Default)]
pub struct TextFeed {
    state: parking_lot::Mutex<FeedState>,
    changed: parking_lot::Condvar,
}

impl TextFeed {
    pub fn new() -> Arc<TextFeed> {
        Arc::new(TextFeed::default())
    }

    fn opened(&self) {
        self.state.lock().opened = true;
        self.changed.notify_all();
    }

    /// `written` bytes are in the file; `overlong` are the over-long lines not published yet.
    fn publish(&self, written: u64, overlong: &[(u64, u64)]) {
        let mut state = self.state.lock();
        state.overlong.extend_from_slice(overlong);
        state.written = written;
        drop(state);
        self.changed.notify_all();
    }

    /// Records how the check ended; the first end recorded stands.
    fn end(&self, end: FeedEnd) {
        let mut state = self.state.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Blocks until the follower has read `bytes` of text or the feed ended (for tests).
    #[cfg(test)]
    fn wait_consumed(&self, bytes: u64) {
        let mut state = self.state.lock();
        while state.consumed < bytes && state.end.is_none() {
            self.changed.wait(&mut state);
        }
    }
}

/// Ends the feed as failed when the check leaves early (an error, a stop, a panic).
struct FeedGuard<'f>(&'f TextFeed);

impl Drop for FeedGuard<'_> {
    fn drop(&mut self) {
        self.0.end(FeedEnd::Failed);
    }
}

/// The first pass: inflates the whole file without parsing, so a file that is not gzip, is
/// truncated or is corrupt is refused before anything is applied. The inflated lines are kept
/// in `text` (beside the spooled file) and published to `feed` as they are written, for the
/// parse side to follow; if the text cannot be written (a full disk), the check goes on and the
/// parse side inflates again once it is over.
pub fn check_gzip(
    path: &Path,
    text: &Path,
    progress: &IngestProgress,
    stop: &std::sync::atomic::AtomicBool,
    feed: &TextFeed,
) -> Result<Checked, PipelineError> {
    let guard = FeedGuard(feed);
    let checked = check_and_keep_text(path, text, progress, stop, feed);
    match &checked {
        Ok(checked) if checked.text.is_some() => feed.end(FeedEnd::Complete),
        Ok(_) => feed.end(FeedEnd::Lost),
        Err(_) => {
            feed.end(FeedEnd::Failed);
            let _ = std::fs::remove_file(text);
        }
    }
    drop(guard);
    checked
}

fn check_and_keep_text(
    path: &Path,
    text: &Path,
    progress: &IngestProgress,
    stop: &std::sync::atomic::AtomicBool,
    feed: &TextFeed,
) -> Result<Checked, PipelineError> {
    let file = File::open(path)?;
    // Inflating runs on a thread of its own; this one writes the text.
    let mut lines = ParallelGzipLines::spawn(file)?;
    let mut checked = Checked::default();
    let lose_text = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, "cannot keep the inflated text; the apply pass inflates again");
        feed.end(FeedEnd::Lost);
        let _ = std::fs::remove_file(text);
    };
    let mut out = match File::create(text) {
        Ok(file) => {
            feed.opened();
            Some(BufWriter::with_capacity(1 << 20, file))
        }
        Err(error) => {
            lose_text(&error);
            None
        }
    };
    // Bytes handed to the writer (line ends included), and what the feed was last told.
    let (mut pushed, mut published, mut published_overlong) = (0u64, 0u64, 0usize);
    while let Some(span) = lines.advance()? {
        checked.lines += 1;
        if let Some(writer) = out.as_mut() {
            let line = lines.line(span);
            if let Some(length) = line.overlong_length {
                checked.overlong.push((line.number, length));
            }
            let mut written = writer.write_all(line.bytes);
            let mut length = line.bytes.len() as u64;
            if written.is_ok() && line.bytes.last() != Some(&b'\n') {
                written = writer.write_all(b"\n");
                length += 1;
            }
            match written {
                Ok(()) => {
                    checked.text_bytes += line.bytes.len() as u64;
                    pushed += length;
                    // What the writer no longer buffers is in the file.
                    let in_file = pushed - writer.buffer().len() as u64;
                    if in_file != published {
                        feed.publish(in_file, &checked.overlong[published_overlong..]);
                        published = in_file;
                        published_overlong = checked.overlong.len();
                    }
                }
                Err(error) => {
                    lose_text(&error);
                    out = None;
                }
            }
        }
        if checked.lines.is_multiple_of(65_536) {
            progress
                .bytes_done
                .store(lines.progress().bytes_in, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return Err(PipelineError::Stopped);
            }
        }
    }
    progress
        .bytes_done
        .store(lines.progress().bytes_in, Ordering::Relaxed);
    if let Some(writer) = out {
        match writer.into_inner() {
            Ok(_) => {
                feed.publish(pushed, &checked.overlong[published_overlong..]);
                checked.text = Some(text.to_path_buf());
            }
            Err(error) => lose_text(&error.error()),
        }
    }
    Ok(checked)
}

/// A line of the text: number, bytes (line end included), full length when it was cut.
type TextLine<'a> = (u64, &'a [u8], Option<u64>);

/// Lines of the check pass's inflated text, read as the check writes it, sliced from one
/// reusable buffer (the text holds no line longer than the reader's limit).
struct TextLines {
    file: File,
    feed: Arc<TextFeed>,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from the file so far, and how far the feed allows reading.
    read: u64,
    readable: u64,
    /// The feed is complete and everything it published is read.
    eof: bool,
    /// Over-long lines known so far and not passed yet, and how many the feed listed.
    overlong: std::collections::VecDeque<(u64, u64)>,
    overlong_seen: usize,
    number: u64,
    /// Bytes handed out so far.
    offset: u64,
    /// Bytes at the start of the file given back to the file system (see [`Self::release`]).
    released: u64,
}

/// Bytes of read text [`TextLines`] lets pile up before it gives them back.
const RELEASE_STEP: u64 = 8 << 20;

impl TextLines {
    /// Opens the text once the check has created it.
    fn follow(path: &Path, feed: Arc<TextFeed>) -> Result<Self, PipelineError> {
        {
            let mut state = feed.state.lock();
            loop {
                match state.end {
                    Some(FeedEnd::Lost) => return Err(PipelineError::TextLost),
                    Some(FeedEnd::Failed) => return Err(PipelineError::Stopped),
                    _ if state.opened => break,
                    _ => feed.changed.wait(&mut state),
                }
            }
        }
        Ok(TextLines {
            // Opened for writing too, to punch out what has been read (see `release`).
            file: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?,
            feed,
            buffer: vec![0; 1 << 20],
            start: 0,
            end: 0,
            read: 0,
            readable: 0,
            eof: false,
            overlong: Default::default(),
            overlong_seen: 0,
            number: 0,
            offset: 0,
            released: 0,
        })
    }

    /// Gives the text read so far back to the file system: the text is read once, so its
    /// pages and blocks are garbage. Punching them out (dirty pages are dropped, not written
    /// back) lets the check's next writes reuse those pages, which on a virtual machine that
    /// backs guest memory lazily is several times cheaper than page cache never used before.
    /// Only a hint: where the file system cannot punch holes the file keeps its bytes.
    fn release(&mut self) {
        let end = self.read & !4095;
        if end < self.released + RELEASE_STEP {
            return;
        }
        // SAFETY: fallocate on a descriptor this value owns; it reads no memory of ours.
        unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.released as libc::off_t,
                (end - self.released) as libc::off_t,
            );
        }
        self.released = end;
    }

    /// Waits until the check has written more text than was read, or has ended.
    fn wait_for_text(&mut self) -> Result<(), PipelineError> {
        let mut state = self.feed.state.lock();
        state.consumed = self.read;
        self.feed.changed.notify_all();
        loop {
            if state.written > self.read {
                self.readable = state.written;
                self.overlong
                    .extend(state.overlong[self.overlong_seen..].iter().copied());
                self.overlong_seen = state.overlong.len();
                return Ok(());
            }
            match state.end {
                Some(FeedEnd::Complete) => {
                    self.eof = true;
                    return Ok(());
                }
                Some(FeedEnd::Lost) => return Err(PipelineError::TextLost),
                Some(FeedEnd::Failed) => return Err(PipelineError::Stopped),
                None => self.feed.changed.wait(&mut state),
            }
        }
    }

    /// The next line: its number, bytes (line end included) and, when it was cut for being too
    /// long, its full length.
    fn next_line(&mut self) -> Result<Option<TextLine<'_>>, PipelineError> {
        use std::io::Read;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                let line_start = self.start;
                self.start += at + 1;
                self.offset += (at + 1) as u64;
                return Ok(Some(self.hand_out(line_start)));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line_start = self.start;
                self.offset += (self.end - self.start) as u64;
                self.start = self.end;
                return Ok(Some(self.hand_out(line_start)));
            }
            if self.read == self.readable {
                self.wait_for_text()?;
                continue;
            }
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buffer.len() {
                let grown = self.buffer.len() * 2;
                self.buffer.resize(grown, 0);
            }
            let room = (self.buffer.len() - self.end).min((self.readable - self.read) as usize);
            let read = self
                .file
                .read(&mut self.buffer[self.end..self.end + room])?;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the inflated text is shorter than the check pass wrote",
                )
                .into());
            }
            self.read += read as u64;
            self.end += read;
            self.release();
        }
    }

    fn hand_out(&mut self, line_start: usize) -> TextLine<'_> {
        self.number += 1;
        let overlong = match self.overlong.front() {
            Some(&(number, length)) if number == self.number => {
                self.overlong.pop_front();
                Some(length)
            }
            _ => None,
        };
        (self.number, &self.buffer[line_start..self.start], overlong)
    }
}

/// How many bytes of resolved batches the parse side holds ahead of the store.
#[derive(Debug)]
struct Budget {
    limit: u64,
    state: parking_lot::Mutex<BudgetState>,
    freed: parking_lot::Condvar,
}

#[derive(Debug, Default)]
struct BudgetState {
    used: u64,
    /// The most ever held at once.
    peak: u64,
    closed: bool,
}

impl Budget {
    fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            state: Default::default(),
            freed: Default::default(),
        })
    }

    /// Waits until `bytes` more fit (one batch always fits when nothing is held, however
    /// small the limit); `false` when the consumer is gone.
    fn acquire(&self, bytes: u64) -> bool {
        let mut state = self.state.lock();
        while !state.closed && state.used > 0 && state.used + bytes > self.limit {
            self.freed.wait(&mut state);
        }
        if state.closed {
            return false;
        }
        state.used += bytes;
        state.peak = state.peak.max(state.used);
        true
    }

    fn release(&self, bytes: u64) {
        let mut state = self.state.lock();
        state.used = state.used.saturating_sub(bytes);
        drop(state);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.freed.notify_all();
    }
}

/// Closes the budget when the consuming side goes away, so a parser waiting for room wakes.
struct BudgetCloser(Arc<Budget>);

impl Drop for BudgetCloser {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Where in the input a shipped batch ends, for progress.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Bytes of inflated text.
    Text(u64),
    /// Bytes of the gzip file.
    Compressed(u64),
}

/// A batch on its way from the parse side to the store, with the budget bytes it holds and
/// how far into the file it goes. An empty batch only reports progress (a stretch of rejected
/// lines).
struct Shipped {
    batch: WriteBatch,
    bytes: u64,
    through_line: u64,
    position: Position,
}

/// Budget bytes charged for a progress-only item.
const EMPTY_SHIPMENT_BYTES: u64 = 64;

/// Lines after which the parse side reports progress even when it ships no batch.
const PROGRESS_LINES: u64 = 65_536;

/// Room a new batch starts with per line: a line adds 6.5 segments in a typical file, which
/// packs into 77 bytes (the batch grows when lines are longer).
const PACKED_BYTES_PER_LINE: usize = 80;

/// Where the parse side reads lines from.
enum Input {
    /// The check pass's text, followed as it is written.
    Text { path: PathBuf, feed: Arc<TextFeed> },
    /// The gzip file, inflated again (the text could not be kept).
    Gzip,
}

/// The parse side of a data file, started before the check pass is over: it resolves lines
/// from the check's text as the check writes it and holds the resolved batches, at most
/// [`ParseContext::ahead_bytes`] of them, until [`apply_data_file`] is allowed to write them
/// (the check passed) or [`ParseAhead::abandon`] throws them away (it failed). When the bound
/// is reached the parser waits: the lines it has not resolved yet are in the text file already.
pub struct ParseAhead {
    parser: tokio::task::JoinHandle<(Result<DataCounts, PipelineError>, ParseContext)>,
    receiver: tokio::sync::mpsc::UnboundedReceiver<Shipped>,
    budget: BudgetCloser,
    rejects_path: PathBuf,
}

impl ParseAhead {
    /// Starts resolving the lines the check pass writes to `text` (reported through `feed`).
    pub fn start(context: ParseContext, text: PathBuf, feed: Arc<TextFeed>) -> ParseAhead {
        Self::spawn(context, Input::Text { path: text, feed })
    }

    fn spawn(context: ParseContext, input: Input) -> ParseAhead {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let budget = Budget::new(context.ahead_bytes);
        let rejects_path = context.rejects_path.clone();
        let outbox = Outbox {
            sender,
            budget: budget.clone(),
        };
        let parser = tokio::task::spawn_blocking(move || {
            let parsed = parse_file(&context, input, outbox);
            (parsed, context)
        });
        ParseAhead {
            parser,
            receiver,
            budget: BudgetCloser(budget),
            rejects_path,
        }
    }

    /// The most bytes of resolved batches held at once so far.
    pub fn peak_bytes(&self) -> u64 {
        self.budget.0.state.lock().peak
    }

    /// Stops the parse side and throws away everything it resolved: nothing was written to the
    /// store, and the rejects file it began is removed. Returns the context for another start.
    pub async fn abandon(self) -> Option<ParseContext> {
        let ParseAhead {
            parser,
            receiver,
            budget,
            rejects_path,
        } = self;
        drop(receiver);
        drop(budget);
        let context = parser.await.ok().map(|(_, context)| context);
        let _ = std::fs::remove_file(&rejects_path);
        context
    }
}

/// Applies a checked data file: writes the batches the parse side resolved during the check,
/// then the rest as it resolves them, in file order. Returns the counts once every batch is
/// durable and the rejects file is on disk. Nothing is written before this is called, i.e.
/// before the check passed.
pub async fn apply_data_file(
    ahead: ParseAhead,
    checked: Checked,
    profiles: Arc<dyn ProfileStore>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    progress: Arc<IngestProgress>,
) -> Result<DataCounts, PipelineError> {
    let mut ahead = ahead;
    if checked.text.is_none() {
        // The text the parse side followed is gone (or never was): throw its work away, nothing
        // being written yet, and parse again from the gzip file.
        let context = ahead.abandon().await.ok_or_else(|| {
            PipelineError::Io(std::io::Error::other("the parse side stopped unexpectedly"))
        })?;
        ahead = ParseAhead::spawn(context, Input::Gzip);
    }
    let ParseAhead {
        parser,
        mut receiver,
        budget,
        ..
    } = ahead;
    let compressed = progress.bytes_total.load(Ordering::Relaxed);
    let scale = compressed as f64 / checked.text_bytes.max(1) as f64;
    let mut written = Ok(());
    while let Some(shipped) = receiver.recv().await {
        if stop.load(Ordering::Relaxed) {
            written = Err(PipelineError::Stopped);
            break;
        }
        let lines = shipped.batch.len() as u64;
        // A full store queue (`Saturated`) accepted nothing of the batch; the worker then redoes
        // the whole file after a pause, which blind writes make safe.
        if lines > 0
            && let Err(error) = profiles.write(shipped.batch).await
        {
            written = Err(PipelineError::Store(error));
            break;
        }
        budget.0.release(shipped.bytes);
        progress.lines_applied.fetch_add(lines, Ordering::Relaxed);
        progress
            .lines_done
            .store(shipped.through_line, Ordering::Relaxed);
        let done = match shipped.position {
            Position::Text(offset) => (offset as f64 * scale) as u64,
            Position::Compressed(bytes) => bytes,
        };
        progress.bytes_done.store(done, Ordering::Relaxed);
    }
    // Dropping the receiver and closing the budget make the parser's next send or wait fail,
    // so it stops early on an error.
    drop(receiver);
    drop(budget);
    let (parsed, _) = parser
        .await
        .map_err(|error| PipelineError::Io(std::io::Error::other(error.to_string())))?;
    written?;
    let counts = parsed?;
    progress
        .lines_done
        .store(counts.lines_read, Ordering::Relaxed);
    progress.bytes_done.store(compressed, Ordering::Relaxed);
    Ok(counts)
}

/// Header of the rejects file.
pub const REJECTS_HEADER: &str = "line\treason\tmessage\tcontent\n";

/// The parse side's end of the way to the store.
struct Outbox {
    sender: tokio::sync::mpsc::UnboundedSender<Shipped>,
    budget: Arc<Budget>,
}

/// Turns parsed and rejected lines into store batches and rejects-file rows.
struct LineHandler<'c> {
    targets: &'c Targets,
    keyer: &'c ProfileKeyer,
    matcher: &'c dyn UserMatcher,
    apply_at: Timestamp,
    batch_lines: usize,
    outbox: Outbox,
    rejects: BufWriter<File>,
    counts: DataCounts,
    /// The batch being filled.
    batch: WriteBatch,
    /// What resolving a line reuses.
    scratch: LineScratch,
    /// The last line the previous shipment covered.
    shipped_through: u64,
}

impl LineHandler<'_> {
    /// Handles one line.
    fn handle(&mut self, item: BatchItem<'_>) -> Result<(), PipelineError> {
        let counts = &mut self.counts;
        match item {
            BatchItem::Rejected(rejection) => {
                counts.lines_rejected += 1;
                counts.parse_rejects[rejection.reason.index()] += 1;
                write_reject(
                    &mut self.rejects,
                    rejection.line_number,
                    rejection.reason.name(),
                    &rejection.message,
                    &rejection.line,
                )?;
            }
            BatchItem::Parsed { line_number, line } => {
                let mut unknown: Vec<&str> = Vec::new();
                match resolve_line(
                    &line,
                    self.targets,
                    self.keyer,
                    self.matcher,
                    self.apply_at,
                    &mut unknown,
                    &mut self.scratch,
                ) {
                    Ok(key) => {
                        counts.lines_applied += 1;
                        counts.memberships_added += line.add().len() as u64;
                        counts.memberships_removed += line.remove().len() as u64;
                        self.batch.push_update(key, &self.scratch.resolved);
                    }
                    Err(reject) => {
                        counts.lines_rejected += 1;
                        counts.apply_rejects[reject as usize] += 1;
                        let message = reject_message(reject, &unknown);
                        for id in &unknown {
                            note_unknown(counts, id);
                        }
                        let raw = raw_line(&line);
                        write_reject(
                            &mut self.rejects,
                            line_number,
                            reject.name(),
                            &message,
                            &raw,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ships the batch once it is full (or a progress note after many lines without one);
    /// `line` is the last line handled, `position` says where it ends.
    fn ship_when_due(
        &mut self,
        line: u64,
        position: impl FnOnce() -> Position,
    ) -> Result<(), PipelineError> {
        if self.batch.len() >= self.batch_lines || line - self.shipped_through >= PROGRESS_LINES {
            self.ship(line, position())?;
        }
        Ok(())
    }

    fn ship(&mut self, line: u64, position: Position) -> Result<(), PipelineError> {
        let (bytes, batch) = if self.batch.is_empty() {
            (EMPTY_SHIPMENT_BYTES, WriteBatch::new(self.apply_at))
        } else {
            // The next batch starts with room for as many bytes as this one took.
            let room = self.batch.packed_bytes() + self.batch.packed_bytes() / 16;
            let fresh = WriteBatch::with_capacity(self.apply_at, room);
            let batch = std::mem::replace(&mut self.batch, fresh);
            (batch.memory_bytes() as u64, batch)
        };
        if !self.outbox.budget.acquire(bytes) {
            return Err(PipelineError::Stopped);
        }
        self.shipped_through = line;
        let shipped = Shipped {
            batch,
            bytes,
            through_line: line,
            position,
        };
        self.outbox
            .sender
            .send(shipped)
            .map_err(|_| PipelineError::Stopped)
    }
}

/// The parse side: runs on a blocking thread.
fn parse_file(
    context: &ParseContext,
    input: Input,
    outbox: Outbox,
) -> Result<DataCounts, PipelineError> {
    let ParseContext {
        path,
        rejects_path,
        targets,
        keyer,
        matcher,
        apply_at,
        batch_lines,
        ahead_bytes: _,
    } = context;
    if let Some(parent) = rejects_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut rejects = BufWriter::with_capacity(256 * 1024, File::create(rejects_path)?);
    rejects.write_all(REJECTS_HEADER.as_bytes())?;
    let started = Instant::now();
    let mut handler = LineHandler {
        targets,
        keyer,
        matcher: matcher.as_ref(),
        apply_at: *apply_at,
        batch_lines: *batch_lines,
        outbox,
        rejects,
        counts: DataCounts::default(),
        batch: WriteBatch::with_capacity(*apply_at, *batch_lines * PACKED_BYTES_PER_LINE),
        scratch: LineScratch::default(),
        shipped_through: 0,
    };
    let text_path = match input {
        Input::Text { path, feed } => {
            let mut lines = TextLines::follow(&path, feed)?;
            let (mut lines_read, mut blank_lines) = (0u64, 0u64);
            while let Some((number, bytes, overlong)) = lines.next_line()? {
                lines_read += 1;
                if number == 1 {
                    continue;
                }
                let item = if let Some(length) = overlong {
                    let error = LineError::line_too_long(length, DEFAULT_MAX_LINE_BYTES);
                    BatchItem::Rejected(Rejection::new(number, bytes, &error))
                } else if is_blank(bytes) {
                    blank_lines += 1;
                    continue;
                } else {
                    match parse_line(bytes) {
                        Ok(line) => BatchItem::Parsed {
                            line_number: number,
                            line,
                        },
                        Err(error) => BatchItem::Rejected(Rejection::new(number, bytes, &error)),
                    }
                };
                handler.handle(item)?;
                let offset = lines.offset;
                handler.ship_when_due(number, || Position::Text(offset))?;
            }
            handler.ship(lines_read, Position::Text(lines.offset))?;
            handler.counts.lines_read = lines_read;
            handler.counts.blank_lines = blank_lines;
            Some(path)
        }
        Input::Gzip => {
            let mut reader = BatchReader::spawn(File::open(path)?)?;
            loop {
                let item = match reader.next_item() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(error) => return Err(PipelineError::ChangedWhileApplying(error)),
                };
                let number = match &item {
                    BatchItem::Parsed { line_number, .. } => *line_number,
                    BatchItem::Rejected(rejection) => rejection.line_number,
                };
                handler.handle(item)?;
                handler
                    .ship_when_due(number, || Position::Compressed(reader.progress().bytes_in))?;
            }
            let read = reader.progress();
            let line_counts = reader.counts();
            handler.ship(read.lines, Position::Compressed(read.bytes_in))?;
            handler.counts.lines_read = line_counts.lines_read;
            handler.counts.blank_lines = line_counts.blank_lines;
            None
        }
    };
    let LineHandler {
        counts, rejects, ..
    } = handler;
    let file = rejects.into_inner().map_err(|error| error.into_error())?;
    file.sync_data()?;
    if let Some(text) = &text_path {
        let _ = std::fs::remove_file(text);
    }
    tracing::debug!(
        lines = counts.lines_read,
        millis = started.elapsed().as_millis() as u64,
        "data file parsed"
    );
    Ok(counts)
}

fn note_unknown(counts: &mut DataCounts, id: &str) {
    if let Some(n) = counts.unknown_segments.get_mut(id) {
        *n += 1;
    } else if counts.unknown_segments.len() < MAX_UNKNOWN_SEGMENTS {
        counts.unknown_segments.insert(id.to_owned(), 1);
    } else {
        counts.unknown_segments_dropped += 1;
    }
}

fn reject_message(reject: ApplyReject, unknown: &[&str]) -> String {
    match reject {
        ApplyReject::UnknownSegment => format!("unknown segment ids: {}", unknown.join(", ")),
        ApplyReject::NotSelectable => format!(
            "segments are not selectable (hierarchy nodes only): {}",
            unknown.join(", ")
        ),
        ApplyReject::AddAndRemove => format!(
            "segments are both in SEGMENTS_TO_ADD and SEGMENTS_TO_REMOVE: {}",
            unknown.join(", ")
        ),
        ApplyReject::NoCookieFolder => {
            "a desktop id, but the provider has no cookie folder to hold it".into()
        }
        ApplyReject::NoMaidFolder => {
            "a mobile id, but the provider has no maid folder to hold it".into()
        }
    }
}

/// The line as it was read, for the rejects file (a parsed line is valid UTF-8).
fn raw_line(line: &ParsedLine<'_>) -> String {
    let user = |id: Option<segmart_ingest::UserId<'_>>| match id {
        None => String::new(),
        Some(segmart_ingest::UserId::Desktop(id)) => id.to_owned(),
        Some(mobile) => mobile.key().as_str().to_owned(),
    };
    format!(
        "{}\t{}\t{}\t{}",
        user(line.dmp_user()),
        user(line.dsp_user()),
        line.add().as_raw(),
        line.remove().as_raw()
    )
}

fn write_reject(
    out: &mut impl Write,
    line_number: u64,
    reason: &str,
    message: &str,
    line: &str,
) -> std::io::Result<()> {
    let clean = |text: &str| text.replace(['\t', '\n', '\r'], " ");
    writeln!(out, "{line_number}\t{reason}\t{}\t{line}", clean(message))
}

/// Segment ids of a line whose lookups [`resolve_by_ids`] starts ahead.
const PREFETCH_IDS: usize = 32;

/// What [`resolve_line`] reuses from line to line.
#[derive(Debug, Default)]
pub struct LineScratch {
    /// The last line's resolved lists (no meaning after a refusal).
    pub resolved: ResolvedUpdate,
    /// The line's segment ids, located in the folder's map.
    located: Vec<Located>,
}

/// Resolves one parsed line into a store update of the profile it returns the key of, with the
/// profile API's meaning of add and remove (`ProfileUpdate::resolve`): a line naming an unknown
/// segment, joining a non-selectable one, or adding and removing the same segment is refused
/// whole; `offending` gets the ids. The update's lists go into `scratch.resolved`.
pub fn resolve_line<'l>(
    line: &ParsedLine<'l>,
    targets: &Targets,
    keyer: &ProfileKeyer,
    matcher: &dyn UserMatcher,
    apply_at: Timestamp,
    offending: &mut Vec<&'l str>,
    scratch: &mut LineScratch,
) -> Result<StoreKey, ApplyReject> {
    let user = line.resolve_user(|dmp_key| matcher.matched(dmp_key));
    let mobile = match &user {
        ResolvedUser::Dsp(key) | ResolvedUser::Dmp(key) => matches!(key, ProfileKey::Mobile(_)),
        ResolvedUser::Matched(id) => id.starts_with(segmart_domain::ids::MOBILE_KEY_PREFIX),
    };
    let target = match (mobile, &targets.cookie, &targets.maid) {
        (false, Some(cookie), _) => cookie,
        (true, _, Some(maid)) => maid,
        (false, None, _) => return Err(ApplyReject::NoCookieFolder),
        (true, _, None) => return Err(ApplyReject::NoMaidFolder),
    };
    let segments = &target.segments;
    if !resolve_located(line, segments, apply_at, scratch) {
        resolve_by_ids(line, segments, apply_at, offending, &mut scratch.resolved)?;
    }
    Ok(keyer.key_bytes(target.folder_num, user.as_str().as_bytes()))
}

/// The common case in one pass over the line's ids ([`SegmentMap::resolve_packed`]);
/// `false` when it does not apply, and [`resolve_by_ids`] then finds the refusal.
#[inline]
fn resolve_located(
    line: &ParsedLine<'_>,
    segments: &SegmentMap,
    apply_at: Timestamp,
    scratch: &mut LineScratch,
) -> bool {
    let LineScratch { resolved, located } = scratch;
    resolved.clear = false;
    let add = line.add();
    segments.resolve_packed(
        add.iter(),
        add.len(),
        line.remove().iter(),
        apply_at,
        located,
        resolved,
    )
}

/// [`resolve_line`]'s lists, by id: for any line, and for the exact refusal.
fn resolve_by_ids<'l>(
    line: &ParsedLine<'l>,
    segments: &SegmentMap,
    apply_at: Timestamp,
    offending: &mut Vec<&'l str>,
    resolved: &mut ResolvedUpdate,
) -> Result<(), ApplyReject> {
    let add_list = line.add();
    let remove_list = line.remove();
    // The ids' slots are mostly not in the CPU caches: ask for all of them before the first
    // lookup waits for one.
    for id in add_list.iter().chain(remove_list.iter()).take(PREFETCH_IDS) {
        segments.prefetch(id);
    }
    resolved.clear = false;
    let ResolvedUpdate { add, remove, .. } = resolved;
    add.clear();
    remove.clear();
    let mut not_selectable = false;
    for id in add_list.iter() {
        match segments.get(id) {
            Some(segment) if !segment.selectable => {
                not_selectable = true;
            }
            Some(segment) => add.push((
                segment.num,
                apply_at.plus_secs(i64::from(segment.ttl_minutes) * 60),
            )),
            None => offending.push(id),
        }
    }
    for id in remove_list.iter() {
        match segments.get(id) {
            Some(segment) => remove.push(segment.num),
            None => offending.push(id),
        }
    }
    if !offending.is_empty() {
        offending.sort_unstable();
        offending.dedup();
        return Err(ApplyReject::UnknownSegment);
    }
    if not_selectable {
        offending.extend(
            add_list
                .iter()
                .filter(|id| segments.get(id).is_some_and(|s| !s.selectable)),
        );
        offending.sort_unstable();
        offending.dedup();
        return Err(ApplyReject::NotSelectable);
    }
    if !remove.is_empty() && add.iter().any(|(num, _)| remove.contains(num)) {
        let removed: Vec<SegmentNum> = remove.clone();
        offending.extend(
            add_list
                .iter()
                .filter(|id| segments.get(id).is_some_and(|s| removed.contains(&s.num))),
        );
        offending.sort_unstable();
        offending.dedup();
        return Err(ApplyReject::AddAndRemove);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use segmart_domain::SegmentKey;
    use segmart_domain::profile::{ProfileUpdate, SegmentRef};
    use segmart_ingest::parse_line;
    use segmart_storage::profile::ProfileMutation;

    use super::*;
    use crate::ingest::NoUserMatching;

    fn targets() -> Targets {
        let mut segments = SegmentMap::default();
        let entries = [
            ("a", 1, 60, true),
            ("b", 2, 1, true),
            ("node", 3, 60, false),
            // Longer than 16 bytes: not packed, looked up by its string.
            ("a-segment-id-of-24-bytes", 4, 30, true),
        ];
        for (key, num, ttl, selectable) in entries {
            segments.insert(
                key,
                SegmentRef {
                    num: SegmentNum(num),
                    ttl_minutes: ttl,
                    selectable,
                },
            );
        }
        Targets {
            cookie: Some(Target {
                folder_num: 1,
                segments: segments.clone(),
            }),
            maid: Some(Target {
                folder_num: 2,
                segments,
            }),
        }
    }

    /// The file path and the profile API agree on every combination of these ids.
    #[test]
    fn lines_resolve_as_the_profile_api_resolves_items() {
        let ids = ["a", "b", "node", "zzz", "a-segment-id-of-24-bytes"];
        let targets = targets();
        let keyer = ProfileKeyer::new([7; 16]);
        let now = Timestamp::from_secs(1_000);
        let lookup = |key: &SegmentKey| targets.cookie.as_ref().unwrap().segments.get(key.as_str());
        for add_mask in 0u32..32 {
            for remove_mask in 0u32..32 {
                let pick = |mask: u32| -> Vec<&str> {
                    ids.iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, id)| *id)
                        .collect()
                };
                let (add, remove) = (pick(add_mask), pick(remove_mask));
                if add.is_empty() && remove.is_empty() {
                    continue;
                }
                let text = format!("user\t\t{}\t{}", add.join(","), remove.join(","));
                let line = parse_line(text.as_bytes()).unwrap();
                let api = ProfileUpdate {
                    add: add.iter().map(|s| SegmentKey::parse(s).unwrap()).collect(),
                    remove: remove
                        .iter()
                        .map(|s| SegmentKey::parse(s).unwrap())
                        .collect(),
                    ..ProfileUpdate::default()
                }
                .resolve(now, lookup);
                let mut offending = Vec::new();
                let mut scratch = LineScratch::default();
                let file = resolve_line(
                    &line,
                    &targets,
                    &keyer,
                    &NoUserMatching,
                    now,
                    &mut offending,
                    &mut scratch,
                );
                match (api, file) {
                    (Ok(expected), Ok(key)) => {
                        assert_eq!(scratch.resolved, expected, "{text}");
                        assert_eq!(key, keyer.key_bytes(1, b"user"));
                    }
                    (Err(api), Err(reject)) => {
                        let expected = if !api.unknown_segments.is_empty() {
                            ApplyReject::UnknownSegment
                        } else if api.reason.contains("not selectable") {
                            ApplyReject::NotSelectable
                        } else {
                            ApplyReject::AddAndRemove
                        };
                        assert_eq!(reject, expected, "{text}");
                        if reject == ApplyReject::UnknownSegment {
                            assert_eq!(offending, api.unknown_segments, "{text}");
                        }
                    }
                    (api, file) => panic!("{text}: api {api:?}, file {file:?}"),
                }
            }
        }
    }

    /// A store that keeps every batch it is given, in order.
    #[derive(Default)]
    struct RecordingStore {
        batches: parking_lot::Mutex<Vec<WriteBatch>>,
    }

    #[async_trait::async_trait]
    impl ProfileStore for RecordingStore {
        async fn write(&self, batch: WriteBatch) -> Result<(), ProfileStoreError> {
            self.batches.lock().push(batch);
            Ok(())
        }

        async fn read(
            &self,
            keys: &[segmart_storage::profile::ProfileKey],
            _now: Timestamp,
        ) -> Result<Vec<Option<segmart_storage::profile::ProfileView>>, ProfileStoreError> {
            Ok(vec![None; keys.len()])
        }

        fn stats(&self) -> segmart_storage::profile::ProfileStoreStats {
            Default::default()
        }

        async fn segment_sizes(
            &self,
            _now: Timestamp,
        ) -> Result<HashMap<u32, u64>, ProfileStoreError> {
            Ok(HashMap::new())
        }

        async fn shutdown(&self) -> Result<(), ProfileStoreError> {
            Ok(())
        }
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    fn context(dir: &Path, name: &str, batch_lines: usize, ahead_bytes: u64) -> ParseContext {
        ParseContext {
            path: dir.join("file.gz"),
            rejects_path: dir.join(format!("rejects-{name}.tsv")),
            targets: targets(),
            keyer: ProfileKeyer::new([7; 16]),
            matcher: Arc::new(NoUserMatching),
            apply_at: Timestamp::from_secs(1_000),
            batch_lines,
            ahead_bytes,
        }
    }

    /// What one file did to the store.
    struct Run {
        result: Result<DataCounts, PipelineError>,
        batches: Vec<WriteBatch>,
        /// The rejects file, when one was left.
        rejects: Option<String>,
        /// The most bytes of resolved batches held at once.
        peak: u64,
    }

    /// Runs `gz` as `process` does: the parse side starts on the check's text while the check
    /// runs, and its batches reach the store only once the check passed. `keep_text: false`
    /// makes the text unwritable, so the parse side inflates again after the check.
    async fn run_file(
        dir: &Path,
        name: &str,
        gz: &[u8],
        keep_text: bool,
        batch_lines: usize,
        ahead_bytes: u64,
    ) -> Run {
        let context = context(dir, name, batch_lines, ahead_bytes);
        std::fs::write(&context.path, gz).unwrap();
        let rejects_path = context.rejects_path.clone();
        let text = if keep_text {
            dir.join(format!("{name}.txt"))
        } else {
            dir.join("missing-dir/file.txt")
        };
        let progress = Arc::new(IngestProgress::default());
        progress
            .bytes_total
            .store(gz.len() as u64, Ordering::Relaxed);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = Arc::new(RecordingStore::default());
        let feed = TextFeed::new();
        let ahead = ParseAhead::start(context, text.clone(), feed.clone());
        let budget = ahead.budget.0.clone();
        let checked = {
            let (gz, progress, stop) = (dir.join("file.gz"), progress.clone(), stop.clone());
            tokio::task::spawn_blocking(move || check_gzip(&gz, &text, &progress, &stop, &feed))
                .await
                .unwrap()
        };
        let result = match checked {
            Ok(checked) => {
                assert_eq!(checked.text.is_some(), keep_text);
                apply_data_file(ahead, checked, store.clone(), stop, progress).await
            }
            Err(error) => {
                ahead.abandon().await;
                Err(error)
            }
        };
        let peak = budget.state.lock().peak;
        let batches = std::mem::take(&mut *store.batches.lock());
        Run {
            result,
            batches,
            rejects: std::fs::read_to_string(rejects_path).ok(),
            peak,
        }
    }

    fn mutations(batches: &[WriteBatch]) -> Vec<ProfileMutation> {
        batches.iter().flat_map(|batch| batch.mutations()).collect()
    }

    /// Runs the parse side over `text` gzipped, following the check pass's inflated text or
    /// inflating the gzip file again, and returns the mutations, counts and rejects.
    async fn parse_both_ways(text: &[u8]) -> [(Vec<ProfileMutation>, DataCounts, String); 2] {
        let dir = tempfile::tempdir().unwrap();
        let gz = gzip(text);
        let mut runs = Vec::new();
        for keep_text in [true, false] {
            let name = format!("{keep_text}");
            let run = run_file(dir.path(), &name, &gz, keep_text, 2, 128 << 20).await;
            runs.push((
                mutations(&run.batches),
                run.result.unwrap(),
                run.rejects.unwrap(),
            ));
        }
        let second = runs.pop().unwrap();
        [runs.pop().unwrap(), second]
    }

    #[tokio::test]
    async fn the_kept_text_and_a_second_inflate_give_the_same_result() {
        let mut text = b"header\r\nu1\t\ta,b\t\r\n\r\n".to_vec();
        text.extend(vec![
            b'x';
            segmart_ingest::reader::DEFAULT_MAX_LINE_BYTES + 5
        ]);
        text.extend(b"\nu2\t\tzzz\t\nbad line\nm_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\tb\ta\nlast\t\ta");
        let [kept, inflated] = parse_both_ways(&text).await;
        assert_eq!(kept.0, inflated.0);
        assert_eq!(kept.2, inflated.2);
        let (kept, inflated) = (kept.1, inflated.1);
        assert_eq!(kept.lines_read, 8);
        assert_eq!(kept.blank_lines, 1);
        assert_eq!(kept.lines_applied, 3);
        assert_eq!(kept.lines_rejected, 3);
        assert_eq!(
            (
                kept.lines_read,
                kept.blank_lines,
                kept.lines_applied,
                kept.lines_rejected
            ),
            (
                inflated.lines_read,
                inflated.blank_lines,
                inflated.lines_applied,
                inflated.lines_rejected
            )
        );
        assert_eq!(kept.parse_rejects, inflated.parse_rejects);
        assert_eq!(kept.apply_rejects, inflated.apply_rejects);
        assert_eq!(kept.unknown_segments, inflated.unknown_segments);
    }

    #[test]
    fn mobile_ids_go_to_the_maid_folder_under_their_md5() {
        let targets = targets();
        let keyer = ProfileKeyer::new([7; 16]);
        let line = parse_line(b"m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\ta\t").unwrap();
        let key = resolve_line(
            &line,
            &targets,
            &keyer,
            &NoUserMatching,
            Timestamp::from_secs(0),
            &mut Vec::new(),
            &mut LineScratch::default(),
        )
        .unwrap();
        let canonical =
            segmart_domain::canonical_mobile_id("6d92078a-8246-4ba4-ae5b-76104861e7dc").unwrap();
        assert_eq!(canonical, "m_md5:0c2074fb86930fc4a2a7bb791240a7d3");
        assert_eq!(key, keyer.key_bytes(2, canonical.as_bytes()));

        let no_maid = Targets {
            maid: None,
            ..targets
        };
        assert_eq!(
            resolve_line(
                &line,
                &no_maid,
                &keyer,
                &NoUserMatching,
                Timestamp::from_secs(0),
                &mut Vec::new(),
                &mut LineScratch::default(),
            )
            .unwrap_err(),
            ApplyReject::NoMaidFolder
        );
    }

    /// Lines the parse side resolves while the check runs are held, never written, until the
    /// check has passed: when it finds the file truncated, the store gets nothing and no rejects
    /// file is left, however far the parse side had got.
    #[tokio::test]
    async fn a_truncated_file_applies_nothing_though_its_first_lines_were_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("header\n");
        for n in 0..1000 {
            text.push_str(&format!("user-{n}\t\ta,b\t\n"));
        }
        text.push_str("bad line\n");
        // The check pass at work on a file whose end is missing: it has written this much of
        // the inflated text when the parse side catches up with it.
        let path = dir.path().join("cut.txt");
        std::fs::write(&path, &text).unwrap();
        let feed = TextFeed::new();
        feed.opened();
        feed.publish(text.len() as u64, &[]);
        let context = context(dir.path(), "cut", 10, 128 << 20);
        let rejects_path = context.rejects_path.clone();
        let ahead = ParseAhead::start(context, path, feed.clone());
        let budget = ahead.budget.0.clone();
        let follower = feed.clone();
        let length = text.len() as u64;
        tokio::task::spawn_blocking(move || follower.wait_consumed(length))
            .await
            .unwrap();
        // Every line is resolved: 100 batches of 10 wait for the check.
        let held = budget.state.lock().used;
        assert!(
            // A packed update is at least 25 bytes.
            held >= 100 * 10 * 25,
            "{held}"
        );
        assert!(rejects_path.exists());
        // Then the inflate meets the cut, and the check fails as `check_gzip` does.
        feed.end(FeedEnd::Failed);
        ahead.abandon().await;
        assert!(
            !rejects_path.exists(),
            "no rejects file for a file refused whole"
        );

        // The same through the real check, with a file cut in the middle.
        let mut text = String::from("header\n");
        for n in 0..50_000 {
            text.push_str(&format!("user-{n}\t\ta,b\tnode\n"));
        }
        let gz = gzip(text.as_bytes());
        let run = run_file(dir.path(), "real", &gz[..gz.len() / 2], true, 10, 128 << 20).await;
        match run.result {
            Err(PipelineError::Unreadable(error)) => assert_eq!(error.code(), "truncated_gzip"),
            other => panic!("{:?}", other.map(|counts| counts.lines_read)),
        }
        assert!(
            run.batches.is_empty(),
            "{} batches written",
            run.batches.len()
        );
        assert_eq!(run.rejects, None);
        assert!(!dir.path().join("real.txt").exists());
    }

    /// A file whose resolved batches are many times the bound: the parse side waits whenever
    /// the bound is reached (during the check and after it), and every line reaches the store
    /// exactly once, in file order, with every rejected line listed.
    #[tokio::test]
    async fn a_file_larger_than_the_bound_applies_every_line_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let keyer = ProfileKeyer::new([7; 16]);
        let mut text = String::from("header\n");
        let mut expected_keys = Vec::new();
        let mut expected_rejects = vec!["line\treason".to_owned()];
        for n in 0..30_000u64 {
            if n % 1000 == 7 {
                text.push_str("bad line\n");
                expected_rejects.push(format!("{}\tmissing_fields", n + 2));
            } else {
                text.push_str(&format!("user-{n}\t\ta\tb\n"));
                expected_keys.push(keyer.key_bytes(1, format!("user-{n}").as_bytes()));
            }
        }
        let gz = gzip(text.as_bytes());
        let bound = 16 << 10;
        for keep_text in [true, false] {
            let name = format!("bound-{keep_text}");
            let run = run_file(dir.path(), &name, &gz, keep_text, 64, bound).await;
            let counts = run.result.unwrap();
            assert_eq!(counts.lines_read, 30_001);
            assert_eq!(counts.lines_applied, 29_970);
            assert_eq!(counts.lines_rejected, 30);
            assert_eq!(counts.memberships_added, 29_970);
            assert_eq!(counts.memberships_removed, 29_970);
            let mutations = mutations(&run.batches);
            let resolved: u64 = run
                .batches
                .iter()
                .map(|batch| batch.memory_bytes() as u64)
                .sum();
            let keys: Vec<_> = mutations
                .iter()
                .map(|mutation| match mutation {
                    ProfileMutation::Update { key, .. } => *key,
                    ProfileMutation::Delete { key } => *key,
                })
                .collect();
            assert_eq!(keys, expected_keys, "every line once, in order");
            let rejects: Vec<String> = run
                .rejects
                .unwrap()
                .lines()
                .map(|row| row.splitn(3, '\t').take(2).collect::<Vec<_>>().join("\t"))
                .collect();
            assert_eq!(rejects, expected_rejects);
            if keep_text {
                assert!(resolved > 50 * bound, "{resolved} bytes resolved");
                assert!(
                    run.peak <= bound && run.peak > 0,
                    "held at most {} bytes",
                    run.peak
                );
            }
        }
    }
}
