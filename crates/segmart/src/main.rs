//! `segmart`: the audience data marketplace server and its command-line tool.

mod admin;
mod admin_billing;
mod bench;
mod config;
mod demo;
mod ingest_cmd;
mod node;
mod report_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: batch parsing allocates many small vectors per request; the system allocator spent
/// a fifth of a batch's CPU time in malloc/free. Built without transparent huge pages for the
/// heap (`no_thp`): the first touch of each 2 MiB of a fresh heap range then costs one 4 KiB
/// fault instead of a whole huge page, which a request would otherwise pay in the middle of its
/// work (1–12 ms each on a virtual machine whose host backs guest memory lazily). The profile
/// store's own tables keep their huge pages (see `storage::embedded::mmap`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "segmart",
    version,
    about = "The audience data marketplace server"
)]
struct Cli {
    /// TOML configuration file (settings also come from SEGMART_* environment variables).
    #[arg(long, global = true, env = "SEGMART_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(node::ServeArgs),
    /// Operator administration: providers, folders, OAuth clients, billing.
    Admin(admin::AdminArgs),
    /// Apply batch files (data `.txt.gz` and `.taxonomy.json`) with a progress bar and print
    /// their reports; goes through the running server when one holds the data directory.
    Ingest(ingest_cmd::IngestArgs),
    /// Reports: usage by day × provider × category × segment × buyer (JSON or CSV).
    #[command(subcommand)]
    Report(report_cmd::ReportCommand),
    /// Benchmarks of the hot paths, with Redis or PostgreSQL as the peer where one applies.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::Config::load(cli.config.as_deref(), std::env::vars())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(node::serve(config, args)),
        Command::Admin(args) => runtime.block_on(admin::run(config, args)),
        Command::Bench(command) => runtime.block_on(bench::run(config, command)),
        Command::Report(command) => runtime.block_on(report_cmd::run(config, command)),
        Command::Ingest(args) => {
            let code = runtime.block_on(ingest_cmd::run(config, args))?;
            drop(runtime);
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}
