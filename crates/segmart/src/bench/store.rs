//! `segmart bench store`: the embedded profile store in-process — memory per profile, lookup
//! latency, durable bulk writes, snapshot and recovery — with the same profiles loaded into
//! Redis (one hash per profile, segment → expiry) as the memory peer.

use anyhow::Context;
use segmart_domain::Timestamp;
use segmart_storage::embedded::bench::{BenchConfig, realistic_update, run as run_store_bench};

use super::resp::{Redis, encode};

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Profiles to load (6.5 segments each on average).
    #[arg(long, default_value_t = 10_000_000)]
    pub profiles: u64,
    /// Lookups to time one by one.
    #[arg(long, default_value_t = 2_000_000)]
    pub lookups: usize,
    /// Directory for the store (a temporary directory when absent).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Redis for the memory peer (skipped when unreachable).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Profiles loaded into Redis (memory per profile is extrapolated from these).
    #[arg(long, default_value_t = 1_000_000)]
    pub redis_profiles: u64,
}

pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf())
        .join("store");
    let mut config = BenchConfig::new(dir, args.profiles);
    config.lookups = args.lookups;
    println!(
        "segmart bench store — {} profiles, {} timed lookups\n",
        args.profiles, args.lookups
    );
    let report = run_store_bench(&config).context("store benchmark failed")?;
    println!("{report}");
    let segmart_bytes_per_profile = report.memory_bytes as f64 / report.profiles as f64;

    match Redis::connect(&args.redis) {
        Err(err) => println!("Redis peer skipped: {err:#}"),
        Ok(mut redis) => {
            redis.command(&[b"FLUSHALL"])?;
            let before = redis.used_memory()?;
            let now = Timestamp::from_secs(1_800_000_000);
            let mut buf = Vec::with_capacity(1 << 22);
            let mut queued = 0;
            let mut memberships = 0u64;
            for i in 0..args.redis_profiles {
                let update = realistic_update(config.seed, i, now);
                let key = format!("p:{}", super::data::Generator::user_id(config.seed, i));
                let mut fields: Vec<Vec<u8>> = vec![b"HSET".to_vec(), key.into_bytes()];
                for (segment, expiry) in &update.add {
                    fields.push(segment.0.to_string().into_bytes());
                    fields.push(expiry.secs().to_string().into_bytes());
                    memberships += 1;
                }
                let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                encode(&mut buf, &refs);
                queued += 1;
                if queued == 10_000 {
                    redis.send_raw(&buf, queued)?;
                    redis.drain()?;
                    buf.clear();
                    queued = 0;
                }
            }
            redis.send_raw(&buf, queued)?;
            redis.drain()?;
            let after = redis.used_memory()?;
            let redis_per_profile = (after - before) as f64 / args.redis_profiles as f64;
            println!(
                "Redis 1 hash per profile (22-char id key, segment → expiry): {} profiles, {:.2} segments/profile, {:.1} B/profile",
                args.redis_profiles,
                memberships as f64 / args.redis_profiles as f64,
                redis_per_profile
            );
            println!(
                "memory ratio Redis/segmart: {:.2}x (segmart {:.1} B/profile)",
                redis_per_profile / segmart_bytes_per_profile,
                segmart_bytes_per_profile
            );
            redis.command(&[b"FLUSHALL"])?;
        }
    }
    Ok(())
}
