//! Batch file ingestion on the server: the registry, the worker and the three ways in.
//!
//! Every delivered file, whichever way it came (the watched drop directory, `PUT
//! /segmentproviders/{spid}/files/{filename}`, or `segmart ingest FILE…`), ends up the same way:
//! its bytes in the spool (`<data_dir>/ingest/spool/`), a delivery recorded in the catalog's
//! registry by [`receive`], and the one worker of the process ([`run_worker`]) applying
//! deliveries one at a time through [`process`]. So there is one code path whatever the source.
//!
//! # Guarantees and how they are kept
//!
//! - **Exactly once per FILE ID.** The registry allows one queued, applying or applied delivery
//!   per provider, kind and FILE ID; any other is recorded as a duplicate and applies nothing.
//! - **DATE order.** The worker takes a provider's queued files in DATE order (then FILE ID, a
//!   taxonomy before the data file of the same prefix). A file whose DATE is older than the
//!   provider's newest applied file of its kind is rejected with code `late`: applying it would
//!   put older data over newer. Content delivered late must come again under a new FILE ID
//!   with a newer DATE.
//! - **Whole or nothing for unreadable files.** A data file is inflated to its end before
//!   anything is applied ([`pipeline::check_gzip`]): a file that is not gzip, is truncated or is
//!   corrupt is rejected whole. Its lines are resolved while the check runs
//!   ([`pipeline::ParseAhead`]), but the batches are held (at most
//!   [`IngestSettings::resolve_ahead_bytes`]) and written only once the check passed. A
//!   taxonomy is validated whole and applied in one catalog transaction.
//! - **Bad lines never abort a file.** Each is counted by reason and written, with its line
//!   number and content, to `<data_dir>/ingest/rejects/<provider>/<file_id>.tsv`.
//! - **Crash safety.** A delivery records its `apply_at` before its first write, and every
//!   expiry is computed from it. Every profile write is a blind write, so applying a line twice
//!   leaves what applying it once left. A delivery found `applying` after a crash is therefore
//!   redone from its first line with the same `apply_at`: nothing is lost, nothing doubled.

pub mod api;
pub mod drop_dir;
pub mod pipeline;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use segmart_domain::pricing::{Cost, CostType, Currency};
use segmart_domain::{IdType, ProviderId};
use segmart_ingest::{BatchFileName, FileKind, parse_taxonomy};
use segmart_storage::catalog::{
    CatalogError, CatalogResult, IngestCounts, IngestFile, IngestKind, IngestOutcome,
    IngestRejection, IngestSource, IngestStatus, NewIngestFile, TaxonomySegment,
};
use tokio::sync::Notify;

use self::pipeline::{ParseContext, PipelineError, Targets};
use crate::state::{AppState, SharedState};

/// Where ingestion keeps its files and how it behaves.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// `<data_dir>/ingest`: `spool/` (files waiting or being applied) and `rejects/`.
    pub dir: PathBuf,
    /// The watched drop directory (with `done/` and `rejected/` inside); `None`: not watched.
    pub drop_dir: Option<PathBuf>,
    /// How often the drop directory is listed; a file is picked up once its size and
    /// modification time stayed the same across two listings.
    pub poll_interval: Duration,
    /// Lines per profile-store write batch.
    pub batch_lines: usize,
    /// Bytes of resolved write batches the parse side may hold ahead of the store: while the
    /// check pass runs (nothing may be written then) and after it. When the bound is reached
    /// the parse side waits; the lines it has not resolved yet are in the check's text file.
    pub resolve_ahead_bytes: u64,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted taxonomy file, in bytes.
    pub max_taxonomy_bytes: u64,
}

impl IngestSettings {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        IngestSettings {
            dir: dir.into(),
            drop_dir: None,
            poll_interval: Duration::from_millis(1000),
            batch_lines: 32_768,
            resolve_ahead_bytes: 128 << 20,
            max_upload_bytes: 64 << 30,
            max_taxonomy_bytes: 64 << 20,
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The complete list of a data delivery's rejected lines.
    pub fn rejects_path(&self, provider: ProviderId, file_id: &str) -> PathBuf {
        self.dir
            .join("rejects")
            .join(provider.to_string())
            .join(format!("{file_id}.tsv"))
    }
}

/// Translates a DMP user id (its canonical key: a desktop id as sent, a mobile id as
/// `m_md5:<hex>`) into the platform's id through a user-matching table. Plugged into the
/// pipeline so a table can be added without touching it; [`NoUserMatching`] until then.
pub trait UserMatcher: Send + Sync + 'static {
    fn matched(&self, dmp_key: &str) -> Option<String>;
}

