//! The only code that touches sled.
//!
//! The store keeps, across restarts and `kill -9`: this node's identity (a random id made
//! on first start and kept forever), every (host, disk) sighting with first/last seen and
//! the disk's stays (history), the peers ever heard, and a schema version checked at open.
//! Local and peer data go in through separate calls (`replace_local` for the watchers,
//! `replace_peer_inventory` and `upsert_peer` for the peer layer); queries read the
//! fleet-wide picture.
//!
//! Layout (schema 5, see `layout`): the unit of change is one host's inventory, so each
//! host is ONE value in tree `hosts` (split across a few keys only when larger than 64 KiB),
//! rewritten as one atomic sled batch when its inventory changes and not written at all
//! when it does not. Each disk in it carries its hardware (size, model, serial, WWN, ...),
//! new in schema 4, and what blkid made of it (`Probe`: what `list --blank` trusts), new in
//! schema 5, and is keyed within its host by its identity (UUID, else WWN, else
//! serial, else device: `DiskRecord::identity`). The term index (UUID, label, device,
//! serial, WWN, host name) lives in memory only, built at open from the host values and
//! updated with every write.
//!
//! Older stores are converted at open (see `migrate`): schemas 4 and 3 (the same layout
//! without the probe, and without the hardware too) host by host in place, schema 2 (one
//! record per sighting) in one pass; all crash-safe, committed by setting the schema
//! version last.
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
mod layout;
mod migrate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use health::StoreHealth;
use health::{Durability, Sled, Wrote};
use layout::{
    chunk_key, join_chunks, parse_chunk_key, term, term_lower, term_wwn, unframed, DiskView,
    EntryView, HostState, HostView, Key, PastStay,
};
pub use layout::{MAX_ABSENT_PER_HOST, MAX_STAYS};

use crate::model::fleet;
use crate::model::{
    AttachRecord, DiskRecord, FleetEvent, FleetEventKind, Millis, PeerRecord, Sighting, Stay,
};

/// The layout version of the data in sled. Bump it when records change incompatibly. An
/// older store is converted at open (schemas 4 and 3 -> 5 and 2 -> 5, see `migrate`); a
/// newer one is refused instead of being misread.
pub const SCHEMA_VERSION: u32 = 5;

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
    /// Kept in memory only, never on disk (see [`Store::in_memory`]).
    volatile: bool,
}

const NONE: u64 = u64::MAX;

/// The committed picture.
#[derive(Default)]
struct Memory {
    /// Every host's slot in `slots`, by node id.
    hosts: BTreeMap<Arc<str>, u32>,
    slots: Vec<Option<Arc<HostState>>>,
    /// Slots no host has.
    free: Vec<u32>,
    /// Term (see `layout::term`) -> the slot of the one host that has it, or `MANY` + the
    /// position in `many` of the slots of the hosts that have it (a term of one host is
    /// the common case: UUIDs, devices and labels are mostly unique).
    index: HashMap<u64, u32, std::hash::BuildHasherDefault<TermHasher>>,
    many: Vec<Vec<u32>>,
    many_free: Vec<u32>,
    /// Sightings of every host.
    sightings: usize,
}

/// What a store starts from: read from sled at open, or empty.
struct Loaded {
    mem: Memory,
    peers: BTreeMap<String, PeerRecord>,
    local_seen: u64,
    chunks: HashMap<String, u32>,
}

/// See `Memory::index`.
const MANY: u32 = 1 << 31;

impl Memory {
    fn get(&self, node_id: &str) -> Option<&Arc<HostState>> {
        let slot = *self.hosts.get(node_id)?;
        self.slots[slot as usize].as_ref()
    }

    fn index_add(&mut self, t: u64, slot: u32) {
        use std::collections::hash_map::Entry as E;
        match self.index.entry(t) {
            E::Vacant(v) => {
                v.insert(slot);
            }
            E::Occupied(mut o) => {
                let cur = *o.get();
                if cur & MANY != 0 {
                    let list = &mut self.many[(cur & !MANY) as usize];
                    if !list.contains(&slot) {
                        list.push(slot);
                    }
                } else if cur != slot {
                    let i = match self.many_free.pop() {
                        Some(i) => {
                            self.many[i as usize] = vec![cur, slot];
                            i
                        }
                        None => {
                            self.many.push(vec![cur, slot]);
                            (self.many.len() - 1) as u32
                        }
                    };
                    *o.get_mut() = MANY | i;
                }
            }
        }
    }

    fn index_remove(&mut self, t: u64, slot: u32) {
        use std::collections::hash_map::Entry as E;
        let E::Occupied(mut o) = self.index.entry(t) else {
            return;
        };
        let cur = *o.get();
        if cur & MANY == 0 {
            if cur == slot {
                o.remove();
            }
            return;
        }
        let i = cur & !MANY;
        let list = &mut self.many[i as usize];
        if let Some(p) = list.iter().position(|&s| s == slot) {
            list.swap_remove(p);
        }
        match list.len() {
            0 => {
                o.remove();
            }
            1 => *o.get_mut() = list[0],
            _ => return,
        }
        self.many[i as usize] = Vec::new();
        self.many_free.push(i);
    }

