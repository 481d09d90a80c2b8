//! `segmart bench …`: the benchmarks behind BENCHMARKS.md, each one command.

pub mod batch;
pub mod data;
pub mod hiccup;
pub mod http;
pub mod ingest;
pub mod metering;
pub mod resp;
pub mod store;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The embedded profile store in-process: memory, lookups, bulk writes, recovery; Redis as
    /// the memory peer.
    Store(store::StoreArgs),
    /// One 1 MB profile batch parsed, resolved and applied on one core.
    Batch(batch::BatchArgs),
    /// Profile API over HTTP on loopback (GET and 1 MB batch POST), Redis as the peer.
    Http(http::HttpArgs),
    /// A realistic gzip batch file applied end to end through the ingest pipeline;
    /// `redis-cli --pipe` SADD of the same memberships as the peer.
    Ingest(ingest::IngestBenchArgs),
    /// Priced usage records appended to the embedded billing ledger by concurrent producers
    /// (durable acks); PostgreSQL `COPY` of the same records as the peer.
    Metering(metering::MeteringArgs),
    /// How late a thread that sleeps 1 ms wakes up, on an otherwise idle process: the stalls
    /// of the machine itself, which bound every latency benchmark's tail.
    Hiccup(HiccupArgs),
}

#[derive(clap::Args, Debug)]
pub struct HiccupArgs {
    /// How long to measure.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

/// Runs one benchmark. `config` is the loaded configuration: `bench ingest` takes its settings
/// (ingest, store) with its own data directory; the others build what they measure themselves.
pub async fn run(config: crate::config::Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Store(args) => tokio::task::spawn_blocking(move || store::run(args)).await?,
        BenchCommand::Batch(args) => batch::run(args).await,
        BenchCommand::Http(args) => http::run(args).await,
        BenchCommand::Ingest(args) => ingest::run(config, args).await,
        BenchCommand::Metering(args) => metering::run(args).await,
        BenchCommand::Hiccup(args) => {
            tokio::task::spawn_blocking(move || hiccup::run(args.seconds)).await?
        }
    }
}
