//! Running blkid: a child in a process group of its own, its output capped, killed with
//! its group at the timeout.

use super::*;

/// More stdout than this is not a device list but a runaway program; 16 MiB is thousands of
/// times what a machine with hundreds of disks produces.
pub(super) const MAX_STDOUT: usize = 16 * 1024 * 1024;

/// Only the first line of stderr is reported, but the rest must still be drained so the
/// child does not block on a full pipe; this much is kept.
pub(super) const MAX_STDERR_KEPT: usize = 64 * 1024;

/// Error messages quote at most this many characters of stderr, so one chatty failure
/// cannot flood logs and `status`.
pub(super) const MAX_STDERR_LINE: usize = 200;

/// After SIGKILL a process normally disappears at once, but one stuck in uninterruptible
/// I/O (the very reason blkid hangs) only dies when the I/O returns; the scan does not wait
/// longer than this for it and leaves the reaping to tokio.
pub(crate) const REAP_GRACE: Duration = Duration::from_secs(2);

/// The argv actually run for a configured command.
///
/// A single word is taken to be blkid and gets `-c /dev/null -o export`: plain `blkid`
/// answers from its cache file (`/run/blkid/blkid.tab`), which may still list image files
/// probed earlier and devices that are gone; `-c /dev/null` makes it probe the devices in
/// `/proc/partitions` now, so the list is what is attached now. `-o export` is the form
/// whose escaping is unambiguous. A longer command is run exactly as given, so the operator
/// keeps full control. An empty command means plain `blkid`.
pub fn effective_argv(command: &[String]) -> Vec<String> {
    match command {
        [] => effective_argv(&["blkid".to_string()]),
        [program] => vec![
            program.clone(),
            "-c".to_string(),
            "/dev/null".to_string(),
            "-o".to_string(),
            "export".to_string(),
        ],
        _ => command.to_vec(),
    }
}

/// Starts the command in its own process group with stdin closed.
pub(super) async fn spawn(argv: &[String]) -> Result<Child, WatchError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(WatchError::NotFound {
            program: String::new(),
        });
    };
    crate::process::spawn_in_group(|| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    })
    .await
    .map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => WatchError::NotFound {
            program: program.clone(),
        },
        io::ErrorKind::PermissionDenied => WatchError::PermissionDenied {
            what: program.clone(),
        },
        _ => WatchError::Io {
            what: format!("running {program}"),
            source: e,
        },
    })
}

pub(super) enum RunFail {
    TooBig,
    Io(io::Error),
}

impl From<io::Error> for RunFail {
    fn from(e: io::Error) -> Self {
        RunFail::Io(e)
    }
}

/// Reads stdout and stderr while waiting for the child, all at once: reading one pipe to
/// the end before the other (or waiting before reading) deadlocks as soon as the child
/// fills the pipe we are not reading.
pub(super) async fn collect(
    child: &mut Child,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    max_stdout: usize,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), RunFail> {
    let (status, out, err) = tokio::try_join!(
        async { child.wait().await.map_err(RunFail::Io) },
        read_capped(stdout, max_stdout),
        read_stderr(stderr),
    )?;
    Ok((status, out, err))
}

/// All of stdout, or [`RunFail::TooBig`] beyond `max` bytes.
pub(super) async fn read_capped<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    max: usize,
) -> Result<Vec<u8>, RunFail> {
    let Some(pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    // One byte more than allowed tells "exactly the limit" from "over it".
    pipe.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(RunFail::TooBig);
    }
    Ok(buf)
}

pub(super) async fn read_stderr<R: AsyncRead + Unpin>(pipe: Option<R>) -> Result<Vec<u8>, RunFail> {
    let Some(mut pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = MAX_STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// Waits for a killed child so it does not linger as a zombie, but only briefly (see
/// [`REAP_GRACE`]).
pub(super) async fn reap(child: &mut Child, program: &str) {
    // In case the child left its group, kill it directly as well.
    let _ = child.start_kill();
    if tokio::time::timeout(REAP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            program,
            "killed child has not exited yet (stuck in I/O?); leaving it to be reaped later"
        );
    }
}

/// Runs `argv` for at most `timeout`, in a process group of its own: its exit status,
/// stdout (at most `max_stdout` bytes, or [`WatchError::BadOutput`]) and (capped) stderr,
/// or why it did not run to its end. Whatever way it ends, its process group is killed,
/// so nothing it started outlives it. Shared by every watcher that runs a program (blkid,
/// smartctl), so all get the same guarantees.
pub(crate) async fn run_capped(
    argv: &[String],
    timeout: Duration,
    max_stdout: usize,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), WatchError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = spawn(argv).await?;
    let mut group = GroupGuard::of(&child);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let outcome =
        tokio::time::timeout(timeout, collect(&mut child, stdout, stderr, max_stdout)).await;
    match outcome {
        Ok(Ok(done)) => {
            // Reaped: what it left running in its group goes with it.
            group.signal(Signal::SIGKILL);
            group.disarm();
            Ok(done)
        }
        Ok(Err(fail)) => {
            group.signal(Signal::SIGKILL);
            reap(&mut child, &program).await;
            group.disarm();
            Err(match fail {
                RunFail::TooBig => WatchError::BadOutput(format!(
                    "{program} wrote more than {max_stdout} bytes to stdout"
                )),
                RunFail::Io(source) => WatchError::Io {
                    what: format!("reading from {program}"),
                    source,
                },
            })
        }
        Err(_elapsed) => {
            group.signal(Signal::SIGKILL);
            reap(&mut child, &program).await;
            group.disarm();
            Err(WatchError::TimedOut { program, timeout })
        }
    }
}

/// The first non-empty line of stderr, trimmed and capped (see [`MAX_STDERR_LINE`]).
pub(crate) fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(MAX_STDERR_LINE)
        .collect()
}
