//! Running one hook command: as the daemon's user or the hook's `user`, never through a
//! shell.
//!
//! - **argv**, exactly as configured: a label full of quotes, `$(...)` or newlines is one
//!   environment value of the command, never part of a command line.
//! - **stdin** is `/dev/null`; **stdout and stderr** are read as they come and logged line
//!   by line as `hook[i]: LINE` (at most [`MAX_LINE`] bytes a line and [`MAX_LINES`] lines
//!   a run; control characters escaped), the rest is read and counted, so a chatty hook
//!   neither floods the log nor blocks on a full pipe.
//! - **Its own process group** (`process_group(0)`): at the timeout the whole group gets
//!   SIGTERM, then SIGKILL after [`TERM_GRACE`] (children included: a `sleep &` left behind
//!   by a script is killed with it). When the command exits by itself, whatever it left
//!   running in its group is killed (SIGKILL) too: a run is over when it has ended, so the
//!   concurrency cap and the timeout mean something. Work meant to outlive its hook must
//!   leave the group (`setsid`, `systemd-run`).
//! - At the daemon's shutdown: SIGTERM to the group, SIGKILL after [`STOP_GRACE`], inside
//!   the daemon's drain deadline.
//! - **Environment**: the daemon's, without systemd's per-service variables and without any
//!   inherited `DISKD_*`, plus the event's `DISKD_*` (see [`Runner::environment`]).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diskd_watchers::process::GroupGuard;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Hook};
use crate::model::{rfc3339, FleetEvent, NodeInfo};

/// Longest output line logged; the rest of a longer line is left out (marked `...`).
pub const MAX_LINE: usize = 1024;
/// Output lines logged per run (stdout and stderr together); later ones are counted only.
pub const MAX_LINES: usize = 100;
/// Between SIGTERM and SIGKILL at a hook's timeout.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// Between SIGTERM and SIGKILL when the daemon stops (its drain deadline is 1 s).
pub const STOP_GRACE: Duration = Duration::from_millis(400);
/// After the command is over, its output is read this much longer at most (a process that
/// left the group may still hold the pipes).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// A process SIGKILLed normally goes at once, but one in uninterruptible I/O only when the
/// I/O returns; the run does not wait longer than this for it (tokio reaps it later).
const REAP_GRACE: Duration = Duration::from_millis(300);

/// Systemd's variables for the daemon's own service; a hook must not talk to systemd as if
/// it were the daemon, nor think it was handed the daemon's sockets.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The command exited (or died of a signal diskd did not send).
    Exited(ExitStatus),
    /// It could not be started (not found, not executable, ...).
    NotStarted(io::Error),
    /// It ran past its timeout and was killed with its process group.
    TimedOut(Ended),
    /// The daemon stopped; it was killed with its process group.
    Stopped(Ended),
}

/// How a command that was told to stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited within the grace after SIGTERM (what it left in its group then got
    /// SIGKILL).
    OnTerm,
    /// It was still running at the end of the grace: SIGKILL.
    Killed,
}

/// What every run shares: this node, the socket, the environment to clear.
#[derive(Debug)]
pub struct Runner {
    node: String,
    socket: OsString,
    remove: Vec<OsString>,
}