    /// Put `state` (whose terms are `terms`) in place of the host's previous value (whose
    /// terms were `old_terms`).
    fn publish(&mut self, state: Arc<HostState>, old_terms: &[u64], terms: &[u64]) {
        let slot = match self.hosts.get(&*state.node_id) {
            Some(&slot) => slot,
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.hosts.insert(state.node_id.clone(), slot);
                slot
            }
        };
        let new_len = state.len;
        let old = self.slots[slot as usize].replace(state);
        // Both sorted: change only the terms that differ.
        for t in old_terms {
            if terms.binary_search(t).is_err() {
                self.index_remove(*t, slot);
            }
        }
        for t in terms {
            if old_terms.binary_search(t).is_err() {
                self.index_add(*t, slot);
            }
        }
        self.sightings = self.sightings + new_len - old.map_or(0, |o| o.len);
    }

    fn remove(&mut self, node_id: &str) {
        let Some(slot) = self.hosts.remove(node_id) else {
            return;
        };
        if let Some(old) = self.slots[slot as usize].take() {
            for t in old.view().terms() {
                self.index_remove(t, slot);
            }
            self.sightings -= old.len;
        }
        self.free.push(slot);
    }

    /// The hosts that have any of `terms`, in node id order.
    fn hosts_with(&self, terms: impl IntoIterator<Item = u64>) -> Vec<Arc<HostState>> {
        let mut slots: Vec<u32> = Vec::new();
        for t in terms {
            match self.index.get(&t) {
                Some(&s) if s & MANY != 0 => {
                    slots.extend_from_slice(&self.many[(s & !MANY) as usize]);
                }
                Some(&s) => slots.push(s),
                None => {}
            }
        }
        slots.sort_unstable();
        slots.dedup();
        let mut out: Vec<Arc<HostState>> = slots
            .into_iter()
            .filter_map(|s| self.slots[s as usize].clone())
            .collect();
        out.sort_unstable_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Every host, in node id order.
    fn all(&self) -> Vec<Arc<HostState>> {
        self.hosts
            .values()
            .filter_map(|&s| self.slots[s as usize].clone())
            .collect()
    }
}

/// The index keys are hashes already.
#[derive(Default)]
struct TermHasher(u64);

impl std::hash::Hasher for TermHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

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

/// One host's value from its chunks, with its index terms; `None` when it is unreadable
/// (skipped, as at every open).
fn decode_host(id: String, group: &[sled::IVec]) -> Option<(HostState, Vec<u64>)> {
    let bytes = join_chunks(group)?;
    let view = HostView::decode(unframed(&bytes))?;
    let (terms, len) = (view.terms(), view.entries.len());
    Some((HostState::new(Arc::from(id.as_str()), bytes, len), terms))
}

