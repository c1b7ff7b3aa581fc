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

use crate::protocol::frame::{Reply, MAX_LINE};

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

/// A session's stream. It owns the line being read (mini-redis's `read_frame` keeps its
/// half-read frame in `self` too), so a read cancelled in a `select!` (the `debug` stream
/// waits on events and on the client at once) loses nothing: the next read goes on where
/// it stopped.
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The line read so far (never more than `MAX_LINE` bytes).
    line: Vec<u8>,
    /// The line being read is over `MAX_LINE`: the rest of it is being skipped.
    too_long: bool,
}

impl Connection {
    /// Wrap an accepted stream.
    pub fn new(stream: UnixStream) -> Connection {
        let (r, w) = stream.into_split();
        Connection {
            reader: BufReader::new(r),
            writer: w,
            line: Vec::new(),
            too_long: false,
        }
    }

    /// The next line, or `None` at end of stream. Cancel-safe.
    pub async fn read_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            // The only await: cancelled here, nothing has been taken from the reader yet.
            let avail = self.reader.fill_buf().await?;
            if avail.is_empty() {
                if self.line.is_empty() && !self.too_long {
                    return Ok(None);
                }
                break;
            }
            let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !self.too_long {
                if self.line.len() + chunk.len() > MAX_LINE {
                    self.too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            self.reader.consume(used);
            if done {
                break;
            }
        }
        let mut buf = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.too_long) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_read_cancelled_half_way_loses_nothing() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        client.write_all(b"sta").await.unwrap();
        // The read takes "sta", then waits for the rest; cancel it there.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), conn.read_line()).await;
        assert!(cancelled.is_err(), "no line is complete yet");
        client.write_all(b"tus\n").await.unwrap();
        assert_eq!(
            conn.read_line().await.unwrap(),
            Some(Line::Text("status".into()))
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_reported_once_and_the_next_line_is_whole() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server);
        let mut long = vec![b'x'; MAX_LINE + 1];
        long.extend_from_slice(b"\nping\n");
        client.write_all(&long).await.unwrap();
        assert_eq!(conn.read_line().await.unwrap(), Some(Line::TooLong));
        assert_eq!(
            conn.read_line().await.unwrap(),
            Some(Line::Text("ping".into()))
        );
    }
}
