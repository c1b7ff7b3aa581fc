//! The client side of the control socket: a blocking session used by the one-shot
//! commands and the REPL.
//!
//! Blocking std I/O on purpose: a client does one thing at a time, and keeping tokio out of
//! it keeps start-up instant.

mod complete;
pub mod oneshot;
pub mod repl;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::frame::{decode_body_line, Status};

/// How long the client waits for any single reply line before it gives up on the daemon.
/// `refresh` waits for the disk scan, so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the client could not talk to the daemon (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the socket.
    #[error("cannot reach the daemon at {}: {source} (is `diskd daemon` running? the system daemon listens on /run/diskd/diskd.sock; see --socket)", path.display())]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon answered, but with an error instead of its greeting (too many
    /// sessions): its line says why and what to do.
    #[error("the daemon at {} refused the session: {reason}", path.display())]
    Refused {
        /// The socket path.
        path: PathBuf,
        /// The daemon's line.
        reason: String,
    },
    /// The daemon went away or answered something that is not the protocol.
    #[error("daemon connection failed: {0}")]
    Protocol(String),
    /// No reply within the read timeout: the daemon is alive but not answering (or, for
    /// `wait`, the local copy of its `--timeout` ran out first).
    #[error("the daemon did not answer in time")]
    TimedOut,
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            // What a read past `set_read_timeout` gives on Linux (and elsewhere).
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut,
            _ => ClientError::Protocol(e.to_string()),
        }
    }
}

/// A complete reply as received.
#[derive(Debug)]
pub struct Received {
    /// The outcome.
    pub status: Status,
    /// Body lines.
    pub body: Vec<String>,
}

/// A connected session, past its greeting.
pub struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The greeting's reply.
    pub greeting: Received,
}

impl Session {
    /// Connect to the first of `paths` where a daemon answers: the user's own socket, then
    /// the system daemon's, when no socket was named (a stale socket file left by a killed
    /// daemon refuses connections; the next path is tried). The error is the first path's.
    /// Nothing is ever removed: a stale socket file is the daemon's to replace.
    pub fn connect_first(paths: &[PathBuf]) -> Result<(Session, PathBuf), ClientError> {
        let mut first_error = None;
        for p in paths {
            match Session::connect(p) {
                Ok(s) => return Ok((s, p.clone())),
                Err(e) => {
                    let gone = matches!(&e, ClientError::Unreachable { source, .. }
                        if matches!(source.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound));
                    first_error.get_or_insert(e);
                    if !gone {
                        break;
                    }
                }
            }
        }
        Err(first_error.unwrap_or_else(|| ClientError::Protocol("no socket to connect to".into())))
    }

    /// Connect to the daemon at `path` and read its greeting.
    pub fn connect(path: &Path) -> Result<Session, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Unreachable {
            path: path.to_path_buf(),
            source,
        })?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let greeting = read_reply(&mut reader, |_| {})?;
        if !matches!(greeting.status, Status::Ok(_)) {
            return Err(ClientError::Refused {
                path: path.to_path_buf(),
                reason: greeting.status.text().to_string(),
            });
        }
        Ok(Session {
            reader,
            writer,
            greeting,
        })
    }

    /// Wait for the daemon as long as it takes (a `debug` stream may be quiet for hours).
    pub fn no_read_timeout(&mut self) -> Result<(), ClientError> {
        self.set_read_timeout(None)
    }

    /// How long to wait for any one reply line: `None` is as long as it takes; the default
    /// is [`READ_TIMEOUT`] (see [`Session::default_read_timeout`]).
    pub fn set_read_timeout(&mut self, limit: Option<Duration>) -> Result<(), ClientError> {
        // The socket refuses a zero timeout; a millisecond is as good as none left.
        let limit = limit.map(|d| d.max(Duration::from_millis(1)));
        self.reader.get_ref().set_read_timeout(limit)?;
        Ok(())
    }

    /// Back to the usual limit on a reply, after a command that waits on purpose.
    pub fn default_read_timeout(&mut self) -> Result<(), ClientError> {
        self.set_read_timeout(Some(READ_TIMEOUT))
    }

    /// Send one command line.
    pub fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.writer.flush()?;
        Ok(())
    }

    /// Read one reply; `on_line` sees each body line as it arrives (for streaming).
    pub fn read_reply(&mut self, on_line: impl FnMut(&str)) -> Result<Received, ClientError> {
        read_reply(&mut self.reader, on_line)
    }

    /// Send a command and read its reply.
    pub fn call(&mut self, line: &str) -> Result<Received, ClientError> {
        self.send_line(line)?;
        self.read_reply(|_| {})
    }

    /// A second handle on the stream, for writing while another thread reads.
    pub fn writer(&self) -> io::Result<UnixStream> {
        self.writer.try_clone()
    }
}

fn read_reply(
    reader: &mut impl BufRead,
    mut on_line: impl FnMut(&str),
) -> Result<Received, ClientError> {
    let status_line = next_line(reader)?
        .ok_or_else(|| ClientError::Protocol("the daemon closed the connection".into()))?;
    let status = Status::parse(&status_line)
        .ok_or_else(|| ClientError::Protocol(format!("unexpected reply line {status_line:?}")))?;
    let mut body = Vec::new();
    loop {
        let line = next_line(reader)?.ok_or_else(|| {
            ClientError::Protocol("the daemon closed the connection mid-reply".into())
        })?;
        match decode_body_line(&line) {
            None => break,
            Some(l) => {
                on_line(l);
                body.push(l.to_string());
            }
        }
    }
    Ok(Received { status, body })
}

fn next_line(reader: &mut impl BufRead) -> Result<Option<String>, ClientError> {
    let mut buf = Vec::new();
    let n = reader.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}
