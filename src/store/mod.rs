//! The only code that touches sled.
//!
//! The store keeps, across restarts and `kill -9`: this node's identity (a random id made
//! on first start and kept forever), every (host, disk) sighting with first/last seen, the
//! peers ever heard, and a schema version checked at open. Local and peer data go in through
//! separate calls (`replace_local` for the watchers, `replace_peer_inventory` and
//! `upsert_peer` for the peer layer); queries read the fleet-wide picture.
//!
//! Every write that replaces an inventory is one sled batch (atomic). Our own inventory is
//! flushed before it becomes visible: readers of the sightings wait while it is being
//! committed, so a local disk a query has shown cannot be lost by a `kill -9` right after
//! the answer. Peer inventories are flushed by the peer layer once per burst of datagrams.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{AttachRecord, DiskRecord, Millis, PeerRecord, Sighting};

/// The layout version of the data in sled. Bump it when records change incompatibly; an
/// older or newer store is then refused at open instead of being misread.
pub const SCHEMA_VERSION: u32 = 2;

const META: &str = "meta";
const SIGHTINGS: &str = "sightings";
const PEERS: &str = "peers";
const ATTACHES: &str = "attaches";
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_NODE_ID: &[u8] = b"node_id";
const KEY_LOCAL_SEEN: &[u8] = b"local_seen";
const KEY_INDEXED: &[u8] = b"term_index_v1";
const INDEX: &str = "index";
/// sled's page cache size.
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
}

impl InventoryDiff {
    /// Whether anything a reader would notice changed.
    pub fn is_empty(&self) -> bool {
        self.appeared.is_empty() && self.vanished.is_empty() && self.changed.is_empty()
    }
}

/// The persistent store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    sightings: sled::Tree,
    /// Term index: `u`/`l`/`d` + uuid/label/device + NUL + sighting key, and
    /// `h` + host name + NUL + node id. Written before the records it points to.
    index: sled::Tree,
    peers: sled::Tree,
    attaches: sled::Tree,
    node_id: String,
    path: PathBuf,
    /// Held for writing while an inventory is applied and flushed, for reading while
    /// sightings are read: sled shows a batch to readers at once, before it is on disk.
    commit: std::sync::Arc<std::sync::RwLock<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
        }
        _ => false,
    }
}

