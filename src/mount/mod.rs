//! Mounting disks on request: the policy, the mount itself, and reaching a remote mount
//! from here (`--attach`).
//!
//! Nothing user-controlled reaches a shell: `mount`, `umount`, the attach command and
//! `fusermount` run as argv vectors. The directory a disk is mounted on is
//! `mount.root/<uuid>`, and the UUID is validated first (letters, digits and dashes only),
//! so no label, UUID or path can name a directory outside `mount.root`.

mod service;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

pub use crate::model::valid_uuid;
use crate::model::Sighting;
use crate::peer::PeerError;
pub use service::{MountDeps, MountService};

/// How long `mount`, `umount` and attach commands may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a mount, unmount, attach or detach did not happen. The control server maps the
/// kind to the reply status (and so to the client's exit code); nobody matches on text.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No disk matches the term, or none is live.
    #[error("{0}")]
    NoMatch(String),
    /// Several live disks match the term.
    #[error("{0}")]
    Ambiguous(String),
    /// Policy (ours or the owner's) says no, or the disk cannot be mounted by diskd.
    #[error("{0}")]
    Refused(String),
    /// The disk is not attached to this machine.
    #[error("disk {uuid} is not attached to {host}")]
    NotHere {
        /// The disk.
        uuid: String,
        /// This node.
        host: String,
    },
    /// A program (`mount`, `umount`, the attach command) could not run or failed.
    #[error("{program}: {message}")]
    Command {
        /// The program.
        program: String,
        /// What went wrong (its first line of stderr, or why it did not run).
        message: String,
    },
    /// The store could not be read.
    #[error("cannot read the store: {0}")]
    Store(String),
    /// A directory could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The disk's host could not be asked.
    #[error("{host}: {source}")]
    Peer {
        /// The owner.
        host: String,
        /// What the peer layer said.
        #[source]
        source: PeerError,
    },
    /// It was mounted on its host, but reaching it from here failed.
    #[error("mounted on {host} at {mountpoint}, but the attach failed: {source}")]
    Attach {
        /// The owner.
        host: String,
        /// Where it is mounted there.
        mountpoint: String,
        /// Why the attach failed.
        #[source]
        source: Box<MountError>,
    },
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A user of our control socket.
    Local,
    /// A peer, over the network.
    Remote,
}

/// A disk resolved from a query term to exactly one live location.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The sighting (host, node id, address, disk).
    pub at: Sighting,
    /// Whether it is attached to this machine.
    pub local: bool,
}

/// The result of a mount on the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// Device on the owner.
    pub device: String,
    /// Where it is mounted on the owner.
    pub mountpoint: String,
    /// What happened, for logs and replies.
    pub message: String,
}

/// Current mountpoints of a local device, read from the kernel now.
fn current_mountpoints(device: &str) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = diskd_watchers::mounts::parse_mountinfo(&text);
    let info = diskd_watchers::DiskInfo {
        uuid: None,
        label: None,
        device: device.to_string(),
        fstype: None,
        devno: diskd_watchers::disks::device_number(device),
        contents: diskd_watchers::Contents::Signature,
    };
    diskd_watchers::mounts::mountpoints_for(&info, &mounts)
}

/// Run a program (an argv, never a shell) with a deadline; its first stderr line on failure.
async fn run(program: &str, args: &[&str]) -> Result<(), MountError> {
    let fail = |message: String| MountError::Command {
        program: program.to_string(),
        message,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(fail(format!("did not finish within {COMMAND_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().next().unwrap_or("").trim();
            Err(fail(format!("failed ({}): {line}", out.status)))
        }
    }
}

fn create_dir(path: &Path) -> Result<(), MountError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|source| MountError::Dir {
            path: path.to_path_buf(),
            source,
        })
}

/// Build the attach argv from the template: words split as a shell would (quotes keep a
/// path with spaces one word; nothing is ever run by a shell), then `{addr}`,
/// `{host}`, `{path}` and `{target}` replaced inside each word, so a value is never split
/// or interpreted. An IPv6 `{addr}` is bracketed (`[fd00::1]`) for `host:path` syntax.
pub fn attach_argv(
    template: &str,
    addr: &str,
    host: &str,
    path: &str,
    target: &str,
) -> Vec<String> {
    let addr = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]"),
        _ => addr.to_string(),
    };
    // The template was checked when the config was loaded; one that does not split (an
    // unclosed quote) gives an empty argv, which the caller reports.
    crate::protocol::frame::split_command(template)
        .unwrap_or_default()
        .into_iter()
        .map(|word| {
            // One pass over the word, so a value containing "{path}" is not expanded again.
            let mut out = String::new();
            let mut rest = word.as_str();
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                let (value, len) = [
                    ("{addr}", addr.as_str()),
                    ("{host}", host),
                    ("{path}", path),
                    ("{target}", target),
                ]
                .iter()
                .find(|(k, _)| tail.starts_with(k))
                .map(|(k, v)| (*v, k.len()))
                .unwrap_or(("{", 1));
                out.push_str(value);
                rest = &tail[len..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// Undo an attach: `fusermount3 -u` (or `fusermount -u`), else `umount`.
pub async fn detach(dir: &Path) -> Result<(), MountError> {
    let d = dir.display().to_string();
    let mut last = None;
    for (program, args) in [
        ("fusermount3", vec!["-u", "--", d.as_str()]),
        ("fusermount", vec!["-u", "--", d.as_str()]),
        ("umount", vec!["--", d.as_str()]),
    ] {
        match run(program, &args).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| MountError::Command {
        program: "umount".into(),
        message: "nothing could detach it".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_uuids_can_name_a_directory() {
        for ok in ["6fe176fb-83a0-4e4a-af6a-f578ca7a1f65", "ABCD-1234", "1a2b"] {
            assert!(valid_uuid(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "-",
            "a/b",
            "../etc",
            "x; touch /tmp/pwned",
            "$(id)",
            "a b",
            "a\nb",
            &"a".repeat(65),
        ] {
            assert!(!valid_uuid(bad), "{bad:?}");
        }
    }

    #[test]
    fn attach_placeholders_stay_single_arguments() {
        let argv = attach_argv(
            "sshfs -o reconnect {addr}:{path} {target}",
            "198.18.0.1",
            "node-a",
            "/srv/diskd/with space; $(id)",
            "/mnt/x y",
        );
        assert_eq!(
            argv,
            vec![
                "sshfs",
                "-o",
                "reconnect",
                "198.18.0.1:/srv/diskd/with space; $(id)",
                "/mnt/x y"
            ]
        );
        let argv = attach_argv(
            "sshfs {addr}:{path} {target}",
            "fd00::1",
            "h",
            "/p{target}",
            "/t",
        );
        assert_eq!(argv, vec!["sshfs", "[fd00::1]:/p{target}", "/t"]);
        // Quotes keep a word with spaces whole, as a shell would (but no shell runs).
        let argv = attach_argv(
            "sshfs -o 'IdentityFile=/root/my key' {addr}:{path} {target}",
            "198.18.0.1",
            "a",
            "/p",
            "/t",
        );
        assert_eq!(
            argv,
            vec![
                "sshfs",
                "-o",
                "IdentityFile=/root/my key",
                "198.18.0.1:/p",
                "/t"
            ]
        );
        assert_eq!(
            attach_argv("x {unknown} {", "a", "h", "p", "t"),
            vec!["x", "{unknown}", "{"]
        );
    }
}
