//! `segmart ingest FILE…`: applies batch files through the same pipeline as the server and
//! prints each file's report.
//!
//! When no server holds the data directory, the command opens it itself and runs the ingest
//! worker in-process. When a running server holds it (the profile store is locked), the files
//! are uploaded to that server's operator API (`PUT /admin/ingest/files/{name}`, with the
//! operator token from `<data_dir>/operator.token`) and the reports are polled from it. Either
//! way the progress bar shows bytes, lines/s and the time left.
//!
//! A data file's taxonomy (`[same prefix].taxonomy.json` beside it) is taken along
//! automatically. Exit status: 0 when every file was applied (or was a duplicate), 2 when any
//! was rejected whole, 1 on other errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segmart_domain::{Clock, SystemClock};
use segmart_ingest::{BatchFileName, FileKind};
use segmart_server::SharedState;
use segmart_server::ingest::api::ProgressDto;
use segmart_server::ingest::report::FileReport;
use segmart_server::ingest::{Arrival, Phase, new_spool_path, receive, run_worker};
use segmart_storage::catalog::IngestSource;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Batch files: `[DMP ID].[yyyy-MM-dd_HH-mm-ss].[FILE ID].txt.gz` or `….taxonomy.json`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// The running server's URL, when a server holds the data directory (default: the
    /// configured public URL or listen address).
    #[arg(long)]
    pub server: Option<String>,
}

/// The files to send, in the order they should be recorded: taxonomies before their data file,
/// each DMP's files in DATE order. Siblings named nowhere on the command line are added.
fn plan(files: &[PathBuf]) -> anyhow::Result<Vec<(BatchFileName, PathBuf)>> {
    let mut planned: Vec<(BatchFileName, PathBuf)> = Vec::new();
    for path in files {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no file name", path.display()))?;
        let name = BatchFileName::parse(file_name).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !path.is_file() {
            bail!("{} is not a readable file", path.display());
        }
        if name.kind() == FileKind::Data {
            let sibling = name.sibling(FileKind::Taxonomy);
            let sibling_path = path.with_file_name(sibling.to_string());
            let listed = files
                .iter()
                .any(|f| f.file_name() == sibling_path.file_name());
            if !listed && sibling_path.is_file() && !planned.iter().any(|(n, _)| n == &sibling) {
                eprintln!("taking the taxonomy {} along", sibling_path.display());
                planned.push((sibling, sibling_path));
            }
        }
        planned.push((name, path.clone()));
    }
    planned.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(planned)
}

fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:40} [{bar:28}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Turns progress snapshots into the bar: position in compressed bytes, message with the
/// phase and the lines/s.
struct BarState {
    bar: ProgressBar,
    last_lines: u64,
    last_at: Instant,
    rate: f64,
}

impl BarState {
    fn update(&mut self, p: &ProgressDto) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_at).as_secs_f64();
        if elapsed >= 0.5 {
            let lines = p.lines_done.saturating_sub(self.last_lines);
            self.rate = if p.lines_done >= self.last_lines {
                lines as f64 / elapsed
            } else {
                0.0
            };
            self.last_lines = p.lines_done;
            self.last_at = now;
        }
        self.bar.set_length(p.bytes_total);
        self.bar.set_position(p.bytes_done.min(p.bytes_total));
        let short: String = p.file_name.chars().take(24).collect();
        let message = match p.phase.as_str() {
            "checking" => format!("{short} checking gzip"),
            "applying" => format!("{short} {:.0}k lines/s", self.rate / 1000.0),
            _ => format!("{short} waiting"),
        };
        self.bar.set_message(message);
    }
}

pub async fn run(mut config: Config, args: IngestArgs) -> anyhow::Result<i32> {
    if let Some(dir) = args.data_dir.clone() {
        config.data_dir = dir;
    }
    crate::node::init_logging("warn");
    let planned = plan(&args.files)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let reports = match crate::node::open_node(&config, clock).await {
        Ok(node) => run_local(node.state, &planned, &args).await?,
        Err(error) if is_locked(&error) => {
            eprintln!(
                "a running server holds {}; sending the files to it",
                config.data_dir.display()
            );
            run_remote(&config, &planned, &args).await?
        }
        Err(error) => return Err(error),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            println!("{}", report.to_text());
        }
    }
    Ok(if reports.iter().any(|r| r.status == "rejected") {
        2
    } else {
        0
    })
}

fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::WouldBlock)
    })
}

