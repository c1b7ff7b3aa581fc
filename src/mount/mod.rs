//! Mounting disks on request: the policy, the mount itself, and reaching a remote mount
//! from here (`--attach`).
//!
//! Nothing user-controlled reaches a shell: `mount`, `umount`, the attach command and
//! `fusermount` run as argv vectors. The directory a disk is mounted on is
//! `mount.root/<uuid>`, and the UUID is validated first (letters, digits and dashes only),
//! so no label, UUID or path can name a directory outside `mount.root`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSetBuilder};
use tokio::process::Command;

use crate::daemon::context::{now, Context};
use crate::store::{DiskRecord, Sighting};

/// How long `mount`, `umount` and attach commands may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `uuid` can safely name a directory under `mount.root`.
pub fn valid_uuid(uuid: &str) -> bool {
    !uuid.is_empty()
        && uuid.len() <= 64
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && uuid.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A user of our control socket.
    Local,
    /// A peer, over the network.
    Remote,
}

/// The policy of the machine that owns the disk. Remote requests need `mount.enabled`,
/// keys, and a `mount.allow` match; local socket users need only the `mount.allow` match.
pub fn check_policy(ctx: &Context, origin: Origin, disk: &DiskRecord) -> Result<(), String> {
    let cfg = &ctx.config().mount;
    if origin == Origin::Remote {
        if !cfg.enabled {
            return Err(format!(
                "remote mounts are disabled on {} (mount.enabled is false)",
                ctx.node().name
            ));
        }
        if ctx.key_fingerprints().is_empty() {
            return Err(format!(
                "{} has no keys configured; remote mount requests are refused",
                ctx.node().name
            ));
        }
    }
    let mut set = GlobSetBuilder::new();
    for g in &cfg.allow {
        // Validated at start-up; a pattern that fails here simply matches nothing.
        if let Ok(glob) = Glob::new(g) {
            set.add(glob);
        }
    }
    let set = set.build().map_err(|e| format!("mount.allow: {e}"))?;
    let uuid_ok = disk.uuid.as_deref().is_some_and(|u| set.is_match(u));
    let label_ok = disk.label.as_deref().is_some_and(|l| set.is_match(l));
    if uuid_ok || label_ok {
        Ok(())
    } else {
        Err(format!(
            "disk {} does not match mount.allow on {}",
            disk.uuid.as_deref().unwrap_or(&disk.device),
            ctx.node().name
        ))
    }
}

/// A disk resolved from a query term to exactly one live location.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The sighting (host, node id, address, disk).
    pub at: Sighting,
    /// Whether it is attached to this machine.
    pub local: bool,
}

/// Why a term does not name exactly one live disk.
#[derive(Debug)]
pub enum ResolveError {
    /// Nothing live matches.
    None(String),
    /// Several live disks match.
    Ambiguous(String),
}

