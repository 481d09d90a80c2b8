//! One data file, start to finish: check the gzip stream whole, then stream it once more through
//! parse → resolve → key → durable write, with every rejected line written to the rejects file.
//!
//! The parse side runs on a blocking thread (with inflate on a thread of its own, see
//! [`BatchReader::spawn`]); it hands [`WriteBatch`]es of [`IngestSettings::batch_lines`] lines to
//! the async side, which writes them to the profile store one after the other, in file order, so
//! a later line about the same profile always lands after an earlier one. The parse side works
//! on the next batch while the store commits the previous one; memory holds at most a few
//! batches, whatever the file size.

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
    ProfileKeyer, ProfileMutation, ProfileStore, ProfileStoreError, WriteBatch,
};

use super::{IngestProgress, UserMatcher};
use crate::directory::Directory;
use crate::segment_map::SegmentMap;

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
    pub path: PathBuf,
    /// What the check pass left: the inflated text to read instead of inflating again.
    pub checked: Checked,
    pub rejects_path: PathBuf,
    pub targets: Targets,
    pub keyer: ProfileKeyer,
    pub matcher: Arc<dyn UserMatcher>,
    pub apply_at: Timestamp,
    pub batch_lines: usize,
    pub progress: Arc<IngestProgress>,
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
    /// The inflated text, when it could be written: the apply pass then reads it instead of
    /// inflating the file a second time. Removed once the file is applied.
    pub text: Option<PathBuf>,
    /// Lines longer than the reader's limit (number, full length): the text holds only their
    /// first KiB, and the apply pass rejects them as the reader would have.
    pub overlong: Vec<(u64, u64)>,
    /// Bytes of inflated text.
    pub text_bytes: u64,
}

/// The first pass: inflates the whole file without parsing, so a file that is not gzip, is
/// truncated or is corrupt is refused before anything is applied. The inflated lines are kept
/// in `text` (beside the spooled file) for the apply pass; if that cannot be written (a full
/// disk), the check goes on and the apply pass inflates again.
pub fn check_gzip(
    path: &Path,
    text: &Path,
    progress: &IngestProgress,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Checked, PipelineError> {
    let checked = check_and_keep_text(path, text, progress, stop);
    if checked.is_err() {
        let _ = std::fs::remove_file(text);
    }
    checked
}

fn check_and_keep_text(
    path: &Path,
    text: &Path,
    progress: &IngestProgress,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Checked, PipelineError> {
    let file = File::open(path)?;
    // Inflating runs on a thread of its own; this one writes the text.
    let mut lines = ParallelGzipLines::spawn(file)?;
    let mut checked = Checked::default();
    let mut out = match File::create(text) {
        Ok(file) => Some(BufWriter::with_capacity(1 << 20, file)),
        Err(error) => {
            tracing::warn!(%error, "cannot keep the inflated text; the apply pass inflates again");
            None
        }
    };
    while let Some(span) = lines.advance()? {
        checked.lines += 1;
        if let Some(writer) = out.as_mut() {
            let line = lines.line(span);
            if let Some(length) = line.overlong_length {
                checked.overlong.push((line.number, length));
            }
            let mut written = writer.write_all(line.bytes);
            if written.is_ok() && line.bytes.last() != Some(&b'\n') {
                written = writer.write_all(b"\n");
            }
            match written {
                Ok(()) => checked.text_bytes += line.bytes.len() as u64,
                Err(error) => {
                    tracing::warn!(%error, "cannot keep the inflated text; the apply pass inflates again");
                    out = None;
                    let _ = std::fs::remove_file(text);
                }
            }
        }
        if checked.lines.is_multiple_of(65_536) {
            progress
                .bytes_done
                .store(lines.progress().bytes_in, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(text);
                return Err(PipelineError::Stopped);
            }
        }
    }
    progress
        .bytes_done
        .store(lines.progress().bytes_in, Ordering::Relaxed);
    if let Some(writer) = out {
        match writer.into_inner() {
            Ok(_) => checked.text = Some(text.to_path_buf()),
            Err(error) => {
                tracing::warn!(error = %error.error(), "cannot keep the inflated text");
                let _ = std::fs::remove_file(text);
            }
        }
    }
    Ok(checked)
}

/// Lines of a plain text file, sliced from one reusable buffer (the text spool holds no line
/// longer than the reader's limit).
struct TextLines {
    file: File,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    number: u64,
    /// Bytes handed out so far.
    offset: u64,
}

impl TextLines {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(TextLines {
            file: File::open(path)?,
            buffer: vec![0; 1 << 20],
            start: 0,
            end: 0,
            eof: false,
            number: 0,
            offset: 0,
        })
    }

    fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        use std::io::Read;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                let line_start = self.start;
                self.start += at + 1;
                self.number += 1;
                self.offset += (at + 1) as u64;
                return Ok(Some((self.number, &self.buffer[line_start..self.start])));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line_start = self.start;
                self.offset += (self.end - self.start) as u64;
                self.start = self.end;
                self.number += 1;
                return Ok(Some((self.number, &self.buffer[line_start..self.end])));
            }
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buffer.len() {
                let grown = self.buffer.len() * 2;
                self.buffer.resize(grown, 0);
            }
            let read = self.file.read(&mut self.buffer[self.end..])?;
            if read == 0 {
                self.eof = true;
            }
            self.end += read;
        }
    }
}