/// Read every host value from sled and build the in-memory part from them. Restart time is
/// mostly this (160,000 records: about 45 ms reading sled, 55 ms decoding and collecting
/// index terms, 20 ms building the index), so the first two overlap: this thread walks
/// sled while a second one decodes what it hands over, in key order (the order hosts are
/// listed in). The values stay encoded (the index
/// is built from borrowed views), and the index is sized once, when every host's terms are
/// known.
fn load_hosts(hosts: &sled::Tree) -> Result<(Memory, HashMap<String, u32>), sled::Error> {
    /// Hosts handed over at once: enough to keep the decoder busy, little held at a time.
    const QUEUE: usize = 256;
    let mut chunks: HashMap<String, u32> = HashMap::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<sled::IVec>)>(QUEUE);
    let loaded = std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            let mut loaded = Vec::new();
            for (id, group) in rx {
                loaded.extend(decode_host(id, &group));
            }
            loaded
        });
        let mut group: Vec<sled::IVec> = Vec::new();
        let mut group_id: Option<String> = None;
        let walk: Result<(), sled::Error> = (|| {
            for item in hosts.iter() {
                let (k, v) = item?;
                let Some((id, i)) = parse_chunk_key(&k) else {
                    continue;
                };
                if group_id.as_deref() != Some(id) {
                    if let Some(prev) = group_id.take() {
                        // The decoder only stops when this side hangs up (or panics:
                        // then nothing is loaded, see below).
                        let _ = tx.send((prev, std::mem::take(&mut group)));
                    }
                    group_id = Some(id.to_string());
                }
                let n = chunks.entry(id.to_string()).or_default();
                *n = (*n).max(i + 1);
                // Chunks must be numbered 0, 1, ... without a gap to make a value.
                if i as usize == group.len() {
                    group.push(v);
                }
            }
            if let Some(prev) = group_id.take() {
                let _ = tx.send((prev, group));
            }
            Ok(())
        })();
        drop(tx);
        // A decoder that panicked loaded nothing: the hosts come back with the peers'
        // next announces, as after a lost store.
        let loaded = decoder.join().unwrap_or_default();
        walk.map(|()| loaded)
    })?;
    let mut mem = Memory::default();
    mem.index
        .reserve(loaded.iter().map(|(_, terms)| terms.len()).sum());
    for (state, terms) in loaded {
        mem.publish(Arc::new(state), &[], &terms);
    }
    Ok((mem, chunks))
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
    /// Open (or create) the store in `path`, check its schema (converting a schema-2 or
    /// schema-3 store), load or make the node id, and load every host into memory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // A store just closed in this process may hold sled's lock for a moment longer
        // (its background threads finish first): a short wait, then `Locked` stands.
        let deadline = std::time::Instant::now() + OPEN_LOCK_WAIT;
        loop {
            match Store::open_until(path, migrate::Until::All) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_until(path: &Path, until: migrate::Until) -> Result<Store, StoreError> {
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
        // A compaction that died before its swap left a full copy beside the store.
        let leftover = compact::staging(path);
        if leftover.is_dir() {
            if let Err(e) = std::fs::remove_dir_all(&leftover) {
                tracing::warn!(
                    "cannot remove {} (left by a compaction): {e}",
                    leftover.display()
                );
            }
        }
        let db = health::config(path).open().map_err(open_err)?;
        let meta = db.open_tree(META).map_err(open_err)?;
        let has_tree = |name: &str| {
            db.tree_names()
                .iter()
                .any(|n| n.as_ref() == name.as_bytes())
        };

        match meta.get(KEY_SCHEMA).map_err(open_err)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {
                migrate::drop_v2_leftovers(&db, &meta).map_err(open_err)?;
            }
            Some(v) if v.as_ref() == b"3" || v.as_ref() == b"4" => {
                // Schemas 3 and 4 converted schema 2 the same way and may have left its
                // trees.
                migrate::drop_v2_leftovers(&db, &meta).map_err(open_err)?;
                let hosts = db.open_tree(HOSTS).map_err(open_err)?;
                migrate::hosts_in_place(&db, &meta, &hosts, KEY_SCHEMA, until).map_err(open_err)?;
            }
            Some(v) if v.as_ref() == b"2" => {
                migrate::from_v2(&db, &meta, HOSTS, KEY_SCHEMA, until).map_err(open_err)?;
            }
            Some(v) => {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: SCHEMA_VERSION,
                });
            }
            None => {
                let mut data = false;
                for name in [HOSTS, PEERS, migrate::V2_SIGHTINGS] {
                    if has_tree(name) {
                        data |= !db.open_tree(name).map_err(open_err)?.is_empty();
                    }
                }
                if data {
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
        let hosts = db.open_tree(HOSTS).map_err(open_err)?;
        let peers_tree = db.open_tree(PEERS).map_err(open_err)?;
        let attaches = db.open_tree(ATTACHES).map_err(open_err)?;
        let node_id = match meta.get(KEY_NODE_ID).map_err(open_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = new_node_id();
                meta.insert(KEY_NODE_ID, id.as_bytes()).map_err(open_err)?;
                id
            }
        };
        let local_seen = meta
            .get(KEY_LOCAL_SEEN)
            .map_err(open_err)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(NONE, u64::from_be_bytes);

        // Every host into memory, and the index with it: `load_hosts`.
        let (mem, chunks) = load_hosts(&hosts).map_err(open_err)?;
        let mut peers = BTreeMap::new();
        for item in peers_tree.iter() {
            let (k, v) = item.map_err(open_err)?;
            if let Some(p) = decode::<PeerRecord>(&v) {
                peers.insert(String::from_utf8_lossy(&k).into_owned(), p);
            }
        }
        db.flush().map_err(open_err)?;
        let sled = Sled {
            db,
            meta,
            hosts,
            peers_tree,
            attaches,
        };
        let loaded = Loaded {
            mem,
            peers,
            local_seen,
            chunks,
        };
        Ok(Store::assemble(
            Some(sled),
            node_id,
            path.to_path_buf(),
            loaded,
        ))
    }

    /// A store that lives in memory only, under the node id given: what readers see and
    /// writers change is the same as with [`Store::open`], but nothing reaches a disk and
    /// nothing survives the process. For `diskd-bench sim`, which runs thousands of peer
    /// layers in one process (a sled each would be thousands of files, caches and
    /// threads), and keeps a crashed node's store to restart it from.
    pub fn in_memory(node_id: &str) -> Store {
        let empty = Loaded {
            mem: Memory::default(),
            peers: BTreeMap::new(),
            local_seen: NONE,
            chunks: HashMap::new(),
        };
        Store::assemble(None, node_id.to_string(), PathBuf::from("(memory)"), empty)
    }

    /// The one place a store is put together: on disk (`sled` given, from `open`) or in
    /// memory only (`None`, which also turns compaction off).
    fn assemble(sled: Option<Sled>, node_id: String, path: PathBuf, loaded: Loaded) -> Store {
        let volatile = sled.is_none();
        Store {
            inner: Arc::new(Inner {
                sled: RwLock::new(sled.map(Arc::new)),
                durability: Mutex::new(Durability::default()),
                trouble: tokio::sync::Notify::new(),
                node_id,
                path,
                mem: RwLock::new(loaded.mem),
                peers: RwLock::new(loaded.peers),
                local_seen: AtomicU64::new(loaded.local_seen),
                chunks: Mutex::new(loaded.chunks),
                local_writer: Mutex::new(()),
                peer_writer: Mutex::new(()),
                maintenance: std::sync::atomic::AtomicBool::new(false),
                no_exchange: std::sync::atomic::AtomicBool::new(volatile),
                host_writes: AtomicU64::new(0),
                inline_flush: std::sync::atomic::AtomicBool::new(false),
                volatile,
            }),
        }
    }

    /// Open like [`Store::open`], as one of many stores in one process (`diskd-bench
    /// gossip` runs a whole fleet in one): [`Store::flush`] then waits for sled on the
    /// calling thread instead of on sled's thread pool. That pool is process-wide and
    /// grows only when more than 7 jobs are queued, while `flush_async` holds a pool
    /// thread until the log write it queued on the same pool is done; with dozens of
    /// stores flushing at once, every pool thread waits for a write queued behind it and
    /// nothing moves again (a 30-node simulation hung so). A daemon has one store and
    /// flushes it from one task at a time, so [`Store::open`] keeps `flush_async`.
    pub fn open_sharing_process(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open(path)?;
        store.inner.inline_flush.store(true, Ordering::Relaxed);
        Ok(store)
    }

    /// Whether the store lives in memory only ([`Store::in_memory`]): its flush has nothing
    /// to wait for.
    pub fn is_volatile(&self) -> bool {
        self.inner.volatile
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

    /// Replace this node's inventory with what the watchers found, as one atomic step,
    /// durable before it is visible. When the store cannot write, the new inventory is
    /// published in memory all the same (queries answer it) and the error returned; see
    /// [`Store::publish_local`].
    pub fn replace_local(
        &self,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> Result<InventoryDiff, StoreError> {
        let (diff, durable) = self.publish_local(host, addr, disks, now);
        durable.map(|()| diff)
    }

    /// Replace this node's inventory: written and flushed, then visible. When the write or
    /// the flush fails, it is visible all the same (the daemon answers from what it knows)
    /// and the error comes back with the diff: the store is marked failing and
    /// [`Store::keep`] rewrites it from memory once the disk works again.
    pub fn publish_local(
        &self,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> (InventoryDiff, Result<(), StoreError>) {
        let _writer = lock(&self.inner.local_writer);
        let id = self.inner.node_id.clone();
        let out = self.replace_inventory(&id, host, addr, disks, now, true);
        self.inner.local_seen.store(now, Ordering::Release);
        out
    }

    /// Replace a peer's inventory with the one it announced, as one atomic step. Visible
    /// at once; not flushed here: the peer layer flushes once per burst of datagrams
    /// (`flush`), so a wave of announces costs one disk sync, not one per peer; a peer's
    /// data lost in a crash within that window comes back with its next announce. An
    /// announce that changes nothing writes nothing. When sled cannot write, the new
    /// inventory is visible all the same, the error is returned and `keep` rewrites it.
    pub fn replace_peer_inventory(
        &self,
        node_id: &str,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> Result<InventoryDiff, StoreError> {
        let (diff, written) = self.publish_peer(node_id, host, addr, disks, now);
        written.map(|()| diff)
    }

    /// [`Store::replace_peer_inventory`], with the diff even when sled fails: the new
    /// inventory is visible then all the same, so what changed has happened for every
    /// reader, and the peer layer must still say so (fleet events). Dropping the diff with
    /// the error would lose those changes for good: the next announce diffs against the
    /// inventory already in memory and finds nothing.
    pub fn publish_peer(
        &self,
        node_id: &str,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
    ) -> (InventoryDiff, Result<(), StoreError>) {
        let _writer = lock(&self.inner.peer_writer);
        self.replace_inventory(node_id, host, addr, disks, now, false)
    }

    /// Merge, write (and for our own inventory, flush), publish. Published even when sled
    /// fails; the error comes back with the diff.
    fn replace_inventory(
        &self,
        node_id: &str,
        host: &str,
        addr: Option<&str>,
        disks: &[DiskRecord],
        now: Millis,
        local: bool,
    ) -> (InventoryDiff, Result<(), StoreError>) {
        let old = read(&self.inner.mem).get(node_id).cloned();
        let old_view = old.as_ref().map(|o| o.view());
        // When this host's previous inventory arrived: the last time a disk that is gone
        // now was seen.
        let prev_seen = self.host_seen(node_id).unwrap_or(now);
        let merged = merge(old_view.as_ref(), host, addr, disks, now, prev_seen);
        let Some(view) = merged.host else {
            let mut result = Ok(());
            if local {
                // Nothing changed: only the time of our latest inventory (present disks
                // count as seen then), not worth a flush.
                result = self.persist(|s| {
                    s.meta.insert(KEY_LOCAL_SEEN, &now.to_be_bytes())?;
                    Ok(())
                });
                self.wrote(Wrote::LocalSeen);
                if let Err(e) = &result {
                    self.failed(e);
                }
            }
            return (merged.diff, result);
        };
        let node: Arc<str> = old
            .as_ref()
            .map_or_else(|| Arc::from(node_id), |o| o.node_id.clone());
        let (chunks, bytes) = match view.encode() {
            Ok(x) => x,
            // Our own records always encode; nothing to publish if they did not.
            Err(e) => return (merged.diff, Err(e.into())),
        };
        let terms = view.terms();
        let old_terms = old_view.as_ref().map(HostView::terms).unwrap_or_default();
        let state = HostState::new(node, bytes, view.entries.len());
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
        write(&self.inner.mem).publish(Arc::new(state), &old_terms, &terms);
        (merged.diff, result)
    }

    /// When host `node_id`'s latest inventory arrived: our last scan, or the peer's last
    /// datagram as stored.
    pub fn host_seen(&self, node_id: &str) -> Option<Millis> {
        if node_id == self.inner.node_id {
            let t = self.inner.local_seen.load(Ordering::Acquire);
            (t != NONE).then_some(t)
        } else {
            read(&self.inner.peers).get(node_id).map(|p| p.last_seen)
        }
    }

    /// The committed values of every host, in node id order.
    fn all_hosts(&self) -> Vec<Arc<HostState>> {
        read(&self.inner.mem).all()
    }

    /// Every sighting of every host, by host (node id order), then by disk.
    pub fn sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        let hosts = self.all_hosts();
        let mut out = Vec::with_capacity(hosts.iter().map(|h| h.len).sum());
        for h in &hosts {
            let v = h.view();
            out.extend(v.entries.iter().map(|e| e.sighting(&h.node_id, &v)));
        }
        Ok(out)
    }

    /// Sightings whose uuid (any case), label, device or serial (exact) or WWN (any case,
    /// with or without its `0x`/`naa.`/`eui.` prefix) is `term`, through the in-memory term
    /// index: a query reads only the matching hosts.
    pub fn find(&self, term_text: &str) -> Result<Vec<Sighting>, StoreError> {
        let hosts = read(&self.inner.mem).hosts_with(disk_terms(term_text));
        Ok(sightings_of(&hosts, |e, _| e.disk.matches(term_text)))
    }

    /// Sightings of the host named `host` (one node name may have had several node ids).
    pub fn find_host(&self, host: &str) -> Result<Vec<Sighting>, StoreError> {
        let hosts = read(&self.inner.mem).hosts_with([term(b'h', host)]);
        Ok(sightings_of(&hosts, |e, v| {
            e.place(v.host, v.addr).0 == host
        }))
    }

    /// The stays of every disk `term` names (UUID in any case, label, device or serial
    /// exactly, WWN in any form; now or, for a label or device, in an earlier stay), newest
    /// first, at most `MAX_STAYS` per disk. A disk is its identity (see
    /// `DiskRecord::identity`): its UUID, WWN or serial on any host (a blank disk that
    /// moved from one host to another is one disk), or its device on one host when it has
    /// none of them. A current stay's `last_seen` is as stored; its host's seen time
    /// extends it (see `host_seen`).
    pub fn history(&self, term_text: &str) -> Result<Vec<Stay>, StoreError> {
        let candidates = read(&self.inner.mem).hosts_with(disk_terms(term_text));
        // Identities known on any host, and the index term that finds each.
        let mut wanted: HashMap<String, u64> = HashMap::new();
        let mut per_disk: Vec<Vec<Stay>> = Vec::new();
        for h in &candidates {
            let v = h.view();
            for e in &v.entries {
                let hit = e.disk.matches(term_text)
                    || e.past
                        .iter()
                        .any(|p| p.device == term_text || p.label == Some(term_text));
                if !hit {
                    continue;
                }
                match fleet_identity(&e.disk) {
                    Some(found) => {
                        wanted.insert(e.disk.identity(), found);
                    }
                    None => per_disk.push(stays(&h.node_id, &v, e)),
                }
            }
        }
        if !wanted.is_empty() {
            let hosts = read(&self.inner.mem).hosts_with(wanted.values().copied());
            let mut by_identity: BTreeMap<String, Vec<Stay>> = BTreeMap::new();
            for h in &hosts {
                let v = h.view();
                for e in &v.entries {
                    if fleet_identity(&e.disk).is_none() {
                        continue;
                    }
                    let id = e.disk.identity();
                    if wanted.contains_key(&id) {
                        by_identity
                            .entry(id)
                            .or_default()
                            .extend(stays(&h.node_id, &v, e));
                    }
                }
            }
            per_disk.extend(by_identity.into_values());
        }
        let newest_first = |a: &Stay, b: &Stay| {
            (b.first_seen, b.last_seen, b.current)
                .cmp(&(a.first_seen, a.last_seen, a.current))
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.device.cmp(&b.device))
        };
        let mut out = Vec::new();
        for mut d in per_disk {
            d.sort_by(newest_first);
            d.truncate(MAX_STAYS);
            out.extend(d);
        }
        out.sort_by(newest_first);
        Ok(out)
    }

    /// How many sightings the store holds.
    pub fn sightings_len(&self) -> usize {
        read(&self.inner.mem).sightings
    }

    /// How many key/value records the store holds: one per host (a few for a host whose
    /// inventory is larger than 64 KiB), one per peer and per attach, and the metadata.
    pub fn records(&self) -> usize {
        let hosts: u32 = lock(&self.inner.chunks).values().sum();
        let (attaches, meta) = self
            .sled()
            .map_or((0, 0), |s| (s.attaches.len(), s.meta.len()));
        hosts as usize + read(&self.inner.peers).len() + attaches + meta
    }

    /// How many disks the store holds for a host: its present ones and those it keeps as
    /// last known there. A peer with any is never forgotten to make room, and the peers'
    /// sum is what `peers.max_records` bounds.
    pub fn host_entries(&self, node_id: &str) -> usize {
        read(&self.inner.mem).get(node_id).map_or(0, |h| h.len)
    }

    /// This node's current inventory (what the peer layer announces).
    pub fn local_inventory(&self) -> Vec<DiskRecord> {
        self.host_inventory(&self.inner.node_id)
    }

    /// A host's latest inventory (its disks present in it, live or not).
    pub fn host_inventory(&self, node_id: &str) -> Vec<DiskRecord> {
        let mine = read(&self.inner.mem).get(node_id).cloned();
        mine.map(|h| {
            h.view()
                .entries
                .iter()
                .filter(|e| e.present)
                .map(|e| e.disk.to_record())
                .collect()
        })
        .unwrap_or_default()
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

    /// Remember an attach made for disk `uuid`.
    pub fn put_attach(&self, uuid: &str, rec: &AttachRecord) -> Result<(), StoreError> {
        // The writer lock keeps it out of a compaction or a reopen, which would lose it.
        let _writer = lock(&self.inner.peer_writer);
        let value = encode(rec)?;
        let result = self.persist(|s| {
            s.attaches
                .insert(uuid.to_ascii_lowercase().as_bytes(), value)?;
            Ok(())
        });
        if let Err(e) = &result {
            self.failed(e);
        }
        result.and_then(|()| self.flush_tracked())
    }

    /// The attach made for disk `uuid`, if any.
    pub fn attach(&self, uuid: &str) -> Option<AttachRecord> {
        // Not in the middle of a compaction or a reopen, where there is no sled to ask.
        let _writer = lock(&self.inner.peer_writer);
        self.sled()
            .ok()?
            .attaches
            .get(uuid.to_ascii_lowercase().as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Forget the attach of disk `uuid`.
    pub fn remove_attach(&self, uuid: &str) -> Result<(), StoreError> {
        let _writer = lock(&self.inner.peer_writer);
        let result = self.persist(|s| {
            s.attaches.remove(uuid.to_ascii_lowercase().as_bytes())?;
            Ok(())
        });
        if let Err(e) = &result {
            self.failed(e);
        }
        result.and_then(|()| self.flush_tracked())
    }

    /// Insert or update a peer: in memory at once, in sled (not flushed, see
    /// `replace_peer_inventory`); when sled fails, `keep` writes it later.
    pub fn upsert_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        // The writer lock keeps it out of a compaction or a reopen (which would lose it or
        // rewrite an older copy over it); memory first, so a rewrite writes this one.
        let _writer = lock(&self.inner.peer_writer);
        write(&self.inner.peers).insert(peer.node_id.clone(), peer.clone());
        let result = encode(peer).and_then(|v| {
            self.persist(|s| {
                s.peers_tree.insert(peer.node_id.as_bytes(), v)?;
                Ok(())
            })
        });
        self.wrote(Wrote::Peer(&peer.node_id));
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// One peer, by node id.
    pub fn peer(&self, node_id: &str) -> Option<PeerRecord> {
        read(&self.inner.peers).get(node_id).cloned()
    }

    /// Every peer ever heard, in node id order.
    pub fn peers(&self) -> Vec<PeerRecord> {
        read(&self.inner.peers).values().cloned().collect()
    }

    /// Whether the host `node_id` counts as live now: this node always, a peer when heard
    /// within `expiry` and not gone with a goodbye.
    pub fn host_is_live(&self, node_id: &str, now: Millis, expiry: Duration) -> bool {
        node_id == self.inner.node_id
            || read(&self.inner.peers)
                .get(node_id)
                .is_some_and(|p| p.is_live(now, expiry))
    }
}

/// What `replace_inventory` decided.
struct Merged<'a> {
    diff: InventoryDiff,
    /// The host's new value; `None` when nothing changed (nothing is written).
    host: Option<HostView<'a>>,
}

/// Merge an inventory into a host's previous value: what appeared, vanished or changed,
/// and the value to store (with the stays), unless nothing changed. The new value borrows
/// its text from the old one and from `disks`.
fn merge<'a>(
    old: Option<&'a HostView<'a>>,
    host: &'a str,
    addr: Option<&'a str>,
    disks: &'a [DiskRecord],
    now: Millis,
    prev_seen: Millis,
) -> Merged<'a> {
    type Keyed<'k, V> = HashMap<Key<'k>, V, std::hash::BuildHasherDefault<TermHasher>>;
    let old_entries: &'a [EntryView<'a>] = old.map_or(&[][..], |o| &o.entries[..]);
    let (old_host, old_addr) = old.map_or(("", None), |o| (o.host, o.addr));
    let mut by_key: Keyed<'a, &'a EntryView<'a>> = Keyed::default();
    by_key.reserve(old_entries.len());
    by_key.extend(old_entries.iter().map(|e| (e.key(), e)));
    let mut diff = InventoryDiff::default();
    let mut changed = false;
    let mut entries: Vec<EntryView<'a>> = Vec::with_capacity(disks.len().max(old_entries.len()));
    let mut seen: Keyed<'a, ()> = Keyed::default();
    seen.reserve(disks.len());
    // Old entries another identity of the same disk may take over (see `adopt`), built
    // only when a disk is not found by its own key; and the keys of those taken over.
    let mut adoptable: Option<HashMap<&'a str, &'a EntryView<'a>>> = None;
    let mut adopted: Keyed<'a, ()> = Keyed::default();
    for disk in disks {
        let mut key = Key::of(disk);
        if seen.contains_key(&key) {
            // Two devices with the same UUID (a cloned disk, a snapshot): keep both, the
            // second one keyed by its device too.
            key.dup = true;
            if seen.contains_key(&key) {
                continue;
            }
        }
        seen.insert(key, ());
        let new = |first_seen, since, past| EntryView {
            disk: DiskView::of(disk),
            present: true,
            first_seen,
            last_seen: now,
            since,
            dup: key.dup,
            place: Some((host, addr)),
            past,
        };
        let prev = match by_key.get(&key) {
            Some(prev) => Some(*prev),
            None => {
                // Not known by this identity: maybe known by another for the same disk.
                let by_device =
                    adoptable.get_or_insert_with(|| adoptable_entries(old_entries, disks));
                adopt(by_device, &key, disk).inspect(|prev| {
                    adopted.insert(prev.key(), ());
                })
            }
        };
        match prev {
            Some(prev) => {
                let (p_host, p_addr) = prev.place(old_host, old_addr);
                let same_place = p_host == host && p_addr == addr;
                if prev.present && prev.disk.same_as(disk) && same_place {
                    // Unchanged: kept as it is. While present, its last-seen time is its
                    // host's (see `host_seen`).
                    let mut e = (*prev).clone();
                    e.place = Some((p_host, p_addr));
                    entries.push(e);
                    continue;
                }
                changed = true;
                if !prev.present {
                    diff.appeared.push(disk.clone());
                } else if !prev.disk.same_as(disk) {
                    diff.changed.push(disk.clone());
                    diff.was.push(prev.disk.to_record());
                }
                let mut e = new(prev.first_seen, prev.since, prev.past.clone());
                if !prev.present || prev.disk.device != disk.device {
                    // A new stay: back after an absence, or on another device. The one
                    // that ended lasted until the host's previous inventory.
                    e.past.push(PastStay {
                        host: p_host,
                        addr: p_addr,
                        device: prev.disk.device,
                        label: prev.disk.label,
                        first_seen: prev.since,
                        last_seen: if prev.present {
                            prev.last_seen.max(prev_seen)
                        } else {
                            prev.last_seen
                        },
                    });
                    let over = e.past.len().saturating_sub(MAX_STAYS - 1);
                    e.past.drain(..over);
                    e.since = now;
                }
                entries.push(e);
            }
            None => {
                changed = true;
                diff.appeared.push(disk.clone());
                entries.push(new(now, now, Vec::new()));
            }
        }
    }
    for prev in old_entries {
        if seen.contains_key(&prev.key()) || adopted.contains_key(&prev.key()) {
            continue;
        }
        let mut e = prev.clone();
        e.place = Some(prev.place(old_host, old_addr));
        if e.present {
            changed = true;
            diff.vanished.push(e.disk.to_record());
            e.present = false;
            e.last_seen = e.last_seen.max(prev_seen);
        }
        entries.push(e);
    }
    // Last-known disks of one host are bounded: a host that reports new disks forever
    // (loop devices, containers, a broken peer) must not grow its value without end.
    let absent = entries.iter().filter(|e| !e.present).count();
    if absent > MAX_ABSENT_PER_HOST {
        let (present, mut gone): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.present);
        gone.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        gone.truncate(MAX_ABSENT_PER_HOST);
        entries = present;
        entries.extend(gone);
        changed = true;
    }
    if !changed {
        return Merged { diff, host: None };
    }
    // Stored in key order, each with its own place only where it is not the host's.
    entries.sort_by(|a, b| a.key().cmp(&b.key()));
    for e in &mut entries {
        if e.place == Some((host, addr)) {
            e.place = None;
        }
    }
    Merged {
        diff,
        host: Some(HostView {
            host,
            addr,
            entries,
        }),
    }
}

