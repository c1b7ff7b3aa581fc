//! Lines in, replies out, on one session's stream.
//!
//! Reading is bounded: a line longer than `MAX_LINE` is consumed and discarded (never
//! buffered whole) and reported as such, so a client sending megabytes costs nothing. Writes
//! have a deadline, so a client that stops reading only ends its own session.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::proto::{Reply, MAX_LINE};

/// A client that does not take a reply within this time is disconnected.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// One line as received.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line of text, without its newline.
    Text(String),
    /// A line over `MAX_LINE` bytes; its content was dropped.
    TooLong,
    /// A line that is not UTF-8.
    NotUtf8,
}

/// A session's stream.
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    /// Wrap an accepted stream.
    pub fn new(stream: UnixStream) -> Connection {
        let (r, w) = stream.into_split();
        Connection {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// The next line, or `None` at end of stream.
    pub async fn read_line(&mut self) -> io::Result<Option<Line>> {
        let mut buf: Vec<u8> = Vec::new();
        let mut too_long = false;
        loop {
            let avail = self.reader.fill_buf().await?;
            if avail.is_empty() {
                if buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !too_long {
                if buf.len() + chunk.len() > MAX_LINE {
                    too_long = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            self.reader.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => Line::Text(s),
            Err(_) => Line::NotUtf8,
        }))
    }

    /// Send a whole reply.
    pub async fn write_reply(&mut self, reply: &Reply) -> io::Result<()> {
        self.write_raw(reply.encode().as_bytes()).await
    }

    /// Send already framed bytes (used by `debug` to stream body lines).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(WRITE_DEADLINE, async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read its reply in time",
            )),
        }
    }
}
