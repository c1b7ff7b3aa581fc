//! The only code that touches sled.
//!
//! The store keeps, across restarts and `kill -9`: this node's identity (a random id made
//! on first start and kept forever), every (host, disk) sighting with first/last seen and
//! the disk's stays (history), the peers ever heard, and a schema version checked at open.
//! Inventories go in through one call, `publish`, which tells this node's own (from the
//! watchers) from a peer's (from the peer layer, which also records the peer with
//! `upsert_peer`); queries read the fleet-wide picture.
//!
//! Layout (schema 6, see `layout`): the unit of change is one host's inventory, so each
//! host is ONE value in tree `hosts` (split across a few keys only when larger than 64 KiB),
//! rewritten as one atomic sled batch when its inventory changes and not written at all
//! when it does not. Each disk in it carries its hardware (size, model, serial, WWN, ...),
//! new in schema 4, what blkid made of it (`Probe`: what `list --blank` trusts), new in
//! schema 5, and its SMART health and filesystem usage, new in schema 6, and is keyed
//! within its host by its identity (UUID, else WWN, else serial, else device:
//! `DiskRecord::identity`); each (host, disk) entry keeps the disk's last 64 health
//! readings there (`health_log`), new in schema 6. The term index (UUID, label, device,
//! serial, WWN, host name) lives in memory only, built at open from the host values and
//! updated with every write.
//!
//! Older stores are converted at open (see `migrate`): schemas 5, 4 and 3 (the same layout
//! without the condition, without the probe too, and without the hardware too) host by
//! host in place, schema 2 (one record per sighting) in one pass; all crash-safe,
//! committed by setting the schema version last.
//!
//! Readers answer from memory: the committed value of every host (an `Arc`, swapped on
//! each write) and the index, behind a lock held only for memory access, never across sled
//! I/O or a flush. Our own inventory is written and flushed before it is published, so a
//! local disk a query has shown cannot be lost by a `kill -9` right after the answer. Peer
//! inventories are published at once and flushed by the peer layer once per burst of
//! datagrams (`flush`). When sled cannot write (a full disk), everything is published in
//! memory all the same and `health` takes over: see `health.rs` (retries, reopening sled)
//! and `compact.rs` (a log past twice its live data).

mod compact;
mod health;
mod index;
mod layout;
mod merge;
mod migrate;
mod open;
mod query;
mod records;
mod sniff;
mod warm;

use index::*;
use merge::*;
use open::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use health::StoreHealth;
use health::{Durability, Sled, Wrote};
use layout::{
    chunk_key, join_chunks, log_after, parse_chunk_key, term, term_lower, term_wwn, unframed,
    DiskView, EntryView, HealthLog, HostState, HostView, Key, PastStay,
};
pub use layout::{MAX_ABSENT_PER_HOST, MAX_READINGS, MAX_STAYS};

use crate::model::fleet;
use crate::model::{
    AttachRecord, DiskRecord, FleetEvent, FleetEventKind, HealthPoint, Millis, PeerRecord,
    Sighting, Stay,
};

/// The layout version of the data in sled. Bump it when records change incompatibly. An
/// older store is converted at open (schemas 5, 4 and 3 -> 6 and 2 -> 6, see `migrate`); a
/// newer one is refused instead of being misread.
pub const SCHEMA_VERSION: u32 = 6;

const META: &str = "meta";
const HOSTS: &str = "hosts";
const PEERS: &str = "peers";
const ATTACHES: &str = "attaches";
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_NODE_ID: &[u8] = b"node_id";
const KEY_LOCAL_SEEN: &[u8] = b"local_seen";
/// sled's page cache size. Reads are served from memory, so sled's cache only serves
/// writes (and the load at open).
const CACHE_BYTES: u64 = 8 << 20;

