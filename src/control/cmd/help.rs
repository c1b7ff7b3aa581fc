//! `help [command]`: generated from the command definitions (`protocol::commands`), so it
//! lists every command the parser accepts and nothing else.

use crate::control::table;
use crate::protocol::frame::{Reply, Status};
use crate::protocol::SessionCommand;

/// `help [command]`
pub fn apply(topic: Option<&str>) -> Reply {
    let rows = SessionCommand::help_rows();
    match topic {
        None => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(_, usage, what)| vec![usage, what])
                .collect();
            let mut body = table::render(&["COMMAND", "WHAT IT DOES"], &rows);
            body.push(String::new());
            body.push("Quote arguments with spaces: where \"my disk\"".into());
            Reply::ok(body)
        }
        Some(t) => {
            let found = rows.into_iter().find(|(name, usage, _)| {
                t.eq_ignore_ascii_case(name)
                    || usage
                        .split(' ')
                        .take_while(|w| !w.starts_with(['[', '-']) && *w == w.to_lowercase())
                        .any(|w| w != "|" && t.eq_ignore_ascii_case(w))
            });
            match found {
                Some((_, usage, what)) => Reply::ok(vec![format!("{usage}: {what}")]),
                None => Reply::status(Status::Usage(format!("no command {t:?}"))),
            }
        }
    }
}
