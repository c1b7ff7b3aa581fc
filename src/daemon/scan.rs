//! Runs the watchers on their schedules and writes what they find into the store.
//!
//! Each watcher gets its own task (a hung blkid never delays the mount table), runs at
//! start, then every `interval`, and at once on `refresh`. The latest good observation of
//! each watcher is kept in memory; after every good scan the disks and mounts are combined
//! into this node's inventory and written as one atomic store step. A failed scan changes
//! nothing in the store: the previous inventory stays until the next good scan.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskd_watchers::{mounts::mountpoints_for, DiskInfo, MountEntry, Observation, Watcher};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::context::{now, Context, RefreshRequest, Stats, WatcherHealth};
use crate::store::DiskRecord;
use crate::view::rfc3339;

/// Extra time the daemon allows beyond a watcher's own timeout before it gives up on the
/// scan future itself (the watcher is expected to clean up within its timeout).
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// After a kernel change event, wait this long for the rest of the burst before scanning.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(10);

/// What the watchers last saw, in memory.
#[derive(Default)]
struct Latest {
    disks: Option<Vec<DiskInfo>>,
    mounts: Option<Vec<MountEntry>>,
    written: Option<Vec<DiskRecord>>,
}

/// Start one task per watcher on `tracker`; they stop when the context's shutdown fires.
pub fn spawn(ctx: &Context, tracker: &TaskTracker, watchers: Vec<Arc<dyn Watcher>>) {
    let latest = Arc::new(Mutex::new(Latest::default()));
    for w in watchers {
        let (tx, rx) = mpsc::channel::<RefreshRequest>(16);
        ctx.add_refresh_channel(w.name(), tx);
        ctx.health().insert(
            w.name(),
            WatcherHealth {
                interval: humantime::format_duration(w.interval()).to_string(),
                state: "starting".into(),
                ..Default::default()
            },
        );
        tracker.spawn(run_watcher(ctx.clone(), w, rx, latest.clone()));
    }
}

async fn run_watcher(
    ctx: Context,
    w: Arc<dyn Watcher>,
    mut refresh: mpsc::Receiver<RefreshRequest>,
    latest: Arc<Mutex<Latest>>,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ctx.shutdown().cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                scan_once(&ctx, w.as_ref(), &latest).await;
            }
            Some(reply) = refresh.recv() => {
                let summary = scan_once(&ctx, w.as_ref(), &latest).await;
                // The requester may have given up; that is fine.
                let _ = reply.send(summary);
            }
            _ = w.changed() => {
                // A kernel event: let the burst settle, then look.
                tokio::time::sleep(EVENT_DEBOUNCE).await;
                ctx.event("scan", format!("{}: change notified by the kernel", w.name()));
                scan_once(&ctx, w.as_ref(), &latest).await;
            }
        }
        next = tokio::time::Instant::now() + w.interval();
    }
}

