//! A full or failing disk under the store: what the store does when sled cannot write.
//!
//! Every write goes to memory whatever happens to it in sled, so queries keep answering
//! what the daemon knows. The store remembers which hosts (and peers, and our last-scan
//! time) may not be on disk yet (`Durability`), whether its last write or flush failed, why
//! and since when (`StoreHealth`, shown by `status`). While it is failing, [`Store::keep`]
//! (a task the daemon runs) retries with backoff: it rewrites everything not known to be
//! durable from memory and flushes; when sled stays poisoned (sled 0.34 fails every later
//! operation after one I/O error such as ENOSPC) and the filesystem has room again, it
//! drops sled and opens the same directory again with the same settings, then rewrites.
//! What was flushed before the failure is what sled recovers at that open; what was not
//! is rewritten from memory, so nothing a query has shown is lost.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::layout::{chunk_key, parse_chunk_key};
use super::{lock, read, write, Store, StoreError, KEY_LOCAL_SEEN};
use crate::model::{now_millis, Backoff, Millis};

/// Names of sled's trees (see `mod.rs`).
use super::{ATTACHES, CACHE_BYTES, HOSTS, META, PEERS};

/// First and longest wait between two attempts to make the store durable again.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// sled is reopened only when the filesystem has at least this much room: opening it
/// on a full disk would fail again (or recover a log it cannot extend).
const REOPEN_MIN_FREE: u64 = 2 << 20;

/// How long a reopen waits for the last user of the old sled handle (a reader of the
/// attach records) to let go; sled's file lock goes with the last handle.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The sled settings, the same at the first open and at every reopen.
pub(super) fn config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        // Fewer rewrites of log segments than LowSpace (faster ingest; see
        // BENCHMARKS.md), and no timer-driven flushes: every write that must be
        // durable is flushed explicitly, so an idle daemon does no I/O at all.
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        // sled caches up to 1 GiB by default; diskd's working set is small.
        .cache_capacity(CACHE_BYTES)
}

/// An open sled database and its trees; replaced as a whole when sled is reopened.
pub(super) struct Sled {
    pub db: sled::Db,
    pub meta: sled::Tree,
    /// One value per host (see `layout`).
    pub hosts: sled::Tree,
    pub peers_tree: sled::Tree,
    pub attaches: sled::Tree,
}

impl Sled {
    /// Open the trees of an opened database.
    pub fn new(db: sled::Db) -> Result<Sled, sled::Error> {
        Ok(Sled {
            meta: db.open_tree(META)?,
            hosts: db.open_tree(HOSTS)?,
            peers_tree: db.open_tree(PEERS)?,
            attaches: db.open_tree(ATTACHES)?,
            db,
        })
    }
}

/// Whether the store's writes reach the disk: one definition of every figure, for the
/// store that counts them (times in ms since the epoch) and for `status`, which shows
/// them as they are, keys prefixed `store_` and times in RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreHealth<Time = Millis> {
    /// `"ok"`, or `"failing"` while writes do not reach the disk (a full disk): the
    /// daemon answers from memory and retries.
    pub state: &'static str,
    /// Why the last write or flush failed, while failing; else null.
    pub error: Option<String>,
    /// Since when it is failing, while failing; else null.
    pub failing_since: Option<Time>,
    /// Hosts whose latest inventory is known in memory but maybe not on disk yet.
    pub pending_hosts: usize,
    /// Attempts to make the store durable again after write failures (rewrites,
    /// reopens), since start: while `failing`, it grows with each retry.
    pub retries: u64,
    /// Times sled was closed and opened again after write failures, since start.
    pub reopens: u64,
    /// Times the store was compacted (its log past twice its live data, see
    /// `Store::compact_if_needed`), since start.
    pub compactions: u64,
    /// Writes and flushes that failed, since start.
    pub failures: u64,
}

impl<T> StoreHealth<T> {
    /// Whether writes reach the disk.
    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }

    /// The same figures with the time told another way: `status` shows RFC 3339.
    pub fn map_time<U>(self, f: impl FnOnce(T) -> U) -> StoreHealth<U> {
        StoreHealth {
            state: self.state,
            error: self.error,
            failing_since: self.failing_since.map(f),
            pending_hosts: self.pending_hosts,
            retries: self.retries,
            reopens: self.reopens,
            compactions: self.compactions,
            failures: self.failures,
        }
    }
}

/// What is not known to be on disk, and the current failure.
#[derive(Default)]
pub(super) struct Durability {
    /// Bumped on every write.
    seq: u64,
    /// Hosts written (or that failed to be written) and not flushed since: node id ->
    /// seq of the latest write.
    hosts: HashMap<String, u64>,
    /// Peer records likewise.
    peers: HashMap<String, u64>,
    /// Our last-scan time likewise.
    local_seen: Option<u64>,
    failure: Option<Failure>,
    failures: u64,
    retries: u64,
    reopens: u64,
    /// Live bytes at the last measure (see `compact`), and compactions done.
    pub live_bytes: u64,
    pub compactions: u64,
}

struct Failure {
    reason: String,
    since: Millis,
}

