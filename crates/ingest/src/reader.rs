//! Streaming gzip line reader.
//!
//! [`GzipLines`] inflates any [`Read`] (a file, a socket, an HTTP body) into one reusable buffer
//! and hands out lines as slices of it: memory stays at the two buffers whatever the file size,
//! and a line costs one `memchr` and no allocation. Concatenated gzip members (`cat a.gz b.gz`,
//! pigz, bgzip) read as one stream.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::GzDecoder;
use memchr::memchr;

/// Size of the compressed-input buffer.
pub const INPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Initial size of the decompressed-output buffer; it grows only for a line longer than this.
pub const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Default longest line, not counting its `\n`; longer lines are cut to
/// [`OVERLONG_LINE_KEPT_BYTES`] and flagged.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// How much of an over-long line is kept for the report.
pub const OVERLONG_LINE_KEPT_BYTES: usize = 1024;

/// Why the stream could not be read to its end. Lines already returned stay valid.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The input does not start with the gzip magic bytes.
    #[error("not a gzip file: {detail}")]
    NotGzip { detail: String },
    /// The input ended inside a gzip member.
    #[error("truncated gzip stream after {bytes_in} bytes")]
    Truncated { bytes_in: u64 },
    /// The gzip data is damaged: bad deflate data, a checksum mismatch, or garbage after a member.
    #[error("corrupt gzip stream after {bytes_in} bytes: {detail}")]
    Corrupt { bytes_in: u64, detail: String },
    /// The underlying reader failed (disk, network).
    #[error("read failed after {bytes_in} bytes: {source}")]
    Io {
        bytes_in: u64,
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// The same error, for reporting it again (an `io::Error` keeps its kind and message).
    pub(crate) fn duplicate(&self) -> ReadError {
        match self {
            ReadError::NotGzip { detail } => ReadError::NotGzip {
                detail: detail.clone(),
            },
            ReadError::Truncated { bytes_in } => ReadError::Truncated {
                bytes_in: *bytes_in,
            },
            ReadError::Corrupt { bytes_in, detail } => ReadError::Corrupt {
                bytes_in: *bytes_in,
                detail: detail.clone(),
            },
            ReadError::Io { bytes_in, source } => ReadError::Io {
                bytes_in: *bytes_in,
                source: io::Error::new(source.kind(), source.to_string()),
            },
        }
    }

    /// Stable snake_case name, for reports and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::NotGzip { .. } => "not_gzip",
            ReadError::Truncated { .. } => "truncated_gzip",
            ReadError::Corrupt { .. } => "corrupt_gzip",
            ReadError::Io { .. } => "read_failed",
        }
    }
}

/// One line as read: its number and bytes, line ending included when there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// 1-based; the header is line 1.
    pub number: u64,
    /// The line's bytes; for an over-long line, only its first [`OVERLONG_LINE_KEPT_BYTES`].
    pub bytes: &'a [u8],
    /// The line's full length when it was longer than the limit and cut.
    pub overlong_length: Option<u64>,
}

/// A reader of numbered lines that lends each line out in two steps: [`LineSource::advance`]
/// moves to the next line and returns where it sits without borrowing the reader, and
/// [`LineSource::line`] borrows it. A caller can then skip lines in a loop and borrow only the
/// line it keeps.
pub trait LineSource {
    /// Moves to the next line; `None` at the end of the stream.
    fn advance(&mut self) -> Result<Option<LineSpan>, ReadError>;
    /// The line of the span returned by the last `advance`.
    fn line(&self, span: LineSpan) -> RawLine<'_>;
    /// The longest line returned whole, not counting its `\n`.
    fn max_line_bytes(&self) -> usize;
    fn progress(&self) -> ReadProgress;
}

/// Where a line sits in a reader's buffer; valid until the next `advance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSpan {
    /// 1-based line number.
    pub number: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// The full length of a line that was cut.
    pub overlong_length: Option<u64>,
}

/// Byte and line counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadProgress {
    /// Compressed bytes consumed from the source (runs ahead of decoding by up to one buffer).
    pub bytes_in: u64,
    /// Decompressed bytes produced.
    pub bytes_out: u64,
    /// Lines returned.
    pub lines: u64,
}

/// Counts the bytes taken from the source and remembers whether the source itself failed, so a
/// network error is not mistaken for damaged gzip data.
struct CountingReader<R> {
    inner: R,
    bytes: u64,
    failed: bool,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(error)
            }
        }
    }
}

