//! A minimal Redis (RESP2) client for the peer measurements: pipelined commands over one
//! connection, nothing else. Used only by `segmart bench`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};

pub struct Redis {
    reader: BufReader<TcpStream>,
    writer: std::io::BufWriter<TcpStream>,
    pending: usize,
}

/// Appends one command in RESP form.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply. Every kind is parsed so the connection stays in step; the benchmarks read only
/// some of them.
#[derive(Debug)]
#[allow(dead_code)]
pub enum Reply {
    Simple(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Redis {
    pub fn connect(addr: &str) -> anyhow::Result<Redis> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot reach Redis at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Redis {
            reader: BufReader::with_capacity(1 << 20, stream.try_clone()?),
            writer: std::io::BufWriter::with_capacity(1 << 20, stream),
            pending: 0,
        })
    }

    /// Queues a command without waiting for its reply.
    pub fn send(&mut self, args: &[&[u8]]) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(64);
        encode(&mut buf, args);
        self.writer.write_all(&buf)?;
        self.pending += 1;
        Ok(())
    }

    /// Sends pre-encoded commands.
    pub fn send_raw(&mut self, bytes: &[u8], commands: usize) -> anyhow::Result<()> {
        self.writer.write_all(bytes)?;
        self.pending += commands;
        Ok(())
    }

    /// Flushes and reads every pending reply, failing on the first error reply.
    pub fn drain(&mut self) -> anyhow::Result<Vec<Reply>> {
        self.writer.flush()?;
        let mut replies = Vec::with_capacity(self.pending);
        while self.pending > 0 {
            replies.push(self.read_reply()?);
            self.pending -= 1;
        }
        Ok(replies)
    }

    pub fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.send(args)?;
        Ok(self.drain()?.pop().expect("one reply"))
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            bail!("connection closed by Redis");
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => bail!("Redis error: {rest}"),
            ":" => Ok(Reply::Integer(rest.parse()?)),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0; len as usize + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(len as usize);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let n: i64 = rest.parse()?;
                let mut items = Vec::with_capacity(n.max(0) as usize);
                for _ in 0..n.max(0) {
                    items.push(self.read_reply()?);
                }
                Ok(Reply::Array(items))
            }
            other => bail!("unexpected Redis reply type {other:?}"),
        }
    }

    /// `used_memory` from `INFO memory`.
    pub fn used_memory(&mut self) -> anyhow::Result<u64> {
        match self.command(&[b"INFO", b"memory"])? {
            Reply::Bulk(Some(text)) => {
                let text = String::from_utf8_lossy(&text);
                text.lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no used_memory in INFO")
            }
            other => bail!("unexpected INFO reply {other:?}"),
        }
    }
}