/// Why the store could not do what was asked. Open errors stop the daemon; they never lead
/// to deleting anything.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (most likely another diskd) holds the store.
    #[error("store {}: locked by another process (is another diskd running with this store?)", path.display())]
    Locked {
        /// Store directory.
        path: PathBuf,
    },
    /// The store was written by an incompatible diskd.
    #[error("store {}: schema version {found}, this diskd reads version {expected}; nothing was changed (move the directory away to start afresh)", path.display())]
    Schema {
        /// Store directory.
        path: PathBuf,
        /// Version found on disk.
        found: String,
        /// Version this build reads.
        expected: u32,
    },
    /// sled refused to open the store (corrupt files, permissions, ...).
    #[error("store {}: cannot open: {source}; nothing was deleted", path.display())]
    Open {
        /// Store directory.
        path: PathBuf,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
    /// The data file holds something sled cannot read as its log (overwritten, truncated to
    /// garbage, not a sled file). sled would start a new, empty log over it.
    #[error("store {}: {detail}; nothing was changed (move the directory away to start afresh)", path.display())]
    Unreadable {
        /// Store directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An error while running.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A record that cannot be encoded.
    #[error("store: cannot encode record: {0}")]
    Encode(#[from] postcard::Error),
    /// sled was closed after write failures and could not be opened again yet.
    #[error("store {}: closed after write failures, reopening", .0.display())]
    Closed(PathBuf),
}

/// What changed when an inventory was replaced; drives `debug` events and announces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InventoryDiff {
    /// Disks that are present now and were not before.
    pub appeared: Vec<DiskRecord>,
    /// Disks that were present and are not any more.
    pub vanished: Vec<DiskRecord>,
    /// Disks present before and now whose details (label, device, mounts, ...) changed.
    pub changed: Vec<DiskRecord>,
    /// The same disks as they were before (`was[i]` is `changed[i]` before the change).
    pub was: Vec<DiskRecord>,
}

impl InventoryDiff {
    /// The fleet events this diff makes for `host` (see [`crate::model::fleet`]).
    pub fn events(&self, host: &fleet::Host<'_>, time: Millis) -> Vec<FleetEvent> {
        let mut out = Vec::new();
        for d in &self.appeared {
            out.extend(fleet::disk_change(None, d, time, host));
        }
        for (now, was) in self.changed.iter().zip(&self.was) {
            out.extend(fleet::disk_change(Some(was), now, time, host));
        }
        for d in &self.vanished {
            out.push(FleetEvent::disk(FleetEventKind::Vanished, time, host, d));
        }
        out
    }

    /// Whether anything a reader would notice changed.
    pub fn is_empty(&self) -> bool {
        self.appeared.is_empty() && self.vanished.is_empty() && self.changed.is_empty()
    }
}

/// Whose inventory [`Store::publish`] replaces.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// This node's, from its watchers: flushed before it is visible, so a query never
    /// answers what a crash could take back.
    Local,
    /// A peer's (by node id), from its announce: not flushed here, the peer layer
    /// flushes once per burst of datagrams (`flush`), so a wave of announces costs one
    /// disk sync, not one per peer; a peer's data lost in a crash within that window
    /// comes back with its next announce.
    Peer(&'a str),
}

/// What publishing an inventory did. The new inventory is visible whether or not sled
/// could write it, so the diff always comes back: dropping it with a write error would
/// lose those changes for good (the next inventory diffs against the one already in
/// memory and finds nothing), and the peer layer must still say them (fleet events).
/// The one exception is an inventory that cannot be encoded at all (never one whose
/// records passed the checks every record gets): nothing is published then, and the
/// encoding error comes back.
#[derive(Debug)]
#[must_use = "the diff says what changed, and `durable` whether it reached the disk"]
pub struct Published {
    /// What changed for every reader.
    pub diff: InventoryDiff,
    /// Whether it was written (and, for this node's own inventory, flushed); on an error
    /// the store is marked failing and [`Store::keep`] rewrites it from memory later.
    pub durable: Result<(), StoreError>,
}

impl Published {
    /// The diff once it is durable: for callers with nothing to do about a diff that
    /// did not reach the disk.
    pub fn into_result(self) -> Result<InventoryDiff, StoreError> {
        self.durable.map(|()| self.diff)
    }
}

/// The persistent store. Cheap to clone (one shared handle).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// sled and its trees; `None` only between a failed reopen and the next (see
    /// `health`).
    sled: RwLock<Option<Arc<Sled>>>,
    /// What may not be on disk yet, and the current write failure (see `health`).
    durability: Mutex<Durability>,
    /// Woken on a write failure: `Store::keep` retries.
    trouble: tokio::sync::Notify,
    node_id: String,
    path: PathBuf,
    /// What readers see: every host's committed value and the term index.
    mem: RwLock<Memory>,
    /// Every peer ever heard (what `peers_tree` holds), by node id.
    peers: RwLock<BTreeMap<String, PeerRecord>>,
    /// When our own latest inventory was taken (`NONE` before the first).
    local_seen: AtomicU64,
    /// How many sled keys each host's value takes (also for hosts whose value could not be
    /// read at open, so that their next write replaces every old key).
    chunks: Mutex<HashMap<String, u32>>,
    /// Each host has one writer (the watchers for ours, the peer layer for a peer's); these
    /// keep the two from interleaving with themselves, never with readers.
    local_writer: Mutex<()>,
    peer_writer: Mutex<()>,
    /// A compaction or a repair holds (or is about to hold) the writer locks: a write now
    /// waits for it (see [`Store::in_maintenance`]).
    maintenance: std::sync::atomic::AtomicBool,
    /// The filesystem cannot exchange two directories (`RENAME_EXCHANGE`): compaction is
    /// off for this run instead of copying the store every check only to fail.
    no_exchange: std::sync::atomic::AtomicBool,
    /// Host values written since open (for tests: an unchanged inventory writes none).
    host_writes: AtomicU64,
    /// `flush` waits for sled on the calling thread (see [`Store::open_sharing_process`]).
    inline_flush: std::sync::atomic::AtomicBool,
    /// Loaded at open from the warm-start image (see `warm`), not from sled.
    from_image: bool,
    /// Kept in memory only, never on disk (see [`Store::in_memory`]).
    volatile: bool,
}