/// What was written, for [`Durability::wrote`].
pub(super) enum Wrote<'a> {
    Host(&'a str),
    Peer(&'a str),
    LocalSeen,
}

impl Durability {
    /// Note a write (done or failed): it is not durable before the next good flush.
    pub fn wrote(&mut self, what: Wrote<'_>) {
        self.seq += 1;
        let seq = self.seq;
        match what {
            Wrote::Host(id) => {
                self.hosts.insert(id.to_string(), seq);
            }
            Wrote::Peer(id) => {
                self.peers.insert(id.to_string(), seq);
            }
            Wrote::LocalSeen => self.local_seen = Some(seq),
        }
    }

    /// The seq a flush starting now covers.
    pub fn mark(&self) -> u64 {
        self.seq
    }

    /// A flush that started at `mark` succeeded: what was written before is durable.
    /// While failing, nothing is cleared: a write that failed is not in sled at all, and
    /// only [`Store::repair`] (which rewrites from memory) makes it durable.
    pub fn flushed(&mut self, mark: u64) {
        if self.failure.is_some() {
            return;
        }
        self.hosts.retain(|_, s| *s > mark);
        self.peers.retain(|_, s| *s > mark);
        if self.local_seen.is_some_and(|s| s <= mark) {
            self.local_seen = None;
        }
    }

    /// A write or flush failed; true when the store was ok until now.
    pub fn failed(&mut self, reason: String, now: Millis) -> bool {
        self.failures += 1;
        match &mut self.failure {
            Some(f) => {
                f.reason = reason;
                false
            }
            None => {
                self.failure = Some(Failure { reason, since: now });
                true
            }
        }
    }

    /// Everything written up to `mark` was rewritten and flushed: durable again. Returns
    /// how long it was failing, when it was.
    pub fn recovered(&mut self, mark: u64, now: Millis) -> Option<Millis> {
        let was = self.failure.take();
        self.flushed(mark);
        was.map(|f| now.saturating_sub(f.since))
    }

    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            state: if self.failure.is_some() {
                "failing"
            } else {
                "ok"
            },
            error: self.failure.as_ref().map(|f| f.reason.clone()),
            failing_since: self.failure.as_ref().map(|f| f.since),
            failures: self.failures,
            retries: self.retries,
            reopens: self.reopens,
            pending_hosts: self.hosts.len(),
            compactions: self.compactions,
        }
    }
}

impl Store {
    /// Whether the store's writes reach the disk, and why not.
    pub fn health(&self) -> StoreHealth {
        lock(&self.inner.durability).health()
    }

    /// The open sled database, or why there is none (a reopen failed; [`Store::keep`]
    /// tries again).
    pub(super) fn sled(&self) -> Result<Arc<Sled>, StoreError> {
        read(&self.inner.sled)
            .clone()
            .ok_or_else(|| StoreError::Closed(self.inner.path.clone()))
    }

    /// Write to sled; nothing to do for a store kept in memory only.
    pub(super) fn persist(
        &self,
        f: impl FnOnce(&Sled) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.inner.volatile {
            return Ok(());
        }
        self.sled().and_then(|s| f(&s))
    }

    pub(super) fn wrote(&self, what: Wrote<'_>) {
        lock(&self.inner.durability).wrote(what);
    }

    /// Record a failed write or flush, log it when the store was ok until now, and wake
    /// [`Store::keep`].
    pub(super) fn failed(&self, e: &StoreError) {
        let first = lock(&self.inner.durability).failed(e.to_string(), now_millis());
        if first {
            tracing::error!(
                store = %self.inner.path.display(),
                "store writes fail: {e}; answering from memory and retrying"
            );
        }
        self.inner.trouble.notify_one();
    }

    /// Flush sled (blocking), keeping track of what became durable.
    pub(super) fn flush_tracked(&self) -> Result<(), StoreError> {
        let mark = lock(&self.inner.durability).mark();
        let result = self.persist(|s| Ok(s.db.flush().map(drop)?));
        self.flush_done(mark, result)
    }

