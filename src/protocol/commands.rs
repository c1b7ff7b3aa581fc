//! Every control command, defined once.
//!
//! [`Request`] is what a client may ask the daemon; each variant's doc comment is its help
//! text, and its fields are its arguments. The same enum is parsed from a socket line
//! ([`SessionCommand::parse`], which adds the session-only `help` and `quit`), flattened
//! into the `diskd` subcommands (`flags`), rendered as `help`, and written back to a
//! line by the one-shot client ([`Request::to_line`]).

use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::frame::quote;

/// A command the daemon carries out.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Request {
    /// Where is the disk? TERM is a UUID (any case), a label (exact) or a device path.
    #[command(visible_alias = "where")]
    Query(Query),
    /// Every disk the daemon knows, live ones first (only HOST's with HOST).
    #[command(visible_alias = "ls")]
    List(List),
    /// Where a disk has been: each stay (host, device, first and last seen), newest first.
    /// TERM is a UUID (any case), a label or a device path (exact, now or earlier).
    History(History),
    /// SMART health of the fleet's disks, worst first (one row per physical disk; TERM
    /// narrows it to the disks it names). --check: exit 1 when any disk is warning or
    /// failing.
    Health(Health),
    /// Every mounted filesystem in the fleet with its size and free space, fullest first.
    Df(Json),
    /// Every peer ever heard, with liveness.
    Peers(Json),
    /// Node name, uptime, counters, store size and watcher health.
    Status(Json),
    /// This node's name, id and addresses.
    Localhost(Json),
    /// Run every watcher now and report what each found.
    Refresh,
    /// Multicast our inventory now.
    Announce,
    /// Ask every peer to re-announce (each peer answers at most one ping per interval).
    Ping,
    /// Get the disk mounted on the host it is attached to (under mount.root/<uuid>);
    /// with --attach, also make it reachable here (mount.attach_command, sshfs by default).
    Mount(Mount),
    /// Undo `mount`: detach what --attach attached here, and unmount on the disk's host.
    #[command(visible_alias = "unmount")]
    Umount(Umount),
    /// Stream the daemon's events (scans, changes, peers, errors) until stopped (a line
    /// on the socket, Ctrl-C for `diskd debug`).
    Debug,
    /// Wait until the disk is live on some host (on NAME with --host; also mounted there
    /// with --mounted), then print it as `query` does. Gives up after --timeout (exit 1);
    /// without it, waits as long as it takes. Ctrl-C (exit 130), or on the socket any line
    /// sent meanwhile, cancels it.
    Wait(Wait),
    /// Stream changes of the fleet picture, one line each (disks appeared, vanished,
    /// changed, mounted, unmounted; peers live, lost), until stopped (a line on the socket;
    /// Ctrl-C for `diskd events`, exit 130). --json: one JSON object per line.
    Events(Json),
}

/// `--json` alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct Json {
    /// Print JSON instead of a table or text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `query`/`where`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Query {
    /// UUID, label or device path.
    #[arg(allow_hyphen_values = true)]
    pub term: String,
    /// Print a JSON array of disks instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Wait {
    /// UUID, label or device path.
    #[arg(allow_hyphen_values = true)]
    pub term: String,
    /// Give up after this long (30s, 5m, 1h 30m); without it, wait as long as it takes.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Only a disk that is also mounted (has a mountpoint) on its host.
    #[arg(long)]
    pub mounted: bool,
    /// Only on the host with this node name.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub host: Option<String>,
    /// Print a JSON array of disks instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct History {
    /// UUID, label or device path.
    #[arg(allow_hyphen_values = true)]
    pub term: String,
    /// Print a JSON array of stays instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct Health {
    /// Only the disks this UUID, label, device, serial or WWN names.
    #[arg(allow_hyphen_values = true)]
    pub term: Option<String>,
    /// Exit 1 when any disk is warning or failing (for cron and monitoring scripts).
    #[arg(long)]
    pub check: bool,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct List {
    /// Only the disks of this node.
    #[arg(
        value_name = "HOST",
        conflicts_with = "host",
        allow_hyphen_values = true
    )]
    pub node: Option<String>,
    /// Only the disks of this node (same as HOST).
    #[arg(long, value_name = "NODE")]
    pub host: Option<String>,
    /// Only devices without a filesystem (and without partitions): where is the new disk?
    #[arg(long)]
    pub blank: bool,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl List {
    /// The node asked for, however it was given.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref().or(self.host.as_deref())
    }
}

