//! `segmart bench http`: the profile API over HTTP on loopback — GET of one profile and 1 MB
//! batch POSTs — against Redis on the same data (HGETALL / pipelined HSET) as the peer.
//!
//! The server runs in this process on a fresh data directory; the load generator is a minimal
//! keep-alive HTTP/1.1 client so that it costs as little CPU as possible (client and server
//! share the machine's cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use segmart_domain::segment::SegmentDraft;
use segmart_domain::{Clock, IdType, PermissionSet, SegmentKey, SystemClock};
use segmart_server::ops;
use segmart_server::token::TokenClaims;
use segmart_storage::catalog::Catalog;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::data::{Generator, batch_body, segment_name};
use super::resp::{Redis, encode};
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// Profiles loaded before the GET test.
    #[arg(long, default_value_t = 200_000)]
    pub profiles: u64,
    /// Concurrent connections for the GET test.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent connections for the batch POST test.
    #[arg(long, default_value_t = 2)]
    pub batch_connections: usize,
    /// Redis for the peer run (skipped when unreachable).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
}

const SEGMENTS: u32 = 1_000;
const SEED: u64 = 42;

struct Target {
    addr: std::net::SocketAddr,
    spid: String,
    token: String,
}

async fn start_server(
    dir: &std::path::Path,
) -> anyhow::Result<(Target, tokio::sync::oneshot::Sender<()>)> {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.limits.profile_requests_per_second = u32::MAX;
    config.limits.segment_requests_per_day = u32::MAX;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let node = crate::node::open_node(&config, clock.clone()).await?;
    let catalog = node.catalog.as_ref();
    let provider = ops::create_provider(catalog, clock.as_ref(), "bench").await?;
    let folder = ops::create_folder(
        catalog,
        clock.as_ref(),
        provider.id,
        "cookies",
        IdType::Cookie,
    )
    .await?;
    node.state.directory.put_folder(folder.clone());
    for i in 0..SEGMENTS {
        let spec = SegmentDraft {
            name: Some(segment_name(i)),
            ..SegmentDraft::default()
        }
        .validate()?;
        let key = SegmentKey::parse(&segment_name(i)).map_err(anyhow::Error::msg)?;
        let segment = node
            .catalog
            .create_segment(folder.id, &key, &spec, clock.now())
            .await?;
        node.state.directory.put_segment(&segment);
    }
    let issued = ops::create_client(
        catalog,
        clock.as_ref(),
        provider.id,
        "bench",
        PermissionSet::ALL,
    )
    .await?;
    node.state.directory.put_client(issued.client.clone());
    let token = node.state.tokens.issue(&TokenClaims {
        client: issued.client.id,
        permissions: PermissionSet::ALL,
        client_generation: issued.client.generation,
        expires_at: clock.now().plus_secs(86_400),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(segmart_server::serve(listener, node.state, async move {
        let _ = rx.await;
    }));
    Ok((
        Target {
            addr,
            spid: folder.id.to_string(),
            token,
        },
        tx,
    ))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request and reads the answer; returns the status.
    async fn call(&mut self, head: &[u8], body: &[u8]) -> anyhow::Result<u16> {
        self.writer.write_all(head).await?;
        if !body.is_empty() {
            self.writer.write_all(body).await?;
        }
        self.line.clear();
        self.reader.read_line(&mut self.line).await?;
        let status: u16 = self.line.get(9..12).context("short status line")?.parse()?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).await?;
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            let lower = self.line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

fn get_head(target: &Target, id: &str) -> Vec<u8> {
    format!(
        "GET /segmentproviders/{}/profiles/{id} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
        target.spid, target.token
    )
    .into_bytes()
}

fn post_head(target: &Target, len: usize) -> Vec<u8> {
    format!(
        "POST /segmentproviders/{}/profiles HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        target.spid, target.token
    )
    .into_bytes()
}

pub struct LoadResult {
    pub requests: u64,
    pub seconds: f64,
    pub hist: Histogram<u64>,
}

impl LoadResult {
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<44} {:>9.0} req/s   p50 {:>9}   p99 {:>9}   p99.9 {:>9}",
            self.requests as f64 / self.seconds,
            super::data::fmt_ns(self.hist.value_at_quantile(0.50)),
            super::data::fmt_ns(self.hist.value_at_quantile(0.99)),
            super::data::fmt_ns(self.hist.value_at_quantile(0.999)),
        )
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs `connections` workers for `seconds`, each calling `work(conn_index, iteration)`.
async fn drive<F, Fut>(connections: usize, seconds: u64, work: F) -> anyhow::Result<LoadResult>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Histogram<u64>>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let work = work.clone();
        tasks.push(tokio::spawn(work(c)));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for task in tasks {
        hist.add(task.await??)?;
    }
    let _ = seconds;
    Ok(LoadResult {
        requests: hist.len(),
        seconds: started.elapsed().as_secs_f64(),
        hist,
    })
}

pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (target, stop) = start_server(dir.path()).await?;
    let target = Arc::new(target);
    println!(
        "segmart bench http — {} profiles, {} segments, {} s per run",
        args.profiles, SEGMENTS, args.seconds
    );
    println!(
        "machine: {} cores; server and load generator share them\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Load profiles through the API itself (1 MB batches).
    let mut generator = Generator::new(SEED, SEGMENTS);
    let mut conn = Conn::open(target.addr).await?;
    let mut loaded = 0u64;
    let mut redis_rows: Vec<(String, Vec<u32>)> = Vec::new();
    while loaded < args.profiles {
        let mut body = Vec::with_capacity(1 << 20);
        body.push(b'[');
        let mut n = 0;
        while body.len() < 1_000_000 && loaded < args.profiles {
            let id = Generator::user_id(SEED, loaded);
            let segs = generator.segments();
            let list: Vec<String> = segs
                .iter()
                .map(|s| format!("\"{}\"", segment_name(*s)))
                .collect();
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(
                format!(
                    "{{\"profileId\":\"{id}\",\"segmentIdsToAdd\":[{}]}}",
                    list.join(",")
                )
                .as_bytes(),
            );
            redis_rows.push((id, segs));
            n += 1;
            loaded += 1;
        }
        body.push(b']');
        let status = conn.call(&post_head(&target, body.len()), &body).await?;
        if status != 200 {
            bail!("loading profiles failed with HTTP {status}");
        }
    }

    // GET one profile, random among the loaded ones.
    let total = args.profiles;
    let deadline = Duration::from_secs(args.seconds);
    let get = {
        let target = target.clone();
        drive(args.connections, args.seconds, move |c| {
            let target = target.clone();
            async move {
                let mut conn = Conn::open(target.addr).await?;
                let mut hist = Histogram::<u64>::new(3)?;
                let mut generator_ = Generator::new(SEED + 1 + c as u64, SEGMENTS);
                let start = Instant::now();
                while start.elapsed() < deadline {
                    let head =
                        get_head(&target, &Generator::user_id(SEED, generator_.below(total)));
                    let t = Instant::now();
                    let status = conn.call(&head, &[]).await?;
                    hist.record(t.elapsed().as_nanos() as u64)?;
                    if status != 200 {
                        bail!("GET answered {status}");
                    }
                }
                Ok(hist)
            }
        })
        .await?
    };
    println!(
        "{}",
        get.line(&format!("segmart GET profile ({} conns)", args.connections))
    );

    // 1 MB batch POSTs.
    let mut bodies = Vec::new();
    let mut generator_ = Generator::new(SEED + 100, SEGMENTS);
    for _ in 0..8 {
        bodies.push(batch_body(&mut generator_, 1_048_576).0);
    }
    let bodies = Arc::new(bodies);
    let post = {
        let target = target.clone();
        let bodies = bodies.clone();
        drive(args.batch_connections, args.seconds, move |c| {
            let target = target.clone();
            let bodies = bodies.clone();
            async move {
                let mut conn = Conn::open(target.addr).await?;
                let mut hist = Histogram::<u64>::new(3)?;
                let start = Instant::now();
                let mut i = c;
                while start.elapsed() < deadline {
                    let body = &bodies[i % bodies.len()];
                    let t = Instant::now();
                    let status = conn.call(&post_head(&target, body.len()), body).await?;
                    hist.record(t.elapsed().as_nanos() as u64)?;
                    if status != 200 {
                        bail!("POST answered {status}");
                    }
                    i += 1;
                }
                Ok(hist)
            }
        })
        .await?
    };
    println!(
        "{}",
        post.line(&format!(
            "segmart POST 1 MB batch ({} conns)",
            args.batch_connections
        ))
    );
    let _ = stop.send(());

    // Peer: the same profiles in Redis, one hash per profile (segment → expiry).
    match Redis::connect(&args.redis) {
        Err(err) => println!("\nRedis peer skipped: {err:#}"),
        Ok(mut redis) => {
            redis.command(&[b"FLUSHALL"])?;
            let expiry = b"1893456000";
            let mut buf = Vec::with_capacity(1 << 22);
            let mut queued = 0;
            for (id, segs) in &redis_rows {
                let key = format!("p:{id}");
                let mut cmd: Vec<Vec<u8>> = vec![b"HSET".to_vec(), key.into_bytes()];
                for s in segs {
                    cmd.push(segment_name(*s).into_bytes());
                    cmd.push(expiry.to_vec());
                }
                let refs: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
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
            let addr = args.redis.clone();
            let peer_get = drive(args.connections, args.seconds, move |c| {
                let addr = addr.clone();
                async move {
                    let stream = TcpStream::connect(&addr).await?;
                    stream.set_nodelay(true)?;
                    let (r, mut w) = stream.into_split();
                    let mut reader = BufReader::with_capacity(64 * 1024, r);
                    let mut hist = Histogram::<u64>::new(3)?;
                    let mut generator_ = Generator::new(SEED + 1 + c as u64, SEGMENTS);
                    let mut line = String::new();
                    let start = Instant::now();
                    while start.elapsed() < deadline {
                        let key =
                            format!("p:{}", Generator::user_id(SEED, generator_.below(total)));
                        let mut cmd = Vec::new();
                        encode(&mut cmd, &[b"HGETALL", key.as_bytes()]);
                        let t = Instant::now();
                        w.write_all(&cmd).await?;
                        line.clear();
                        reader.read_line(&mut line).await?;
                        let n: usize = line.trim_end()[1..].parse()?;
                        for _ in 0..n {
                            line.clear();
                            reader.read_line(&mut line).await?;
                            line.clear();
                            reader.read_line(&mut line).await?;
                        }
                        hist.record(t.elapsed().as_nanos() as u64)?;
                    }
                    Ok(hist)
                }
            })
            .await?;
            println!(
                "{}",
                peer_get.line(&format!("Redis HGETALL ({} conns)", args.connections))
            );
            // Peer for batches: the memberships of one 1 MB batch as one HSET pipeline.
            let mut generator_ = Generator::new(SEED + 100, SEGMENTS);
            let mut pipelines = Vec::new();
            for _ in 0..8 {
                let (_, items) = batch_body(&mut generator_, 1_048_576);
                let mut buf = Vec::new();
                let mut g2 = Generator::new(SEED + 200 + pipelines.len() as u64, SEGMENTS);
                for _ in 0..items {
                    let key = format!("p:{}", g2.cookie_id());
                    let mut cmd: Vec<Vec<u8>> = vec![b"HSET".to_vec(), key.into_bytes()];
                    for s in g2.segments() {
                        cmd.push(segment_name(s).into_bytes());
                        cmd.push(expiry.to_vec());
                    }
                    let refs: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                    encode(&mut buf, &refs);
                }
                pipelines.push((buf, items));
            }
            let pipelines = Arc::new(pipelines);
            let addr = args.redis.clone();
            let peer_post = drive(args.batch_connections, args.seconds, move |c| {
                let addr = addr.clone();
                let pipelines = pipelines.clone();
                async move {
                    let mut hist = Histogram::<u64>::new(3)?;
                    let result =
                        tokio::task::spawn_blocking(move || -> anyhow::Result<Histogram<u64>> {
                            let mut redis = Redis::connect(&addr)?;
                            let start = Instant::now();
                            let mut i = c;
                            while start.elapsed() < deadline {
                                let (buf, n) = &pipelines[i % pipelines.len()];
                                let t = Instant::now();
                                redis.send_raw(buf, *n)?;
                                redis.drain()?;
                                hist.record(t.elapsed().as_nanos() as u64)?;
                                i += 1;
                            }
                            Ok(hist)
                        })
                        .await??;
                    Ok(result)
                }
            })
            .await?;
            println!(
                "{}",
                peer_post.line(&format!(
                    "Redis HSET pipeline of one batch ({} conns)",
                    args.batch_connections
                ))
            );
            println!(
                "\nratio segmart/Redis: GET {:.2}x req/s, batch {:.2}x req/s",
                get.rps() / peer_get.rps(),
                post.rps() / peer_post.rps()
            );
            redis.command(&[b"FLUSHALL"])?;
        }
    }
    Ok(())
}
