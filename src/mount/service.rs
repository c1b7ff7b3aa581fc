//! The mount service: resolves a term to one live disk, mounts on the owner (ourselves, or
//! a peer through the peer layer), attaches here, and answers peers' requests under our
//! policy. Every decision is logged and shown to `debug` sessions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    attach_argv, create_dir, current_mountpoints, run, valid_uuid, MountError, Mounted, Origin,
    Resolved,
};
use diskd_watchers::MountWatcher;

use crate::config::Config;
use crate::inventory::InventoryHandle;
use crate::model::{now_millis, DiskRecord, NodeInfo, Sighting};
use crate::peer::wire::{MountReply, MountRequest};
use crate::peer::{IncomingMount, PeerHandle, PeerRequest, MOUNT_TIMEOUT};
use crate::store::Store;
use crate::telemetry::Events;

/// Peers' mount requests carried out at once.
const REMOTE_AT_ONCE: usize = 4;

/// How long a mount waits for the mount watcher to show the change.
const REFRESH_DEADLINE: Duration = Duration::from_secs(10);

/// The mount service's handle. Cheap to clone.
#[derive(Clone)]
pub struct MountService {
    inner: Arc<Inner>,
}

/// The handles the mount service works with, named at start.
pub struct MountDeps {
    /// The `mount` section decides what may be mounted, where, and how it is attached.
    pub config: Arc<Config>,
    /// Who we are: a request naming us is mounted here.
    pub node: NodeInfo,
    /// Where a term is resolved to one live disk.
    pub store: Store,
    /// Every decision is shown to `debug` sessions.
    pub events: Events,
    /// A mount is done when the mount watcher shows it.
    pub inventory: InventoryHandle,
    /// Requests to the disk's owner go through the peer layer.
    pub peers: PeerHandle,
}

struct Inner {
    deps: MountDeps,
    /// Held while a disk of ours is mounted or unmounted: a local and a remote request (or
    /// two remote ones) never both find a disk "not mounted" and both mount it.
    local_ops: tokio::sync::Mutex<()>,
}