/// Applies a checked data file: the whole second pass. Returns the counts once every batch is
/// durable and the rejects file is on disk.
pub async fn apply_data_file(
    context: ParseContext,
    profiles: Arc<dyn ProfileStore>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<DataCounts, PipelineError> {
    let (batches, mut receiver) = tokio::sync::mpsc::channel::<WriteBatch>(3);
    let progress = context.progress.clone();
    let parser = tokio::task::spawn_blocking(move || parse_file(context, batches));
    let mut written = Ok(());
    while let Some(batch) = receiver.recv().await {
        let lines = batch.mutations.len() as u64;
        if stop.load(Ordering::Relaxed) {
            written = Err(PipelineError::Stopped);
            break;
        }
        // A full store queue (`Saturated`) accepted nothing of the batch; the worker then redoes
        // the whole file after a pause, which blind writes make safe.
        if let Err(error) = profiles.write(batch).await {
            written = Err(PipelineError::Store(error));
            break;
        }
        progress.lines_applied.fetch_add(lines, Ordering::Relaxed);
    }
    // Dropping the receiver makes the parser's next send fail, so it stops early on an error.
    drop(receiver);
    let parsed = parser
        .await
        .map_err(|error| PipelineError::Io(std::io::Error::other(error.to_string())))?;
    written?;
    parsed
}

/// Header of the rejects file.
pub const REJECTS_HEADER: &str = "line\treason\tmessage\tcontent\n";

/// Turns parsed and rejected lines into store batches and rejects-file rows.
struct LineHandler<'c> {
    targets: &'c Targets,
    keyer: &'c ProfileKeyer,
    matcher: &'c dyn UserMatcher,
    apply_at: Timestamp,
    batch_lines: usize,
    batches: &'c tokio::sync::mpsc::Sender<WriteBatch>,
    rejects: BufWriter<File>,
    counts: DataCounts,
    mutations: Vec<ProfileMutation>,
}

