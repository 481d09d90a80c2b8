//! Real files made by the `gzip` command as well as by flate2: both read alike, and broken files
//! fail with the reason.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use segmart_ingest::testdata::{write_realistic_file, write_realistic_text};
use segmart_ingest::{BatchItem, BatchReader, GzipLines, LineSource, ReadError};

/// Compresses `input` with the `gzip` command into `output`.
fn gzip_command(args: &[&str], input: &Path, output: &Path) {
    let status = Command::new("gzip")
        .args(args)
        .arg("-c")
        .arg(input)
        .stdout(File::create(output).unwrap())
        .status()
        .expect("the gzip command runs");
    assert!(status.success(), "gzip {args:?} failed");
}

/// Whether `gzip -t` accepts the file.
fn gzip_accepts(path: &Path) -> bool {
    Command::new("gzip")
        .arg("-t")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .expect("the gzip command runs")
        .success()
}

/// A fingerprint of everything a reader yields: line numbers, users, segment lists, rejections.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    items: Vec<String>,
    lines_read: u64,
    bytes_out: u64,
}

fn digest<S: LineSource>(mut reader: BatchReader<S>) -> Result<Digest, ReadError> {
    let mut items = Vec::new();
    while let Some(item) = reader.next_item()? {
        items.push(match item {
            BatchItem::Parsed { line_number, line } => format!(
                "{line_number} {} +{} -{}",
                line.resolve_user(|_| None).as_str(),
                line.add().as_raw(),
                line.remove().as_raw()
            ),
            BatchItem::Rejected(rejection) => rejection.to_string(),
        });
    }
    Ok(Digest {
        items,
        lines_read: reader.counts().lines_read,
        bytes_out: reader.progress().bytes_out,
    })
}

fn read_serial(path: &Path) -> Result<Digest, ReadError> {
    digest(BatchReader::new(File::open(path).unwrap()))
}

fn read_parallel(path: &Path) -> Result<Digest, ReadError> {
    digest(BatchReader::spawn(File::open(path).unwrap()).unwrap())
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A realistic text file with a few bad lines mixed in.
    fn text(&self, lines: u64) -> PathBuf {
        let path = self.path("data.txt");
        let mut file = File::create(&path).unwrap();
        write_realistic_text(&mut file, lines, 11).unwrap();
        file.write_all(b"\r\nx:1\t\t100001\nu\tm_sha1:00\t100002\r\nlast\t\t100003")
            .unwrap();
        path
    }
}

#[test]
fn files_made_by_gzip_read_like_files_made_by_flate2() {
    let workspace = Workspace::new();
    let text = workspace.text(30_000);
    let by_gzip = workspace.path("dmp.2015-07-15_12-00-00.a.txt.gz");
    gzip_command(&["-6"], &text, &by_gzip);
    let by_flate2 = workspace.path("dmp.2015-07-15_12-00-00.b.txt.gz");
    {
        let mut encoder = flate2::write::GzEncoder::new(
            File::create(&by_flate2).unwrap(),
            flate2::Compression::new(6),
        );
        encoder.write_all(&std::fs::read(&text).unwrap()).unwrap();
        encoder.finish().unwrap();
    }
    assert!(gzip_accepts(&by_flate2));

    let expected = read_serial(&by_flate2).unwrap();
    // header, generated lines, then a blank line and three more
    assert_eq!(expected.lines_read, 1 + 30_000 + 4);
    assert_eq!(expected.bytes_out, std::fs::metadata(&text).unwrap().len());
    assert_eq!(read_serial(&by_gzip).unwrap(), expected);
    assert_eq!(read_parallel(&by_gzip).unwrap(), expected);
    assert_eq!(read_parallel(&by_flate2).unwrap(), expected);

    let tail: Vec<&str> = expected
        .items
        .iter()
        .rev()
        .take(3)
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "30005 last +100003 -",
            "line 30004: DSP_USER_ID: unsupported id type m_sha1; send m_raw:<advertising id> or \
             m_md5:<md5 of the lowercase advertising id> (unsupported_id_type)",
            "line 30003: DMP_USER_ID: unknown id prefix \"x\"; mobile ids start with m_raw: or \
             m_md5:, desktop ids contain no ':' (unknown_id_prefix)",
        ]
    );
}