/// No user-matching table: lines without a DSP user id apply to the DMP user id itself.
pub struct NoUserMatching;

impl UserMatcher for NoUserMatching {
    fn matched(&self, _dmp_key: &str) -> Option<String> {
        None
    }
}

/// What the worker is doing, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Idle = 0,
    /// Inflating the whole file to check it.
    Checking = 1,
    /// Applying lines.
    Applying = 2,
}

/// Live progress of the delivery being worked on.
#[derive(Debug, Default)]
pub struct IngestProgress {
    pub delivery: AtomicU64,
    phase: AtomicU8,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Lines in the file, known once the check pass is over (0 before).
    pub lines_total: AtomicU64,
    pub lines_done: AtomicU64,
    pub lines_applied: AtomicU64,
    name: Mutex<String>,
}

impl IngestProgress {
    pub fn reset(&self, name: &str, bytes: u64, phase: Phase) {
        *self.name.lock() = name.to_owned();
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
        self.lines_done.store(0, Ordering::Relaxed);
        self.lines_applied.store(0, Ordering::Relaxed);
        self.set_phase(phase);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
        if phase == Phase::Applying {
            self.bytes_done.store(0, Ordering::Relaxed);
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Checking,
            2 => Phase::Applying,
            _ => Phase::Idle,
        }
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
    }
}

/// The ingestion state a server holds: settings, the worker's wake-up and its progress.
pub struct IngestHub {
    pub settings: IngestSettings,
    /// Rung when a delivery is queued.
    wake: Notify,
    /// Set to stop the worker (and the drop directory watcher) at the next batch.
    stop: Arc<AtomicBool>,
    pub progress: Arc<IngestProgress>,
    pub matcher: Arc<dyn UserMatcher>,
}

impl IngestHub {
    pub fn new(settings: IngestSettings) -> Arc<IngestHub> {
        Arc::new(IngestHub {
            settings,
            wake: Notify::new(),
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(IngestProgress::default()),
            matcher: Arc::new(NoUserMatching),
        })
    }

    /// Wakes the worker.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Asks the worker and the watcher to stop; a delivery being applied stays `applying` and
    /// is redone from its first line at the next start.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A delivered file whose bytes are in the spool, ready to be recorded.
pub struct Arrival {
    pub name: BatchFileName,
    pub provider: ProviderId,
    pub source: IngestSource,
    pub spool_path: PathBuf,
    pub bytes: u64,
}

pub fn kind_of(name: &BatchFileName) -> IngestKind {
    match name.kind() {
        FileKind::Data => IngestKind::Data,
        FileKind::Taxonomy => IngestKind::Taxonomy,
    }
}

/// A fresh spool path (the name is random: two uploads of one file name never collide).
pub fn new_spool_path(settings: &IngestSettings) -> std::io::Result<PathBuf> {
    let dir = settings.spool_dir();
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(uuid::Uuid::new_v4().to_string()))
}

/// Records a delivery whose bytes are in the spool and wakes the worker. A duplicate or a late
/// file is final at once: its spool file is disposed of here.
pub async fn receive(state: &AppState, arrival: Arrival) -> CatalogResult<IngestFile> {
    let new = NewIngestFile {
        provider: arrival.provider,
        kind: kind_of(&arrival.name),
        file_id: arrival.name.file_id().to_owned(),
        dmp_id: arrival.name.dmp_id().to_owned(),
        file_date: arrival.name.date().unix_seconds(),
        name: arrival.name.to_string(),
        source: arrival.source,
        spool_path: Some(arrival.spool_path.to_string_lossy().into_owned()),
        bytes: arrival.bytes,
        rejection: None,
    };
    let file = state
        .catalog
        .register_ingest_file(&new, state.clock.now())
        .await?;
    tracing::info!(
        delivery = file.id,
        provider = %file.provider,
        name = %file.name,
        status = %file.status,
        "batch file received"
    );
    if file.status.is_final() {
        record_metrics(state, &file);
        dispose(state, &file, &arrival.spool_path);
    } else {
        state.ingest.notify();
    }
    Ok(file)
}

