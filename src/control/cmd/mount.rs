//! `mount` and `umount`: get a disk mounted on the host it is attached to, and reach it
//! from here; and undo both.

use std::path::PathBuf;

use super::json_body;
use super::list::no_match;
use crate::control::Context;
use crate::model::AttachRecord;
use crate::mount::MountError;
use crate::protocol::commands::{Mount, Umount};
use crate::protocol::frame::{Reply, Status};
use crate::store::{Store, StoreError};
use serde::Serialize;

#[derive(Serialize)]
struct MountOut<'a> {
    host: &'a str,
    device: &'a str,
    mountpoint: &'a str,
    attached: Option<String>,
}

#[derive(Serialize)]
struct UmountOut<'a> {
    host: &'a str,
    device: &'a str,
    mountpoint: &'a str,
    detached: Option<String>,
}

/// A mount error as a reply: the kind decides the status (and the client's exit code).
fn failed(e: MountError) -> Reply {
    let text = e.to_string();
    Reply::status(match e {
        MountError::NoMatch(m) => return no_match(m, false),
        MountError::Ambiguous(_) => Status::Usage(text),
        MountError::Refused(_) => Status::Refused(text),
        MountError::NotHere { .. }
        | MountError::Command { .. }
        | MountError::Dir { .. }
        | MountError::Store(_)
        | MountError::Peer { .. }
        | MountError::Attach { .. } => Status::Error(text),
    })
}

/// The reply: `out` as JSON, or else the lines of `text`.
fn answer(json: bool, out: &impl Serialize, text: Vec<String>) -> Reply {
    Reply::ok(if json { json_body(out) } else { text })
}

/// Write to the store off the runtime's threads (the record is flushed: an fsync). The
/// command has done its work by then, so a failure is only logged: "cannot {what}".
async fn write_store(
    ctx: &Context,
    what: &str,
    write: impl FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
) {
    let store = ctx.store.clone();
    let done = tokio::task::spawn_blocking(move || write(&store)).await;
    if let Err(e) = done
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        tracing::warn!("cannot {what}: {e}");
    }
}

/// Whether `dir` is a mountpoint right now.
fn is_mounted(dir: &str) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    diskd_watchers::mounts::parse_mountinfo(&text)
        .iter()
        .any(|m| m.mountpoint == dir)
}

/// `mount`: on the owner, then attach here if asked.
pub async fn mount(cmd: &Mount, ctx: &Context) -> Reply {
    if let Some(dir) = &cmd.attach {
        if !dir.starts_with('/') {
            return Reply::status(Status::Usage(format!(
                "mount: --attach needs an absolute directory, not {dir:?}"
            )));
        }
    }
    let mounts = &ctx.mounts;
    let (r, uuid) = match mounts.resolve(&cmd.term) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let m = match mounts.on_owner(&r, &uuid, cmd.read_only, false).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let mut attached = None;
    if let Some(dir) = &cmd.attach {
        let already = ctx.store.attach(&uuid).is_some_and(|a| a.dir == *dir) && is_mounted(dir);
        if !already {
            let addr = r.at.addr.clone().unwrap_or_else(|| "127.0.0.1".into());
            if let Err(e) = mounts
                .attach(&addr, &r.at.host, &m.mountpoint, &PathBuf::from(dir))
                .await
            {
                ctx.event("mount", format!("attach of {uuid} at {dir} failed: {e}"));
                return failed(MountError::Attach {
                    host: r.at.host.clone(),
                    mountpoint: m.mountpoint.clone(),
                    source: Box::new(e),
                });
            }
            let rec = AttachRecord {
                dir: dir.clone(),
                host: r.at.host.clone(),
                path: m.mountpoint.clone(),
            };
            let key = uuid.clone();
            write_store(ctx, "remember the attach", move |s| {
                s.put_attach(&key, &rec)
            })
            .await;
            ctx.event(
                "mount",
                format!("attached {uuid} of {} at {dir}", r.at.host),
            );
        }
        attached = Some(dir.clone());
    }
    let out = MountOut {
        host: &r.at.host,
        device: &m.device,
        mountpoint: &m.mountpoint,
        attached,
    };
    let mut text = vec![format!(
        "{} of {} is at {} ({})",
        out.device, out.host, out.mountpoint, m.message
    )];
    if let Some(dir) = &out.attached {
        text.push(format!("reachable here at {dir}"));
    }
    answer(cmd.json, &out, text)
}

/// `umount`: detach here, then unmount on the owner.
pub async fn umount(cmd: &Umount, ctx: &Context) -> Reply {
    let mounts = &ctx.mounts;
    let (r, uuid) = match mounts.resolve(&cmd.term) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let mut detached = None;
    if let Some(a) = ctx.store.attach(&uuid) {
        if is_mounted(&a.dir) {
            if let Err(e) = crate::mount::detach(std::path::Path::new(&a.dir)).await {
                return Reply::status(Status::Error(format!("cannot detach {}: {e}", a.dir)));
            }
        }
        let key = uuid.clone();
        write_store(ctx, "forget the attach", move |s| s.remove_attach(&key)).await;
        ctx.event("mount", format!("detached {uuid} from {}", a.dir));
        detached = Some(a.dir);
    }
    let m = match mounts.on_owner(&r, &uuid, false, true).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let out = UmountOut {
        host: &r.at.host,
        device: &m.device,
        mountpoint: &m.mountpoint,
        detached,
    };
    let mut text = Vec::new();
    if let Some(dir) = &out.detached {
        text.push(format!("detached {dir}"));
    }
    text.push(format!(
        "{} of {}: {} ({})",
        out.device, out.host, m.message, out.mountpoint
    ));
    answer(cmd.json, &out, text)
}
