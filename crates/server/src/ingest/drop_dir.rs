//! The watched drop directory.
//!
//! Every [`IngestSettings::poll_interval`](super::IngestSettings) the directory is listed. A
//! regular file is picked up once its size and modification time are the same in two listings
//! in a row (so a file still being copied in is left alone; renaming a finished file into the
//! directory works too). Names starting with `.` are ignored: that is where copy tools write
//! before renaming. A data file waits while a taxonomy with its prefix sits in the directory but
//! is not yet picked up, so the taxonomy is recorded (and applied) first.
//!
//! A picked-up file is renamed into the spool and recorded; when its delivery is final it lands
//! in `done/` (applied) or `rejected/` (rejected whole, duplicate, late) with a
//! `<name>.report.json` beside it. A file with a bad name, or whose DMP ID no provider has, goes
//! straight to `rejected/` with a `<name>.reason.txt`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use segmart_ingest::{BatchFileName, FileKind};
use segmart_storage::catalog::IngestSource;

use super::{Arrival, new_spool_path, receive};
use crate::state::SharedState;

/// What a listing saw of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

/// Watches `dir` until the hub stops.
pub async fn watch(state: SharedState, dir: PathBuf) {
    for sub in ["", "done", "rejected"] {
        if let Err(error) = std::fs::create_dir_all(dir.join(sub)) {
            tracing::error!(dir = %dir.display(), %error, "cannot create the drop directory");
            return;
        }
    }
    tracing::info!(dir = %dir.display(), "watching the drop directory");
    let mut previous: HashMap<String, Seen> = HashMap::new();
    while !state.ingest.stopping() {
        match scan(&state, &dir, &previous).await {
            Ok(seen) => previous = seen,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot list the drop directory")
            }
        }
        tokio::time::sleep(state.ingest.settings.poll_interval).await;
    }
}

/// One listing: picks up the files that were stable since `previous`; returns what it saw of the
/// files it left.
async fn scan(
    state: &SharedState,
    dir: &Path,
    previous: &HashMap<String, Seen>,
) -> std::io::Result<HashMap<String, Seen>> {
    let mut seen = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if !metadata.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        seen.insert(
            name,
            Seen {
                len: metadata.len(),
                modified: metadata.modified().ok(),
            },
        );
    }
    let stable: Vec<String> = seen
        .iter()
        .filter(|(name, now)| previous.get(*name) == Some(*now))
        .map(|(name, _)| name.clone())
        .collect();
    // Taxonomies first, then in name order (DATE order within one DMP ID).
    let mut ready: Vec<(Option<BatchFileName>, String)> = stable
        .into_iter()
        .map(|name| (BatchFileName::parse(&name).ok(), name))
        .collect();
    ready.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => a.1.cmp(&b.1),
    });
    for (parsed, name) in ready {
        let path = dir.join(&name);
        let Some(parsed) = parsed else {
            let reason = BatchFileName::parse(&name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            refuse(dir, &name, &reason);
            seen.remove(&name);
            continue;
        };
        if parsed.kind() == FileKind::Data {
            let taxonomy = parsed.sibling(FileKind::Taxonomy);
            let waiting = seen.keys().any(|other| {
                other != &name && BatchFileName::parse(other).ok().as_ref() == Some(&taxonomy)
            });
            if waiting {
                continue;
            }
        }
        let provider = match state.catalog.provider_by_dmp_id(parsed.dmp_id()).await {
            Ok(Some(provider)) => provider,
            Ok(None) => {
                refuse(
                    dir,
                    &name,
                    &format!(
                        "no provider has the DMP ID {}; the operator sets it with segmart admin provider set-dmp-id",
                        parsed.dmp_id()
                    ),
                );
                seen.remove(&name);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot look the DMP ID up; trying again");
                continue;
            }
        };
        let spool = new_spool_path(&state.ingest.settings)?;
        if let Err(error) = move_file(&path, &spool) {
            tracing::warn!(file = %path.display(), %error, "cannot move a dropped file into the spool");
            continue;
        }
        let bytes = std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0);
        seen.remove(&name);
        let arrival = Arrival {
            name: parsed,
            provider: provider.id,
            source: IngestSource::Drop,
            spool_path: spool.clone(),
            bytes,
        };
        if let Err(error) = receive(state, arrival).await {
            tracing::warn!(file = %name, %error, "cannot record a dropped file; putting it back");
            let _ = move_file(&spool, &path);
        }
    }
    Ok(seen)
}

/// Renames, or copies and removes across file systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
    }
}

fn refuse(dir: &Path, name: &str, reason: &str) {
    tracing::warn!(file = %name, %reason, "dropped file rejected");
    let rejected = dir.join("rejected");
    let result = move_file(&dir.join(name), &rejected.join(name)).and_then(|()| {
        std::fs::write(
            rejected.join(format!("{name}.reason.txt")),
            format!("{reason}\n"),
        )
    });
    if let Err(error) = result {
        tracing::warn!(file = %name, %error, "cannot move a rejected file to rejected/");
    }
}