/// Moves or removes a final delivery's spool file: drop-directory files go to `done/` or
/// `rejected/` beside a `.report.json`; others are deleted.
fn dispose(state: &AppState, file: &IngestFile, spool: &Path) {
    let settings = &state.ingest.settings;
    let result = match (file.source, &settings.drop_dir) {
        (IngestSource::Drop, Some(drop_dir)) => {
            let folder = if file.status == IngestStatus::Applied {
                "done"
            } else {
                "rejected"
            };
            let target_dir = drop_dir.join(folder);
            let report = report::FileReport::new(file, None);
            std::fs::create_dir_all(&target_dir)
                .and_then(|()| std::fs::rename(spool, target_dir.join(&file.name)))
                .and_then(|()| {
                    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
                    std::fs::write(target_dir.join(format!("{}.report.json", file.name)), json)
                })
        }
        _ => std::fs::remove_file(spool),
    };
    if let Err(error) = result
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(delivery = file.id, %error, "cannot dispose of the spooled file");
    }
}

fn record_metrics(state: &AppState, file: &IngestFile) {
    let metrics = &state.metrics;
    metrics.add(
        "segmart_ingest_files_total",
        &format!("kind=\"{}\",status=\"{}\"", file.kind.name(), file.status),
        1,
    );
    let counts = &file.counts;
    if file.status == IngestStatus::Applied && file.kind == IngestKind::Data {
        metrics.add(
            "segmart_ingest_lines_total",
            "outcome=\"applied\"",
            counts.lines_applied,
        );
        metrics.add(
            "segmart_ingest_lines_total",
            "outcome=\"rejected\"",
            counts.lines_rejected,
        );
        metrics.add(
            "segmart_ingest_memberships_total",
            "op=\"add\"",
            counts.memberships_added,
        );
        metrics.add(
            "segmart_ingest_memberships_total",
            "op=\"remove\"",
            counts.memberships_removed,
        );
        for (reason, n) in &counts.rejects {
            metrics.add(
                "segmart_ingest_rejected_lines_total",
                &format!("reason=\"{reason}\""),
                *n,
            );
        }
        let unknown: u64 = counts.unknown_segments.iter().map(|(_, n)| n).sum();
        metrics.add("segmart_ingest_unknown_segment_refs_total", "", unknown);
        metrics.add("segmart_ingest_lines_read_total", "", counts.lines_read);
        metrics.add(
            "segmart_ingest_apply_milliseconds_total",
            "",
            counts.duration_millis,
        );
        metrics.add(
            "segmart_ingest_check_milliseconds_total",
            "",
            counts.check_millis,
        );
    }
}

/// Starts the worker (and, once the spool is cleared, the drop directory watcher when one is
/// configured).
pub fn spawn(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        clear_spool(&state).await;
        let watcher = state
            .ingest
            .settings
            .drop_dir
            .clone()
            .map(|dir| tokio::spawn(drop_dir::watch(state.clone(), dir)));
        work(&state).await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
    })
}

/// Clears the spool, then applies deliveries one at a time until [`IngestHub::request_stop`].
pub async fn run_worker(state: SharedState) {
    clear_spool(&state).await;
    work(&state).await;
}

/// Removes what a stop or a crash left in the spool and no queued or applying delivery needs:
/// uploads cut short (`*.part`, never recorded), inflated texts (`*.txt`; a redo writes them
/// again), and files of deliveries that finished just before the process died. Files written
/// since the worker started (an upload under way) are left alone.
async fn clear_spool(state: &AppState) {
    let started = std::time::SystemTime::now();
    let pending = match state.catalog.pending_ingest_files().await {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%error, "cannot read the batch file registry");
            return;
        }
    };
    let keep: std::collections::HashSet<PathBuf> = pending
        .iter()
        .filter_map(|file| file.spool_path.as_deref().map(PathBuf::from))
        .collect();
    let Ok(entries) = std::fs::read_dir(state.ingest.settings.spool_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < started);
        if old && !keep.contains(&path) {
            tracing::info!(file = %path.display(), "removing a spooled file no delivery waits for");
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), %error, "cannot remove a spooled file");
            }
        }
    }
}

