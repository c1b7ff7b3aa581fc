//! Lines in, replies out, on one session's stream.
//!
//! Reading is bounded: tokio-util's `LinesCodec` with a maximum length reports a line
//! longer than `MAX_LINE` once and skips the rest of it (never buffering it whole), so a
//! client sending megabytes costs nothing. Writes have a deadline, so a client that stops
//! reading only ends its own session.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

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

/// A session's stream. It owns the bytes read but not yet framed (mini-redis's
/// `read_frame` keeps its half-read frame in `self` too), so a read cancelled in a
/// `select!` (the `debug` stream waits on events and on the client at once) loses
/// nothing: the next read goes on where it stopped. The codec is called directly rather
/// through `FramedRead`, whose stream ends at the first decoding error: here a line too
/// long or not UTF-8 is answered and the session goes on.
pub struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    codec: LinesCodec,
    /// The client closed its side: what is left in `buf` is the last line.
    eof: bool,
}

impl Connection {
    /// Wrap an accepted stream.
    pub fn new(stream: UnixStream) -> Connection {
        let (r, w) = stream.into_split();
        Connection {
            reader: r,
            writer: w,
            buf: BytesMut::new(),
            codec: LinesCodec::new_with_max_length(MAX_LINE),
            eof: false,
        }
    }

    /// The next line, or `None` at end of stream. Cancel-safe.
    pub async fn read_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let framed = if self.eof {
                self.codec.decode_eof(&mut self.buf)
            } else {
                self.codec.decode(&mut self.buf)
            };
            match framed {
                Ok(Some(text)) => return Ok(Some(Line::Text(text))),
                Ok(None) if self.eof => return Ok(None),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => return Ok(Some(Line::TooLong)),
                Err(LinesCodecError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    return Ok(Some(Line::NotUtf8))
                }
                Err(LinesCodecError::Io(e)) => return Err(e),
            }
            // The only await: `read_buf` is cancel-safe (nothing read is lost).
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
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

    /// A connection over one end of a socket pair, and the client's end.
    fn connected() -> (Connection, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        (Connection::new(server), client)
    }

    /// A whole line of text, as `read_line` gives it.
    fn text(line: &str) -> Option<Line> {
        Some(Line::Text(line.into()))
    }

    #[tokio::test]
    async fn a_read_cancelled_half_way_loses_nothing() {
        let (mut conn, mut client) = connected();
        client.write_all(b"sta").await.unwrap();
        // The read takes "sta", then waits for the rest; cancel it there.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), conn.read_line()).await;
        assert!(cancelled.is_err(), "no line is complete yet");
        client.write_all(b"tus\n").await.unwrap();
        assert_eq!(conn.read_line().await.unwrap(), text("status"));
    }

    #[tokio::test]
    async fn an_overlong_line_is_reported_once_and_the_next_line_is_whole() {
        let (mut conn, mut client) = connected();
        let mut long = vec![b'x'; MAX_LINE + 1];
        long.extend_from_slice(b"\nping\n");
        client.write_all(&long).await.unwrap();
        assert_eq!(conn.read_line().await.unwrap(), Some(Line::TooLong));
        assert_eq!(conn.read_line().await.unwrap(), text("ping"));
    }

    #[tokio::test]
    async fn a_line_not_utf8_is_reported_and_a_last_line_without_newline_is_whole() {
        let (mut conn, mut client) = connected();
        client.write_all(b"li\xffst\r\nhelp").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(conn.read_line().await.unwrap(), Some(Line::NotUtf8));
        assert_eq!(conn.read_line().await.unwrap(), text("help"));
        assert_eq!(conn.read_line().await.unwrap(), None);
    }
}
