//! `diskd query|list|peers|status|...`: one command, one reply, an exit code (0 ok, 1 no
//! match / refused, 2 usage, 3 daemon unreachable or failed). `diskd debug` and `diskd
//! events` stream until interrupted; `diskd wait` blocks until its disk is there.
//!
//! Ctrl-C has no handler here, on purpose: the client dies of SIGINT like any other
//! command, so the shell reports 130, the daemon sees the session end (which ends the
//! stream or the wait on its side), and a script that runs `diskd wait` or `diskd events`
//! stops too: bash abandons a loop or script when its child *died* of SIGINT, but goes on
//! when the child caught it and exited 130 itself.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{ClientError, Received, Session};
use crate::protocol::commands::Wait;
use crate::protocol::frame::Status;
use crate::protocol::Request;

/// How long past its `--timeout` a `wait` trusts the daemon to answer before giving up by
/// itself: the daemon keeps the timeout, this is the net under it (a daemon stuck or
/// stopped without closing the socket must not make a script wait forever).
const WAIT_GRACE: Duration = Duration::from_secs(2);

/// How long a stream's end waits for the daemon to say why it ended it.
const WHY_ENDED: Duration = Duration::from_secs(2);

/// The socket line for a request typed on the command line. A relative `--attach DIR` is
/// made absolute here: the daemon does not know our working directory.
pub fn command_line(request: &Request) -> String {
    let mut request = request.clone();
    if let Request::Mount(m) = &mut request {
        if let Some(dir) = &m.attach {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.into());
            m.attach = Some(abs.to_string_lossy().into_owned());
        }
    }
    request.to_line()
}

/// Run one command against the daemon at `socket`; returns the exit code. Body lines are
/// printed as they arrive, so `debug` and `events` stream until Ctrl-C.
pub fn run(sockets: &[PathBuf], request: &Request) -> u8 {
    let line = command_line(request);
    let result = Session::connect_first(sockets).and_then(|(mut s, _)| match request {
        Request::Wait(w) => wait(&mut s, &line, w),
        Request::Events(_) => events(&mut s, &line),
        Request::Debug => {
            s.no_read_timeout()?;
            exchange(&mut s, &line, None).map(|(r, _)| r)
        }
        _ => exchange(&mut s, &line, None).map(|(r, _)| r),
    });
    match result {
        Err(e) => {
            eprintln!("diskd: {e}");
            3
        }
        Ok(reply) => {
            match &reply.status {
                Status::Ok(t) if !t.is_empty() && reply.body.is_empty() => {
                    // Not `println!`: a closed stdout must not panic.
                    let _ = writeln!(std::io::stdout(), "{t}");
                }
                Status::Ok(_) => {}
                other => eprintln!("diskd: {}", other.text()),
            }
            match (request, &reply.status) {
                // `health --check`: the status line says whether a disk needs attention.
                (Request::Health(h), Status::Ok(t)) if h.check => {
                    if !reply.body.is_empty() && !h.json {
                        let _ = writeln!(std::io::stderr(), "{t}");
                    }
                    u8::from(t.starts_with(crate::control::cmd::health::ATTENTION))
                }
                _ => reply.status.exit_code(),
            }
        }
    }
}

/// Send a line and print the reply's body as it arrives. When stdout is closed (`| head`),
/// nothing more is printed, and `stop` (if given) gets a line, which ends a stream; the
/// flag says whether that happened.
fn exchange(
    s: &mut Session,
    line: &str,
    mut stop: Option<std::os::unix::net::UnixStream>,
) -> Result<(Received, bool), ClientError> {
    let mut out = std::io::stdout().lock();
    let mut closed = false;
    let mut stopped = false;
    s.send_line(line)?;
    let reply = s.read_reply(|l| {
        // A closed stdout is not an error worth reporting.
        if !closed && (writeln!(out, "{l}").is_err() || out.flush().is_err()) {
            closed = true;
            if let Some(mut w) = stop.take() {
                // Best effort: if the daemon is gone, the read says so.
                stopped = w.write_all(b"\n").is_ok();
            }
        }
    })?;
    Ok((reply, stopped))
}

/// `diskd wait`: the daemon keeps the timeout; this side keeps it too, a little later, so
/// the command ends by `--timeout` (plus [`WAIT_GRACE`]) whatever the daemon does.
fn wait(s: &mut Session, line: &str, w: &Wait) -> Result<Received, ClientError> {
    s.set_read_timeout(w.timeout.map(|t| t.saturating_add(WAIT_GRACE)))?;
    match exchange(s, line, None) {
        Ok((reply, _)) => Ok(reply),
        Err(ClientError::TimedOut) => {
            if w.json {
                // As the daemon's own timeout reply: an empty array, for scripts.
                let _ = writeln!(std::io::stdout(), "[]");
            }
            let after = w
                .timeout
                .map(|t| format!(" after {}", humantime::format_duration(t)))
                .unwrap_or_default();
            Ok(Received {
                status: Status::NoMatch(format!(
                    "timed out{after}: the daemon did not answer in time ({:?} not seen live)",
                    w.term
                )),
                body: Vec::new(),
            })
        }
        Err(e) => Err(e),
    }
}

/// `diskd events`: streams until Ctrl-C (the process dies of SIGINT: 130), or until stdout
/// is closed (`diskd events | head -n 3`: we end the stream, exit 0). A stream the daemon
/// ends by itself means it is going away: exit 3, with its reason when it gives one.
fn events(s: &mut Session, line: &str) -> Result<Received, ClientError> {
    s.no_read_timeout()?;
    let stop = s.writer()?;
    let (reply, stopped) = exchange(s, line, Some(stop))?;
    if stopped || !matches!(reply.status, Status::Ok(_)) {
        return Ok(reply);
    }
    // The daemon ended it: after the stream, it says why in a reply of its own
    // (`-ERR daemon shutting down`) before it closes the session.
    s.set_read_timeout(Some(WHY_ENDED))?;
    let why = match s.read_reply(|_| {}) {
        Ok(r) if !matches!(r.status, Status::Ok(_)) => r.status.text().to_string(),
        _ => "the daemon ended the event stream".to_string(),
    };
    Ok(Received {
        status: Status::Error(why),
        body: Vec::new(),
    })
}