async fn work(state: &AppState) {
    let hub = state.ingest.clone();
    while !hub.stopping() {
        match state.catalog.next_ingest_file().await {
            Ok(Some(file)) => {
                if let Err(pause) = process(state, file).await {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = hub.wake.notified() => {}
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = hub.wake.notified() => {}
                    _ = tokio::time::sleep(hub.settings.poll_interval) => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the batch file registry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    hub.progress.set_phase(Phase::Idle);
}

fn rejection(code: &str, message: impl Into<String>) -> IngestRejection {
    IngestRejection {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Works one delivery to its end. `Err(pause)`: it could not be finished now (the store is
/// saturated or failing, or a stop was requested); it stays where it is and is taken again.
pub async fn process(state: &AppState, file: IngestFile) -> Result<IngestFile, Duration> {
    let hub = &state.ingest;
    let catalog = state.catalog.as_ref();
    let retry = |error: &dyn std::fmt::Display| {
        tracing::warn!(delivery = file.id, %error, "batch file could not be applied now; retrying");
        Duration::from_secs(1)
    };
    let Some(spool) = file.spool_path.clone().map(PathBuf::from) else {
        let outcome = IngestOutcome::Rejected {
            rejection: rejection("spool_missing", "the delivered bytes are gone"),
            counts: IngestCounts::default(),
        };
        return finish(state, &file, &outcome, None)
            .await
            .map_err(|e| retry(&e));
    };
    if !spool.exists() {
        let outcome = IngestOutcome::Rejected {
            rejection: rejection(
                "spool_missing",
                format!("the delivered bytes are gone from {}", spool.display()),
            ),
            counts: IngestCounts::default(),
        };
        return finish(state, &file, &outcome, None)
            .await
            .map_err(|e| retry(&e));
    }
    if file.status == IngestStatus::Queued {
        let newest = catalog
            .newest_applied_date(file.provider, file.kind)
            .await
            .map_err(|e| retry(&e))?;
        if newest.is_some_and(|newest| newest > file.file_date) {
            let outcome = IngestOutcome::Rejected {
                rejection: rejection(
                    "late",
                    format!(
                        "a {} file with a later DATE was applied already; files of a provider \
                         apply in DATE order, so deliver this content again under a new FILE ID \
                         with a newer DATE",
                        file.kind.name()
                    ),
                ),
                counts: IngestCounts::default(),
            };
            return finish(state, &file, &outcome, Some(&spool))
                .await
                .map_err(|e| retry(&e));
        }
    }
    let started = Instant::now();
    let now = state.clock.now();
    let file = catalog
        .start_ingest_file(file.id, now, now)
        .await
        .map_err(|e| retry(&e))?;
    let apply_at = file.apply_at.unwrap_or(now);
    hub.progress
        .delivery
        .store(file.id as u64, Ordering::Relaxed);
    let folders = catalog
        .list_folders(Some(file.provider))
        .await
        .map_err(|e| retry(&e))?;
    match file.kind {
        IngestKind::Taxonomy => {
            hub.progress.reset(&file.name, file.bytes, Phase::Applying);
            let result = apply_taxonomy(state, &file, &spool, &folders, started).await;
            hub.progress.set_phase(Phase::Idle);
            match result {
                Ok(done) => {
                    record_metrics(state, &done);
                    dispose(state, &done, &spool);
                    Ok(done)
                }
                Err(TaxonomyFailure::Rejected(rejection)) => {
                    let outcome = IngestOutcome::Rejected {
                        rejection,
                        counts: IngestCounts {
                            duration_millis: started.elapsed().as_millis() as u64,
                            ..IngestCounts::default()
                        },
                    };
                    finish(state, &file, &outcome, Some(&spool))
                        .await
                        .map_err(|e| retry(&e))
                }
                Err(TaxonomyFailure::Retry(error)) => Err(retry(&error)),
            }
        }
        IngestKind::Data => {
            let targets = Targets::new(&folders, &state.directory);
            if targets.is_empty() {
                let outcome = IngestOutcome::Rejected {
                    rejection: rejection(
                        "no_folder",
                        "the provider has no cookie or maid folder for the lines to go to",
                    ),
                    counts: IngestCounts::default(),
                };
                return finish(state, &file, &outcome, Some(&spool))
                    .await
                    .map_err(|e| retry(&e));
            }
            hub.progress.reset(&file.name, file.bytes, Phase::Checking);
            hub.progress.lines_total.store(0, Ordering::Relaxed);
            let text = spool.with_extension("txt");
            // The parse side starts now and resolves lines from the check's inflated text as
            // it is written, against the segment table taken above (taxonomies are deliveries
            // of their own, applied before this file starts). What it resolves waits, bounded,
            // until the check has passed: nothing reaches the store before.
            let context = ParseContext {
                path: spool.clone(),
                rejects_path: hub.settings.rejects_path(file.provider, &file.file_id),
                targets,
                keyer: state.keyer.clone(),
                matcher: hub.matcher.clone(),
                apply_at,
                batch_lines: hub.settings.batch_lines,
                ahead_bytes: hub.settings.resolve_ahead_bytes,
            };
            let feed = pipeline::TextFeed::new();
            let ahead = pipeline::ParseAhead::start(context, text.clone(), feed.clone());
            let check_spool = spool.clone();
            let check_text = text.clone();
            let progress = hub.progress.clone();
            let stop = hub.stop.clone();
            let checked = tokio::task::spawn_blocking(move || {
                pipeline::check_gzip(&check_spool, &check_text, &progress, &stop, &feed)
            })
            .await;
            let check_millis = started.elapsed().as_millis() as u64;
            let checked = match checked {
                Ok(Ok(checked)) => checked,
                Ok(Err(error)) => {
                    ahead.abandon().await;
                    hub.progress.set_phase(Phase::Idle);
                    return match error.rejection() {
                        Some(rejection) => {
                            let outcome = IngestOutcome::Rejected {
                                rejection,
                                counts: IngestCounts {
                                    check_millis,
                                    duration_millis: check_millis,
                                    ..IngestCounts::default()
                                },
                            };
                            finish(state, &file, &outcome, Some(&spool))
                                .await
                                .map_err(|e| retry(&e))
                        }
                        None if matches!(error, PipelineError::Stopped) => Err(Duration::ZERO),
                        None => Err(retry(&error)),
                    };
                }
                Err(error) => {
                    ahead.abandon().await;
                    let _ = std::fs::remove_file(&text);
                    hub.progress.set_phase(Phase::Idle);
                    return Err(retry(&error));
                }
            };
            hub.progress
                .lines_total
                .store(checked.lines, Ordering::Relaxed);
            hub.progress.set_phase(Phase::Applying);
            let applied = pipeline::apply_data_file(
                ahead,
                checked,
                state.profiles.clone(),
                hub.stop.clone(),
                hub.progress.clone(),
            )
            .await;
            hub.progress.set_phase(Phase::Idle);
            // The inflated text is needed no more (a redo writes it again).
            let _ = std::fs::remove_file(&text);
            let duration_millis = started.elapsed().as_millis() as u64;
            match applied {
                Ok(counts) => {
                    let outcome =
                        IngestOutcome::Applied(counts.into_report(check_millis, duration_millis));
                    finish(state, &file, &outcome, Some(&spool))
                        .await
                        .map_err(|e| retry(&e))
                }
                Err(error) => match error.rejection() {
                    Some(rejection) => {
                        let outcome = IngestOutcome::Rejected {
                            rejection,
                            counts: IngestCounts {
                                check_millis,
                                duration_millis,
                                ..IngestCounts::default()
                            },
                        };
                        finish(state, &file, &outcome, Some(&spool))
                            .await
                            .map_err(|e| retry(&e))
                    }
                    None if matches!(error, PipelineError::Stopped) => Err(Duration::ZERO),
                    None => Err(retry(&error)),
                },
            }
        }
    }
}

async fn finish(
    state: &AppState,
    file: &IngestFile,
    outcome: &IngestOutcome,
    spool: Option<&Path>,
) -> CatalogResult<IngestFile> {
    let done = state
        .catalog
        .finish_ingest_file(file.id, outcome, state.clock.now())
        .await?;
    tracing::info!(
        delivery = done.id,
        name = %done.name,
        status = %done.status,
        lines = done.counts.lines_read,
        applied = done.counts.lines_applied,
        rejected = done.counts.lines_rejected,
        millis = done.counts.duration_millis,
        reason = done.rejection.as_ref().map(|r| r.code.as_str()).unwrap_or(""),
        "batch file finished"
    );
    record_metrics(state, &done);
    if let Some(spool) = spool {
        dispose(state, &done, spool);
    }
    Ok(done)
}

enum TaxonomyFailure {
    /// The taxonomy is refused whole.
    Rejected(IngestRejection),
    /// The catalog failed; try again later.
    Retry(CatalogError),
}

/// Validates a taxonomy file whole and applies it in one catalog transaction, to the
/// provider's first cookie folder and first maid folder (the folders a data file writes to).
async fn apply_taxonomy(
    state: &AppState,
    file: &IngestFile,
    spool: &Path,
    folders: &[segmart_storage::catalog::Folder],
    started: Instant,
) -> Result<IngestFile, TaxonomyFailure> {
    let limit = state.ingest.settings.max_taxonomy_bytes;
    if file.bytes > limit {
        return Err(TaxonomyFailure::Rejected(rejection(
            "taxonomy_too_large",
            format!("the taxonomy is {} bytes, the limit is {limit}", file.bytes),
        )));
    }
    let bytes = tokio::fs::read(spool).await.map_err(|error| {
        TaxonomyFailure::Rejected(rejection(
            "read_failed",
            format!("cannot read the taxonomy: {error}"),
        ))
    })?;
    let entries = match parse_taxonomy(&bytes) {
        Ok(entries) => entries,
        Err(error) => {
            return Err(TaxonomyFailure::Rejected(rejection(
                "invalid_taxonomy",
                error.to_string(),
            )));
        }
    };
    let targets: Vec<_> = [IdType::Cookie, IdType::Maid]
        .iter()
        .filter_map(|id_type| {
            folders
                .iter()
                .filter(|f| &f.id_type == id_type)
                .min_by_key(|f| f.num)
        })
        .collect();
    if targets.is_empty() {
        return Err(TaxonomyFailure::Rejected(rejection(
            "no_folder",
            "the provider has no cookie or maid folder for the segments to go to",
        )));
    }
    let mut segments = Vec::with_capacity(entries.len() * targets.len());
    for folder in &targets {
        for entry in &entries {
            segments.push(TaxonomySegment {
                folder: folder.id,
                key: entry.id.clone(),
                name: entry.name.clone(),
                pricing: entry.cost.map(|cost| Cost {
                    cost_type: match cost.cost_type {
                        segmart_ingest::CostType::Rate => CostType::Rate,
                        segmart_ingest::CostType::Fix => CostType::Fix,
                    },
                    value: cost.value,
                    currency: cost.currency.map(|c| match c {
                        segmart_ingest::Currency::Rub => Currency::Rub,
                        segmart_ingest::Currency::Usd => Currency::Usd,
                    }),
                }),
                advertisers: entry.advertisers.clone(),
            });
        }
    }
    let counts = IngestCounts {
        lines_read: entries.len() as u64,
        segments_upserted: segments.len() as u64,
        duration_millis: started.elapsed().as_millis() as u64,
        ..IngestCounts::default()
    };
    match state
        .catalog
        .apply_taxonomy(file.id, &segments, &counts, state.clock.now())
        .await
    {
        Ok((done, written)) => {
            for segment in &written {
                state.directory.put_segment(segment);
            }
            tracing::info!(
                delivery = done.id,
                segments = written.len(),
                "taxonomy applied"
            );
            Ok(done)
        }
        Err(CatalogError::Invalid(field)) => Err(TaxonomyFailure::Rejected(rejection(
            "invalid_taxonomy",
            field.to_string(),
        ))),
        Err(CatalogError::AlreadyExists(what) | CatalogError::NotFound(what)) => Err(
            TaxonomyFailure::Rejected(rejection("invalid_taxonomy", what)),
        ),
        Err(error) => Err(TaxonomyFailure::Retry(error)),
    }
}
