//! `diskd query|list|peers|status|...`: one command, one reply, an exit code (0 ok, 1 no
//! match / refused, 2 usage, 3 daemon unreachable or failed); `diskd debug` streams.

use std::io::Write;
use std::path::Path;

use super::Session;
use crate::protocol::frame::Status;
use crate::protocol::Request;

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
/// printed as they arrive, so `debug` streams until the daemon ends it or Ctrl-C.
pub fn run(socket: &Path, line: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    let mut closed = false;
    let result = Session::connect(socket).and_then(|mut s| {
        if line == "debug" {
            s.no_read_timeout()?;
        }
        s.send_line(line)?;
        s.read_reply(|l| {
            // A closed stdout (| head) is not an error worth reporting.
            if !closed && (writeln!(out, "{l}").is_err() || out.flush().is_err()) {
                closed = true;
            }
        })
    });
    match result {
        Err(e) => {
            eprintln!("diskd: {e}");
            3
        }
        Ok(reply) => {
            match &reply.status {
                Status::Ok(t) if !t.is_empty() && reply.body.is_empty() => {
                    let _ = writeln!(out, "{t}");
                }
                Status::Ok(_) => {}
                other => eprintln!("diskd: {}", other.text()),
            }
            reply.status.exit_code()
        }
    }
}