/// Lines of a gzip stream, read with flat memory.
///
/// `next_line` returns a slice into the internal buffer, valid until the next call (a lending
/// iterator). A last line without a trailing newline is returned too.
pub struct GzipLines<R: Read> {
    /// The counted, buffered source between gzip members: before the first one and after each
    /// one ends. A decoder reads the gzip header as soon as it is built, so it is built only
    /// after the next bytes are checked.
    between_members: Option<BufReader<CountingReader<R>>>,
    /// The decoder of the current gzip member.
    decoder: Option<GzDecoder<BufReader<CountingReader<R>>>>,
    /// Decompressed bytes; `buffer[start..end]` is not yet returned.
    buffer: Vec<u8>,
    /// Start of the next line.
    start: usize,
    /// End of the decompressed data in `buffer`.
    end: usize,
    /// Where the newline search resumes: bytes before it (from `start`) hold no newline.
    scan_from: usize,
    /// The input ended after a complete gzip member.
    finished: bool,
    /// The first gzip member was started.
    started: bool,
    /// The error that stopped the stream; every later call reports it again.
    failure: Option<ReadError>,
    /// Longest line kept whole.
    max_line_bytes: usize,
    /// Lines returned so far, which is also the number of the last one.
    lines: u64,
    /// Decompressed bytes produced so far.
    bytes_out: u64,
}

impl<R: Read> GzipLines<R> {
    pub fn new(source: R) -> Self {
        GzipLines::with_max_line_bytes(source, DEFAULT_MAX_LINE_BYTES)
    }

    /// A reader that cuts lines longer than `max_line_bytes`, not counting the `\n` (the limit is
    /// at least 64 KiB).
    pub fn with_max_line_bytes(source: R, max_line_bytes: usize) -> Self {
        let counted = CountingReader {
            inner: source,
            bytes: 0,
            failed: false,
        };
        let max_line_bytes = max_line_bytes.max(64 * 1024);
        GzipLines {
            between_members: Some(BufReader::with_capacity(INPUT_BUFFER_BYTES, counted)),
            decoder: None,
            buffer: vec![0; OUTPUT_BUFFER_BYTES.min(max_line_bytes.next_power_of_two())],
            start: 0,
            end: 0,
            scan_from: 0,
            finished: false,
            started: false,
            failure: None,
            max_line_bytes,
            lines: 0,
            bytes_out: 0,
        }
    }