/// Arguments of `mount`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Mount {
    /// UUID, label or device path of a live disk.
    #[arg(allow_hyphen_values = true)]
    pub term: String,
    /// Also reach it from this machine at DIR (absolute on the socket; the `diskd mount`
    /// client makes a relative DIR absolute).
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    pub attach: Option<String>,
    /// Mount it read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `umount`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Umount {
    /// UUID, label or device path.
    #[arg(allow_hyphen_values = true)]
    pub term: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Request {
    /// The socket line that asks for this: the name, the flags, then `--` and the term
    /// (quoted), so any term survives the trip, one that starts with `-` included.
    pub fn to_line(&self) -> String {
        let mut words: Vec<String> = vec![self.name().into()];
        let mut flag = |on: bool, name: &str| {
            if on {
                words.push(name.to_string());
            }
        };
        let term: Option<&str> = match self {
            Request::Query(Query { term, json })
            | Request::History(History { term, json })
            | Request::Umount(Umount { term, json }) => {
                flag(*json, "--json");
                Some(term)
            }
            Request::List(l) => {
                flag(l.blank, "--blank");
                flag(l.json, "--json");
                l.node()
            }
            Request::Health(h) => {
                flag(h.check, "--check");
                flag(h.json, "--json");
                h.term.as_deref()
            }
            Request::Peers(j)
            | Request::Status(j)
            | Request::Localhost(j)
            | Request::Events(j)
            | Request::Df(j) => {
                flag(j.json, "--json");
                None
            }
            Request::Refresh | Request::Announce | Request::Ping | Request::Debug => None,
            Request::Mount(m) => {
                flag(m.read_only, "--read-only");
                flag(m.json, "--json");
                if let Some(dir) = &m.attach {
                    words.extend(["--attach".into(), quote(dir)]);
                }
                Some(&m.term)
            }
            Request::Wait(w) => {
                flag(w.mounted, "--mounted");
                flag(w.json, "--json");
                if let Some(host) = &w.host {
                    words.extend(["--host".into(), quote(host)]);
                }
                if let Some(t) = w.timeout {
                    // humantime's own spelling ("1m 30s", exact to the nanosecond), which
                    // it parses back unchanged.
                    let text = humantime::format_duration(t).to_string();
                    words.extend(["--timeout".into(), quote(&text)]);
                }
                Some(&w.term)
            }
        };
        if let Some(t) = term {
            words.extend(["--".into(), quote(t)]);
        }
        words.join(" ")
    }

    /// Whether the command changes something or reveals the daemon's inner workings
    /// (mount, umount, refresh, announce, ping, debug): on a group-readable socket only
    /// root, the daemon's user and `control.admin_group` may run it. The others only read
    /// the fleet picture.
    pub fn needs_admin(&self) -> bool {
        match self {
            Request::Refresh
            | Request::Announce
            | Request::Ping
            | Request::Mount(_)
            | Request::Umount(_)
            | Request::Debug => true,
            Request::Query(_)
            | Request::List(_)
            | Request::History(_)
            | Request::Health(_)
            | Request::Df(_)
            | Request::Peers(_)
            | Request::Status(_)
            | Request::Localhost(_)
            | Request::Wait(_)
            | Request::Events(_) => false,
        }
    }

    /// The command's socket name.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Query(_) => "where",
            Request::List(_) => "list",
            Request::History(_) => "history",
            Request::Health(_) => "health",
            Request::Df(_) => "df",
            Request::Peers(_) => "peers",
            Request::Status(_) => "status",
            Request::Localhost(_) => "localhost",
            Request::Refresh => "refresh",
            Request::Announce => "announce",
            Request::Ping => "ping",
            Request::Mount(_) => "mount",
            Request::Umount(_) => "umount",
            Request::Debug => "debug",
            Request::Wait(_) => "wait",
            Request::Events(_) => "events",
        }
    }
}