const NONE: u64 = u64::MAX;

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Whether the store lives in memory only ([`Store::in_memory`]): its flush has nothing
    /// to wait for.
    pub fn is_volatile(&self) -> bool {
        self.inner.volatile
    }

    /// Whether this open read the warm-start image a clean shutdown left (see
    /// [`Store::save_warm_start`]) instead of walking sled: what a fast restart depends on.
    pub fn loaded_from_image(&self) -> bool {
        self.inner.from_image
    }

    /// This node's permanent id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        match self.sled() {
            Ok(s) => s.db.size_on_disk().unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Make everything written so far durable. Callers await this before they report a
    /// change as done, so a `kill -9` afterwards cannot lose it. A failure marks the store
    /// failing (see `health`): `keep` retries.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // A compaction or a repair has no handle to flush for a moment, and makes what was
        // written before it durable itself: wait for it, as writers do.
        while self.in_maintenance() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mark = lock(&self.inner.durability).mark();
        let result = match self.sled() {
            _ if self.inner.volatile => Ok(()),
            Ok(s) if self.inner.inline_flush.load(Ordering::Relaxed) => {
                // On a multi-thread runtime, hand this worker's other tasks on first.
                use tokio::runtime::{Handle, RuntimeFlavor};
                let multi = Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
                let flush = || s.db.flush().map(drop).map_err(StoreError::from);
                if multi {
                    tokio::task::block_in_place(flush)
                } else {
                    flush()
                }
            }
            Ok(s) => s.db.flush_async().await.map(drop).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        self.flush_done(mark, result)
    }

    /// Replace a host's inventory, as one atomic step; see [`Owner`] for what differs
    /// between this node's own inventory and a peer's. Published (visible to every
    /// reader) even when sled cannot write: the daemon answers from what it knows, the
    /// error comes back with the diff, the store is marked failing and [`Store::keep`]
    /// rewrites it from memory once the disk works again. An inventory that changes
    /// nothing writes nothing.
    pub fn publish(
        &self,
        owner: Owner<'_>,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> Published {
        let (_writer, node_id, local) = match owner {
            Owner::Local => (lock(&self.inner.local_writer), &*self.inner.node_id, true),
            Owner::Peer(id) => (lock(&self.inner.peer_writer), id, false),
        };
        let old = read(&self.inner.mem).get(node_id).cloned();
        let old_view = old.as_ref().map(|o| o.view());
        // When this host's previous inventory arrived: the last time a disk that is gone
        // now was seen.
        let prev_seen = self.host_seen(node_id).unwrap_or(now);
        let merged = merge(old_view.as_ref(), host, addr, disks, now, prev_seen);
        let durable = match merged.host {
            Some(view) => {
                let node: Arc<str> = old
                    .as_ref()
                    .map_or_else(|| Arc::from(node_id), |o| o.node_id.clone());
                let old_terms = old_view.as_ref().map(HostView::terms).unwrap_or_default();
                self.commit(node, &view, &old_terms, now, local)
            }
            // Nothing changed: only the time of our latest inventory (present disks count
            // as seen then), not worth a flush.
            None if local => {
                let result = self.persist(|s| {
                    s.meta.insert(KEY_LOCAL_SEEN, &now.to_be_bytes())?;
                    Ok(())
                });
                self.wrote(Wrote::LocalSeen);
                if let Err(e) = &result {
                    self.failed(e);
                }
                result
            }
            None => Ok(()),
        };
        if local {
            self.inner.local_seen.store(now, Ordering::Release);
        }
        Published {
            diff: merged.diff,
            durable,
        }
    }

    /// Write a host's new inventory (and for our own, flush), then make it visible: also
    /// when the write fails, whose error comes back.
    fn commit(
        &self,
        node: Arc<str>,
        view: &HostView<'_>,
        old_terms: &[u64],
        now: Millis,
        local: bool,
    ) -> Result<(), StoreError> {
        let node_id: &str = &node;
        // Checked records always encode (ours, and a peer's once the wire checks passed);
        // nothing to publish if they did not, and nothing for `keep` to rewrite.
        let (chunks, bytes) = view.encode()?;
        let terms = view.terms();
        let state = HostState::new(node.clone(), bytes, view.entries.len());
        let before = lock(&self.inner.chunks).get(node_id).copied().unwrap_or(0);
        let written = (|| {
            let n = chunks.len() as u32;
            let mut batch = sled::Batch::default();
            for (i, c) in chunks.into_iter().enumerate() {
                batch.insert(chunk_key(node_id, i as u32), c);
            }
            for i in n..before {
                batch.remove(chunk_key(node_id, i));
            }
            self.persist(|s| {
                s.hosts.apply_batch(batch)?;
                if local {
                    s.meta.insert(KEY_LOCAL_SEEN, &now.to_be_bytes())?;
                }
                Ok(())
            })?;
            self.inner.host_writes.fetch_add(1, Ordering::Relaxed);
            lock(&self.inner.chunks).insert(node_id.to_string(), n);
            Ok::<(), StoreError>(())
        })();
        // After the write (a flush starting later covers it), or after it failed (then
        // only a rewrite from memory makes it durable).
        self.wrote(Wrote::Host(node_id));
        if local {
            self.wrote(Wrote::LocalSeen);
        }
        let result = match written {
            // Ours is on disk before any reader (who could be a query) can see it.
            Ok(()) if local => self.flush_tracked(),
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        };
        write(&self.inner.mem).publish(Arc::new(state), old_terms, &terms);
        result
    }

    /// Forget a peer and its sightings (used only to keep the peer table bounded).
    /// Forgotten in memory even when sled fails (then `keep` removes it from disk later).
    pub fn remove_peer(&self, node_id: &str) -> Result<(), StoreError> {
        let _writer = lock(&self.inner.peer_writer);
        let n = lock(&self.inner.chunks).get(node_id).copied().unwrap_or(0);
        let mut batch = sled::Batch::default();
        for i in 0..n {
            batch.remove(chunk_key(node_id, i));
        }
        let result = self.persist(|s| {
            s.hosts.apply_batch(batch)?;
            s.peers_tree.remove(node_id.as_bytes())?;
            Ok(())
        });
        if result.is_ok() {
            lock(&self.inner.chunks).remove(node_id);
        }
        write(&self.inner.mem).remove(node_id);
        write(&self.inner.peers).remove(node_id);
        self.wrote(Wrote::Host(node_id));
        self.wrote(Wrote::Peer(node_id));
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// Whether a compaction or a repair is running, so that a write now would wait for it:
    /// async callers then write from a blocking context instead of holding up their
    /// runtime (a write that checks just before one starts still waits for it, once).
    pub fn in_maintenance(&self) -> bool {
        self.inner.maintenance.load(Ordering::Acquire)
    }

    /// Mark a compaction or a repair for its duration (see [`Store::in_maintenance`]).
    fn maintenance(&self) -> MaintenanceGuard<'_> {
        self.inner.maintenance.store(true, Ordering::Release);
        MaintenanceGuard(&self.inner.maintenance)
    }
}

/// Records are postcard-encoded: compact, and several times faster to decode than JSON.
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_allocvec(v)?)
}

/// A record that does not decode is skipped (and left in place, never deleted).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

fn new_node_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

/// Clears the maintenance flag when a compaction or a repair ends, however it ends.
struct MaintenanceGuard<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for MaintenanceGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
