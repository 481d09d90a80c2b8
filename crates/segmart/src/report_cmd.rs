//! `segmart report usage`: the usage report (day × provider × category × segment × buyer) as
//! JSON or CSV, for the operator.
//!
//! The report comes from the HTTP API with the operator token, so the CLI shows exactly what
//! the API shows: from the running server when one answers at the configured address (or
//! `--server`), otherwise from a server started in-process on the data directory for the
//! duration of the command.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use segmart_domain::{Clock, SystemClock};

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Usage by day × provider × category × segment × buyer.
    Usage(UsageArgs),
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// First day, YYYY-MM-DD (UTC).
    #[arg(long)]
    from: Option<String>,
    /// Last day included, YYYY-MM-DD (UTC).
    #[arg(long)]
    to: Option<String>,
    /// Only this provider (member id).
    #[arg(long)]
    member: Option<i64>,
    /// Only this buyer.
    #[arg(long)]
    buyer: Option<i64>,
    /// json or csv.
    #[arg(long, default_value = "csv")]
    format: String,
    /// URL of a running server (default: the configured public URL).
    #[arg(long)]
    server: Option<String>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

fn query(args: &UsageArgs) -> String {
    let mut parts = vec![format!("format={}", args.format)];
    if let Some(v) = &args.from {
        parts.push(format!("from={v}"));
    }
    if let Some(v) = &args.to {
        parts.push(format!("to={v}"));
    }
    if let Some(v) = args.member {
        parts.push(format!("member_id={v}"));
    }
    if let Some(v) = args.buyer {
        parts.push(format!("buyer_id={v}"));
    }
    parts.join("&")
}

async fn fetch(base: &str, token: &str, args: &UsageArgs) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .get(format!("{base}/usage?{}", query(args)))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("the server answered {status}: {text}");
    }
    Ok(text)
}

pub async fn run(mut config: Config, command: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Usage(args) = command;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    crate::node::init_logging("warn");
    config.ingest.watch_drop_dir = false;
    let token_path = config.data_dir.join("operator.token");
    let base = args.server.clone().unwrap_or_else(|| config.public_url());
    let running = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let text = if running {
        let token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("cannot read the operator token {}", token_path.display()))?;
        fetch(&base, token.trim(), &args).await?
    } else {
        // No server answers: serve the data directory in-process, on a loopback port.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let node = crate::node::open_node(&config, clock).await.context(
            "no server answers and the data directory cannot be opened (is a server using it \
             at another address? then pass --server)",
        )?;
        let token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("cannot read the operator token {}", token_path.display()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let local = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(segmart_server::serve(
            listener,
            node.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let result = fetch(&local, token.trim(), &args).await;
        let _ = stop.send(());
        server.await??;
        result?
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
