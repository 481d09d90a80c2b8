//! Inflating on one thread while the caller parses on another.
//!
//! Inflate and parse cost about the same per line, so on a machine with two cores or more,
//! [`ParallelGzipLines`] nearly doubles a single-threaded [`GzipLines`]. A background thread runs
//! a [`GzipLines`] and packs whole lines into 256 KiB chunks (with their line ends, so the
//! consumer never searches for newlines); at most [`CHUNKS_IN_FLIGHT`] chunks wait at a time and
//! consumed chunks are sent back for reuse, so memory stays flat.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};

use crate::reader::{
    DEFAULT_MAX_LINE_BYTES, GzipLines, LineSource, LineSpan, RawLine, ReadError, ReadProgress,
};

/// A chunk is sent once it holds at least this many bytes of lines.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks waiting for the consumer before the inflating thread pauses.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Whole lines, back to back, as the inflating thread hands them over.
#[derive(Default)]
struct Chunk {
    /// The lines' bytes, line endings included.
    data: Vec<u8>,
    /// End offset in `data` of each line.
    ends: Vec<u32>,
    /// Number of the first line.
    first_line: u64,
    /// `(index in ends, full length)` of each line that was cut for being too long.
    overlong: Vec<(u32, u64)>,
    /// Source progress once this chunk was filled.
    bytes_in: u64,
    bytes_out: u64,
}

enum Message {
    Chunk(Chunk),
    End,
    Failed(ReadError),
}

/// Lines of a gzip stream, inflated by a background thread.
///
/// Same contract as [`GzipLines`]: numbered lines, flat memory, the same errors at the same
/// points. Dropping it stops the thread at its next chunk.
pub struct ParallelGzipLines {
    /// Filled chunks from the inflating thread.
    chunks: Receiver<Message>,
    /// Consumed chunks going back for reuse.
    recycle: Sender<Chunk>,
    /// The chunk being read.
    current: Chunk,
    /// Index in `current.ends` of the next line.
    next_line: usize,
    /// Index in `current.overlong` of the next cut line.
    next_overlong: usize,
    /// The stream ended or failed; nothing more will come.
    finished: bool,
    /// The error that stopped the stream; every later call reports it again.
    failure: Option<ReadError>,
    max_line_bytes: usize,
    /// Progress as of the lines handed out.
    progress: ReadProgress,
}

impl ParallelGzipLines {
    /// Starts the inflating thread.
    pub fn spawn<R: Read + Send + 'static>(source: R) -> io::Result<Self> {
        ParallelGzipLines::spawn_with_max_line_bytes(source, DEFAULT_MAX_LINE_BYTES)
    }

    /// Starts the inflating thread with a line limit, as [`GzipLines::with_max_line_bytes`].
    pub fn spawn_with_max_line_bytes<R: Read + Send + 'static>(
        source: R,
        max_line_bytes: usize,
    ) -> io::Result<Self> {
        let lines = GzipLines::with_max_line_bytes(source, max_line_bytes);
        let max_line_bytes = lines.max_line_bytes();
        let (chunk_sender, chunks) = sync_channel(CHUNKS_IN_FLIGHT);
        let (recycle, recycled) = channel();
        std::thread::Builder::new()
            .name("segmart-inflate".into())
            .spawn(move || inflate(lines, chunk_sender, recycled))?;
        Ok(ParallelGzipLines {
            chunks,
            recycle,
            current: Chunk::default(),
            next_line: 0,
            next_overlong: 0,
            finished: false,
            failure: None,
            max_line_bytes,
            progress: ReadProgress::default(),
        })
    }

    /// The next line, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<RawLine<'_>>, ReadError> {
        Ok(self.advance()?.map(|span| self.line(span)))
    }

    fn fail(&mut self, error: ReadError) -> Result<bool, ReadError> {
        self.finished = true;
        self.failure = Some(error.duplicate());
        Err(error)
    }

    /// Swaps the consumed chunk for the next one; `false` at the end of the stream.
    fn receive(&mut self) -> Result<bool, ReadError> {
        let message = self.chunks.recv();
        let consumed = std::mem::take(&mut self.current);
        self.next_line = 0;
        self.next_overlong = 0;
        if consumed.data.capacity() > 0 {
            // The thread may be gone already; the chunk is then simply freed.
            let _ = self.recycle.send(consumed);
        }
        match message {
            Ok(Message::Chunk(chunk)) => {
                self.progress.bytes_in = chunk.bytes_in;
                self.progress.bytes_out = chunk.bytes_out;
                self.current = chunk;
                Ok(true)
            }
            Ok(Message::End) => {
                self.finished = true;
                Ok(false)
            }
            Ok(Message::Failed(error)) => self.fail(error),
            Err(_) => self.fail(ReadError::Io {
                bytes_in: self.progress.bytes_in,
                source: io::Error::other("the inflating thread stopped unexpectedly"),
            }),
        }
    }
}

impl LineSource for ParallelGzipLines {
    fn advance(&mut self) -> Result<Option<LineSpan>, ReadError> {
        while self.next_line == self.current.ends.len() {
            if let Some(failure) = &self.failure {
                return Err(failure.duplicate());
            }
            if self.finished || !self.receive()? {
                return Ok(None);
            }
        }
        let index = self.next_line;
        self.next_line += 1;
        let start = match index {
            0 => 0,
            _ => self.current.ends[index - 1] as usize,
        };
        let overlong_length = match self.current.overlong.get(self.next_overlong) {
            Some(&(cut_index, length)) if cut_index as usize == index => {
                self.next_overlong += 1;
                Some(length)
            }
            _ => None,
        };
        self.progress.lines += 1;
        Ok(Some(LineSpan {
            number: self.current.first_line + index as u64,
            start,
            end: self.current.ends[index] as usize,
            overlong_length,
        }))
    }

