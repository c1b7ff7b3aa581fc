//! Shell completions and the man page, generated from the clap definitions in `flags`.
//!
//! Nothing here is written by hand twice: a new flag or subcommand in `flags` shows up in
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

#[cfg(test)]
mod reference;

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
}
