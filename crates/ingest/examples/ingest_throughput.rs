//! Measures decompression and parsing of a realistic batch file.
//!
//! ```text
//! cargo run --release -p segmart-ingest --example ingest_throughput -- [LINES] [FILE]
//! ```
//!
//! Generates the file (2 M lines by default) unless FILE already exists, then times, best of
//! three runs each: inflate only, parse only (from memory), and inflate + parse + user
//! resolution through [`segmart_ingest::BatchReader`].

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use segmart_ingest::testdata::write_realistic_file;
use segmart_ingest::{BatchItem, BatchReader, GzipLines, is_blank, parse_line};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lines: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("segmart.2015-07-15_12-00-00.bench{lines}.txt.gz"))
    });

    if !path.exists() {
        let started = Instant::now();
        let generated = write_realistic_file(&path, lines, 1)?;
        println!(
            "generated {} lines, {:.1} MB text, {:.1} MB gzip -6 (ratio {:.2}), {:.2} segments/line in {:.1?}",
            generated.lines,
            generated.uncompressed_bytes as f64 / 1e6,
            generated.compressed_bytes as f64 / 1e6,
            generated.uncompressed_bytes as f64 / generated.compressed_bytes as f64,
            (generated.segments_to_add + generated.segments_to_remove) as f64
                / generated.lines as f64,
            started.elapsed()
        );
    }
    let compressed = std::fs::metadata(&path)?.len();

    let inflate = best_of(3, || {
        let mut reader = GzipLines::new(File::open(&path).expect("open"));
        let mut count = 0u64;
        while let Some(line) = reader.next_line().expect("read") {
            count += line.bytes.len() as u64;
        }
        black_box(count);
        reader.progress().lines
    });
    report("inflate + split lines", inflate, compressed);

    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(File::open(&path)?).read_to_end(&mut text)?;
    let parse = best_of(3, || {
        let mut count = 0u64;
        let mut lines = 0u64;
        for raw in text.split_inclusive(|b| *b == b'\n').skip(1) {
            lines += 1;
            if is_blank(raw) {
                continue;
            }
            let line = parse_line(raw).expect("valid line");
            count += line.add().iter().map(str::len).sum::<usize>() as u64;
            count += line.remove().len() as u64;
            count += line.resolve_user(|_| None).as_str().len() as u64;
        }
        black_box(count);
        lines + 1
    });
    report("parse only (from memory)", parse, compressed);
    drop(text);

    let pipeline = best_of(3, || {
        let mut reader = BatchReader::new(File::open(&path).expect("open"));
        let mut count = 0u64;
        while let Some(item) = reader.next_item().expect("read") {
            match item {
                BatchItem::Parsed { line, .. } => {
                    count += line.add().iter().map(str::len).sum::<usize>() as u64;
                    count += line.remove().len() as u64;
                    count += line.resolve_user(|_| None).as_str().len() as u64;
                }
                BatchItem::Rejected(rejection) => panic!("{rejection}"),
            }
        }
        black_box(count);
        reader.counts().lines_read
    });
    report("inflate + parse + resolve", pipeline, compressed);

    let parallel = best_of(3, || {
        let mut reader = BatchReader::spawn(File::open(&path).expect("open")).expect("thread");
        let mut count = 0u64;
        while let Some(item) = reader.next_item().expect("read") {
            match item {
                BatchItem::Parsed { line, .. } => {
                    count += line.add().iter().map(str::len).sum::<usize>() as u64;
                    count += line.remove().len() as u64;
                    count += line.resolve_user(|_| None).as_str().len() as u64;
                }
                BatchItem::Rejected(rejection) => panic!("{rejection}"),
            }
        }
        black_box(count);
        reader.counts().lines_read
    });
    report("same, inflating on a thread", parallel, compressed);
    Ok(())
}

/// Wall time, CPU time (all threads) and lines of the fastest of `runs` runs.
fn best_of(runs: usize, mut work: impl FnMut() -> u64) -> (Duration, f64, u64) {
    (0..runs)
        .map(|_| {
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            let lines = work();
            (started.elapsed(), cpu_seconds() - cpu_before, lines)
        })
        .min_by_key(|run| run.0)
        .expect("at least one run")
}

/// User + system CPU time of this process, from `/proc/self/stat` (0 where unavailable).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name; the
    // kernel counts them in USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn report(what: &str, (elapsed, cpu, lines): (Duration, f64, u64), compressed: u64) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what:<30} {lines} lines in {seconds:>6.3} s (cpu {cpu:>5.2} s) = {:>5.2} M lines/s, {:>6.1} MB/s gzip in",
        lines as f64 / seconds / 1e6,
        compressed as f64 / seconds / 1e6
    );
}
