//! Tab completion for the REPL: command names (from the command definitions) for the first
//! word, and the UUIDs and labels the daemon knows for the words after it.
//!
//! Disk names are fetched from the daemon over a fresh connection when Tab is pressed
//! (`list --json`), so they are current and the REPL's own session is never interleaved.

use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::Session;
use crate::protocol::frame::{quote, Status};
use crate::protocol::SessionCommand;

/// The REPL's completer.
pub struct DiskdHelper {
    socket: PathBuf,
    commands: Vec<String>,
}

impl DiskdHelper {
    /// A completer that asks the daemon at `socket` for disk names.
    pub fn new(socket: PathBuf) -> DiskdHelper {
        let mut commands = SessionCommand::names();
        commands.sort();
        commands.dedup();
        DiskdHelper { socket, commands }
    }

    /// UUIDs and labels the daemon knows; nothing when it cannot be asked.
    fn disk_names(&self) -> Vec<String> {
        let Ok(mut session) = Session::connect(&self.socket) else {
            return Vec::new();
        };
        let Ok(reply) = session.call("list --json") else {
            return Vec::new();
        };
        if !matches!(reply.status, Status::Ok(_)) {
            return Vec::new();
        }
        let Some(Ok(serde_json::Value::Array(disks))) =
            reply.body.first().map(|l| serde_json::from_str(l))
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = disks
            .iter()
            .flat_map(|d| [d.get("uuid"), d.get("label")])
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Candidates for the word that ends at `pos`, and where that word starts.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let head = &line[..pos];
        let start = head.rfind(' ').map_or(0, |i| i + 1);
        let word = &head[start..];
        let first = head[..start].trim().is_empty();
        let pool = if first {
            self.commands.clone()
        } else if word.starts_with('-') {
            Vec::new()
        } else {
            self.disk_names()
        };
        let found = pool
            .into_iter()
            .filter(|c| c.starts_with(word) || (!first && c.starts_with(word.trim_matches('"'))))
            .map(|c| if first { c } else { quote(&c) })
            .collect();
        (start, found)
    }
}

impl Completer for DiskdHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for DiskdHelper {
    type Hint = String;
}
impl Highlighter for DiskdHelper {}
impl Validator for DiskdHelper {}
impl Helper for DiskdHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_completes_to_command_names() {
        let h = DiskdHelper::new(PathBuf::from("/nonexistent/diskd.sock"));
        assert_eq!(h.candidates("ann", 3), (0, vec!["announce".to_string()]));
        let (_, found) = h.candidates("u", 1);
        assert_eq!(found, vec!["umount", "unmount"]);
        // Later words ask the daemon; with none running there is nothing to offer.
        assert_eq!(h.candidates("where ba", 8), (6, vec![]));
    }
}
