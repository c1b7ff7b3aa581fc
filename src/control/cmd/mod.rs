//! One type per control command: `parse` from words, `apply` to the daemon, render text or
//! JSON. The `Command` enum dispatches; unknown commands and stray arguments are usage
//! errors and the session goes on.

mod announce;
mod debug;
mod help;
mod list;
mod localhost;
mod mount;
mod peers;
mod ping;
mod refresh;
mod status;
mod where_is;

pub use announce::Announce;
pub use debug::Debug;
pub use help::Help;
pub use list::List;
pub use localhost::Localhost;
pub use mount::{Mount, Umount};
pub use peers::Peers;
pub use ping::Ping;
pub use refresh::Refresh;
pub use status::StatusCmd;
pub use where_is::Where;

use super::proto::{Reply, Status};
use crate::control::Context;

/// A parsed control command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `help [command]`
    Help(Help),
    /// `list [host] [--json]`
    List(List),
    /// `where TERM [--json]`
    Where(Where),
    /// `localhost [--json]`
    Localhost(Localhost),
    /// `status [--json]`
    Status(StatusCmd),
    /// `peers [--json]`
    Peers(Peers),
    /// `refresh`
    Refresh(Refresh),
    /// `announce`
    Announce(Announce),
    /// `ping`
    Ping(Ping),
    /// `mount TERM [--read-only] [--attach DIR] [--json]`
    Mount(Mount),
    /// `umount TERM [--json]`
    Umount(Umount),
    /// `debug`: stream events until the client sends a line.
    Debug(Debug),
    /// `quit` / `exit`
    Quit,
}

impl Command {
    /// Parse the words of one command line (not empty).
    pub fn parse(words: Vec<String>) -> Result<Command, Reply> {
        let mut words = words.into_iter();
        let name = words.next().unwrap_or_default();
        let mut args = Args::new(&name, words.collect());
        let cmd = match name.to_ascii_lowercase().as_str() {
            "help" | "?" => Command::Help(Help::parse(&mut args)?),
            "list" | "ls" => Command::List(List::parse(&mut args)?),
            "where" | "query" => Command::Where(Where::parse(&mut args)?),
            "localhost" => Command::Localhost(Localhost::parse(&mut args)?),
            "status" => Command::Status(StatusCmd::parse(&mut args)?),
            "peers" => Command::Peers(Peers::parse(&mut args)?),
            "refresh" => Command::Refresh(Refresh::parse(&mut args)?),
            "announce" => Command::Announce(Announce::parse(&mut args)?),
            "ping" => Command::Ping(Ping::parse(&mut args)?),
            "debug" => Command::Debug(Debug::parse(&mut args)?),
            "mount" => Command::Mount(Mount::parse(&mut args)?),
            "umount" | "unmount" => Command::Umount(Umount::parse(&mut args)?),
            "quit" | "exit" => {
                args.finish()?;
                Command::Quit
            }
            _ => {
                return Err(Reply::status(Status::Usage(format!(
                    "unknown command {:?}; type 'help' for the list",
                    truncate(&name, 64)
                ))))
            }
        };
        Ok(cmd)
    }

    /// Carry out a command that produces one reply (`debug` and `quit` are handled by the
    /// session, which owns the stream).
    pub async fn apply(self, ctx: &Context) -> Reply {
        match self {
            Command::Help(c) => c.apply(),
            Command::List(c) => c.apply(ctx),
            Command::Where(c) => c.apply(ctx),
            Command::Localhost(c) => c.apply(ctx),
            Command::Status(c) => c.apply(ctx),
            Command::Peers(c) => c.apply(ctx),
            Command::Refresh(c) => c.apply(ctx).await,
            Command::Announce(c) => c.apply(ctx).await,
            Command::Ping(c) => c.apply(ctx).await,
            Command::Mount(c) => c.apply(ctx).await,
            Command::Umount(c) => c.apply(ctx).await,
            Command::Debug(_) | Command::Quit => {
                Reply::status(Status::Error("not a one-reply command".into()))
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The arguments after a command name, consumed by the command's `parse`.
pub struct Args {
    name: String,
    words: std::collections::VecDeque<String>,
}

impl Args {
    fn new(name: &str, words: Vec<String>) -> Args {
        Args {
            name: name.to_ascii_lowercase(),
            words: words.into(),
        }
    }

    /// Remove `flag` wherever it is; whether it was there.
    pub fn flag(&mut self, flag: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != flag);
        self.words.len() != before
    }

    /// Remove `--name VALUE` wherever it is; the value, or a usage error if it is missing.
    pub fn option(&mut self, name: &str) -> Result<Option<String>, Reply> {
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        self.words.remove(i);
        match self.words.remove(i) {
            Some(v) => Ok(Some(v)),
            None => Err(Reply::status(Status::Usage(format!(
                "{}: {name} needs a value",
                self.name
            )))),
        }
    }

    /// The next positional argument, if any.
    pub fn positional(&mut self) -> Option<String> {
        self.words.pop_front()
    }

    /// The next positional argument, required.
    pub fn required(&mut self, what: &str) -> Result<String, Reply> {
        self.positional().ok_or_else(|| {
            Reply::status(Status::Usage(format!(
                "{} needs {what}; see 'help {}'",
                self.name, self.name
            )))
        })
    }

    /// Reject whatever is left.
    pub fn finish(&mut self) -> Result<(), Reply> {
        match self.words.front() {
            None => Ok(()),
            Some(w) => Err(Reply::status(Status::Usage(format!(
                "{}: unexpected argument {:?}; see 'help {}'",
                self.name,
                truncate(w, 64),
                self.name
            )))),
        }
    }
}

/// Render a serialisable value as a one-line JSON reply body.
pub fn json_body<T: serde::Serialize>(v: &T) -> Vec<String> {
    match serde_json::to_string(v) {
        Ok(s) => vec![s],
        // Our own view types always serialise; keep the session alive regardless.
        Err(e) => vec![format!("{{\"error\": {:?}}}", e.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, Reply> {
        Command::parse(crate::control::proto::tokenize(line).unwrap())
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse("where \"my disk\" --json").unwrap(),
            Command::Where(Where {
                term: "my disk".into(),
                json: true
            })
        );
        assert_eq!(
            parse("LIST node-a").unwrap(),
            Command::List(List {
                host: Some("node-a".into()),
                json: false
            })
        );
        assert_eq!(parse("exit").unwrap(), Command::Quit);
        assert!(matches!(
            parse("status --json").unwrap(),
            Command::Status(_)
        ));
    }

    #[test]
    fn rejects_unknown_and_stray_arguments() {
        for bad in [
            "frobnicate",
            "where",
            "status extra",
            "list a b",
            "peers --xml",
            "quit now",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e.status, Status::Usage(_)), "{bad}: {e:?}");
        }
    }
}
