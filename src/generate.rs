//! Shell completions and the man page, generated from the clap definitions in `flags`.
//!
//! Nothing here is written by hand twice: a new flag or subcommand in `flags.rs` shows up in
//! `--help`, in every shell's completions and in the man page alike. The man page is one page,
//! `diskd(1)`: the global options, then one subsection per command with its synopsis,
//! description and options (so `diskd daemon`'s flags are there too), then the exit codes,
//! environment and files that every command shares.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::{Generator, Shell};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::flags::Cli;

/// The binary's name, as completions and the man page call it.
const BIN: &str = "diskd";

/// Write `shell`'s completion script for `diskd` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    cmd.set_bin_name(BIN);
    cmd.build();
    shell.try_generate(&cmd, out)
}

/// Write the man page `diskd(1)` (roff) to `out`.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    cmd.set_bin_name(BIN);
    cmd.build();

    let mut page = Vec::new();
    let man = Man::new(cmd.clone()).title("DISKD").manual("User Commands");
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut heading = Roff::new();
    heading.control("SH", ["COMMANDS"]);
    heading.to_writer(&mut page)?;
    // `help` is clap's own subcommand; --help says the same.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        command_section(sub, &mut page)?;
    }
    shared_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;

    // Every rendered piece starts with the same preamble (it defines the apostrophe string).
    // A page needs it once, and after `.TH`, so that the page starts like any man page.
    let page = String::from_utf8_lossy(&page);
    let is_preamble = |l: &str| l.starts_with(".ie \\n(.g .ds Aq") || l.starts_with(".el .ds Aq");
    let preamble: Vec<&str> = page.lines().take_while(|l| is_preamble(l)).collect();
    for line in page.lines().filter(|l| !is_preamble(l)) {
        writeln!(out, "{line}")?;
        if line.starts_with(".TH ") {
            for p in &preamble {
                writeln!(out, "{p}")?;
            }
        }
    }
    Ok(())
}

/// One `.SS` subsection: `diskd NAME`, its synopsis, description and own options.
fn command_section(sub: &clap::Command, page: &mut Vec<u8>) -> io::Result<()> {
    // The global options (propagated into every subcommand by `build`) are described once,
    // at the top, and --help / --version are everywhere: hide them here.
    let sub = sub.clone().mut_args(|a| {
        let shared = a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version");
        a.hide(shared)
    });
    let mut head = Roff::new();
    head.control("SS", [format!("{BIN} {}", sub.get_name()).as_str()]);
    head.to_writer(page)?;

    // The sections Man renders for a command, their .SH headings turned into paragraph
    // breaks: in one man page they are the body of this subsection.
    let man = Man::new(sub);
    let mut body = Vec::new();
    man.render_synopsis_section(&mut body)?;
    man.render_description_section(&mut body)?;
    man.render_options_section(&mut body)?;
    for line in String::from_utf8_lossy(&body).lines() {
        let line = if line.starts_with(".SH ") {
            ".PP"
        } else {
            line
        };
        writeln!(page, "{line}")?;
    }
    Ok(())
}

/// What every command shares: exit codes, environment, files.
fn shared_sections() -> Roff {
    let mut r = Roff::new();
    let items = |r: &mut Roff, entries: &[(&str, &str)]| {
        for (term, text) in entries {
            r.control("TP", []);
            r.text([bold(*term)]);
            r.text([roman(*text)]);
        }
    };
    r.control("SH", ["EXIT STATUS"]);
    items(
        &mut r,
        &[
            ("0", "Success (query: at least one match)."),
            (
                "1",
                "Nothing matched, or the request was refused (policy, rate limit).",
            ),
            ("2", "Bad usage, or a configuration problem found at start."),
            ("3", "The daemon could not be reached, or failed."),
        ],
    );
    r.control("SH", ["ENVIRONMENT"]);
    items(
        &mut r,
        &[
            ("DISKD_SOCKET", "The control socket (as --socket)."),
            ("DISKD_CONFIG", "The YAML config file (as --config)."),
            (
                "RUST_LOG",
                "The daemon's log filter; wins over --log-level (e.g. diskd=debug,info).",
            ),
            (
                "NOTIFY_SOCKET",
                "Set by systemd for Type=notify units: the daemon reports READY=1 once its \
                 control socket serves and STOPPING=1 when it shuts down.",
            ),
        ],
    );
    r.control("SH", ["FILES"]);
    items(
        &mut r,
        &[
            ("~/.diskd-socket", "The default control socket (mode 0600)."),
            (
                "~/.local/share/diskd",
                "The default store ($XDG_DATA_HOME/diskd), a sled database.",
            ),
            ("~/.diskd_history", "The interactive client's history."),
            (
                "/etc/diskd/diskd.yaml",
                "The config file of the systemd unit: socket /run/diskd/diskd.sock, \
                 store /var/lib/diskd.",
            ),
        ],
    );
    r
}

