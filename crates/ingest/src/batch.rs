//! A data file end to end: gzip lines → header skipped → blank lines skipped → parsed lines and
//! rejections, with the counts a file report needs.

use std::io::{self, Read};

use crate::line::{LineError, ParsedLine, RejectReason, Rejection, is_blank, parse_line};
use crate::parallel::ParallelGzipLines;
use crate::reader::{GzipLines, LineSource, ReadError, ReadProgress};

/// What happened to the lines read so far.
///
/// `lines_read == header_lines + blank_lines + parsed_lines + rejected_lines` at every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Every line, header included.
    pub lines_read: u64,
    /// 1 once the header has been read.
    pub header_lines: u64,
    /// Empty lines (after the line ending is removed), skipped.
    pub blank_lines: u64,
    /// Lines that passed every check.
    pub parsed_lines: u64,
    /// Lines refused, each with a reason.
    pub rejected_lines: u64,
    /// Rejections per reason, indexed by [`RejectReason::index`].
    pub rejected_by_reason: [u64; RejectReason::ALL.len()],
    /// Segment ids in SEGMENTS_TO_ADD of parsed lines.
    pub segments_to_add: u64,
    /// Segment ids in SEGMENTS_TO_REMOVE of parsed lines.
    pub segments_to_remove: u64,
}

impl LineCounts {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected_by_reason[reason.index()]
    }

    /// `(reason, count)` for every reason that occurred.
    pub fn rejections(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .into_iter()
            .map(|reason| (reason, self.rejected(reason)))
            .filter(|(_, count)| *count > 0)
    }
}

/// One data line, parsed or refused.
#[derive(Debug)]
pub enum BatchItem<'a> {
    Parsed {
        /// 1-based; the header is line 1.
        line_number: u64,
        line: ParsedLine<'a>,
    },
    Rejected(Rejection),
}

/// Streams the data lines of a gzip batch file.
///
/// [`BatchReader::new`] inflates and parses on the calling thread;
/// [`BatchReader::spawn`] inflates on a thread of its own while the caller parses.
pub struct BatchReader<S> {
    lines: S,
    counts: LineCounts,
}

impl<R: Read> BatchReader<GzipLines<R>> {
    /// Reads a gzip batch file on the calling thread.
    pub fn new(source: R) -> Self {
        BatchReader::from_lines(GzipLines::new(source))
    }
}

impl BatchReader<ParallelGzipLines> {
    /// Reads a gzip batch file, inflating on a background thread.
    pub fn spawn<R: Read + Send + 'static>(source: R) -> io::Result<Self> {
        Ok(BatchReader::from_lines(ParallelGzipLines::spawn(source)?))
    }
}

impl<S: LineSource> BatchReader<S> {
    pub fn from_lines(lines: S) -> Self {
        BatchReader {
            lines,
            counts: LineCounts::default(),
        }
    }

    pub fn counts(&self) -> &LineCounts {
        &self.counts
    }

    pub fn progress(&self) -> ReadProgress {
        self.lines.progress()
    }

    /// The next data line, or `None` at the end of the file. A read error ends the file; lines
    /// returned before it stay valid.
    pub fn next_item(&mut self) -> Result<Option<BatchItem<'_>>, ReadError> {
        let max_line_bytes = self.lines.max_line_bytes();
        let span = loop {
            let Some(span) = self.lines.advance()? else {
                return Ok(None);
            };
            self.counts.lines_read += 1;
            if span.number == 1 {
                self.counts.header_lines = 1;
                continue;
            }
            if span.overlong_length.is_none() && is_blank(self.lines.line(span).bytes) {
                self.counts.blank_lines += 1;
                continue;
            }
            break span;
        };
        let raw = self.lines.line(span);
        if let Some(length) = raw.overlong_length {
            let error = LineError::line_too_long(length, max_line_bytes);
            return Ok(Some(reject(
                &mut self.counts,
                raw.number,
                raw.bytes,
                &error,
            )));
        }
        Ok(Some(match parse_line(raw.bytes) {
            Ok(line) => {
                self.counts.parsed_lines += 1;
                self.counts.segments_to_add += line.add().len() as u64;
                self.counts.segments_to_remove += line.remove().len() as u64;
                BatchItem::Parsed {
                    line_number: raw.number,
                    line,
                }
            }
            Err(error) => reject(&mut self.counts, raw.number, raw.bytes, &error),
        }))
    }
}

fn reject<'a>(
    counts: &mut LineCounts,
    line_number: u64,
    bytes: &[u8],
    error: &LineError,
) -> BatchItem<'a> {
    counts.rejected_lines += 1;
    counts.rejected_by_reason[error.reason.index()] += 1;
    BatchItem::Rejected(Rejection::new(line_number, bytes, error))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    #[test]
    fn header_blank_parsed_and_rejected_lines_are_all_counted() {
        let text = "DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\r\n\
                    u1\t\ta,b\tc\r\n\
                    \r\n\
                    u2\tm_sha1:abc\ta\n\
                    \n\
                    x:9\t\ta\n\
                    u3\t\t\td";
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
        encoder.write_all(text.as_bytes()).unwrap();
        let compressed = encoder.finish().unwrap();

        let mut reader = BatchReader::new(&compressed[..]);
        let mut parsed = Vec::new();
        let mut rejected = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            match item {
                BatchItem::Parsed { line_number, line } => {
                    parsed.push((line_number, line.resolve_user(|_| None).as_str().to_owned()))
                }
                BatchItem::Rejected(rejection) => rejected.push(rejection),
            }
        }
        assert_eq!(parsed, [(2, "u1".to_owned()), (7, "u3".to_owned())]);
        let reasons: Vec<(u64, RejectReason)> =
            rejected.iter().map(|r| (r.line_number, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                (4, RejectReason::UnsupportedIdType),
                (6, RejectReason::UnknownIdPrefix)
            ]
        );
        assert_eq!(rejected[0].line, "u2\tm_sha1:abc\ta");

        let counts = reader.counts();
        assert_eq!(counts.lines_read, 7);
        assert_eq!(counts.header_lines, 1);
        assert_eq!(counts.blank_lines, 2);
        assert_eq!(counts.parsed_lines, 2);
        assert_eq!(counts.rejected_lines, 2);
        assert_eq!(counts.segments_to_add, 2);
        assert_eq!(counts.segments_to_remove, 2);
        assert_eq!(counts.rejected(RejectReason::UnknownIdPrefix), 1);
        assert_eq!(counts.rejections().count(), 2);
    }

    #[test]
    fn an_over_long_line_is_rejected_with_its_length() {
        let mut text = b"header\n".to_vec();
        text.extend(vec![b'a'; crate::reader::DEFAULT_MAX_LINE_BYTES + 10]);
        text.extend(b"\nu\t\ts\n");
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&text).unwrap();
        let compressed = encoder.finish().unwrap();
        let mut reader = BatchReader::new(&compressed[..]);
        match reader.next_item().unwrap().unwrap() {
            BatchItem::Rejected(rejection) => {
                assert_eq!(rejection.reason, RejectReason::LineTooLong);
                assert_eq!(rejection.line_number, 2);
                assert!(
                    rejection.message.contains("4194315 bytes long"),
                    "{rejection}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reader.next_item().unwrap(),
            Some(BatchItem::Parsed { line_number: 3, .. })
        ));
    }
}