impl Runner {
    /// A runner for this daemon.
    pub fn new(config: &Config, node: &NodeInfo) -> Runner {
        let remove = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| {
                let k = k.to_string_lossy();
                k.starts_with("DISKD_") || NOT_INHERITED.contains(&k.as_ref())
            })
            .collect();
        Runner {
            node: node.name.clone(),
            socket: config.socket.clone().into_os_string(),
            remove,
        }
    }

    /// The `DISKD_*` variables of a run. Absent values are empty strings. A value is cut
    /// at a NUL byte (the environment cannot hold one): a peer's label never holds one
    /// (the wire refuses it), but a local label decoded from blkid's `\x00` escape can.
    pub fn environment(&self, e: &FleetEvent) -> Vec<(&'static str, OsString)> {
        let d = e.disk.as_ref();
        let text = |v: Option<&str>| -> OsString {
            let v = v.unwrap_or("");
            OsString::from(v.split('\0').next().unwrap_or(""))
        };
        vec![
            ("DISKD_EVENT", text(Some(e.kind.name()))),
            ("DISKD_HOST", text(Some(&e.host))),
            ("DISKD_ADDR", text(e.addr.as_deref())),
            ("DISKD_UUID", text(d.and_then(|d| d.uuid.as_deref()))),
            ("DISKD_LABEL", text(d.and_then(|d| d.label.as_deref()))),
            ("DISKD_DEVICE", text(d.map(|d| d.device.as_str()))),
            ("DISKD_FSTYPE", text(d.and_then(|d| d.fstype.as_deref()))),
            (
                "DISKD_MOUNTPOINT",
                text(d.and_then(|d| d.mountpoints.first()).map(String::as_str)),
            ),
            (
                "DISKD_SERIAL",
                text(d.and_then(|d| d.hardware.serial.as_deref())),
            ),
            ("DISKD_WWN", text(d.and_then(|d| d.hardware.wwn.as_deref()))),
            (
                "DISKD_MODEL",
                text(d.and_then(|d| d.hardware.model.as_deref())),
            ),
            (
                "DISKD_SIZE",
                text(
                    d.and_then(|d| d.hardware.size)
                        .map(|s| s.to_string())
                        .as_deref(),
                ),
            ),
            (
                "DISKD_HEALTH",
                text(d.and_then(|d| d.health.as_ref()).map(|h| h.state.as_str())),
            ),
            (
                "DISKD_HEALTH_REASONS",
                text(
                    d.and_then(|d| d.health.as_ref())
                        .map(|h| h.reasons.join("; "))
                        .as_deref(),
                ),
            ),
            ("DISKD_HEALTH_WAS", text(e.health_was.map(|s| s.as_str()))),
            (
                "DISKD_FS_AVAIL",
                text(d.and_then(|d| d.fs).map(|u| u.avail.to_string()).as_deref()),
            ),
            ("DISKD_LOCAL", text(Some(if e.local { "1" } else { "0" }))),
            ("DISKD_SEALED", text(Some(if e.sealed { "1" } else { "0" }))),
            ("DISKD_NODE", text(Some(&self.node))),
            ("DISKD_TIME", text(Some(&rfc3339(e.time)))),
            ("DISKD_SOCKET", self.socket.clone()),
        ]
    }

    /// Run `hook` for `event` to its end, its timeout, or the daemon's shutdown.
    pub async fn run(
        &self,
        hook: &Hook,
        event: &FleetEvent,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut child = match self.spawn(hook, event).await {
            Ok(c) => c,
            Err(e) => return Outcome::NotStarted(e),
        };
        let mut group = GroupGuard::of(&child);
        let budget = AtomicUsize::new(MAX_LINES);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let index = hook.index;
        let output = async {
            tokio::join!(
                pump(stdout, index, "stdout", &budget),
                pump(stderr, index, "stderr", &budget)
            );
        };
        tokio::pin!(output);
        let mut output_done = false;
        let deadline = tokio::time::sleep(hook.timeout);
        tokio::pin!(deadline);

        enum End {
            Exited(io::Result<ExitStatus>),
            TimedOut,
            Stopped,
        }
        let end = loop {
            tokio::select! {
                status = child.wait() => break End::Exited(status),
                () = &mut output, if !output_done => output_done = true,
                () = &mut deadline => break End::TimedOut,
                () = shutdown.cancelled() => break End::Stopped,
            }
        };
        let outcome = match end {
            End::Exited(status) => {
                // Whatever it left running in its group goes with it.
                if group.signal(Signal::SIGKILL) {
                    tracing::info!(
                        hook = index,
                        "hook[{index}]: killed what it left running in its process group"
                    );
                }
                match status {
                    Ok(s) => Outcome::Exited(s),
                    Err(e) => Outcome::NotStarted(e),
                }
            }
            End::TimedOut => {
                let grace = async {
                    tokio::select! {
                        () = tokio::time::sleep(TERM_GRACE) => {}
                        () = shutdown.cancelled() => {}
                    }
                };
                let ended =
                    terminate(&mut child, &mut group, grace, &mut output, &mut output_done).await;
                Outcome::TimedOut(ended)
            }
            End::Stopped => {
                let grace = tokio::time::sleep(STOP_GRACE);
                let ended =
                    terminate(&mut child, &mut group, grace, &mut output, &mut output_done).await;
                Outcome::Stopped(ended)
            }
        };
        group.disarm();
        // At shutdown the daemon's drain deadline is near: no more waiting for output.
        let output_grace = if shutdown.is_cancelled() {
            Duration::from_millis(50)
        } else {
            OUTPUT_GRACE
        };
        if !output_done
            && tokio::time::timeout(output_grace, &mut output)
                .await
                .is_err()
        {
            tracing::debug!(
                hook = index,
                "hook[{index}]: its output is still open (a process outside its group?); no longer read"
            );
        }
        outcome
    }

    async fn spawn(&self, hook: &Hook, event: &FleetEvent) -> io::Result<Child> {
        let (program, args) = hook
            .run
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let env = self.environment(event);
        // Its own group, so that it can be killed as a whole, with whatever it started,
        // without touching the daemon.
        diskd_watchers::process::spawn_in_group(|| {
            let mut cmd = Command::new(program);
            cmd.args(args);
            for k in &self.remove {
                cmd.env_remove(k);
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            if let Some(who) = &hook.run_as {
                run_as(&mut cmd, who);
            }
            cmd
        })
        .await
    }
}