/// One line of a control session: a [`Request`], or one of the session's own commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SessionCommand {
    /// A command for the daemon.
    #[command(flatten)]
    Request(Request),
    /// This list, or the usage of one command.
    #[command(visible_alias = "?")]
    Help {
        /// The command to explain.
        command: Option<String>,
    },
    /// End this session.
    #[command(visible_alias = "exit")]
    Quit,
}

/// The parser of one socket line: no program name, no `--help`/`--version` of clap's own
/// (`help` is a command here).
#[derive(Debug, Parser)]
#[command(
    name = "diskd",
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Line {
    #[command(subcommand)]
    command: SessionCommand,
}

impl SessionCommand {
    /// Parse the words of one line (not empty). The command name is case-insensitive. The
    /// error is one line, fit for a `-USAGE` reply.
    pub fn parse(mut words: Vec<String>) -> Result<SessionCommand, String> {
        let Some(first) = words.first_mut() else {
            return Err("empty command".into());
        };
        *first = first.to_ascii_lowercase();
        let name = truncate(first, 64);
        // Built once and reused: building the command tree costs more than parsing a line
        // with it, and every socket command is parsed here.
        static LINE: std::sync::LazyLock<std::sync::Mutex<clap::Command>> =
            std::sync::LazyLock::new(|| std::sync::Mutex::new(Line::command()));
        let parsed = LINE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_get_matches_from_mut(&words);
        let matches = parsed.map_err(|e| {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSubcommand => {
                    format!("unknown command {name:?}; type 'help' for the list")
                }
                ErrorKind::MissingRequiredArgument => {
                    let what = e
                        .get(clap::error::ContextKind::InvalidArg)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "an argument".into());
                    format!("{name} needs {what}; see 'help {name}'")
                }
                _ => format!("{name}: {}; see 'help {name}'", first_line(&e.to_string())),
            }
        })?;
        Line::from_arg_matches(&matches)
            .map(|l| l.command)
            .map_err(|e| format!("{name}: {}", first_line(&e.to_string())))
    }

    /// `help`: every command with its usage and what it does, in definition order.
    pub fn help_rows() -> Vec<(String, String, String)> {
        let cmd = Line::command();
        cmd.get_subcommands()
            .map(|sub| {
                let name = sub.get_name().to_string();
                let mut names = vec![name.clone()];
                names.extend(sub.get_visible_aliases().map(str::to_string));
                let args = usage_args(sub);
                let usage = if args.is_empty() {
                    names.join(" | ")
                } else {
                    format!("{} {args}", names.join(" | "))
                };
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                (name, usage, about)
            })
            .collect()
    }

    /// Every command name and alias, for the REPL's tab completion.
    pub fn names() -> Vec<String> {
        let cmd = Line::command();
        let mut out = Vec::new();
        for sub in cmd.get_subcommands() {
            out.push(sub.get_name().to_string());
            out.extend(sub.get_visible_aliases().map(str::to_string));
        }
        out
    }
}

