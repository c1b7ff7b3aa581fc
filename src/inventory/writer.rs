//! The one task that writes this node's inventory: it owns the latest observation of every
//! watcher, composes the records, and stores them (see the module above).

use std::sync::Arc;

use diskd_watchers::Observation;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{at, compose, Seen, HARDWARE};
use crate::model::{now_millis, DiskRecord, NodeInfo};
use crate::store::{Owner, Published, Store};
use crate::telemetry::{Stats, Telemetry};

/// The one task that writes this node's inventory.
pub(super) struct Writer {
    pub node: NodeInfo,
    pub store: Store,
    pub telemetry: Telemetry,
    pub changed: Arc<Notify>,
    /// The latest observation of every watcher, merged into records.
    pub composer: compose::Composer,
    /// What was last written, so a scan that changes nothing but mounts or hardware
    /// writes nothing.
    pub written: Option<Vec<DiskRecord>>,
}

impl Writer {
    pub(super) async fn run(mut self, mut seen: mpsc::Receiver<Seen>, shutdown: CancellationToken) {
        // When a device held back (see `compose`) is due to be published anyway.
        let mut wake: Option<tokio::time::Instant> = None;
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = seen.recv() => item,
                _ = at(wake) => {
                    wake = self.publish(false).await;
                    continue;
                }
            };
            let Some(Seen {
                observation,
                watcher,
                started,
                quick,
                written,
            }) = item
            else {
                return;
            };
            let is_disks = matches!(observation, Some(Observation::Disks(_)));
            match observation {
                Some(Observation::Disks(d)) => self.composer.disks(d, started, !quick),
                Some(Observation::Mounts(m)) => self.composer.mounts(m),
                Some(Observation::Hardware(h)) => self.composer.hardware(h, started),
                Some(Observation::Smart(r)) => self.composer.smart(r),
                None if watcher == HARDWARE => self.composer.hardware_failed(),
                None => {}
            }
            wake = self.publish(is_disks).await;
            let _ = written.send(());
        }
    }

    /// Compose and write what the watchers know, if it is whole enough to publish (see
    /// `Composer::ready`) and says something new; `always`: write even when unchanged (a
    /// disk scan refreshes last_seen). Returns when to look again for held devices.
    async fn publish(&mut self, always: bool) -> Option<tokio::time::Instant> {
        if !self.composer.ready() {
            return None;
        }
        let (records, wake) = self.composer.compose(tokio::time::Instant::now());
        if always || self.written.as_ref() != Some(&records) {
            self.write(&records).await;
            self.written = Some(records);
        }
        wake
    }

    /// Store the records off the runtime (sled writes and the fsync block), then tell
    /// whoever waits: the peer layer (announce) and `debug` sessions. When the store
    /// works, the inventory is on disk before it is visible; when it fails (a full disk),
    /// the inventory is visible all the same, so queries answer what the watchers found,
    /// and the store's keeper (`Store::keep`) writes it once the disk works again.
    async fn write(&self, records: &[DiskRecord]) {
        let store = self.store.clone();
        let node = self.node.clone();
        let owned = records.to_vec();
        let result = tokio::task::spawn_blocking(move || {
            store.publish(
                Owner::Local,
                &node.name,
                node.addr.as_deref(),
                &owned,
                now_millis(),
            )
        })
        .await;
        let events = &self.telemetry.events;
        let stats = &self.telemetry.stats;
        let diff = match result {
            Ok(Published {
                diff,
                durable: Ok(()),
            }) => {
                Stats::bump(&stats.inventory_writes);
                diff
            }
            Ok(Published {
                diff,
                durable: Err(e),
            }) => {
                // The store logs when it starts failing and when it works again; `status`
                // shows why meanwhile.
                Stats::bump(&stats.store_errors);
                tracing::debug!("inventory not durable yet: {e}");
                events.emit("error", format!("store: {e}; kept in memory, retrying"));
                diff
            }
            Err(e) => {
                Stats::bump(&stats.store_errors);
                tracing::error!("the inventory write did not complete: {e}");
                return;
            }
        };
        if !diff.is_empty() {
            self.changed.notify_one();
            let host = crate::model::fleet::Host {
                node_id: &self.node.id,
                name: &self.node.name,
                addr: self.node.addr.as_deref(),
                local: true,
                sealed: true,
            };
            self.telemetry.fleet.emit(diff.events(&host, now_millis()));
        }
        for (what, list) in [
            ("appeared", &diff.appeared),
            ("vanished", &diff.vanished),
            ("changed", &diff.changed),
        ] {
            for d in list {
                events.emit("disk", format!("{what}: {}", describe(d)));
            }
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