#[test]
fn every_gzip_level_and_concatenated_members_read_alike() {
    let workspace = Workspace::new();
    let text = workspace.text(5_000);
    let reference = workspace.path("ref.gz");
    gzip_command(&["-6"], &text, &reference);
    let expected = read_serial(&reference).unwrap();
    for level in ["-1", "-9"] {
        let path = workspace.path(&format!("level{level}.gz"));
        gzip_command(&[level], &text, &path);
        assert_eq!(read_serial(&path).unwrap(), expected, "gzip {level}");
    }

    // `cat a.gz b.gz` is one valid gzip stream of the two texts, split mid-line here.
    let content = std::fs::read(&text).unwrap();
    let (first, second) = content.split_at(content.len() / 2 + 3);
    let first_path = workspace.path("first.txt");
    let second_path = workspace.path("second.txt");
    std::fs::write(&first_path, first).unwrap();
    std::fs::write(&second_path, second).unwrap();
    gzip_command(&["-6"], &first_path, &workspace.path("first.gz"));
    gzip_command(&["-1"], &second_path, &workspace.path("second.gz"));
    let joined = workspace.path("joined.gz");
    let mut bytes = std::fs::read(workspace.path("first.gz")).unwrap();
    bytes.extend(std::fs::read(workspace.path("second.gz")).unwrap());
    std::fs::write(&joined, bytes).unwrap();
    assert!(gzip_accepts(&joined));
    assert_eq!(read_serial(&joined).unwrap(), expected);
    assert_eq!(read_parallel(&joined).unwrap(), expected);
}

#[test]
fn a_plain_text_file_is_not_gzip_at_the_first_read() {
    let workspace = Workspace::new();
    let text = workspace.text(10);
    for reader in [read_serial, read_parallel] {
        let error = reader(&text).unwrap_err();
        assert!(matches!(error, ReadError::NotGzip { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("not a gzip file: it starts with bytes 44 4d 50 5f")
        );
    }
    let mut lines = GzipLines::new(File::open(&text).unwrap());
    assert!(matches!(lines.next_line(), Err(ReadError::NotGzip { .. })));

    let empty = workspace.path("empty.txt.gz");
    File::create(&empty).unwrap();
    assert_eq!(
        read_serial(&empty).unwrap_err().to_string(),
        "not a gzip file: the file is empty"
    );
}

#[test]
fn gzip_of_an_empty_file_has_no_lines() {
    let workspace = Workspace::new();
    let empty = workspace.path("empty.txt");
    File::create(&empty).unwrap();
    let compressed = workspace.path("empty.txt.gz");
    gzip_command(&["-6"], &empty, &compressed);
    let digest = read_serial(&compressed).unwrap();
    assert!(digest.items.is_empty());
    assert_eq!(digest.lines_read, 0);
}

#[test]
fn truncated_gzip_files_are_reported_with_their_length() {
    let workspace = Workspace::new();
    let text = workspace.text(20_000);
    let whole = workspace.path("whole.gz");
    gzip_command(&["-6"], &text, &whole);
    let bytes = std::fs::read(&whole).unwrap();
    for cut in [1, 9, 500, bytes.len() / 3, bytes.len() - 4, bytes.len() - 1] {
        let truncated = workspace.path(&format!("cut{cut}.gz"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        assert!(
            !gzip_accepts(&truncated),
            "gzip -t agrees the file is broken"
        );
        for reader in [read_serial, read_parallel] {
            let error = reader(&truncated).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("truncated gzip stream after {cut} bytes"),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn damaged_gzip_files_are_corrupt() {
    let workspace = Workspace::new();
    let text = workspace.text(2_000);
    let whole = workspace.path("whole.gz");
    gzip_command(&["-6"], &text, &whole);
    let bytes = std::fs::read(&whole).unwrap();

    let mut bad_checksum = bytes.clone();
    let crc_at = bytes.len() - 8;
    bad_checksum[crc_at] ^= 0x55;
    let path = workspace.path("crc.gz");
    std::fs::write(&path, &bad_checksum).unwrap();
    assert!(!gzip_accepts(&path));
    let error = read_serial(&path).unwrap_err();
    assert_eq!(error.code(), "corrupt_gzip", "{error}");

    let mut trailing = bytes.clone();
    trailing.extend(b"this is not gzip");
    let path = workspace.path("trailing.gz");
    std::fs::write(&path, &trailing).unwrap();
    let error = read_parallel(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "corrupt gzip stream after {} bytes: unexpected data after the end of the gzip \
             stream (bytes 74 68 69 73)",
            bytes.len()
        )
    );
}

#[test]
fn a_generated_benchmark_file_is_valid_for_gzip_too() {
    let workspace = Workspace::new();
    let path = workspace.path("dmp.2015-07-15_12-00-00.bench.txt.gz");
    let generated = write_realistic_file(&path, 3_000, 5).unwrap();
    assert!(gzip_accepts(&path));
    let digest = read_serial(&path).unwrap();
    assert_eq!(digest.lines_read, generated.lines + 1);
    assert!(digest.items.iter().all(|item| !item.starts_with("line ")));
}