impl MountService {
    /// The service over the handles it uses.
    pub fn new(deps: MountDeps) -> MountService {
        MountService {
            inner: Arc::new(Inner {
                deps,
                local_ops: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn node(&self) -> &NodeInfo {
        &self.inner.deps.node
    }

    fn event(&self, message: String) {
        self.inner.deps.events.emit("mount", message);
    }

    /// Answer peers' mount requests until shutdown, at most `REMOTE_AT_ONCE` at a time
    /// (a mount can take a while), each in a task on `tracker` so shutdown waits for it.
    pub async fn serve(
        self,
        mut jobs: mpsc::Receiver<IncomingMount>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let limit = Arc::new(Semaphore::new(REMOTE_AT_ONCE));
        loop {
            // A permit first: jobs wait in the bounded queue, where the peer layer sees it
            // is full and answers "busy".
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let job = tokio::select! {
                _ = shutdown.cancelled() => return,
                job = jobs.recv() => job,
            };
            let Some(job) = job else { return };
            let service = self.clone();
            tracker.spawn(async move {
                let reply = service
                    .serve_remote(&job.requester, &job.requester_id, &job.request)
                    .await;
                let _ = job.reply.send(reply);
                drop(permit);
            });
        }
    }

    /// The policy of the machine that owns the disk. Remote requests need `mount.enabled`,
    /// keys, and a `mount.allow` match; local socket users need only the `mount.allow` match.
    pub fn check_policy(&self, origin: Origin, disk: &DiskRecord) -> Result<(), MountError> {
        let cfg = &self.inner.deps.config.mount;
        let name = &self.node().name;
        if origin == Origin::Remote {
            if !cfg.enabled {
                return Err(MountError::Refused(format!(
                    "remote mounts are disabled on {name} (mount.enabled is false)"
                )));
            }
            if self.inner.deps.peers.status().key_fingerprints().is_empty() {
                return Err(MountError::Refused(format!(
                    "{name} has no keys configured; remote mount requests are refused"
                )));
            }
        }
        let set = &cfg.allow_set;
        let uuid_ok = disk.uuid.as_deref().is_some_and(|u| set.is_match(u));
        let label_ok = disk.label.as_deref().is_some_and(|l| set.is_match(l));
        if uuid_ok || label_ok {
            Ok(())
        } else {
            Err(MountError::Refused(format!(
                "disk {} does not match mount.allow on {name}",
                disk.uuid.as_deref().unwrap_or(&disk.device)
            )))
        }
    }

    /// Resolve TERM (UUID, label, device) to exactly one live disk with a UUID diskd can
    /// mount by.
    pub fn resolve(&self, term: &str) -> Result<(Resolved, String), MountError> {
        let store = &self.inner.deps.store;
        let t = now_millis();
        let expiry = self.inner.deps.config.multicast.peer_expiry;
        let found = store
            .find(term)
            .map_err(|e| MountError::Store(e.to_string()))?;
        let live: Vec<Sighting> = found
            .iter()
            .filter(|s| s.present && store.host_is_live(&s.node_id, t, expiry))
            .cloned()
            .collect();
        let at = match live.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let Some(at) = at else {
            return Err(match live.len() {
                0 if found.is_empty() => MountError::NoMatch(format!("no disk matches {term:?}")),
                0 => MountError::NoMatch(format!(
                    "{term:?} is not attached to any live host (last seen on {})",
                    found
                        .iter()
                        .map(|s| s.host.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                n => MountError::Ambiguous(format!(
                    "{n} live disks match {term:?}: {}; name one by UUID",
                    live.iter()
                        .map(|s| format!(
                            "{} on {} ({})",
                            s.disk.uuid.as_deref().unwrap_or("-"),
                            s.host,
                            s.disk.device
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            });
        };
        let uuid = match at.disk.uuid.clone() {
            Some(u) if valid_uuid(&u) => u,
            Some(u) => {
                return Err(MountError::Refused(format!(
                    "{u:?} is not a UUID diskd can mount by"
                )))
            }
            None => {
                return Err(MountError::Refused(format!(
                    "{} has no UUID; diskd mounts disks by UUID",
                    at.disk.device
                )))
            }
        };
        let local = at.node_id == self.node().id;
        Ok((Resolved { at, local }, uuid))
    }

    fn our_disk(&self, uuid: &str) -> Option<DiskRecord> {
        self.inner
            .deps
            .store
            .local_inventory()
            .into_iter()
            .find(|d| {
                d.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
            })
    }

    fn not_here(&self, uuid: &str) -> MountError {
        MountError::NotHere {
            uuid: uuid.to_string(),
            host: self.node().name.clone(),
        }
    }

    /// Where diskd mounts a disk: `mount.root/<uuid>`.
    pub fn mountpoint_for(&self, uuid: &str) -> Result<PathBuf, MountError> {
        if !valid_uuid(uuid) {
            return Err(MountError::Refused(format!(
                "{uuid:?} is not a UUID diskd can mount by"
            )));
        }
        let root = &self.inner.deps.config.mount.root;
        let path = root.join(uuid);
        // valid_uuid rules out "/" and "..", so this always holds; checked anyway.
        if path.parent() != Some(root.as_path()) {
            return Err(MountError::Refused(format!(
                "{uuid:?} would leave mount.root"
            )));
        }
        Ok(path)
    }

    /// Mount our disk `uuid` (policy already checked). Idempotent: a disk already mounted
    /// by diskd, or by someone else, is reported where it is and not mounted twice.
    pub async fn mount_local(&self, uuid: &str, read_only: bool) -> Result<Mounted, MountError> {
        let _one_at_a_time = self.inner.local_ops.lock().await;
        let disk = self.our_disk(uuid).ok_or_else(|| self.not_here(uuid))?;
        let target = self.mountpoint_for(uuid)?;
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
                message: format!(
                    "already mounted at {elsewhere} (not by diskd); not mounting twice"
                ),
            });
        }
        if !disk.device.starts_with("/dev/") {
            return Err(MountError::Refused(format!(
                "{} is not a device under /dev",
                disk.device
            )));
        }
        create_dir(&target)?;
        let opts = if read_only {
            "nosuid,nodev,ro"
        } else {
            "nosuid,nodev"
        };
        run("mount", &["-o", opts, "--", &disk.device, &target_text]).await?;
        self.refresh_mounts().await;
        Ok(Mounted {
            device: disk.device,
            mountpoint: target_text,
            message: format!("mounted ({opts})"),
        })
    }

    /// Unmount our disk `uuid`, but only where diskd mounted it.
    pub async fn unmount_local(&self, uuid: &str) -> Result<Mounted, MountError> {
        let _one_at_a_time = self.inner.local_ops.lock().await;
        let disk = self.our_disk(uuid).ok_or_else(|| self.not_here(uuid))?;
        let target = self.mountpoint_for(uuid)?;
        let target_text = target.display().to_string();
        let existing = current_mountpoints(&disk.device);
        if !existing.contains(&target_text) {
            return match existing.first() {
                Some(other) => Err(MountError::Refused(format!(
                    "{uuid} is mounted at {other}, not by diskd; not unmounting it"
                ))),
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
        self.refresh_mounts().await;
        Ok(Mounted {
            device: disk.device,
            mountpoint: target_text,
            message: "unmounted".into(),
        })
    }

    /// The MountWatcher sees the change at once, so `list` (and the peers, via the
    /// change-triggered announce) show it.
    async fn refresh_mounts(&self) {
        for report in self
            .inner
            .deps
            .inventory
            .refresh(Some(MountWatcher::NAME), REFRESH_DEADLINE)
            .await
        {
            if !report.is_ok() {
                tracing::warn!("after a mount: {report}; the change shows at the next scan");
            }
        }
    }

    /// Mount or unmount on the owner: ourselves, or a peer through the peer layer.
    pub async fn on_owner(
        &self,
        r: &Resolved,
        uuid: &str,
        read_only: bool,
        unmount: bool,
    ) -> Result<Mounted, MountError> {
        let what = if unmount { "unmount" } else { "mount" };
        if r.local {
            self.check_policy(Origin::Local, &r.at.disk)?;
            let done = if unmount {
                self.unmount_local(uuid).await
            } else {
                self.mount_local(uuid, read_only).await
            };
            match &done {
                Ok(m) => {
                    tracing::info!(uuid, "local {what}: {} ({})", m.message, m.mountpoint);
                    self.event(format!(
                        "local {what} of {uuid}: {} ({})",
                        m.message, m.mountpoint
                    ));
                }
                Err(e) => {
                    tracing::warn!(uuid, "local {what} failed: {e}");
                    self.event(format!("local {what} of {uuid} failed: {e}"));
                }
            }
            return done;
        }
        let host = r.at.host.clone();
        let peer_failed = |source| MountError::Peer {
            host: host.clone(),
            source,
        };
        let target = r.at.node_id.clone();
        let uuid_owned = uuid.to_string();
        // The peer layer fails the request itself after MOUNT_TIMEOUT; the slack covers
        // a layer that is busy reopening its sockets.
        let rep = self
            .inner
            .deps
            .peers
            .request(
                |reply| PeerRequest::Mount {
                    target,
                    uuid: uuid_owned,
                    read_only,
                    unmount,
                    reply,
                },
                MOUNT_TIMEOUT + Duration::from_secs(2),
            )
            .await
            .map_err(peer_failed)?;
        if rep.ok {
            Ok(Mounted {
                device: rep.device.unwrap_or_else(|| r.at.disk.device.clone()),
                mountpoint: rep.mountpoint.unwrap_or_default(),
                message: rep.message,
            })
        } else {
            Err(MountError::Refused(format!(
                "{}: {}",
                r.at.host, rep.message
            )))
        }
    }

    /// Run the attach command so that `target` on this machine shows the remote mount.
    pub async fn attach(
        &self,
        addr: &str,
        host: &str,
        path: &str,
        target: &Path,
    ) -> Result<(), MountError> {
        create_dir(target)?;
        let argv = attach_argv(
            &self.inner.deps.config.mount.attach_command,
            addr,
            host,
            path,
            &target.display().to_string(),
        );
        let (program, args) = argv.split_first().ok_or_else(|| MountError::Command {
            program: "mount.attach_command".into(),
            message: "is empty".into(),
        })?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args).await
    }

    /// The store, for the attach records of `mount --attach` / `umount`.
    pub fn store(&self) -> &Store {
        &self.inner.deps.store
    }

    /// Carry out a peer's mount request under our policy.
    pub async fn serve_remote(
        &self,
        requester: &str,
        requester_id: &str,
        req: &MountRequest,
    ) -> MountReply {
        let what = if req.unmount { "unmount" } else { "mount" };
        let result = match self.our_disk(&req.uuid) {
            None => Err(self.not_here(&req.uuid)),
            Some(disk) => match self.check_policy(Origin::Remote, &disk) {
                Err(why) => Err(why),
                Ok(()) if req.unmount => self.unmount_local(&req.uuid).await,
                Ok(()) => self.mount_local(&req.uuid, req.read_only).await,
            },
        };
        let mut reply = MountReply {
            request_id: req.request_id,
            target: requester_id.to_string(),
            ok: false,
            device: None,
            mountpoint: None,
            message: String::new(),
        };
        match result {
            Ok(m) => {
                tracing::info!(requester, uuid = %req.uuid, "{what} request granted: {} at {}", m.message, m.mountpoint);
                self.event(format!(
                    "{what} of {} for {requester}: {} ({})",
                    req.uuid, m.message, m.mountpoint
                ));
                reply.ok = true;
                reply.device = Some(m.device);
                reply.mountpoint = Some(m.mountpoint);
                reply.message = m.message;
            }
            Err(why) => {
                tracing::warn!(requester, uuid = %req.uuid, "{what} request refused: {why}");
                self.event(format!(
                    "{what} of {} for {requester} refused: {why}",
                    req.uuid
                ));
                reply.message = why.to_string();
            }
        }
        reply
    }
}
