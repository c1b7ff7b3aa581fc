//! The control socket's framing, shared by the server and the client.
//!
//! A session starts with a greeting reply; then the client sends one command per line and
//! gets one reply per command. Every reply, the greeting included, is:
//!
//! ```text
//! +OK [text]                  status line: +OK, or -NOMATCH / -REFUSED / -USAGE / -ERR text
//! body line                   zero or more body lines (a table, or one line of JSON)
//! ..a body line that began with a dot gets one more dot (as in SMTP/POP3)
//! .                           a line with a single dot ends the reply
//! ```
//!
//! So `socat - UNIX-CONNECT:~/.diskd-socket` is usable by hand, and a script reads until a
//! lone `.`. Arguments are separated by spaces; an argument with spaces or special
//! characters goes in double quotes with backslash escapes (`\"`, `\\`, `\n`, `\t`, `\r`,
//! `\$`, `` \` ``), or in single quotes taken literally.
//!
//! This is diskd's one quoting dialect: a shell's quoting, with the escapes a line protocol
//! needs to carry a newline. The config file's command strings (`watchers.disks.command`,
//! a hook's `run` as a string, `mount.attach_command`) are split by the same code
//! ([`split_command`]), so `"a\nb"` is the same word typed in the REPL, sent on the socket
//! or written in YAML; the config side keeps a shell's leniency where the socket is strict.

/// Longest command line the server accepts, in bytes; longer lines get an error reply.
pub const MAX_LINE: usize = 4096;

/// The outcome of a command, which the one-shot client maps to its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Success (exit 0).
    Ok(String),
    /// Nothing matched (exit 1).
    NoMatch(String),
    /// Refused by policy or rate limit (exit 1).
    Refused(String),
    /// The command was malformed (exit 2).
    Usage(String),
    /// The daemon failed to carry it out (exit 3).
    Error(String),
}

impl Status {
    /// The status line, without the newline.
    pub fn line(&self) -> String {
        let (tag, text) = match self {
            Status::Ok(t) => ("+OK", t),
            Status::NoMatch(t) => ("-NOMATCH", t),
            Status::Refused(t) => ("-REFUSED", t),
            Status::Usage(t) => ("-USAGE", t),
            Status::Error(t) => ("-ERR", t),
        };
        let text = one_line(text);
        if text.is_empty() {
            tag.to_string()
        } else {
            format!("{tag} {text}")
        }
    }

    /// Parse a status line; anything else is a protocol error.
    pub fn parse(line: &str) -> Option<Status> {
        let (tag, text) = line.split_once(' ').unwrap_or((line, ""));
        let text = text.to_string();
        Some(match tag {
            "+OK" => Status::Ok(text),
            "-NOMATCH" => Status::NoMatch(text),
            "-REFUSED" => Status::Refused(text),
            "-USAGE" => Status::Usage(text),
            "-ERR" => Status::Error(text),
            _ => return None,
        })
    }

    /// The one-shot client's exit code for this outcome (docs/commands.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Status::Ok(_) => 0,
            Status::NoMatch(_) | Status::Refused(_) => 1,
            Status::Usage(_) => 2,
            Status::Error(_) => 3,
        }
    }

    /// The text after the tag.
    pub fn text(&self) -> &str {
        match self {
            Status::Ok(t)
            | Status::NoMatch(t)
            | Status::Refused(t)
            | Status::Usage(t)
            | Status::Error(t) => t,
        }
    }
}

/// A complete reply: a status and body lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The outcome.
    pub status: Status,
    /// Body lines, without newlines.
    pub body: Vec<String>,
}

impl Reply {
    /// Success with a body.
    pub fn ok(body: Vec<String>) -> Reply {
        Reply {
            status: Status::Ok(String::new()),
            body,
        }
    }

    /// Success with only a short message.
    pub fn ok_text(text: impl Into<String>) -> Reply {
        Reply {
            status: Status::Ok(text.into()),
            body: Vec::new(),
        }
    }

    /// A reply with this status and no body.
    pub fn status(status: Status) -> Reply {
        Reply {
            status,
            body: Vec::new(),
        }
    }

    /// Encode the whole reply, framing included.
    pub fn encode(&self) -> String {
        let mut out = self.status.line();
        out.push('\n');
        for line in &self.body {
            out.push_str(&encode_body_line(line));
            out.push('\n');
        }
        out.push_str(".\n");
        out
    }
}

