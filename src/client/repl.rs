//! `diskd` without a subcommand: an interactive REPL on a terminal (rustyline, history in
//! `~/.diskd_history`, Tab completes commands and known UUIDs and labels, Ctrl-C cancels the
//! line, Ctrl-D exits), or commands read line by line from stdin otherwise.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use rustyline::error::ReadlineError;

use super::complete::DiskdHelper;
use super::{ClientError, Received, Session};
use crate::protocol::frame::{tokenize, Status};

/// Run the interactive client; returns the exit code (the highest of the commands run in
/// script mode, 3 when the daemon cannot be reached).
pub fn run(socket: &Path) -> u8 {
    let mut session = match Session::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("diskd: {e}");
            return 3;
        }
    };
    let result = if std::io::stdin().is_terminal() {
        println!("{}", session.greeting.status.text());
        interactive(&mut session, socket)
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
                let stop = || {
                    // Any line (even empty) ends a debug stream.
                    let mut s = String::new();
                    let _ = std::io::stdin().read_line(&mut s);
                };
                if is_debug(&line) {
                    println!("(press Enter to stop)");
                }
                let reply = run_one(session, &line, stop)?;
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
        let reply = run_one(session, &line, || {
            // In a script, the next input line (or its end) stops a debug stream.
            let _ = lines.next();
        })?;
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

fn is_debug(line: &str) -> bool {
    first_word(line) == "debug"
}

/// Send one line; for `debug`, print events as they come until `wait_to_stop` returns.
fn run_one(
    session: &mut Session,
    line: &str,
    wait_to_stop: impl FnOnce(),
) -> Result<Received, ClientError> {
    session.send_line(line)?;
    if !is_debug(line) {
        return session.read_reply(|_| {});
    }
    let mut writer = session.writer()?;
    std::thread::scope(|scope| {
        let printer = scope.spawn(|| {
            session.read_reply(|l| {
                println!("{l}");
            })
        });
        wait_to_stop();
        // The daemon ends the stream on any line; if it is gone, the reader says so.
        let _ = writer.write_all(b"\n");
        printer
            .join()
            .unwrap_or_else(|_| Err(ClientError::Protocol("printer thread failed".into())))
    })
    .map(|mut r| {
        r.body.clear(); // already printed
        r
    })
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
