//! Compaction: a store whose log has grown past twice its live data is copied into a fresh
//! sled directory, which takes the old one's place.
//!
//! sled 0.34 reclaims log segments itself, but lazily: a store whose hosts are rewritten
//! in waves can stay several times larger than what it holds. Every `CHECK_EVERY`, the
//! store's keeper compares sled's size on disk with the live data (the bytes of every key
//! and value, measured only when the size has grown past twice the last measure, so an
//! idle daemon reads nothing). When the log is over twice the live data (and at least
//! `MIN_BYTES`), every tree is copied into `<store>.compacting` beside the store and
//! flushed; then, with the writers waiting (readers answer from memory throughout), the
//! old sled is closed, the two directories are exchanged in one atomic rename
//! (`renameat2(RENAME_EXCHANGE)`), the store is opened again, and the old copy removed.
//! A crash before the exchange leaves the store as it was (and a `.compacting` leftover
//! the next compaction replaces); one after it leaves the compacted store.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::health::config;
use super::{lock, Store, StoreError};

/// How often the keeper looks at the store's size.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(600);

/// Below this size on disk, a store is never compacted (sled's own overhead dominates).
const MIN_BYTES: u64 = 4 << 20;

/// What a compaction check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// sled's size on disk before.
    pub before: u64,
    /// The live data: bytes of every key and value.
    pub live: u64,
    /// Size on disk after, when it compacted.
    pub after: Option<u64>,
}

/// The sibling directory a compaction builds the new store in.
pub(super) fn staging(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".compacting");
    path.with_file_name(name)
}

impl Store {
    /// Bytes of every key and value in every tree: what a fresh copy would hold.
    pub fn live_bytes(&self) -> Result<u64, StoreError> {
        let s = self.sled()?;
        let mut live = 0u64;
        for name in s.db.tree_names() {
            for kv in s.db.open_tree(&name)?.iter() {
                let (k, v) = kv?;
                live += (k.len() + v.len()) as u64;
            }
        }
        Ok(live)
    }

    /// Compact when sled's size on disk is more than twice the live data (and at least
    /// 4 MiB); `None` when it was not even worth measuring. Blocking: run it off the
    /// async runtime. Never while the store is failing.
    pub fn compact_if_needed(&self) -> Result<Option<Compaction>, StoreError> {
        if !self.health().is_ok() || self.inner.no_exchange.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let before = self.size_on_disk();
        let known = lock(&self.inner.durability).live_bytes;
        if before < MIN_BYTES || before <= 2 * known {
            return Ok(None);
        }
        let live = self.live_bytes()?;
        lock(&self.inner.durability).live_bytes = live;
        if before <= 2 * live {
            return Ok(Some(Compaction {
                before,
                live,
                after: None,
            }));
        }
        self.compact()?;
        let after = self.size_on_disk();
        tracing::info!(
            store = %self.inner.path.display(),
            "store compacted: {before} -> {after} bytes on disk ({live} bytes live)"
        );
        Ok(Some(Compaction {
            before,
            live,
            after: Some(after),
        }))
    }