/// Make `cmd` run as `who`, as systemd's `User=` does: its supplementary groups, gid and
/// uid are set in the child before exec (in that order: after `setuid` it could no longer
/// change its groups), and `HOME`, `USER` and `LOGNAME` are the user's.
#[allow(unsafe_code)]
fn run_as(cmd: &mut Command, who: &crate::config::RunAs) {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    cmd.env("HOME", &who.home)
        .env("USER", &who.user)
        .env("LOGNAME", &who.user);
    let groups: Vec<Gid> = who.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    // SAFETY: between fork and exec only setgroups, setresgid and setresuid run: plain
    // system calls on data prepared before the fork (no allocation, no lock).
    unsafe {
        cmd.pre_exec(move || {
            setgroups(&groups)?;
            setresgid(gid, gid, gid)?;
            setresuid(uid, uid, uid)?;
            Ok(())
        });
    }
}

/// SIGTERM the group, wait for the command until `grace` ends, then SIGKILL the group
/// (also what outlived the command) and reap it, reading output meanwhile.
async fn terminate(
    child: &mut Child,
    group: &mut GroupGuard,
    grace: impl std::future::Future<Output = ()>,
    output: &mut (impl std::future::Future<Output = ()> + Unpin),
    output_done: &mut bool,
) -> Ended {
    group.signal(Signal::SIGTERM);
    tokio::pin!(grace);
    let ended = loop {
        tokio::select! {
            _ = child.wait() => break Ended::OnTerm,
            () = &mut *output, if !*output_done => *output_done = true,
            () = &mut grace => break Ended::Killed,
        }
    };
    group.signal(Signal::SIGKILL);
    if ended == Ended::OnTerm {
        return ended;
    }
    // In case the command left its group, it is killed directly too.
    let _ = child.start_kill();
    let reaped = async {
        loop {
            tokio::select! {
                _ = child.wait() => break,
                () = &mut *output, if !*output_done => *output_done = true,
            }
        }
    };
    if tokio::time::timeout(REAP_GRACE, reaped).await.is_err() {
        tracing::warn!("a killed hook has not exited yet (stuck in I/O?); left to be reaped later");
    }
    ended
}

/// Read one output stream to its end, logging each line while the run's budget lasts.
/// Memory is bounded by [`MAX_LINE`] whatever the command writes.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    hook: usize,
    stream: &'static str,
    budget: &AtomicUsize,
) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut chunk = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    // Inside a line longer than MAX_LINE, after its first MAX_LINE bytes were logged.
    let mut skipping = false;
    let mut unlogged = 0usize;
    let mut emit = |line: &[u8], cut: bool| {
        // Take one line from the budget; none left: count it.
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            unlogged += 1;
            return;
        }
        let text = printable(line);
        let more = if cut { " ..." } else { "" };
        tracing::info!(hook, stream, "hook[{hook}]: {text}{more}");
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                if !skipping {
                    emit(&line, false);
                }
                line.clear();
                skipping = false;
            } else if !skipping {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&line, true);
                    line.clear();
                    skipping = true;
                }
            }
        }
    }
    if !line.is_empty() && !skipping {
        emit(&line, false);
    }
    if unlogged > 0 {
        tracing::info!(
            hook,
            stream,
            "hook[{hook}]: {unlogged} more lines on {stream} not logged (at most {MAX_LINES} a run)"
        );
    }
}

/// A line as log text: lossy UTF-8, no trailing CR, control characters escaped (a hook's
/// output must not be able to forge log lines or drive a terminal).
fn printable(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At start, say so when a hook's program is not there (it may be installed later, so
/// this is not a config error; each run that cannot start counts as a failure).
pub fn warn_if_missing(hook: &Hook) {
    let program = &hook.run[0];
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    if !found {
        tracing::warn!(
            hook = hook.index,
            "hook[{}]: {program:?} is not there (yet?); its runs will fail until it is",
            hook.index
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_printable_log_text() {
        assert_eq!(printable(b"plain\r"), "plain");
        assert_eq!(printable(b"a\x1b[31mred\ttab"), "a\\u{1b}[31mred\ttab");
        assert_eq!(printable(b"\xff ok"), "\u{fffd} ok");
    }
}