impl LineHandler<'_> {
    /// Handles one line; `true` when a batch was just shipped.
    fn handle(&mut self, item: BatchItem<'_>) -> Result<bool, PipelineError> {
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
                ) {
                    Ok(mutation) => {
                        counts.lines_applied += 1;
                        counts.memberships_added += line.add().len() as u64;
                        counts.memberships_removed += line.remove().len() as u64;
                        self.mutations.push(mutation);
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
        if self.mutations.len() >= self.batch_lines {
            self.ship()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn ship(&mut self) -> Result<(), PipelineError> {
        if self.mutations.is_empty() {
            return Ok(());
        }
        let batch = WriteBatch {
            at: self.apply_at,
            mutations: std::mem::replace(&mut self.mutations, Vec::with_capacity(self.batch_lines)),
        };
        self.batches
            .blocking_send(batch)
            .map_err(|_| PipelineError::Stopped)
    }
}

/// The parse side: runs on a blocking thread.
fn parse_file(
    context: ParseContext,
    batches: tokio::sync::mpsc::Sender<WriteBatch>,
) -> Result<DataCounts, PipelineError> {
    let ParseContext {
        path,
        checked,
        rejects_path,
        targets,
        keyer,
        matcher,
        apply_at,
        batch_lines,
        progress,
    } = context;
    if let Some(parent) = rejects_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut rejects = BufWriter::with_capacity(256 * 1024, File::create(&rejects_path)?);
    rejects.write_all(REJECTS_HEADER.as_bytes())?;
    let started = Instant::now();
    let mut handler = LineHandler {
        targets: &targets,
        keyer: &keyer,
        matcher: matcher.as_ref(),
        apply_at,
        batch_lines,
        batches: &batches,
        rejects,
        counts: DataCounts::default(),
        mutations: Vec::with_capacity(batch_lines),
    };
    match &checked.text {
        Some(text) => {
            let compressed = progress.bytes_total.load(Ordering::Relaxed);
            let scale = compressed as f64 / checked.text_bytes.max(1) as f64;
            let mut lines = TextLines::open(text)?;
            let mut overlong = checked.overlong.iter().peekable();
            let (mut lines_read, mut blank_lines) = (0u64, 0u64);
            while let Some((number, bytes)) = lines.next_line()? {
                lines_read += 1;
                if number == 1 {
                    continue;
                }
                let item = if overlong.peek().is_some_and(|(at, _)| *at == number) {
                    let (_, length) = overlong.next().copied().unwrap_or_default();
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
                // Progress after every batch, and every 64 Ki lines when few lines make batches.
                if handler.handle(item)? || number.is_multiple_of(65_536) {
                    let done = (lines.offset as f64 * scale) as u64;
                    progress.bytes_done.store(done, Ordering::Relaxed);
                    progress.lines_done.store(number, Ordering::Relaxed);
                }
            }
            handler.ship()?;
            handler.counts.lines_read = lines_read;
            handler.counts.blank_lines = blank_lines;
            progress.bytes_done.store(compressed, Ordering::Relaxed);
            progress.lines_done.store(lines_read, Ordering::Relaxed);
        }
        None => {
            let mut reader = BatchReader::spawn(File::open(&path)?)?;
            loop {
                let item = match reader.next_item() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(error) => return Err(PipelineError::ChangedWhileApplying(error)),
                };
                if handler.handle(item)? || handler.counts.lines_rejected.is_multiple_of(65_536) {
                    let read = reader.progress();
                    progress.bytes_done.store(read.bytes_in, Ordering::Relaxed);
                    progress.lines_done.store(read.lines, Ordering::Relaxed);
                }
            }
            handler.ship()?;
            let read = reader.progress();
            let line_counts = reader.counts();
            handler.counts.lines_read = line_counts.lines_read;
            handler.counts.blank_lines = line_counts.blank_lines;
            progress.bytes_done.store(read.bytes_in, Ordering::Relaxed);
            progress.lines_done.store(read.lines, Ordering::Relaxed);
        }
    }
    let LineHandler {
        counts, rejects, ..
    } = handler;
    let file = rejects.into_inner().map_err(|error| error.into_error())?;
    file.sync_data()?;
    if let Some(text) = &checked.text {
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

/// Segment ids of a line whose lookups [`resolve_line`] starts ahead.
const PREFETCH_IDS: usize = 32;

/// Resolves one parsed line into a store mutation, with the profile API's meaning of add and
/// remove (`ProfileUpdate::resolve`): a line naming an unknown segment, joining a non-selectable
/// one, or adding and removing the same segment is refused whole; `offending` gets the ids.
pub fn resolve_line<'l>(
    line: &ParsedLine<'l>,
    targets: &Targets,
    keyer: &ProfileKeyer,
    matcher: &dyn UserMatcher,
    apply_at: Timestamp,
    offending: &mut Vec<&'l str>,
) -> Result<ProfileMutation, ApplyReject> {
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
    let add_list = line.add();
    let remove_list = line.remove();
    // The ids' slots are mostly not in the CPU caches: ask for all of them before the first
    // lookup waits for one.
    for id in add_list.iter().chain(remove_list.iter()).take(PREFETCH_IDS) {
        segments.prefetch(id);
    }
    let mut add = Vec::with_capacity(add_list.len());
    let mut remove = Vec::with_capacity(remove_list.len());
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
    Ok(ProfileMutation::Update {
        key: keyer.key_bytes(target.folder_num, user.as_str().as_bytes()),
        update: ResolvedUpdate {
            clear: false,
            remove,
            add,
        },
    })
}

#[cfg(test)]
mod tests {
    use segmart_domain::SegmentKey;
    use segmart_domain::profile::{ProfileUpdate, SegmentRef};
    use segmart_ingest::parse_line;

    use super::*;
    use crate::ingest::NoUserMatching;

    fn targets() -> Targets {
        let mut segments = SegmentMap::default();
        let entries = [
            ("a", 1, 60, true),
            ("b", 2, 1, true),
            ("node", 3, 60, false),
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
        let ids = ["a", "b", "node", "zzz"];
        let targets = targets();
        let keyer = ProfileKeyer::new([7; 16]);
        let now = Timestamp::from_secs(1_000);
        let lookup = |key: &SegmentKey| targets.cookie.as_ref().unwrap().segments.get(key.as_str());
        for add_mask in 0u32..16 {
            for remove_mask in 0u32..16 {
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
                let file = resolve_line(
                    &line,
                    &targets,
                    &keyer,
                    &NoUserMatching,
                    now,
                    &mut offending,
                );
                match (api, file) {
                    (Ok(expected), Ok(ProfileMutation::Update { update, key })) => {
                        assert_eq!(update, expected, "{text}");
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

    /// Runs the parse side over `text` gzipped, reading either the check pass's inflated text or
    /// the gzip file itself, and returns the batches and counts.
    fn parse_both_ways(text: &[u8]) -> [(Vec<ProfileMutation>, DataCounts, String); 2] {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("file.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(text).unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        [true, false].map(|keep_text| {
            let progress = Arc::new(IngestProgress::default());
            let stop = std::sync::atomic::AtomicBool::new(false);
            let text_path = if keep_text {
                dir.path().join("file.txt")
            } else {
                dir.path().join("missing-dir/file.txt")
            };
            let checked = check_gzip(&gz, &text_path, &progress, &stop).unwrap();
            assert_eq!(checked.text.is_some(), keep_text);
            let rejects_path = dir.path().join(format!("rejects-{keep_text}.tsv"));
            let context = ParseContext {
                path: gz.clone(),
                checked,
                rejects_path: rejects_path.clone(),
                targets: targets(),
                keyer: ProfileKeyer::new([7; 16]),
                matcher: Arc::new(NoUserMatching),
                apply_at: Timestamp::from_secs(1_000),
                batch_lines: 2,
                progress,
            };
            let (sender, mut receiver) = tokio::sync::mpsc::channel(1000);
            let counts = parse_file(context, sender).unwrap();
            let mut mutations = Vec::new();
            while let Ok(batch) = receiver.try_recv() {
                mutations.extend(batch.mutations);
            }
            (
                mutations,
                counts,
                std::fs::read_to_string(rejects_path).unwrap(),
            )
        })
    }

    #[test]
    fn the_kept_text_and_a_second_inflate_give_the_same_result() {
        let mut text = b"header\r\nu1\t\ta,b\t\r\n\r\n".to_vec();
        text.extend(vec![
            b'x';
            segmart_ingest::reader::DEFAULT_MAX_LINE_BYTES + 5
        ]);
        text.extend(b"\nu2\t\tzzz\t\nbad line\nm_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\tb\ta\nlast\t\ta");
        let [kept, inflated] = parse_both_ways(&text);
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
        let mutation = resolve_line(
            &line,
            &targets,
            &keyer,
            &NoUserMatching,
            Timestamp::from_secs(0),
            &mut Vec::new(),
        )
        .unwrap();
        let ProfileMutation::Update { key, .. } = mutation else {
            panic!()
        };
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
                &mut Vec::new()
            )
            .unwrap_err(),
            ApplyReject::NoMaidFolder
        );
    }
}