/// Puts a file into the spool without copying when possible (a hard link keeps the bytes even
/// if the original is moved or deleted meanwhile).
fn spool_copy(source: &Path, spool: &Path) -> anyhow::Result<u64> {
    if std::fs::hard_link(source, spool).is_err() {
        std::fs::copy(source, spool)
            .with_context(|| format!("cannot copy {} into the spool", source.display()))?;
        std::fs::File::open(spool)?.sync_all()?;
    }
    Ok(std::fs::metadata(spool)?.len())
}

async fn run_local(
    state: SharedState,
    planned: &[(BatchFileName, PathBuf)],
    args: &IngestArgs,
) -> anyhow::Result<Vec<FileReport>> {
    let mut deliveries = Vec::new();
    for (name, path) in planned {
        let Some(provider) = state.catalog.provider_by_dmp_id(name.dmp_id()).await? else {
            bail!(
                "{}: no provider has the DMP ID {}; set it with segmart admin provider set-dmp-id",
                path.display(),
                name.dmp_id()
            );
        };
        let spool = new_spool_path(&state.ingest.settings)?;
        let bytes = spool_copy(path, &spool)?;
        let file = receive(
            &state,
            Arrival {
                name: name.clone(),
                provider: provider.id,
                source: IngestSource::Cli,
                spool_path: spool,
                bytes,
            },
        )
        .await?;
        deliveries.push(file.id);
    }
    let worker = tokio::spawn(run_worker(state.clone()));
    let mut bar = BarState {
        bar: progress_bar(args.no_progress),
        last_lines: 0,
        last_at: Instant::now(),
        rate: 0.0,
    };
    let reports = loop {
        let progress = &state.ingest.progress;
        bar.update(&ProgressDto {
            delivery_id: progress.delivery.load(Ordering::Relaxed),
            file_name: progress.name(),
            phase: match progress.phase() {
                Phase::Idle => "idle",
                Phase::Checking => "checking",
                Phase::Applying => "applying",
            }
            .into(),
            bytes_total: progress.bytes_total.load(Ordering::Relaxed),
            bytes_done: progress.bytes_done.load(Ordering::Relaxed),
            lines_total: progress.lines_total.load(Ordering::Relaxed),
            lines_done: progress.lines_done.load(Ordering::Relaxed),
        });
        let mut done = Vec::new();
        for id in &deliveries {
            match state.catalog.get_ingest_file(*id).await? {
                Some(file) if file.status.is_final() => done.push(FileReport::new(&file, None)),
                _ => break,
            }
        }
        if done.len() == deliveries.len() {
            break done;
        }
        if worker.is_finished() {
            bail!("the ingest worker stopped before the files were applied");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.bar.finish_and_clear();
    state.ingest.request_stop();
    worker.await?;
    state
        .profiles
        .shutdown()
        .await
        .context("profile store shutdown failed")?;
    Ok(reports)
}

async fn run_remote(
    config: &Config,
    planned: &[(BatchFileName, PathBuf)],
    args: &IngestArgs,
) -> anyhow::Result<Vec<FileReport>> {
    let token_path = config.data_dir.join("operator.token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read the operator token {}", token_path.display()))?;
    let token = token.trim().to_owned();
    let base = args.server.clone().unwrap_or_else(|| config.public_url());
    let base = base.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let mut deliveries = Vec::new();
    for (name, path) in planned {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let length = file.metadata().await?.len();
        let stream = futures::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 256 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok::<_, std::io::Error>(buffer), file))
                }
                Err(error) => Some((Err(error), file)),
            }
        });
        let response = http
            .put(format!("{base}/admin/ingest/files/{name}"))
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {base}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{}: the server answered {status}: {text}", path.display());
        }
        let report: FileReport = serde_json::from_str(&text)?;
        deliveries.push(report.delivery_id);
    }
    let mut bar = BarState {
        bar: progress_bar(args.no_progress),
        last_lines: 0,
        last_at: Instant::now(),
        rate: 0.0,
    };
    let get = |url: String| {
        let request = http.get(url).bearer_auth(&token);
        async move {
            let response = request.send().await?.error_for_status()?;
            anyhow::Ok(response.text().await?)
        }
    };
    let reports = loop {
        if let Ok(text) = get(format!("{base}/admin/ingest/progress")).await
            && let Ok(progress) = serde_json::from_str::<ProgressDto>(&text)
        {
            bar.update(&progress);
        }
        let mut done = Vec::new();
        for id in &deliveries {
            let report: FileReport =
                serde_json::from_str(&get(format!("{base}/admin/ingest/deliveries/{id}")).await?)?;
            if !matches!(report.status.as_str(), "applied" | "rejected" | "duplicate") {
                break;
            }
            done.push(report);
        }
        if done.len() == deliveries.len() {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.bar.finish_and_clear();
    Ok(reports)
}