    /// The longest line returned whole, not counting its `\n`.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    pub fn progress(&self) -> ReadProgress {
        ReadProgress {
            bytes_in: self.bytes_in(),
            bytes_out: self.bytes_out,
            lines: self.lines,
        }
    }

    /// Compressed bytes consumed from the source so far.
    pub fn bytes_in(&self) -> u64 {
        self.counter().map_or(0, |counter| counter.bytes)
    }

    fn counter(&self) -> Option<&CountingReader<R>> {
        match (&self.decoder, &self.between_members) {
            (Some(decoder), _) => Some(decoder.get_ref().get_ref()),
            (None, Some(source)) => Some(source.get_ref()),
            (None, None) => None,
        }
    }

    /// Decompressed bytes produced so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// The next line, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<RawLine<'_>>, ReadError> {
        Ok(self.advance()?.map(|span| self.line(span)))
    }

    /// See [`LineSource::advance`]. After an error, every call returns that error again.
    pub fn advance(&mut self) -> Result<Option<LineSpan>, ReadError> {
        if let Some(failure) = &self.failure {
            return Err(failure.duplicate());
        }
        let result = self.advance_unchecked();
        if let Err(error) = &result {
            self.failure = Some(error.duplicate());
        }
        result
    }

    fn advance_unchecked(&mut self) -> Result<Option<LineSpan>, ReadError> {
        loop {
            if let Some(offset) = memchr(b'\n', &self.buffer[self.scan_from..self.end]) {
                let line_end = self.scan_from + offset + 1;
                let span = self.take_line(line_end, None);
                return Ok(Some(span));
            }
            if self.finished {
                if self.start == self.end {
                    return Ok(None);
                }
                return Ok(Some(self.take_line(self.end, None)));
            }
            if self.end - self.start > self.max_line_bytes {
                return self.skip_overlong_line().map(Some);
            }
            self.make_room()?;
        }
    }

    /// The line of the span returned by the last [`GzipLines::advance`].
    pub fn line(&self, span: LineSpan) -> RawLine<'_> {
        RawLine {
            number: span.number,
            bytes: &self.buffer[span.start..span.end],
            overlong_length: span.overlong_length,
        }
    }

    fn take_line(&mut self, line_end: usize, overlong_length: Option<u64>) -> LineSpan {
        let span = LineSpan {
            number: self.lines + 1,
            start: self.start,
            end: line_end,
            overlong_length,
        };
        self.lines += 1;
        self.start = line_end;
        self.scan_from = line_end;
        span
    }

    /// Moves the pending partial line to the front, grows the buffer if the line fills it, and
    /// reads more data.
    fn make_room(&mut self) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scan_from = self.end;
            self.start = 0;
        } else {
            self.scan_from = self.end;
        }
        if self.end == self.buffer.len() {
            let grown = (self.buffer.len() * 2).min(self.max_line_bytes + 1);
            if grown > self.buffer.len() {
                self.buffer.resize(grown, 0);
            } else {
                // The buffer is at the limit and full: the caller cuts the line.
                return Ok(());
            }
        }
        let read = self.fill(self.end)?;
        self.end += read;
        Ok(())
    }

    /// Reads into `buffer[at..]`; marks the end of the stream on a zero-byte read.
    fn fill(&mut self, at: usize) -> Result<usize, ReadError> {
        loop {
            if self.decoder.is_none() && !self.start_next_member()? {
                self.finished = true;
                return Ok(0);
            }
            let Some(decoder) = self.decoder.as_mut() else {
                unreachable!("a member was just started");
            };
            match decoder.read(&mut self.buffer[at..]) {
                Ok(0) => {
                    let source = self.decoder.take().map(GzDecoder::into_inner);
                    self.between_members = source;
                }
                Ok(n) => {
                    self.bytes_out += n as u64;
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(self.classify(error)),
            }
        }
    }

    /// Starts the next gzip member; `false` at the end of the input.
    fn start_next_member(&mut self) -> Result<bool, ReadError> {
        let first = !self.started;
        let Some(mut source) = self.between_members.take() else {
            return Err(ReadError::Io {
                bytes_in: 0,
                source: io::Error::other("the input failed before and cannot be read again"),
            });
        };
        self.started = true;
        match check_next_member(&mut source, first) {
            Ok(true) => {
                self.decoder = Some(GzDecoder::new(source));
                Ok(true)
            }
            Ok(false) => {
                self.between_members = Some(source);
                Ok(false)
            }
            Err(error) => {
                self.between_members = Some(source);
                Err(error)
            }
        }
    }

    fn classify(&self, error: io::Error) -> ReadError {
        let bytes_in = self.bytes_in();
        if self.counter().is_some_and(|counter| counter.failed) {
            return ReadError::Io {
                bytes_in,
                source: error,
            };
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Truncated { bytes_in },
            _ => ReadError::Corrupt {
                bytes_in,
                detail: error.to_string(),
            },
        }
    }

    /// The buffer holds `max_line_bytes + 1` bytes without a newline: keep the start of the line,
    /// drop the rest up to the next newline, and return the kept part flagged as cut.
    fn skip_overlong_line(&mut self) -> Result<LineSpan, ReadError> {
        let kept = OVERLONG_LINE_KEPT_BYTES;
        let mut length = (self.end - self.start) as u64;
        self.end = kept;
        let next_start = loop {
            let read = self.fill(kept)?;
            if read == 0 {
                break kept;
            }
            match memchr(b'\n', &self.buffer[kept..kept + read]) {
                Some(offset) => {
                    length += offset as u64 + 1;
                    self.end = kept + read;
                    break kept + offset + 1;
                }
                None => length += read as u64,
            }
        };
        self.start = 0;
        let mut span = self.take_line(kept, Some(length));
        self.start = next_start;
        self.scan_from = next_start;
        span.end = kept;
        Ok(span)
    }
}

impl<R: Read> LineSource for GzipLines<R> {
    fn advance(&mut self) -> Result<Option<LineSpan>, ReadError> {
        GzipLines::advance(self)
    }
    fn line(&self, span: LineSpan) -> RawLine<'_> {
        GzipLines::line(self, span)
    }
    fn max_line_bytes(&self) -> usize {
        GzipLines::max_line_bytes(self)
    }
    fn progress(&self) -> ReadProgress {
        GzipLines::progress(self)
    }
}