    /// Copy every tree into a fresh directory and put it in the store's place (see the
    /// module's comment). Writers wait meanwhile; readers answer from memory.
    pub fn compact(&self) -> Result<(), StoreError> {
        let _maintenance = self.maintenance();
        let _local = lock(&self.inner.local_writer);
        let _peer = lock(&self.inner.peer_writer);
        let path = self.inner.path.clone();
        let tmp = staging(&path);
        let io = |e: std::io::Error| StoreError::Sled(sled::Error::Io(e));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        // The copy is as private as the store from the start (umask may be 022).
        std::fs::create_dir(&tmp).map_err(io)?;
        if let Ok(m) = std::fs::metadata(&path) {
            std::fs::set_permissions(&tmp, m.permissions()).map_err(io)?;
        }
        let copied = (|| -> Result<(), StoreError> {
            let old = self.sled()?;
            old.db.flush()?;
            let new = config(&tmp).open()?;
            for name in old.db.tree_names() {
                let (from, to) = (old.db.open_tree(&name)?, new.open_tree(&name)?);
                for kv in from.iter() {
                    let (k, v) = kv?;
                    to.insert(k, v)?;
                }
            }
            new.flush()?;
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // sled's file lock must go before the compacted copy is opened in its place; a
        // handle still in use (a flush) means not now.
        if !self.release() {
            let _ = std::fs::remove_dir_all(&tmp);
            tracing::debug!("store busy; compaction put off");
            return Ok(());
        }
        let swapped = nix::fcntl::renameat2(
            None,
            &path,
            None,
            &tmp,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        );
        let reopened = self.open_again();
        if let Err(e) = swapped {
            if matches!(e, nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) {
                tracing::warn!(
                    store = %path.display(),
                    "this filesystem cannot exchange directories; store compaction is off"
                );
                self.inner.no_exchange.store(true, Ordering::Relaxed);
            }
            // Still the old store in its place; reopened as it was.
            let _ = std::fs::remove_dir_all(&tmp);
            if let Err(r) = reopened {
                self.failed(&r);
                return Err(r);
            }
            return Err(io(e.into()));
        }
        if let Err(e) = reopened {
            // Nothing open: the keeper reopens it.
            self.failed(&e);
            return Err(e);
        }
        lock(&self.inner.durability).compactions += 1;
        std::fs::remove_dir_all(&tmp).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DiskRecord;
    use crate::store::tests::disk;
    use crate::store::Owner;

    fn disks(n: usize, wave: usize) -> Vec<DiskRecord> {
        (0..n)
            .map(|i| {
                disk(
                    &format!("{i:08x}-0000-4000-8000-000000000000"),
                    &format!("wave{wave}-disk{i}-{}", "x".repeat(60)),
                    &format!("/dev/sd{i}"),
                )
            })
            .collect()
    }

    /// Many waves of changed inventories: how large sled lets the log grow on its own
    /// (printed, for BENCHMARKS.md), then a compaction that keeps every record, queries
    /// answering throughout, and a fresh open finding the compacted data.
    #[test]
    fn waves_grow_the_log_and_compaction_shrinks_it_keeping_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let s = Store::open(&path).unwrap();
        let mut sizes = Vec::new();
        for wave in 0..60 {
            for peer in 0..8 {
                s.publish(
                    Owner::Peer(&format!("peer{peer}")),
                    &format!("host{peer}"),
                    None,
                    &disks(400, wave),
                    1_000 + wave as u64,
                )
                .into_result()
                .unwrap();
            }
            s.publish(
                Owner::Local,
                "me",
                None,
                &disks(50, wave),
                1_000 + wave as u64,
            )
            .into_result()
            .unwrap();
            if wave % 10 == 9 {
                sizes.push(s.size_on_disk());
            }
        }
        let live = s.live_bytes().unwrap();
        eprintln!("size on disk every 10 waves: {sizes:?}; live {live} bytes");
        let before = s.size_on_disk();
        let records = s.records();
        let c = s.compact_if_needed().unwrap();
        eprintln!("compaction: {c:?}");
        if before > 2 * live && before >= MIN_BYTES {
            let c = c.expect("measured");
            assert!(c.after.expect("compacted") < before);
            assert_eq!(s.health().compactions, 1);
            assert!(!s.in_maintenance(), "the flag outlived the compaction");
        }
        // A compaction even when not needed keeps everything too.
        s.compact().unwrap();
        assert!(
            s.size_on_disk() <= 2 * live.max(MIN_BYTES),
            "{}",
            s.size_on_disk()
        );
        assert!(!staging(&path).exists());
        assert_eq!(s.records(), records);
        assert_eq!(s.find("/dev/sd399").unwrap().len(), 8);
        // Writes go on after it.
        s.publish(Owner::Local, "me", None, &disks(51, 99), 5_000)
            .into_result()
            .unwrap();
        let id = s.node_id().to_string();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.node_id(), id);
        assert_eq!(s.local_inventory().len(), 51);
        assert_eq!(s.find("/dev/sd399").unwrap().len(), 8);
        assert_eq!(s.history("/dev/sd3").unwrap().len(), 1 + 8);
    }
}
