//! `mount` and `umount`: get a disk mounted on the host it is attached to, and reach it
//! from here; and undo both.

use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::oneshot;

use super::list::no_match;
use super::{json_body, Args};
use crate::control::proto::{Reply, Status};
use crate::daemon::Context;
use crate::mount::{self, Mounted, Origin, ResolveError, Resolved};
use crate::peer::PeerRequest;
use crate::store::AttachRecord;

/// `mount TERM [--read-only] [--attach DIR] [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    term: String,
    read_only: bool,
    attach: Option<String>,
    json: bool,
}

/// `umount TERM [--json]`
#[derive(Debug, PartialEq, Eq)]
pub struct Umount {
    term: String,
    json: bool,
}

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

fn resolve(ctx: &Context, term: &str) -> Result<(Resolved, String), Reply> {
    let r = mount::resolve(ctx, term).map_err(|e| match e {
        ResolveError::None(m) => no_match(m, false),
        ResolveError::Ambiguous(m) => Reply::status(Status::Usage(m)),
    })?;
    let uuid = match r.at.disk.uuid.clone() {
        Some(u) if mount::valid_uuid(&u) => u,
        Some(u) => {
            return Err(Reply::status(Status::Refused(format!(
                "{u:?} is not a UUID diskd can mount by"
            ))))
        }
        None => {
            return Err(Reply::status(Status::Refused(format!(
                "{} has no UUID; diskd mounts disks by UUID",
                r.at.disk.device
            ))))
        }
    };
    Ok((r, uuid))
}

/// Mount or unmount on the owner: ourselves, or a peer through the peer layer.
async fn on_owner(
    ctx: &Context,
    r: &Resolved,
    uuid: &str,
    read_only: bool,
    unmount: bool,
) -> Result<Mounted, Reply> {
    if r.local {
        mount::check_policy(ctx, Origin::Local, &r.at.disk)
            .map_err(|why| Reply::status(Status::Refused(why)))?;
        let done = if unmount {
            mount::unmount_local(ctx, uuid).await
        } else {
            mount::mount_local(ctx, uuid, read_only).await
        };
        let what = if unmount { "unmount" } else { "mount" };
        return match done {
            Ok(m) => {
                tracing::info!(uuid, "local {what}: {} ({})", m.message, m.mountpoint);
                ctx.event(
                    "mount",
                    format!("local {what} of {uuid}: {} ({})", m.message, m.mountpoint),
                );
                Ok(m)
            }
            Err(e) => {
                tracing::warn!(uuid, "local {what} failed: {e}");
                ctx.event("mount", format!("local {what} of {uuid} failed: {e}"));
                Err(Reply::status(Status::Error(e)))
            }
        };
    }
    let Some(tx) = ctx.peer_requests() else {
        return Err(Reply::status(Status::Error(
            "the peer layer is not running".into(),
        )));
    };
    let (reply, answer) = oneshot::channel();
    let req = PeerRequest::Mount {
        target: r.at.node_id.clone(),
        uuid: uuid.to_string(),
        read_only,
        unmount,
        reply,
    };
    if tx.send(req).await.is_err() {
        return Err(Reply::status(Status::Error(
            "the peer layer has stopped".into(),
        )));
    }
    match answer.await {
        Ok(Ok(rep)) if rep.ok => Ok(Mounted {
            device: rep.device.unwrap_or_else(|| r.at.disk.device.clone()),
            mountpoint: rep.mountpoint.unwrap_or_default(),
            message: rep.message,
        }),
        Ok(Ok(rep)) => Err(Reply::status(Status::Refused(format!(
            "{}: {}",
            r.at.host, rep.message
        )))),
        Ok(Err(e)) => Err(Reply::status(Status::Error(format!("{}: {e}", r.at.host)))),
        Err(_) => Err(Reply::status(Status::Error(
            "the peer layer has stopped".into(),
        ))),
    }
}

/// Whether `dir` is a mountpoint right now.
fn is_mounted(dir: &str) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    diskd_watchers::mounts::parse_mountinfo(&text)
        .iter()
        .any(|m| m.mountpoint == dir)
}

