//! `diskd` without a subcommand: an interactive REPL on a terminal (rustyline, history in
//! `~/.diskd_history`, Tab completes commands and known UUIDs and labels, Ctrl-C cancels the
//! line, Ctrl-D exits), or commands read line by line from stdin otherwise.
//!
//! `debug` and `events` stream and `wait` blocks: on a terminal, Enter stops the stream or
//! cancels the wait (and the prompt is back as soon as either ends by itself); in a script,
//! the next input line stops a stream, and a `wait` runs to its end. While they run there
//! is no limit on how long the daemon may stay quiet.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use rustyline::error::ReadlineError;

use super::complete::DiskdHelper;
use super::{ClientError, Received, Session};
use crate::protocol::frame::{tokenize, Status};

/// Run the interactive client; returns the exit code (the highest of the commands run in
/// script mode, 3 when the daemon cannot be reached).
pub fn run(sockets: &[PathBuf]) -> u8 {
    let (mut session, socket) = match Session::connect_first(sockets) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("diskd: {e}");
            return 3;
        }
    };
    let result = if std::io::stdin().is_terminal() {
        println!("{}", session.greeting.status.text());
        interactive(&mut session, &socket)
    } else {
        script(&mut session)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diskd: {e}");
            3
        }
    }
}

fn history_path() -> PathBuf {
    crate::config::expand_home(Path::new("~/.diskd_history"))
}

fn interactive(session: &mut Session, socket: &Path) -> Result<u8, ClientError> {
    let mut editor = rustyline::Editor::<DiskdHelper, rustyline::history::DefaultHistory>::new()
        .map_err(|e| ClientError::Protocol(format!("terminal: {e}")))?;
    editor.set_helper(Some(DiskdHelper::new(socket.to_path_buf())));
    let history = history_path();
    // No history yet is normal on first use.
    let _ = editor.load_history(&history);
    loop {
        match editor.readline("diskd> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                let _ = editor.save_history(&history);
                let quit = is_quit(&line);
                let reply = match kind(&line) {
                    Kind::Plain => session.call(&line)?,
                    Kind::Stream => {
                        println!("(press Enter to stop)");
                        until_enter(session, &line)?
                    }
                    Kind::Wait => {
                        println!("(waiting; press Enter to cancel)");
                        until_enter(session, &line)?
                    }
                };
                print_reply(&reply, true);
                if quit {
                    return Ok(0);
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(0),
            Err(e) => return Err(ClientError::Protocol(format!("terminal: {e}"))),
        }
    }
}

fn script(session: &mut Session) -> Result<u8, ClientError> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut worst = 0u8;
    while let Some(line) = lines.next() {
        let line = line.map_err(|e| ClientError::Protocol(format!("stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let quit = is_quit(&line);
        let reply = match kind(&line) {
            Kind::Plain => session.call(&line)?,
            Kind::Stream => stream(session, &line, || {
                // In a script, the next input line (or its end) stops a stream.
                let _ = lines.next();
            })?,
            Kind::Wait => {
                session.no_read_timeout()?;
                let r = session.call(&line);
                session.default_read_timeout()?;
                r?
            }
        };
        print_reply(&reply, false);
        worst = worst.max(reply.status.exit_code());
        if quit {
            break;
        }
    }
    Ok(worst)
}

fn first_word(line: &str) -> String {
    tokenize(line)
        .ok()
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_quit(line: &str) -> bool {
    matches!(first_word(line).as_str(), "quit" | "exit")
}

/// How a command's reply comes.
enum Kind {
    /// At once, whole.
    Plain,
    /// As a stream that ends when we send a line (`debug`, `events`).
    Stream,
    /// Whole, but only when the daemon has something to say (`wait`); a line cancels it.
    Wait,
}

fn kind(line: &str) -> Kind {
    match first_word(line).as_str() {
        "debug" | "events" => Kind::Stream,
        "wait" => Kind::Wait,
        _ => Kind::Plain,
    }
}

/// Send a streaming command; print its lines as they come until `wait_to_stop` returns,
/// then end the stream.
fn stream(
    session: &mut Session,
    line: &str,
    wait_to_stop: impl FnOnce(),
) -> Result<Received, ClientError> {
    session.no_read_timeout()?;
    session.send_line(line)?;
    let mut writer = session.writer()?;
    let result = std::thread::scope(|scope| {
        let printer = scope.spawn(|| {
            session.read_reply(|l| {
                println!("{l}");
            })
        });
        wait_to_stop();
        // The daemon ends the stream on any line; if it is gone, the reader says so.
        let _ = writer.write_all(b"\n");
        joined(printer)
    });
    printed(session, result)
}

/// On a terminal: send a streaming or waiting command and print its lines as they come,
/// until its reply ends by itself or the user presses Enter (which sends a line, and the
/// daemon ends the reply). The prompt does not wait for an Enter the reply no longer needs.
fn until_enter(session: &mut Session, line: &str) -> Result<Received, ClientError> {
    session.no_read_timeout()?;
    session.send_line(line)?;
    let mut writer = session.writer()?;
    // The printer closes its end when the reply is complete, which wakes the poll below.
    let (done, done_tx) = std::os::unix::net::UnixStream::pair()?;
    let reading = &mut *session;
    let result = std::thread::scope(|scope| {
        let printer = scope.spawn(move || {
            let r = reading.read_reply(|l| {
                println!("{l}");
            });
            drop(done_tx);
            r
        });
        match enter_or(&done) {
            Ok(true) => {
                // If the daemon is gone, the reader says so.
                let _ = writer.write_all(b"\n");
            }
            Ok(false) => {}
            Err(e) => {
                // Cannot watch the terminal: stop rather than wait with no way out.
                eprintln!("diskd: terminal: {e}");
                let _ = writer.write_all(b"\n");
            }
        }
        joined(printer)
    });
    printed(session, result)
}

/// What the printer thread of a streamed reply returned.
fn joined(
    printer: std::thread::ScopedJoinHandle<'_, Result<Received, ClientError>>,
) -> Result<Received, ClientError> {
    printer
        .join()
        .unwrap_or_else(|_| Err(ClientError::Protocol("printer thread failed".into())))
}

/// The reply of a streamed command, its lines already printed; the session back to its
/// usual read timeout.
fn printed(
    session: &mut Session,
    result: Result<Received, ClientError>,
) -> Result<Received, ClientError> {
    session.default_read_timeout()?;
    result.map(|mut r| {
        r.body.clear(); // already printed
        r
    })
}

/// Block until a line is typed (read it: true) or `done` becomes readable or closed
/// (false). The terminal is in line mode here, so stdin is readable only once a whole line
/// is there.
fn enter_or(done: &std::os::unix::net::UnixStream) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    loop {
        let mut fds = [
            PollFd::new(done.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        // The reply first: a line typed just as it ended is left for the prompt.
        if ready(&fds[0]) {
            return Ok(false);
        }
        if ready(&fds[1]) {
            let mut s = String::new();
            stdin.read_line(&mut s)?;
            return Ok(true);
        }
    }
}

fn print_reply(reply: &Received, interactive: bool) {
    let mut out = std::io::stdout().lock();
    for l in &reply.body {
        let _ = writeln!(out, "{l}");
    }
    match &reply.status {
        Status::Ok(t) => {
            if !t.is_empty() && reply.body.is_empty() {
                let _ = writeln!(out, "{t}");
            }
        }
        other if interactive => {
            let _ = writeln!(out, "error: {}", other.text());
        }
        other => eprintln!("diskd: {}", other.text()),
    }
}