/// The old entries of a host that a disk of its new inventory may take over although its
/// key differs (see `adopt`), by device: present, without a UUID, not a duplicate, and not
/// claimed by their own key in the new inventory.
fn adoptable_entries<'a>(
    old_entries: &'a [EntryView<'a>],
    disks: &'a [DiskRecord],
) -> HashMap<&'a str, &'a EntryView<'a>> {
    let claimed: HashSet<Key<'a>> = disks.iter().map(Key::of).collect();
    old_entries
        .iter()
        .filter(|e| e.present && !e.dup && !e.key().is_uuid() && !claimed.contains(&e.key()))
        .map(|e| (e.disk.device, e))
        .collect()
}

/// The old entry `disk` (keyed `key`, not found by it) continues, if any: the entry of
/// the disk present at the same device when one of the two is known by its device only
/// and the other by its WWN or serial. A disk is known by its device when the hardware
/// could not be read: a store, a watcher or a peer older than hardware identity, or a
/// watcher that failed to read sysfs once. Without this, every whole disk would vanish
/// and appear again (events, hooks) when a release that reads the hardware first scans
/// it. Two disks each known by its own serial or WWN stay two disks, whatever their
/// devices; so does anything with a UUID.
fn adopt<'a>(
    by_device: &mut HashMap<&'a str, &'a EntryView<'a>>,
    key: &Key<'_>,
    disk: &DiskRecord,
) -> Option<&'a EntryView<'a>> {
    if key.dup || key.is_uuid() {
        return None;
    }
    let prev = by_device.get(disk.device.as_str())?;
    if !(key.is_device() || prev.key().is_device()) {
        return None;
    }
    by_device.remove(disk.device.as_str())
}