/// Whether the source is at its end, checking for `1f 8b` otherwise; `first` words the error
/// for the start of the input, where anything else means the input is not gzip at all.
fn check_next_member<R: Read>(
    source: &mut BufReader<CountingReader<R>>,
    first: bool,
) -> Result<bool, ReadError> {
    let (first_bytes, first_count, buffered) = loop {
        match source.fill_buf() {
            Ok(buffer) => {
                let mut first_bytes = [0u8; 4];
                let first_count = buffer.len().min(first_bytes.len());
                first_bytes[..first_count].copy_from_slice(&buffer[..first_count]);
                break (first_bytes, first_count, buffer.len());
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ReadError::Io {
                    bytes_in: source.get_ref().bytes,
                    source: error,
                });
            }
        }
    };
    let head = &first_bytes[..first_count];
    if head.is_empty() {
        if first {
            return Err(ReadError::NotGzip {
                detail: "the file is empty".into(),
            });
        }
        return Ok(false);
    }
    let magic_matches = head[0] == 0x1f && head.get(1).is_none_or(|b| *b == 0x8b);
    if magic_matches {
        return Ok(true);
    }
    let shown: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    if first {
        return Err(ReadError::NotGzip {
            detail: format!(
                "it starts with bytes {}, a gzip file starts with 1f 8b",
                shown.join(" ")
            ),
        });
    }
    let bytes_in = source.get_ref().bytes - buffered as u64;
    Err(ReadError::Corrupt {
        bytes_in,
        detail: format!(
            "unexpected data after the end of the gzip stream (bytes {})",
            shown.join(" ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(compressed: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut lines = GzipLines::new(compressed);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line()? {
            out.push((line.number, line.bytes.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn lines_come_back_numbered_with_their_endings() {
        let lines = read_all(&gzip(b"header\na\tb\r\n\nlast")).unwrap();
        assert_eq!(
            lines,
            [
                (1, b"header\n".to_vec()),
                (2, b"a\tb\r\n".to_vec()),
                (3, b"\n".to_vec()),
                (4, b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn an_empty_gzip_stream_has_no_lines() {
        assert!(read_all(&gzip(b"")).unwrap().is_empty());
    }

    #[test]
    fn progress_counts_both_sides() {
        let data = b"one\ntwo\n".repeat(1000);
        let compressed = gzip(&data);
        let mut lines = GzipLines::new(&compressed[..]);
        while lines.next_line().unwrap().is_some() {}
        let progress = lines.progress();
        assert_eq!(progress.bytes_out, data.len() as u64);
        assert_eq!(progress.bytes_in, compressed.len() as u64);
        assert_eq!(progress.lines, 2000);
    }

    #[test]
    fn concatenated_members_read_as_one_stream() {
        let mut both = gzip(b"a\nb");
        both.extend(gzip(b"c\nd\n"));
        let lines: Vec<Vec<u8>> = read_all(&both).unwrap().into_iter().map(|l| l.1).collect();
        assert_eq!(lines, [b"a\n".to_vec(), b"bc\n".to_vec(), b"d\n".to_vec()]);
    }

    #[test]
    fn lines_longer_than_the_buffer_grow_it() {
        let long = vec![b'x'; 3 * OUTPUT_BUFFER_BYTES + 17];
        let mut data = b"h\n".to_vec();
        data.extend(&long);
        data.extend(b"\nz\n");
        let lines = read_all(&gzip(&data)).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].1.len(), long.len() + 1);
        assert_eq!(lines[2], (3, b"z\n".to_vec()));
    }

    #[test]
    fn over_long_lines_are_cut_and_flagged_and_reading_goes_on() {
        let limit = 64 * 1024;
        let mut data = b"h\n".to_vec();
        data.extend(vec![b'x'; limit * 5 + 3]);
        data.extend(b"\nnext\n");
        data.extend(vec![b'y'; limit * 2]);
        let compressed = gzip(&data);
        let mut lines = GzipLines::with_max_line_bytes(&compressed[..], limit);
        assert_eq!(lines.next_line().unwrap().unwrap().bytes, b"h\n");
        let cut = lines.next_line().unwrap().unwrap();
        assert_eq!(cut.number, 2);
        assert_eq!(cut.bytes.len(), OVERLONG_LINE_KEPT_BYTES);
        assert_eq!(cut.overlong_length, Some((limit * 5 + 4) as u64));
        let next = lines.next_line().unwrap().unwrap();
        assert_eq!((next.number, next.bytes), (3, &b"next\n"[..]));
        let last = lines.next_line().unwrap().unwrap();
        assert_eq!(last.number, 4);
        assert_eq!(last.overlong_length, Some((limit * 2) as u64));
        assert!(lines.next_line().unwrap().is_none());
    }

    #[test]
    fn a_line_exactly_at_the_limit_is_whole_and_one_more_byte_is_cut() {
        let limit = 64 * 1024;
        let mut data = vec![b'x'; limit];
        data.push(b'\n');
        data.extend(vec![b'y'; limit + 1]);
        data.push(b'\n');
        let compressed = gzip(&data);
        let mut lines = GzipLines::with_max_line_bytes(&compressed[..], limit);
        let line = lines.next_line().unwrap().unwrap();
        assert_eq!(line.bytes.len(), limit + 1);
        assert_eq!(line.overlong_length, None);
        let line = lines.next_line().unwrap().unwrap();
        assert_eq!(line.overlong_length, Some(limit as u64 + 2));
        assert!(lines.next_line().unwrap().is_none());
    }

    #[test]
    fn plain_text_is_not_gzip() {
        let error = read_all(b"DMP_USER_ID\tDSP_USER_ID\n").unwrap_err();
        assert!(matches!(error, ReadError::NotGzip { .. }));
        assert_eq!(
            error.to_string(),
            "not a gzip file: it starts with bytes 44 4d 50 5f, a gzip file starts with 1f 8b"
        );
        let empty = read_all(b"").unwrap_err();
        assert_eq!(empty.to_string(), "not a gzip file: the file is empty");
    }

    #[test]
    fn truncation_is_reported_at_every_cut() {
        let data: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("u{i}\t\t{i}\n").into_bytes())
            .collect();
        let compressed = gzip(&data);
        for cut in [
            2,
            5,
            10,
            11,
            100,
            compressed.len() / 2,
            compressed.len() - 8,
            compressed.len() - 1,
        ] {
            let error = read_all(&compressed[..cut]).unwrap_err();
            assert!(
                matches!(error, ReadError::Truncated { bytes_in } if bytes_in == cut as u64),
                "cut at {cut}: {error}"
            );
            assert_eq!(
                error.to_string(),
                format!("truncated gzip stream after {cut} bytes")
            );
        }
    }

    #[test]
    fn damaged_data_and_trailing_garbage_are_corrupt() {
        let data: Vec<u8> = (0..5_000)
            .flat_map(|i| format!("u{i}\t\t{i}\n").into_bytes())
            .collect();
        let mut compressed = gzip(&data);
        let crc_at = compressed.len() - 8;
        compressed[crc_at] ^= 0xff;
        let error = read_all(&compressed).unwrap_err();
        assert!(matches!(error, ReadError::Corrupt { .. }), "{error}");

        let mut trailing = gzip(b"a\n");
        trailing.extend(b"garbage");
        let error = read_all(&trailing).unwrap_err();
        assert!(matches!(error, ReadError::Corrupt { .. }), "{error}");
        assert_eq!(error.code(), "corrupt_gzip");
    }

    #[test]
    fn an_error_is_reported_again_on_every_later_call() {
        let compressed = gzip(&b"line\n".repeat(50_000));
        let mut lines = GzipLines::new(&compressed[..compressed.len() / 2]);
        let first = loop {
            match lines.next_line() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream cannot end cleanly"),
                Err(error) => break error.to_string(),
            }
        };
        for _ in 0..3 {
            assert_eq!(lines.next_line().unwrap_err().to_string(), first);
        }
    }

    #[test]
    fn source_failures_are_io_errors() {
        struct Failing {
            data: Vec<u8>,
            served: bool,
        }
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.served {
                    return Err(io::Error::other("connection reset"));
                }
                self.served = true;
                let n = self.data.len().min(buf.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("u{i}\t\t{i}\n").into_bytes())
            .collect();
        let compressed = gzip(&data);
        let half = compressed[..compressed.len() / 2].to_vec();
        let mut lines = GzipLines::new(Failing {
            data: half,
            served: false,
        });
        let error = loop {
            match lines.next_line() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream cannot end cleanly"),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, ReadError::Io { .. }), "{error}");
        assert_eq!(error.code(), "read_failed");
    }
}
