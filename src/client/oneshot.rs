//! `diskd query|list|peers|status|refresh|announce|ping`: one command, one reply, an exit
//! code (0 ok, 1 no match / refused, 2 usage, 3 daemon unreachable or failed).

use std::io::Write;
use std::path::Path;

use super::Session;
use crate::control::proto::{quote, Status};
use crate::flags::Command;

/// The control line for a one-shot subcommand; `None` for subcommands that are not one-shots.
pub fn command_line(cmd: &Command) -> Option<String> {
    let json = |j: bool| if j { " --json" } else { "" };
    Some(match cmd {
        Command::Query { term, json: j } => format!("where {}{}", quote(term), json(*j)),
        Command::List { host, json: j } => match host {
            Some(h) => format!("list {}{}", quote(h), json(*j)),
            None => format!("list{}", json(*j)),
        },
        Command::Peers { json: j } => format!("peers{}", json(*j)),
        Command::Status { json: j } => format!("status{}", json(*j)),
        Command::Refresh => "refresh".into(),
        Command::Mount {
            term,
            attach,
            read_only,
            json: j,
        } => {
            let mut line = format!("mount {}", quote(term));
            if *read_only {
                line.push_str(" --read-only");
            }
            if let Some(dir) = attach {
                // The daemon needs an absolute path; relative ones are from here.
                let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                line.push_str(&format!(" --attach {}", quote(&abs.to_string_lossy())));
            }
            line.push_str(json(*j));
            line
        }
        Command::Umount { term, json: j } => format!("umount {}{}", quote(term), json(*j)),
        Command::Announce => "announce".into(),
        Command::Ping => "ping".into(),
        Command::Daemon(_)
        | Command::Keygen { .. }
        | Command::Completions { .. }
        | Command::Man => return None,
    })
}

/// Run one command against the daemon at `socket`; returns the exit code.
pub fn run(socket: &Path, line: &str) -> u8 {
    let result = Session::connect(socket).and_then(|mut s| s.call(line));
    match result {
        Err(e) => {
            eprintln!("diskd: {e}");
            3
        }
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            for l in &reply.body {
                // A closed stdout (| head) is not an error worth reporting.
                if writeln!(out, "{l}").is_err() {
                    break;
                }
            }
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