    /// Record a flush's outcome: what was written before `mark` is durable, or the store
    /// is failing.
    pub(super) fn flush_done(
        &self,
        mark: u64,
        result: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match result {
            Ok(()) => {
                lock(&self.inner.durability).flushed(mark);
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Make everything that may not be on disk durable: rewrite it from memory and flush;
    /// when that fails and the filesystem has room, reopen sled first. Blocking; the
    /// writers wait meanwhile, readers never do.
    pub fn repair(&self) -> Result<(), StoreError> {
        let _maintenance = self.maintenance();
        let _local = lock(&self.inner.local_writer);
        let _peer = lock(&self.inner.peer_writer);
        lock(&self.inner.durability).retries += 1;
        let mark = lock(&self.inner.durability).mark();
        let mut result = self.sled().and_then(|s| self.rewrite(&s));
        if result.is_err() {
            let room = free_bytes(&self.inner.path);
            if room.is_none_or(|b| b >= REOPEN_MIN_FREE) {
                result = self.reopen().and_then(|s| self.rewrite(&s));
            }
        }
        match result {
            Ok(()) => {
                let was = lock(&self.inner.durability).recovered(mark, now_millis());
                if let Some(ms) = was {
                    tracing::info!(
                        store = %self.inner.path.display(),
                        "store writes work again after {}",
                        humantime::format_duration(Duration::from_millis(ms / 1000 * 1000))
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Write every host, peer and our last-scan time that may not be durable, from memory,
    /// then flush.
    fn rewrite(&self, s: &Sled) -> Result<(), StoreError> {
        let (hosts, peers, local_seen) = {
            let d = lock(&self.inner.durability);
            (
                d.hosts.keys().cloned().collect::<Vec<_>>(),
                d.peers.keys().cloned().collect::<Vec<_>>(),
                d.local_seen.is_some(),
            )
        };
        for id in &hosts {
            let state = read(&self.inner.mem).get(id.as_str()).cloned();
            let before = lock(&self.inner.chunks).get(id).copied().unwrap_or(0);
            let mut batch = sled::Batch::default();
            let n = match &state {
                Some(state) => {
                    let chunks = state.view().encode()?.0;
                    let n = chunks.len() as u32;
                    for (i, c) in chunks.into_iter().enumerate() {
                        batch.insert(chunk_key(id, i as u32), c);
                    }
                    n
                }
                None => 0,
            };
            for i in n..before {
                batch.remove(chunk_key(id, i));
            }
            s.hosts.apply_batch(batch)?;
            if n == 0 {
                lock(&self.inner.chunks).remove(id);
            } else {
                lock(&self.inner.chunks).insert(id.clone(), n);
            }
        }
        for id in &peers {
            let peer = read(&self.inner.peers).get(id).cloned();
            match peer {
                Some(p) => s.peers_tree.insert(id.as_bytes(), super::encode(&p)?)?,
                None => s.peers_tree.remove(id.as_bytes())?,
            };
        }
        if local_seen {
            let t = self
                .inner
                .local_seen
                .load(std::sync::atomic::Ordering::Acquire);
            if t != super::NONE {
                s.meta.insert(KEY_LOCAL_SEEN, &t.to_be_bytes())?;
            }
        }
        s.db.flush()?;
        Ok(())
    }

    /// Drop sled and open the same directory again with the same settings (sled stays
    /// failed after an I/O error). Recounts each host's keys from what sled recovered.
    fn reopen(&self) -> Result<Arc<Sled>, StoreError> {
        if !self.release() {
            // Still in use: the next try reopens it.
            return Err(StoreError::Closed(self.inner.path.clone()));
        }
        lock(&self.inner.durability).reopens += 1;
        let s = self.open_again()?;
        tracing::warn!(store = %self.inner.path.display(), "store reopened after write failures");
        Ok(s)
    }

    /// Drop our sled handle (the caller holds both writer locks), waiting briefly for
    /// whoever still holds it (a flush in progress) to let go. False, with the handle put
    /// back, when it is still held: closing it then would lose what its holder writes.
    pub(super) fn release(&self) -> bool {
        let old = write(&self.inner.sled).take();
        if let Some(old) = old {
            let deadline = std::time::Instant::now() + RELEASE_WAIT;
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                *write(&self.inner.sled) = Some(old);
                return false;
            }
        }
        true
    }

    /// Open the store directory with the usual settings and put it in place, recounting
    /// each host's keys from what is there.
    pub(super) fn open_again(&self) -> Result<Arc<Sled>, StoreError> {
        let mut tries = 0;
        let db = loop {
            match config(&self.inner.path).open() {
                Ok(db) => break db,
                // sled's file lock goes with the last of its own threads' handles.
                Err(e) if super::is_lock_error(&e) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let s = Arc::new(Sled::new(db)?);
        let mut counts: HashMap<String, u32> = HashMap::new();
        for k in s.hosts.iter().keys() {
            if let Some((id, i)) = parse_chunk_key(&k?) {
                let n = counts.entry(id.to_string()).or_default();
                *n = (*n).max(i + 1);
            }
        }
        *lock(&self.inner.chunks) = counts;
        *write(&self.inner.sled) = Some(s.clone());
        Ok(s)
    }

    /// Keep the store durable: while it is failing, retry with backoff (see
    /// [`Store::repair`]) until it works again or `shutdown`. Run by the daemon as a task.
    pub async fn keep(self, shutdown: CancellationToken) {
        let mut check = tokio::time::interval(super::compact::CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.trouble.notified() => {}
                _ = check.tick() => {
                    // Writers wait meanwhile; queries answer from memory throughout.
                    let store = self.clone();
                    let done = tokio::task::spawn_blocking(move || store.compact_if_needed());
                    if let Ok(Err(e)) = done.await {
                        tracing::warn!("store compaction failed: {e}");
                    }
                }
            }
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            while !self.health().is_ok() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                let store = self.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.repair()).await {
                    tracing::debug!("store still failing: {e}");
                }
            }
        }
    }
}

/// Bytes free (for root, as the daemon runs) on the filesystem of `path`; `None` when it
/// cannot be told.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_free() as u64 * st.fragment_size() as u64)
}

#[cfg(test)]
mod tests;