/// Scan once, record health, update the store; returns a one-line summary.
async fn scan_once(ctx: &Context, w: &dyn Watcher, latest: &Mutex<Latest>) -> String {
    let name = w.name();
    let started = Instant::now();
    set_health(ctx, name, |h| h.running_since = Some(rfc3339(now())));
    let limit = w.timeout() + TIMEOUT_GRACE;
    let result = match tokio::time::timeout(limit, w.scan()).await {
        Ok(r) => r,
        Err(_) => Err(diskd_watchers::WatchError::TimedOut {
            program: name.to_string(),
            timeout: limit,
        }),
    };
    let took = started.elapsed();
    match result {
        Ok(obs) => {
            let found = match &obs {
                Observation::Disks(d) => d.len(),
                Observation::Mounts(m) => m.len(),
            };
            let recovered = set_health(ctx, name, |h| {
                let was = std::mem::replace(&mut h.state, "ok".into());
                h.scans_ok += 1;
                h.last_error = None;
                h.last_ok = Some(rfc3339(now()));
                h.last_duration_ms = Some(took.as_millis() as u64);
                h.found = found;
                h.running_since = None;
                was != "ok" && was != "starting"
            });
            if recovered {
                tracing::info!(watcher = name, "scans work again");
            }
            ctx.event("scan", format!("{name}: {found} found in {took:.0?}"));
            let is_disks = matches!(obs, Observation::Disks(_));
            let records = {
                let mut l = latest.lock().unwrap_or_else(|p| p.into_inner());
                match obs {
                    Observation::Disks(d) => l.disks = Some(d),
                    Observation::Mounts(m) => l.mounts = Some(m),
                }
                match &l.disks {
                    // Nothing is written before the first good disk scan: an empty
                    // inventory would mark every known disk as gone.
                    None => None,
                    Some(disks) => {
                        let records = compose(disks, l.mounts.as_deref().unwrap_or(&[]));
                        // A disk scan always writes (it refreshes last_seen); a mount scan
                        // only when the mounts changed what we would write.
                        if is_disks || l.written.as_ref() != Some(&records) {
                            l.written = Some(records.clone());
                            Some(records)
                        } else {
                            None
                        }
                    }
                }
            };
            if let Some(records) = records {
                write_inventory(ctx, &records).await;
            }
            format!("{name}: ok, {found} found in {took:.0?}")
        }
        Err(e) => {
            let kind = e.kind();
            let changed = set_health(ctx, name, |h| {
                h.scans_failed += 1;
                *h.failures.entry(kind.to_string()).or_default() += 1;
                h.last_error = Some(e.to_string());
                h.last_duration_ms = Some(took.as_millis() as u64);
                h.running_since = None;
                let was = std::mem::replace(&mut h.state, kind.to_string());
                was != kind
            });
            // Logged once per change of state, not on every failing scan.
            if changed {
                tracing::warn!(
                    watcher = name,
                    reason = kind,
                    "scan failed: {e}; keeping the previous inventory"
                );
            }
            ctx.event("error", format!("{name}: {e}"));
            format!("{name}: failed: {e}")
        }
    }
}

fn set_health<R>(ctx: &Context, name: &'static str, f: impl FnOnce(&mut WatcherHealth) -> R) -> R {
    let mut table = ctx.health();
    f(table.entry(name).or_default())
}

/// Combine disks with the mount table into the records we publish.
fn compose(disks: &[DiskInfo], mounts: &[MountEntry]) -> Vec<DiskRecord> {
    disks
        .iter()
        .map(|d| DiskRecord {
            uuid: d.uuid.clone(),
            label: d.label.clone(),
            device: d.device.clone(),
            fstype: d.fstype.clone(),
            mountpoints: mountpoints_for(d, mounts),
        })
        .collect()
}

async fn write_inventory(ctx: &Context, records: &[DiskRecord]) {
    let node = ctx.node();
    let result = ctx
        .store()
        .replace_local(&node.name, node.addr.as_deref(), records, now());
    match result {
        Ok(diff) => {
            if let Err(e) = ctx.store().flush().await {
                Stats::bump(&ctx.stats().store_errors);
                tracing::error!("store flush failed: {e}");
            }
            if !diff.is_empty() {
                ctx.local_changed().notify_one();
            }
            for d in &diff.appeared {
                ctx.event("disk", format!("appeared: {}", describe(d)));
            }
            for d in &diff.vanished {
                ctx.event("disk", format!("vanished: {}", describe(d)));
            }
            for d in &diff.changed {
                ctx.event("disk", format!("changed: {}", describe(d)));
            }
        }
        Err(e) => {
            Stats::bump(&ctx.stats().store_errors);
            tracing::error!("cannot store the inventory: {e}");
            ctx.event("error", format!("store: {e}"));
        }
    }
}

fn describe(d: &DiskRecord) -> String {
    format!(
        "{} uuid={} label={:?} mounts={:?}",
        d.device,
        d.uuid.as_deref().unwrap_or("-"),
        d.label.as_deref().unwrap_or(""),
        d.mountpoints
    )
}
