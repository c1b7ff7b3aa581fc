//! `help [command]`: what the commands are, from one table so help never drifts.

use super::Args;
use crate::control::proto::{Reply, Status};

/// `help [command]`
#[derive(Debug, PartialEq, Eq)]
pub struct Help {
    topic: Option<String>,
}

/// (name, usage, what it does)
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "help",
        "help [COMMAND]",
        "this list, or the usage of one command",
    ),
    (
        "list",
        "list [HOST] [--json]",
        "every disk known, live ones first (only HOST's with HOST)",
    ),
    (
        "where",
        "where TERM [--json]",
        "where a disk is and was last seen; TERM is a UUID, label or device",
    ),
    (
        "localhost",
        "localhost [--json]",
        "this node's name, id and addresses",
    ),
    (
        "status",
        "status [--json]",
        "uptime, counters, store size, watcher health",
    ),
    (
        "peers",
        "peers [--json]",
        "every peer ever heard, with liveness",
    ),
    (
        "refresh",
        "refresh",
        "run every watcher now and report what each found",
    ),
    ("announce", "announce", "multicast our inventory now"),
    (
        "ping",
        "ping",
        "ask every peer to re-announce (rate-limited)",
    ),
    (
        "debug",
        "debug",
        "stream events (scans, changes, errors) until you send a line",
    ),
    ("quit", "quit | exit", "end this session"),
];

impl Help {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Help, Reply> {
        let topic = args.positional();
        args.finish()?;
        Ok(Help { topic })
    }

    /// Build the reply.
    pub fn apply(self) -> Reply {
        match self.topic {
            None => {
                let rows: Vec<Vec<String>> = COMMANDS
                    .iter()
                    .map(|(_, usage, what)| vec![usage.to_string(), what.to_string()])
                    .collect();
                let mut body = crate::control::table::render(&["COMMAND", "WHAT IT DOES"], &rows);
                body.push(String::new());
                body.push("Quote arguments with spaces: where \"my disk\"".into());
                Reply::ok(body)
            }
            Some(t) => match COMMANDS.iter().find(|(n, _, _)| t.eq_ignore_ascii_case(n)) {
                Some((_, usage, what)) => Reply::ok(vec![format!("{usage}: {what}")]),
                None => Reply::status(Status::Usage(format!("no command {t:?}"))),
            },
        }
    }
}
