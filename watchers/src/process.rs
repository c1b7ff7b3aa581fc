//! Starting a child the daemon may have to kill as a whole: blkid for the disk watcher, an
//! operator's hook command for the daemon's hooks. One way to do it, so both get the same
//! guarantees.

use std::io;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
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

/// The process group of a child [`spawn_in_group`] started, to signal as a whole; SIGKILLed
/// if dropped armed (the run abandoned half-way, e.g. the runtime going down):
/// `kill_on_drop` reaches only the command itself, not what it started.
///
/// After the command has exited and been reaped, its group is signalled once more to end
/// what it left running, then disarmed: the group id is the reaped command's pid, which
/// the kernel hands out again only after every process of the group is gone and the pid
/// space has wrapped, so that one signal right after reaping cannot reach a stranger.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    /// The group of `child` (with `process_group(0)` its pid is the group id); unarmed if
    /// it has already been reaped.
    pub fn of(child: &Child) -> GroupGuard {
        GroupGuard {
            pgid: child.id().and_then(|id| i32::try_from(id).ok()),
        }
    }

    /// Signal the group; true when some process got it.
    pub fn signal(&self, sig: Signal) -> bool {
        let Some(pgid) = self.pgid else {
            return false;
        };
        match killpg(Pid::from_raw(pgid), sig) {
            Ok(()) => true,
            Err(nix::errno::Errno::ESRCH) => false,
            Err(e) => {
                tracing::warn!(pgid, error = %e, "could not signal a process group");
                false
            }
        }
    }

    /// Stop guarding: nothing is signalled on drop.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}
