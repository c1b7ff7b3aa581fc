//! Starting a child the daemon may have to kill as a whole: blkid for the disk watcher, an
//! operator's hook command for the daemon's hooks. One way to do it, so both get the same
//! guarantees.

use std::io;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How often spawning is retried when the executable is busy.
const SPAWN_ATTEMPTS: u32 = 5;

/// Start the command `make` builds in a process group of its own (so it and whatever it
/// starts can be killed together without touching the daemon), stdin closed, stdout and
/// stderr piped, killed if its handle is dropped.
///
/// `ETXTBSY` is retried a few times (20, 40, ... ms apart): a script that was just
/// written may still be open for writing in a process another thread forked meanwhile,
/// which clears within milliseconds. `make` is called once per attempt (a `Command` is
/// spent by a failed spawn).
pub async fn spawn_in_group(make: impl Fn() -> Command) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut cmd = make();
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempt < SPAWN_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}