impl Store {
    /// Open (or create) the store in `path`, check its schema and load or make the node id.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source: sled::Error| {
            if is_lock_error(&source) {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        check_log_readable(path)?;
        let db = sled::Config::new()
            .path(path)
            // Fewer rewrites of log segments than LowSpace (faster steady ingest, see
            // BENCHMARKS.md), and no timer-driven flushes: every write that must be durable
            // is flushed explicitly, so an idle daemon does no I/O at all.
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            // sled caches up to 1 GiB by default; diskd's working set is small.
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(open_err)?;
        let meta = db.open_tree(META).map_err(open_err)?;
        let sightings = db.open_tree(SIGHTINGS).map_err(open_err)?;
        let peers = db.open_tree(PEERS).map_err(open_err)?;
        let attaches = db.open_tree(ATTACHES).map_err(open_err)?;
        let index = db.open_tree(INDEX).map_err(open_err)?;

        match meta.get(KEY_SCHEMA).map_err(open_err)? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).into_owned();
                if found != SCHEMA_VERSION.to_string() {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                if !sightings.is_empty() || !peers.is_empty() {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found: "none (data without a version)".into(),
                        expected: SCHEMA_VERSION,
                    });
                }
                meta.insert(KEY_SCHEMA, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(open_err)?;
            }
        }
        let node_id = match meta.get(KEY_NODE_ID).map_err(open_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = new_node_id();
                meta.insert(KEY_NODE_ID, id.as_bytes()).map_err(open_err)?;
                id
            }
        };
        if meta.get(KEY_INDEXED).map_err(open_err)?.is_none() {
            // A store written before the index existed: build it once.
            for item in sightings.iter() {
                let (k, v) = item.map_err(open_err)?;
                if let Some(s) = decode::<Sighting>(&v) {
                    for e in index_keys(&s.disk, &s.host, &k) {
                        index.insert(e, &[][..]).map_err(open_err)?;
                    }
                }
            }
            meta.insert(KEY_INDEXED, &b"1"[..]).map_err(open_err)?;
        }
        db.flush().map_err(open_err)?;
        Ok(Store {
            db,
            meta,
            index,
            sightings,
            peers,
            attaches,
            node_id,
            path: path.to_path_buf(),
            commit: Default::default(),
        })
    }

    /// This node's permanent id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Make everything written so far durable. Callers await this before they report a
    /// change as done, so a `kill -9` afterwards cannot lose it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Replace this node's inventory with what the watchers found, as one atomic step.
    pub fn replace_local(
        &self,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> Result<InventoryDiff, StoreError> {
        let id = self.node_id.clone();
        self.replace_inventory(&id, host, addr, disks, now, true)
    }

    /// Replace a peer's inventory with the one it announced, as one atomic step. Not flushed
    /// here: the peer layer flushes once per burst of datagrams (`flush`), so a wave of
    /// announces costs one disk sync, not one per peer; a peer's data lost in a crash within
    /// that window comes back with its next announce.
    pub fn replace_peer_inventory(
        &self,
        node_id: &str,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> Result<InventoryDiff, StoreError> {
        self.replace_inventory(node_id, host, addr, disks, now, false)
    }

    fn replace_inventory(
        &self,
        node_id: &str,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
        durable_before_visible: bool,
    ) -> Result<InventoryDiff, StoreError> {
        // Each host's records have one writer (the watchers for ours, the peer layer for a
        // peer's), so reading and comparing needs no lock. Only a write that must be on
        // disk before anyone sees it holds readers off, from apply to flush.
        let prefix = node_prefix(node_id);
        let mut old: BTreeMap<Vec<u8>, Sighting> = BTreeMap::new();
        for item in self.sightings.scan_prefix(&prefix) {
            let (k, v) = item?;
            if let Some(s) = decode::<Sighting>(&v) {
                old.insert(k.to_vec(), s);
            }
        }
        // When this host's previous inventory arrived: the last time a disk that is gone
        // now was seen.
        let prev_seen = self.host_seen(node_id).unwrap_or(now);
        let mut diff = InventoryDiff::default();
        let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut index_add: Vec<Vec<u8>> = Vec::new();
        let mut index_del: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for disk in disks {
            let mut key = prefix.clone();
            key.extend_from_slice(disk.identity().as_bytes());
            if seen.contains(&key) {
                // Two devices with the same UUID (a cloned disk, a snapshot): keep both,
                // the second one keyed by its device too.
                key.push(0);
                key.extend_from_slice(disk.device.as_bytes());
                if seen.contains(&key) {
                    continue;
                }
            }
            seen.insert(key.clone());
            let first_seen = match old.get(&key) {
                Some(prev) => {
                    let same_place = prev.host == host && prev.addr.as_deref() == addr;
                    if prev.present && prev.disk == *disk && same_place {
                        // Unchanged: nothing is rewritten. While present, its last-seen
                        // time is its host's (see `host_seen`).
                        continue;
                    }
                    if !prev.present {
                        diff.appeared.push(disk.clone());
                    } else if prev.disk != *disk {
                        diff.changed.push(disk.clone());
                    }
                    if prev.disk != *disk {
                        index_del.extend(term_keys(&prev.disk, &key));
                        index_add.extend(term_keys(disk, &key));
                    }
                    prev.first_seen
                }
                None => {
                    diff.appeared.push(disk.clone());
                    index_add.extend(term_keys(disk, &key));
                    now
                }
            };
            let sighting = Sighting {
                node_id: node_id.to_string(),
                host: host.to_string(),
                addr: addr.map(str::to_string),
                disk: disk.clone(),
                present: true,
                first_seen,
                last_seen: now,
            };
            writes.push((key, encode(&sighting)?));
        }
        for (key, mut prev) in old {
            if seen.contains(&key) || !prev.present {
                continue;
            }
            diff.vanished.push(prev.disk.clone());
            prev.present = false;
            prev.last_seen = prev.last_seen.max(prev_seen);
            writes.push((key, encode(&prev)?));
        }
        let _commit =
            durable_before_visible.then(|| self.commit.write().unwrap_or_else(|p| p.into_inner()));
        if !writes.is_empty() {
            // The host name of this node, once (not once per disk).
            index_add.push(host_key(host, node_id.as_bytes()));
            // Three batches instead of one transaction (which costs sled a copy of every
            // node it touches): new index entries first, then the records, then the stale
            // entries. A crash in between leaves extra index entries at worst, and `find`
            // checks every record it reaches through the index, so nothing is ever missed.
            let mut add = sled::Batch::default();
            for k in &index_add {
                add.insert(k.as_slice(), &[][..]);
            }
            self.index.apply_batch(add)?;
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            self.sightings.apply_batch(batch)?;
            let mut del = sled::Batch::default();
            for k in index_del.iter().filter(|k| !index_add.contains(k)) {
                del.remove(k.as_slice());
            }
            self.index.apply_batch(del)?;
        }
        if node_id == self.node_id {
            // Our own inventory's last-seen time: one key per scan instead of every record.
            self.meta.insert(KEY_LOCAL_SEEN, &now.to_be_bytes())?;
        }
        if durable_before_visible {
            // On disk before any reader (who could be a query) can see it.
            self.db.flush()?;
        }
        Ok(diff)
    }

    /// When host `node_id`'s latest inventory arrived: our last scan, or the peer's last
    /// datagram as stored.
    pub fn host_seen(&self, node_id: &str) -> Option<Millis> {
        if node_id == self.node_id {
            let v = self.meta.get(KEY_LOCAL_SEEN).ok().flatten()?;
            let bytes: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        } else {
            self.peer(node_id).map(|p| p.last_seen)
        }
    }

    /// Every sighting of every host, in key order. Records that cannot be decoded are
    /// skipped (and left in place, never deleted); a read error fails the whole answer
    /// rather than giving a partial one.
    pub fn sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        let _commit = self.commit.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for item in self.sightings.iter() {
            let (_, v) = item?;
            out.extend(decode(&v));
        }
        Ok(out)
    }

    /// Sightings whose uuid (any case), label (exact) or device (exact) is `term`, through
    /// the term index: a query reads only the matching records, however large the fleet.
    pub fn find(&self, term: &str) -> Result<Vec<Sighting>, StoreError> {
        let _commit = self.commit.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for prefix in [
            index_prefix(b'u', &term.to_ascii_lowercase()),
            index_prefix(b'l', term),
            index_prefix(b'd', term),
        ] {
            for item in self.index.scan_prefix(&prefix).keys() {
                let item = item?;
                let key = item[prefix.len()..].to_vec();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        let mut out = Vec::new();
        for k in &keys {
            if let Some(v) = self.sightings.get(k)? {
                out.extend(decode::<Sighting>(&v).filter(|s| s.disk.matches(term)));
            }
        }
        Ok(out)
    }

    /// Sightings of the host named `host` (one node name may have had several node ids).
    pub fn find_host(&self, host: &str) -> Result<Vec<Sighting>, StoreError> {
        let _commit = self.commit.read().unwrap_or_else(|p| p.into_inner());
        let prefix = index_prefix(b'h', host);
        let mut node_ids: Vec<Vec<u8>> = Vec::new();
        for k in self.index.scan_prefix(&prefix).keys() {
            node_ids.push(k?[prefix.len()..].to_vec());
        }
        let mut out = Vec::new();
        for id in node_ids {
            let mut p = id;
            p.push(0);
            for v in self.sightings.scan_prefix(&p).values() {
                out.extend(decode::<Sighting>(&v?).filter(|s| s.host == host));
            }
        }
        Ok(out)
    }

    /// How many sightings the store holds (without reading them).
    pub fn sightings_len(&self) -> usize {
        self.sightings.len()
    }

    /// This node's current inventory (what the peer layer announces).
    pub fn local_inventory(&self) -> Vec<DiskRecord> {
        let _commit = self.commit.read().unwrap_or_else(|p| p.into_inner());
        self.sightings
            .scan_prefix(node_prefix(&self.node_id))
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode::<Sighting>(&v))
            .filter(|s| s.present)
            .map(|s| s.disk)
            .collect()
    }

    /// Forget a peer and its sightings (used only to keep the peer table bounded).
    pub fn remove_peer(&self, node_id: &str) -> Result<(), StoreError> {
        let _commit = self.commit.write().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let mut index_batch = sled::Batch::default();
        for item in self.sightings.scan_prefix(node_prefix(node_id)) {
            let (k, v) = item?;
            if let Some(s) = decode::<Sighting>(&v) {
                for e in index_keys(&s.disk, &s.host, &k) {
                    index_batch.remove(e);
                }
            }
            batch.remove(k);
        }
        self.sightings.apply_batch(batch)?;
        self.index.apply_batch(index_batch)?;
        self.peers.remove(node_id.as_bytes())?;
        Ok(())
    }

    /// Remember an attach made for disk `uuid`.
    pub fn put_attach(&self, uuid: &str, rec: &AttachRecord) -> Result<(), StoreError> {
        self.attaches
            .insert(uuid.to_ascii_lowercase().as_bytes(), encode(rec)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// The attach made for disk `uuid`, if any.
    pub fn attach(&self, uuid: &str) -> Option<AttachRecord> {
        self.attaches
            .get(uuid.to_ascii_lowercase().as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Forget the attach of disk `uuid`.
    pub fn remove_attach(&self, uuid: &str) -> Result<(), StoreError> {
        self.attaches.remove(uuid.to_ascii_lowercase().as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Insert or update a peer.
    pub fn upsert_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        let _commit = self.commit.write().unwrap_or_else(|p| p.into_inner());
        self.peers.insert(peer.node_id.as_bytes(), encode(peer)?)?;
        Ok(())
    }

    /// One peer, by node id.
    pub fn peer(&self, node_id: &str) -> Option<PeerRecord> {
        self.peers
            .get(node_id.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Every peer ever heard.
    pub fn peers(&self) -> Vec<PeerRecord> {
        // sled iterators are not snapshots: under the lock, a peer replaced while we read
        // is not counted twice.
        let _commit = self.commit.read().unwrap_or_else(|p| p.into_inner());
        self.peers
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode(&v))
            .collect()
    }

    /// Whether the host `node_id` counts as live now: this node always, a peer when heard
    /// within `expiry` and not gone with a goodbye.
    pub fn host_is_live(&self, node_id: &str, now: Millis, expiry: Duration) -> bool {
        node_id == self.node_id || self.peer(node_id).is_some_and(|p| p.is_live(now, expiry))
    }
}

/// Refuse a data file that sled 0.34 would silently start afresh over.
///
/// sled scans the segment headers of its log (`db`) at open; when not one has a valid
/// checksum it takes the log for new and zeroes it, inside `open`, before the caller can
/// look at what was recovered. So a store whose `db` was overwritten with garbage would
/// lose its data and node id without a word. This looks first, the way sled does: a `db`
/// long enough to hold a segment header must have at least one valid header, unless every
/// header is still all zeroes (a log sled made but never wrote: nothing to lose). Anything
/// this cannot judge (no `db`, no readable `conf`) is left to sled.
fn check_log_readable(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    /// sled 0.34's segment header: crc32 (xor 0xFFFF_FFFF) of the next 16 bytes, the lsn
    /// and the max stable lsn.
    const SEG_HEADER_LEN: u64 = 20;
    /// sled 0.34's default `segment_size`, which it uses when `conf` does not exist.
    const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024;

    let Ok(mut file) = std::fs::File::open(path.join("db")) else {
        return Ok(());
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Ok(());
    };
    let segment_size = match std::fs::read(path.join("conf")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_SEGMENT_SIZE,
        Err(_) => return Ok(()),
        // sled's format: "segment_size: N\n..." then a 4-byte crc; a conf this short is
        // ignored and rewritten by sled.
        Ok(conf) if conf.len() <= 8 => DEFAULT_SEGMENT_SIZE,
        Ok(conf) => {
            let text = String::from_utf8_lossy(&conf[..conf.len() - 4]).into_owned();
            match text
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) if n >= SEG_HEADER_LEN => n,
                // sled itself refuses a conf it cannot parse.
                _ => return Ok(()),
            }
        }
    };
    // The same count of segments sled scans.
    let segments = len / segment_size + u64::from(len % segment_size >= SEG_HEADER_LEN);
    let mut all_zero = true;
    for i in 0..segments {
        let mut header = [0u8; SEG_HEADER_LEN as usize];
        if file.read_exact_at(&mut header, i * segment_size).is_err() {
            continue;
        }
        let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if stored ^ 0xFFFF_FFFF == crc32(&header[4..]) {
            return Ok(());
        }
        all_zero &= header.iter().all(|&b| b == 0);
    }
    if segments == 0 || all_zero {
        return Ok(());
    }
    // Say a little about what is there, for the operator.
    let mut head = [0u8; 8];
    let n = file.read(&mut head).unwrap_or(0);
    Err(StoreError::Unreadable {
        path: path.to_path_buf(),
        detail: format!(
            "the data file db ({len} bytes, starting {:02x?}) has no valid sled segment; it is corrupt or not a sled log",
            &head[..n]
        ),
    })
}

/// CRC-32 (IEEE), as sled computes it with crc32fast.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Records are postcard-encoded: compact, and several times faster to decode than JSON,
/// which matters when a query or an announce wave touches thousands of them.
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_allocvec(v)?)
}

/// A record that does not decode is skipped (and left in place, never deleted).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// `kind` + term + NUL: the index prefix of one term.
fn index_prefix(kind: u8, term: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(term.len() + 2);
    p.push(kind);
    p.extend_from_slice(term.as_bytes());
    p.push(0);
    p
}

/// The index entries of one sighting: its UUID (lower case), label and device, each
/// pointing at the sighting's key, and its host name pointing at its node id.
fn index_keys(disk: &DiskRecord, host: &str, key: &[u8]) -> Vec<Vec<u8>> {
    let mut out = term_keys(disk, key);
    let node_id = key.split(|&b| b == 0).next().unwrap_or(key);
    out.push(host_key(host, node_id));
    out
}

/// `h` + host + NUL + node id: which node ids have carried a host name.
fn host_key(host: &str, node_id: &[u8]) -> Vec<u8> {
    let mut k = index_prefix(b'h', host);
    k.extend_from_slice(node_id);
    k
}

/// The UUID, label and device entries of one sighting.
fn term_keys(disk: &DiskRecord, key: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(3);
    let mut entry = |kind: u8, term: &str, target: &[u8]| {
        let mut k = index_prefix(kind, term);
        k.extend_from_slice(target);
        out.push(k);
    };
    if let Some(u) = &disk.uuid {
        entry(b'u', &u.to_ascii_lowercase(), key);
    }
    if let Some(l) = &disk.label {
        entry(b'l', l, key);
    }
    entry(b'd', &disk.device, key);
    out
}

fn node_prefix(node_id: &str) -> Vec<u8> {
    let mut p = node_id.as_bytes().to_vec();
    p.push(0);
    p
}

fn new_node_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