/// `TERM [--json]`-style usage of one command, from its argument definitions.
fn usage_args(cmd: &clap::Command) -> String {
    let mut parts = Vec::new();
    for arg in cmd.get_arguments() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_ascii_uppercase());
        let text = match arg.get_long() {
            Some(long) if arg.get_action().takes_values() => format!("--{long} {value}"),
            Some(long) => format!("--{long}"),
            None => value,
        };
        parts.push(if arg.is_required_set() {
            text
        } else {
            format!("[{text}]")
        });
    }
    parts.join(" ")
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<SessionCommand, String> {
        SessionCommand::parse(crate::protocol::frame::tokenize(line).unwrap())
    }

    #[test]
    fn the_definitions_are_consistent() {
        Line::command().debug_assert();
    }

    #[test]
    fn parses_each_command_and_alias() {
        assert_eq!(
            parse("where \"my disk\" --json").unwrap(),
            SessionCommand::Request(Request::Query(Query {
                term: "my disk".into(),
                json: true
            }))
        );
        let list = |node: Option<&str>, host: Option<&str>| {
            SessionCommand::Request(Request::List(List {
                node: node.map(Into::into),
                host: host.map(Into::into),
                blank: false,
                json: false,
            }))
        };
        assert_eq!(parse("LIST node-a").unwrap(), list(Some("node-a"), None));
        assert_eq!(parse("ls --host b").unwrap(), list(None, Some("b")));
        let blank = Request::List(List {
            blank: true,
            ..List::default()
        });
        assert_eq!(
            parse("list --blank").unwrap(),
            SessionCommand::Request(blank.clone())
        );
        assert_eq!(blank.to_line(), "list --blank");
        assert_eq!(parse("exit").unwrap(), SessionCommand::Quit);
        assert_eq!(
            parse("? mount").unwrap(),
            SessionCommand::Help {
                command: Some("mount".into())
            }
        );
        assert!(matches!(
            parse("unmount x").unwrap(),
            SessionCommand::Request(Request::Umount(_))
        ));
        assert_eq!(
            parse("debug").unwrap(),
            SessionCommand::Request(Request::Debug)
        );
        assert_eq!(
            parse("wait backup --timeout 1m30s --host a").unwrap(),
            SessionCommand::Request(Request::Wait(Wait {
                term: "backup".into(),
                timeout: Some(Duration::from_secs(90)),
                mounted: false,
                host: Some("a".into()),
                json: false,
            }))
        );
    }

    #[test]
    fn rejects_unknown_commands_and_stray_arguments() {
        let e = parse("frobnicate --now").unwrap_err();
        assert!(e.contains("unknown command \"frobnicate\""), "{e}");
        let e = parse("where").unwrap_err();
        assert!(e.contains("where needs <TERM>"), "{e}");
        assert!(
            parse("where x --json --json").is_ok(),
            "a repeated flag is harmless"
        );
        for bad in [
            "where",
            "status extra",
            "list a b",
            "peers --xml",
            "quit now",
            "list a --host b",
            "wait",
            "wait x --timeout soon",
            "wait x --timeout",
            "events x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_request_survives_the_trip_to_a_line_and_back() {
        for line in [
            "where 'my disk; $(id)' --json",
            "list node-a --json",
            "history x --json",
            "history 'my disk'",
            "list",
            "peers --json",
            "status",
            "localhost --json",
            "refresh",
            "announce",
            "ping",
            "debug",
            "mount x --read-only --attach '/mnt/a b' --json",
            "umount x",
            "where -backup",
            "list -node --json",
            "mount --json -- -x",
            "where -- --json",
            "wait backup",
            "wait 'my disk' --timeout 30s --mounted --host node-a --json",
            "wait x --timeout '1m 30s 250ms'",
            "wait x --timeout 0s --host -odd-host",
            "wait -- -backup",
            "events",
            "events --json",
        ] {
            let SessionCommand::Request(r) = parse(line).unwrap() else {
                panic!("{line}: not a request");
            };
            let again = parse(&r.to_line()).unwrap();
            assert_eq!(again, SessionCommand::Request(r), "{line}");
        }
        // Two spellings of one request are written as one line.
        for (line, want) in [
            ("ls --host b", "list -- b"),
            ("mount --attach=-x t", "mount --attach -x -- t"),
            ("where x --json --json", "where --json -- x"),
            ("wait x --timeout 90s", "wait --timeout \"1m 30s\" -- x"),
            (
                "wait x --json --host h --mounted",
                "wait --mounted --json --host h -- x",
            ),
        ] {
            let SessionCommand::Request(r) = parse(line).unwrap() else {
                panic!("{line}: not a request");
            };
            assert_eq!(r.to_line(), want, "{line}");
            let SessionCommand::Request(again) = parse(want).unwrap() else {
                panic!("{want}: not a request");
            };
            assert_eq!(again.to_line(), want);
        }
    }

    #[test]
    fn help_lists_every_command() {
        let rows = SessionCommand::help_rows();
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        for want in [
            "query",
            "list",
            "history",
            "peers",
            "status",
            "localhost",
            "refresh",
            "announce",
            "ping",
            "mount",
            "umount",
            "debug",
            "wait",
            "events",
            "help",
            "quit",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let query = rows.iter().find(|r| r.0 == "query").unwrap();
        assert_eq!(query.1, "query | where TERM [--json]");
        let wait = rows.iter().find(|r| r.0 == "wait").unwrap();
        assert_eq!(
            wait.1,
            "wait TERM [--timeout DURATION] [--mounted] [--host NAME] [--json]"
        );
        let events = rows.iter().find(|r| r.0 == "events").unwrap();
        assert_eq!(events.1, "events [--json]");
    }
}