/// Encode one body line: newlines inside become separate lines, a leading dot is doubled.
pub fn encode_body_line(line: &str) -> String {
    line.split('\n')
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decode one received body line; `None` for the terminating `.`.
pub fn decode_body_line(line: &str) -> Option<&str> {
    if line == "." {
        None
    } else if let Some(rest) = line.strip_prefix('.') {
        Some(rest)
    } else {
        Some(line)
    }
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Why a command line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A quote was opened and never closed.
    #[error("unterminated quote")]
    Unterminated,
    /// A backslash escape in double quotes that is not one of `\" \\ \n \t \r \$ \``.
    #[error("unknown escape \\{0}")]
    BadEscape(char),
}

/// Split a socket line into words (see the module docs for quoting). Strict: an unknown
/// escape in double quotes is an error the user sees at once, and a backslash outside
/// quotes is kept as it is (`/dev/disk/by-label/My\x20Disk`, pasted from udev, is one term).
pub fn tokenize(line: &str) -> Result<Vec<String>, TokenError> {
    split(line, false)
}

/// Split a command string of the config file into words (`watchers.disks.command`, a
/// hook's `run`, `mount.attach_command`): the socket's quoting (so `"a\nb"` holds a newline
/// in YAML as in the REPL) with a shell's leniency, so that a config written for a shell's
/// rules still loads: a backslash outside quotes keeps the next character (`my\ tools`),
/// and an escape a shell does not know is kept with its backslash (`"s/\./,/"`).
pub fn split_command(s: &str) -> Result<Vec<String>, TokenError> {
    split(s, true)
}

/// The one splitter; `shell`: a config string's leniency (see [`split_command`]).
fn split(line: &str, shell: bool) -> Result<Vec<String>, TokenError> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => loop {
                    match chars.next() {
                        None => return Err(TokenError::Unterminated),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(TokenError::Unterminated),
                            Some('"') => word.push('"'),
                            Some('\\') => word.push('\\'),
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(c @ ('$' | '`')) => word.push(c),
                            Some(other) if shell => {
                                word.push('\\');
                                word.push(other);
                            }
                            Some(other) => return Err(TokenError::BadEscape(other)),
                        },
                        Some(ch) => word.push(ch),
                    }
                },
                '\'' => loop {
                    match chars.next() {
                        None => return Err(TokenError::Unterminated),
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                    }
                },
                // As a shell does: the next character as it is.
                '\\' if shell => match chars.next() {
                    None => return Err(TokenError::Unterminated),
                    Some(ch) => word.push(ch),
                },
                other => word.push(other),
            }
        }
        words.push(word);
    }
}

/// Quote one argument so that `tokenize` gives it back unchanged.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./:@+=,%".contains(c));
    if plain {
        return arg.to_string();
    }
    double_quoted(arg, String::push)
}

/// `s` in double quotes, with `"`, `\`, newline, tab and carriage return written `\"`, `\\`,
/// `\n`, `\t` and `\r`, and every other character as `other` writes it. Those five escapes
/// mean the same here and in a YAML double-quoted scalar, so the Perl peers' wire
/// (`peer::legacy`) writes its strings with this too, adding its `\xNN` for other control
/// characters.
pub fn double_quoted(s: &str, other: impl Fn(&mut String, char)) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => other(&mut out, c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_words_and_quotes() {
        assert_eq!(tokenize("  where  abc ").unwrap(), vec!["where", "abc"]);
        assert_eq!(
            tokenize(r#"where "my disk" --json"#).unwrap(),
            vec!["where", "my disk", "--json"]
        );
        assert_eq!(
            tokenize("where 'a \"b\"'").unwrap(),
            vec!["where", "a \"b\""]
        );
        assert_eq!(tokenize(r#""a\nb\\c\"""#).unwrap(), vec!["a\nb\\c\""]);
        assert_eq!(tokenize(r#"x"y z"w"#).unwrap(), vec!["xy zw"]);
        assert_eq!(tokenize("\"\"").unwrap(), vec![""]);
        assert_eq!(tokenize("\"abc"), Err(TokenError::Unterminated));
        assert_eq!(tokenize("'abc"), Err(TokenError::Unterminated));
        assert_eq!(tokenize(r#""\q""#), Err(TokenError::BadEscape('q')));
        // `\$` and `` \` `` in double quotes, as a shell has them; a backslash outside quotes
        // is kept (a udev path pasted as it is).
        assert_eq!(tokenize(r#""\$HOME \`x\`""#).unwrap(), vec!["$HOME `x`"]);
        assert_eq!(
            tokenize(r"where /dev/disk/by-label/My\x20Disk").unwrap(),
            vec!["where", r"/dev/disk/by-label/My\x20Disk"]
        );
        // A config string: the same quoting, a shell's leniency.
        assert_eq!(
            split_command(r#"my\ tools "s/\./,/" "a\nb" 'c d'"#).unwrap(),
            vec!["my tools", r"s/\./,/", "a\nb", "c d"]
        );
        assert_eq!(split_command("trailing\\"), Err(TokenError::Unterminated));
        assert!(tokenize("").unwrap().is_empty());
    }

    #[test]
    fn quote_round_trips_hostile_strings() {
        for s in [
            "plain",
            "with space",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "$(rm -rf /); echo",
            "'single'",
            "Fotos 2024 — Ürlaub",
            "",
            "\t",
        ] {
            let line = format!("where {} --json", quote(s));
            assert!(!line.contains('\n'));
            assert_eq!(
                tokenize(&line).unwrap(),
                vec!["where", s, "--json"],
                "{s:?}"
            );
        }
    }

    #[test]
    fn reply_framing_round_trips() {
        let r = Reply {
            status: Status::NoMatch("no disk\nmatches".into()),
            body: vec![".hidden".into(), "plain".into(), ".".into()],
        };
        let enc = r.encode();
        let mut lines = enc.lines();
        assert_eq!(
            Status::parse(lines.next().unwrap()),
            Some(Status::NoMatch("no disk matches".into()))
        );
        let body: Vec<_> = lines.map_while(decode_body_line).collect();
        assert_eq!(body, vec![".hidden", "plain", "."]);
        assert_eq!(Status::parse("hello"), None);
        assert_eq!(Status::NoMatch(String::new()).exit_code(), 1);
        assert_eq!(Status::Usage(String::new()).exit_code(), 2);
        assert_eq!(Status::Error(String::new()).exit_code(), 3);
    }
}