/// Resolve TERM (UUID, label, device) to exactly one live disk.
pub fn resolve(ctx: &Context, term: &str) -> Result<Resolved, ResolveError> {
    let store = ctx.store();
    let t = now();
    let found = store.find(term);
    let live: Vec<Sighting> = found
        .iter()
        .filter(|s| s.present && store.host_is_live(&s.node_id, t, ctx.peer_expiry()))
        .cloned()
        .collect();
    match live.len() {
        1 => {
            let at = live
                .into_iter()
                .next()
                .ok_or_else(|| ResolveError::None(String::new()))?;
            let local = at.node_id == ctx.node().id;
            Ok(Resolved { at, local })
        }
        0 if found.is_empty() => Err(ResolveError::None(format!("no disk matches {term:?}"))),
        0 => Err(ResolveError::None(format!(
            "{term:?} is not attached to any live host (last seen on {})",
            found
                .iter()
                .map(|s| s.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(ResolveError::Ambiguous(format!(
            "{} live disks match {term:?}: {}; name one by UUID",
            live.len(),
            live.iter()
                .map(|s| format!(
                    "{} on {} ({})",
                    s.disk.uuid.as_deref().unwrap_or("-"),
                    s.host,
                    s.disk.device
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
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

fn our_disk(ctx: &Context, uuid: &str) -> Option<DiskRecord> {
    ctx.store().local_inventory().into_iter().find(|d| {
        d.uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
    })
}

/// Where diskd mounts a disk: `mount.root/<uuid>`.
pub fn mountpoint_for(ctx: &Context, uuid: &str) -> Result<PathBuf, String> {
    if !valid_uuid(uuid) {
        return Err(format!("{uuid:?} is not a UUID diskd can mount by"));
    }
    let root = &ctx.config().mount.root;
    let path = root.join(uuid);
    // valid_uuid rules out "/" and "..", so this always holds; checked anyway.
    if path.parent() != Some(root.as_path()) {
        return Err(format!("{uuid:?} would leave mount.root"));
    }
    Ok(path)
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
    };
    diskd_watchers::mounts::mountpoints_for(&info, &mounts)
}

async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{program} did not finish within {COMMAND_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().next().unwrap_or("").trim();
            Err(format!("{program} failed ({}): {line}", out.status))
        }
    }
}

/// Mount our disk `uuid` (policy already checked). Idempotent: a disk already mounted by
/// diskd, or by someone else, is reported where it is and not mounted twice.
pub async fn mount_local(ctx: &Context, uuid: &str, read_only: bool) -> Result<Mounted, String> {
    let disk = our_disk(ctx, uuid)
        .ok_or_else(|| format!("disk {uuid} is not attached to {}", ctx.node().name))?;
    let target = mountpoint_for(ctx, uuid)?;
    let target_text = target.display().to_string();
    let existing = current_mountpoints(&disk.device);
    if existing.contains(&target_text) {
        return Ok(Mounted {
            device: disk.device,
            mountpoint: target_text,
            message: "already mounted by diskd".into(),
        });
    }
    if let Some(elsewhere) = existing.first() {
        return Ok(Mounted {
            device: disk.device,
            mountpoint: elsewhere.clone(),
            message: format!("already mounted at {elsewhere} (not by diskd); not mounting twice"),
        });
    }
    if !disk.device.starts_with("/dev/") {
        return Err(format!("{} is not a device under /dev", disk.device));
    }
    create_dir(&target)?;
    let opts = if read_only {
        "nosuid,nodev,ro"
    } else {
        "nosuid,nodev"
    };
    run("mount", &["-o", opts, "--", &disk.device, &target_text]).await?;
    refresh_mounts(ctx).await;
    Ok(Mounted {
        device: disk.device,
        mountpoint: target_text,
        message: format!("mounted ({opts})"),
    })
}

/// Unmount our disk `uuid`, but only where diskd mounted it.
pub async fn unmount_local(ctx: &Context, uuid: &str) -> Result<Mounted, String> {
    let disk = our_disk(ctx, uuid)
        .ok_or_else(|| format!("disk {uuid} is not attached to {}", ctx.node().name))?;
    let target = mountpoint_for(ctx, uuid)?;
    let target_text = target.display().to_string();
    let existing = current_mountpoints(&disk.device);
    if !existing.contains(&target_text) {
        return match existing.first() {
            Some(other) => Err(format!(
                "{uuid} is mounted at {other}, not by diskd; not unmounting it"
            )),
            None => Ok(Mounted {
                device: disk.device,
                mountpoint: target_text,
                message: "was not mounted".into(),
            }),
        };
    }
    run("umount", &["--", &target_text]).await?;
    // Only an empty directory goes; a failure leaves it, which is harmless.
    let _ = std::fs::remove_dir(&target);
    refresh_mounts(ctx).await;
    Ok(Mounted {
        device: disk.device,
        mountpoint: target_text,
        message: "unmounted".into(),
    })
}

fn create_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The MountWatcher sees the change at once, so `list` (and the peers, via the
/// change-triggered announce) show it.
async fn refresh_mounts(ctx: &Context) {
    ctx.refresh_one("mounts", Duration::from_secs(10)).await;
}

/// Carry out a peer's mount request under our policy; every decision is logged and shown
/// to `debug` sessions.
pub async fn serve_remote(
    ctx: &Context,
    requester: &str,
    requester_id: &str,
    req: &crate::peer::wire::MountRequest,
) -> crate::peer::wire::MountReply {
    let what = if req.unmount { "unmount" } else { "mount" };
    let result = match our_disk(ctx, &req.uuid) {
        None => Err(format!(
            "disk {} is not attached to {}",
            req.uuid,
            ctx.node().name
        )),
        Some(disk) => match check_policy(ctx, Origin::Remote, &disk) {
            Err(why) => Err(why),
            Ok(()) if req.unmount => unmount_local(ctx, &req.uuid).await,
            Ok(()) => mount_local(ctx, &req.uuid, req.read_only).await,
        },
    };
    let reply = match result {
        Ok(m) => {
            tracing::info!(requester, uuid = %req.uuid, "{what} request granted: {} at {}", m.message, m.mountpoint);
            ctx.event(
                "mount",
                format!(
                    "{what} of {} for {requester}: {} ({})",
                    req.uuid, m.message, m.mountpoint
                ),
            );
            crate::peer::wire::MountReply {
                request_id: req.request_id,
                target: requester_id.to_string(),
                ok: true,
                device: Some(m.device),
                mountpoint: Some(m.mountpoint),
                message: m.message,
            }
        }
        Err(why) => {
            tracing::warn!(requester, uuid = %req.uuid, "{what} request refused: {why}");
            ctx.event(
                "mount",
                format!("{what} of {} for {requester} refused: {why}", req.uuid),
            );
            crate::peer::wire::MountReply {
                request_id: req.request_id,
                target: requester_id.to_string(),
                ok: false,
                device: None,
                mountpoint: None,
                message: why,
            }
        }
    };
    reply
}

/// Build the attach argv from the template: words split on whitespace, then `{addr}`,
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
    template
        .split_whitespace()
        .map(|word| {
            // One pass over the word, so a value containing "{path}" is not expanded again.
            let mut out = String::new();
            let mut rest = word;
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

/// Run the attach command so that `target` on this machine shows the remote mount.
pub async fn attach(
    ctx: &Context,
    addr: &str,
    host: &str,
    path: &str,
    target: &Path,
) -> Result<(), String> {
    create_dir(target)?;
    let argv = attach_argv(
        &ctx.config().mount.attach_command,
        addr,
        host,
        path,
        &target.display().to_string(),
    );
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "mount.attach_command is empty".to_string())?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(program, &args).await
}

/// Undo an attach: `fusermount3 -u` (or `fusermount -u`), else `umount`.
pub async fn detach(dir: &Path) -> Result<(), String> {
    let d = dir.display().to_string();
    let mut last = String::new();
    for (program, args) in [
        ("fusermount3", vec!["-u", "--", d.as_str()]),
        ("fusermount", vec!["-u", "--", d.as_str()]),
        ("umount", vec!["--", d.as_str()]),
    ] {
        match run(program, &args).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
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
        assert_eq!(
            attach_argv("x {unknown} {", "a", "h", "p", "t"),
            vec!["x", "{unknown}", "{"]
        );
    }
}