impl Mount {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Mount, Reply> {
        let json = args.flag("--json");
        let read_only = args.flag("--read-only");
        let attach = args.option("--attach")?;
        let term = args.required("a UUID, label or device")?;
        args.finish()?;
        if let Some(dir) = &attach {
            if !dir.starts_with('/') {
                return Err(Reply::status(Status::Usage(format!(
                    "mount: --attach needs an absolute directory, not {dir:?}"
                ))));
            }
        }
        Ok(Mount {
            term,
            read_only,
            attach,
            json,
        })
    }

    /// Mount on the owner, then attach here if asked.
    pub async fn apply(self, ctx: &Context) -> Reply {
        let (r, uuid) = match resolve(ctx, &self.term) {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let m = match on_owner(ctx, &r, &uuid, self.read_only, false).await {
            Ok(m) => m,
            Err(reply) => return reply,
        };
        let mut attached = None;
        if let Some(dir) = &self.attach {
            let already =
                ctx.store().attach(&uuid).is_some_and(|a| a.dir == *dir) && is_mounted(dir);
            if !already {
                let addr = r.at.addr.clone().unwrap_or_else(|| "127.0.0.1".into());
                if let Err(e) =
                    mount::attach(ctx, &addr, &r.at.host, &m.mountpoint, &PathBuf::from(dir)).await
                {
                    ctx.event("mount", format!("attach of {uuid} at {dir} failed: {e}"));
                    return Reply::status(Status::Error(format!(
                        "mounted on {} at {}, but the attach failed: {e}",
                        r.at.host, m.mountpoint
                    )));
                }
                let rec = AttachRecord {
                    dir: dir.clone(),
                    host: r.at.host.clone(),
                    path: m.mountpoint.clone(),
                };
                if let Err(e) = ctx.store().put_attach(&uuid, &rec) {
                    tracing::warn!("cannot remember the attach: {e}");
                }
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
        if self.json {
            return Reply::ok(json_body(&out));
        }
        let mut body = vec![format!(
            "{} of {} is at {} ({})",
            out.device, out.host, out.mountpoint, m.message
        )];
        if let Some(dir) = &out.attached {
            body.push(format!("reachable here at {dir}"));
        }
        Reply::ok(body)
    }
}

impl Umount {
    /// Parse the arguments.
    pub fn parse(args: &mut Args) -> Result<Umount, Reply> {
        let json = args.flag("--json");
        let term = args.required("a UUID, label or device")?;
        args.finish()?;
        Ok(Umount { term, json })
    }

    /// Detach here, then unmount on the owner.
    pub async fn apply(self, ctx: &Context) -> Reply {
        let (r, uuid) = match resolve(ctx, &self.term) {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let mut detached = None;
        if let Some(a) = ctx.store().attach(&uuid) {
            if is_mounted(&a.dir) {
                if let Err(e) = mount::detach(std::path::Path::new(&a.dir)).await {
                    return Reply::status(Status::Error(format!("cannot detach {}: {e}", a.dir)));
                }
            }
            if let Err(e) = ctx.store().remove_attach(&uuid) {
                tracing::warn!("cannot forget the attach: {e}");
            }
            ctx.event("mount", format!("detached {uuid} from {}", a.dir));
            detached = Some(a.dir);
        }
        let m = match on_owner(ctx, &r, &uuid, false, true).await {
            Ok(m) => m,
            Err(reply) => return reply,
        };
        let out = UmountOut {
            host: &r.at.host,
            device: &m.device,
            mountpoint: &m.mountpoint,
            detached,
        };
        if self.json {
            return Reply::ok(json_body(&out));
        }
        let mut body = Vec::new();
        if let Some(dir) = &out.detached {
            body.push(format!("detached {dir}"));
        }
        body.push(format!(
            "{} of {}: {} ({})",
            out.device, out.host, m.message, out.mountpoint
        ));
        Reply::ok(body)
    }
}