    fn line(&self, span: LineSpan) -> RawLine<'_> {
        RawLine {
            number: span.number,
            bytes: &self.current.data[span.start..span.end],
            overlong_length: span.overlong_length,
        }
    }

    fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    fn progress(&self) -> ReadProgress {
        self.progress
    }
}

/// The inflating thread: packs lines into chunks until the stream ends, fails, or the consumer
/// goes away.
fn inflate<R: Read>(
    mut lines: GzipLines<R>,
    chunks: SyncSender<Message>,
    recycled: Receiver<Chunk>,
) {
    loop {
        let mut chunk = match recycled.try_recv() {
            Ok(chunk) => chunk,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Chunk {
                data: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
                ends: Vec::with_capacity(CHUNK_BYTES / 32),
                ..Chunk::default()
            },
        };
        chunk.data.clear();
        chunk.ends.clear();
        chunk.overlong.clear();
        chunk.first_line = lines.progress().lines + 1;
        let ending = loop {
            match lines.advance() {
                Ok(Some(span)) => {
                    let raw = lines.line(span);
                    chunk.data.extend_from_slice(raw.bytes);
                    if let Some(length) = raw.overlong_length {
                        chunk.overlong.push((chunk.ends.len() as u32, length));
                    }
                    chunk.ends.push(chunk.data.len() as u32);
                    if chunk.data.len() >= CHUNK_BYTES {
                        break None;
                    }
                }
                Ok(None) => break Some(Message::End),
                Err(error) => break Some(Message::Failed(error)),
            }
        };
        chunk.bytes_in = lines.bytes_in();
        chunk.bytes_out = lines.bytes_out();
        if !chunk.ends.is_empty() && chunks.send(Message::Chunk(chunk)).is_err() {
            return;
        }
        if let Some(last) = ending {
            let _ = chunks.send(last);
            return;
        }
    }
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

    /// Number, bytes and cut length of a line.
    type Line = (u64, Vec<u8>, Option<u64>);

    fn collect(lines: &mut impl LineSource) -> (Vec<Line>, Option<ReadError>) {
        let mut out = Vec::new();
        loop {
            match lines.advance() {
                Ok(Some(span)) => {
                    let raw = lines.line(span);
                    out.push((raw.number, raw.bytes.to_vec(), raw.overlong_length));
                }
                Ok(None) => return (out, None),
                Err(error) => return (out, Some(error)),
            }
        }
    }

    fn sample() -> Vec<u8> {
        let mut data = b"header\n".to_vec();
        for i in 0..200_000 {
            data.extend(format!("user{i}\t\t{},{}\r\n", i % 97, i % 13).as_bytes());
            if i == 70_000 {
                data.extend(vec![b'x'; 70 * 1024]);
                data.push(b'\n');
            }
        }
        data.extend(b"no newline at the end");
        data
    }

    #[test]
    fn yields_exactly_what_the_single_threaded_reader_yields() {
        let compressed = gzip(&sample());
        let mut single =
            GzipLines::with_max_line_bytes(std::io::Cursor::new(compressed.clone()), 64 * 1024);
        let mut parallel = ParallelGzipLines::spawn_with_max_line_bytes(
            std::io::Cursor::new(compressed.clone()),
            64 * 1024,
        )
        .unwrap();
        let (expected, no_error) = collect(&mut single);
        assert!(no_error.is_none());
        let (got, no_error) = collect(&mut parallel);
        assert!(no_error.is_none());
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        assert!(got.iter().any(|line| line.2.is_some()), "one line was cut");
        assert_eq!(parallel.progress().lines, single.progress().lines);
        assert_eq!(parallel.progress().bytes_in, compressed.len() as u64);
        assert_eq!(parallel.progress().bytes_out, single.progress().bytes_out);
        assert!(parallel.advance().unwrap().is_none(), "stays at the end");
    }

    #[test]
    fn errors_arrive_after_the_lines_before_them() {
        let compressed = gzip(&sample());
        let cut = compressed.len() / 2;
        let truncated = compressed[..cut].to_vec();
        let (single_lines, single_error) =
            collect(&mut GzipLines::new(std::io::Cursor::new(truncated.clone())));
        let (lines, error) =
            collect(&mut ParallelGzipLines::spawn(std::io::Cursor::new(truncated)).unwrap());
        assert!(matches!(error, Some(ReadError::Truncated { bytes_in }) if bytes_in == cut as u64));
        assert!(matches!(single_error, Some(ReadError::Truncated { .. })));
        assert_eq!(lines.len(), single_lines.len());

        let mut lines =
            ParallelGzipLines::spawn(std::io::Cursor::new(compressed[..cut].to_vec())).unwrap();
        while lines.next_line().is_ok_and(|line| line.is_some()) {}
        for _ in 0..3 {
            assert!(
                matches!(lines.next_line(), Err(ReadError::Truncated { .. })),
                "the error sticks"
            );
        }

        let (lines, error) = collect(
            &mut ParallelGzipLines::spawn(std::io::Cursor::new(b"plain text".to_vec())).unwrap(),
        );
        assert!(lines.is_empty());
        assert!(matches!(error, Some(ReadError::NotGzip { .. })));
    }

    #[test]
    fn dropping_the_reader_early_stops_the_thread() {
        let compressed = gzip(&sample());
        let mut lines = ParallelGzipLines::spawn(std::io::Cursor::new(compressed)).unwrap();
        assert!(lines.next_line().unwrap().is_some());
        drop(lines);
    }
}