/// The stays of one entry of host `node_id` (value `h`): its past ones and its latest.
fn stays(node_id: &str, h: &HostView<'_>, e: &EntryView<'_>) -> Vec<Stay> {
    let (host, addr) = e.place(h.host, h.addr);
    let mut out: Vec<Stay> = e
        .past
        .iter()
        .map(|p| Stay {
            node_id: node_id.to_string(),
            host: p.host.to_string(),
            addr: p.addr.map(str::to_string),
            device: p.device.to_string(),
            label: p.label.map(str::to_string),
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            current: false,
        })
        .collect();
    out.push(Stay {
        node_id: node_id.to_string(),
        host: host.to_string(),
        addr: addr.map(str::to_string),
        device: e.disk.device.to_string(),
        label: e.disk.label.map(str::to_string),
        first_seen: e.since,
        last_seen: e.last_seen,
        current: e.present,
    });
    out
}

/// When a disk's identity holds across hosts (a UUID, a WWN or a serial, not a device
/// path), the index term that finds every host that has a disk with that identity.
fn fleet_identity(d: &DiskView<'_>) -> Option<u64> {
    match d.identity_parts() {
        ("uuid:", u) => Some(term_lower(b'u', u)),
        ("wwn:", w) => Some(term_wwn(w)),
        ("serial:", s) => Some(term(b's', s)),
        _ => None,
    }
}

/// The index terms a disk query looks up: everything `DiskRecord::matches` compares.
fn disk_terms(text: &str) -> [u64; 5] {
    [
        term_lower(b'u', text),
        term(b'l', text),
        term(b'd', text),
        term(b's', text),
        term_wwn(text),
    ]
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

/// The sightings of `hosts` whose entry passes `keep` (given the entry and its host).
fn sightings_of(
    hosts: &[Arc<HostState>],
    keep: impl Fn(&layout::EntryView<'_>, &HostView<'_>) -> bool,
) -> Vec<Sighting> {
    let mut out = Vec::new();
    for h in hosts {
        let v = h.view();
        out.extend(
            v.entries
                .iter()
                .filter(|e| keep(e, &v))
                .map(|e| e.sighting(&h.node_id, &v)),
        );
    }
    out
}

/// How long `Store::open` waits for a lock that a store closed a moment ago still holds.
const OPEN_LOCK_WAIT: Duration = Duration::from_millis(500);

/// Clears the maintenance flag when a compaction or a repair ends, however it ends.
struct MaintenanceGuard<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for MaintenanceGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