/// Keys of the config file that have no flag, with their defaults and meaning: the rest of
/// the reference comes from the flags' help texts.
const FILE_ONLY_KEYS: &[(&str, &str, &str)] = &[
    (
        "peers.max_records",
        "1048576",
        "Disk records of all peers together (present and last known); at the cap an \
         inventory that adds disks is refused and counted",
    ),
    (
        "hooks",
        "none",
        "Commands run on changes of the fleet picture (docs/hooks-and-events.md)",
    ),
    (
        "hooks_max_running",
        "4",
        "Hook commands running at once (1-256); more runs wait in a queue of 256",
    ),
];

/// The configuration reference: one row per key (and per flag without a key), generated
/// from the flags' help texts, which name the key and the default as `[KEY; default: X]`
/// (or `[KEY: VALUE]` for a switch). docs/configuration.md carries it between markers, and
/// a test fails when the committed copy differs, so the flags stay its one definition.
pub fn config_reference() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let daemon = cmd
        .find_subcommand("daemon")
        .expect("the daemon subcommand is defined in flags.rs");
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    for arg in cmd.get_arguments().chain(daemon.get_arguments()) {
        let Some(long) = arg.get_long() else { continue };
        // The global flags come again with the subcommand.
        if matches!(long, "help" | "version" | "daemon" | "config")
            || rows.iter().any(|r| r.1.starts_with(&format!("`--{long}")))
        {
            continue;
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
            .replace('\n', " ");
        let (text, key, default) = split_help(&help);
        let flag = match arg.get_value_names().and_then(|v| v.first()) {
            Some(v) if arg.get_action().takes_values() => format!("`--{long} {v}`"),
            _ => format!("`--{long}`"),
        };
        rows.push((key, flag, default, text));
    }
    for (key, default, text) in FILE_ONLY_KEYS {
        rows.push((
            format!("`{key}`"),
            "(file only)".into(),
            (*default).into(),
            (*text).into(),
        ));
    }
    let mut out =
        String::from("| key | flag | default | what it does |\n| --- | --- | --- | --- |\n");
    for (key, flag, default, text) in rows {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&key),
            cell(&flag),
            cell(&default),
            cell(&text)
        ));
    }
    out
}

/// A help text's description, key and default: `Text [key; default: X].` gives
/// (`Text`, `` `key` ``, `X`); `[key: false]` (a switch) gives the key with that value as
/// the default's opposite; no bracket: a flag without a key.
fn split_help(help: &str) -> (String, String, String) {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(open) = help.rfind(" [") else {
        return (help.trim_end_matches('.').into(), "-".into(), "-".into());
    };
    let text = help[..open].trim_end_matches('.').to_string();
    let inner = help[open + 2..].trim_end_matches('.').trim_end_matches(']');
    let (key, default) = match inner.split_once("; default: ") {
        Some((k, d)) => (k.to_string(), d.to_string()),
        None => match inner.split_once(": ") {
            // A switch that sets the key: its default is the other value.
            Some((k, "false")) => (k.to_string(), "true".to_string()),
            Some((k, "true")) => (k.to_string(), "false".to_string()),
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (inner.to_string(), "none".to_string()),
        },
    };
    (text, format!("`{key}`"), default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_completions() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out).expect("writing to a Vec cannot fail");
            let text = String::from_utf8(out).expect("completions are UTF-8");
            assert!(text.contains("query"), "{shell}: {text}");
        }
    }

    #[test]
    fn man_page_has_every_command() {
        let mut out = Vec::new();
        man_page(&mut out).expect("writing to a Vec cannot fail");
        let text = String::from_utf8(out).expect("the man page is UTF-8");
        for sub in Cli::command().get_subcommands() {
            let heading = format!(".SS \"diskd {}\"", sub.get_name());
            let plain = format!(".SS diskd {}", sub.get_name());
            assert!(
                text.contains(&heading) || text.contains(&plain),
                "no section for {}:\n{text}",
                sub.get_name()
            );
        }
    }

    /// The reference in docs/configuration.md is what the flags say. `DISKD_BLESS=1` writes
    /// it (after a flag changed) instead of failing.
    #[test]
    fn the_configuration_reference_is_generated_from_the_flags() {
        const BEGIN: &str = "<!-- BEGIN generated by `diskd` from src/flags.rs: do not edit -->\n";
        const END: &str = "<!-- END generated -->\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (head, rest) = doc
            .split_once(BEGIN)
            .expect("docs/configuration.md lost its BEGIN marker");
        let (committed, tail) = rest
            .split_once(END)
            .expect("docs/configuration.md lost its END marker");
        let generated = config_reference();
        if committed != generated {
            if std::env::var_os("DISKD_BLESS").is_some() {
                std::fs::write(path, format!("{head}{BEGIN}{generated}{END}{tail}")).unwrap();
            } else {
                panic!(
                    "docs/configuration.md differs from the flags; run \
                     `DISKD_BLESS=1 cargo test --lib generate` and commit it"
                );
            }
        }
        for key in [
            "`multicast.group`",
            "`gossip.seeds`",
            "`peers.max_records`",
            "`socket`",
        ] {
            assert!(generated.contains(key), "{key} missing from the reference");
        }
    }
}
