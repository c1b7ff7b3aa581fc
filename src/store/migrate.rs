//! Upgrades of older layouts, run by `Store::open`.
//!
//! Schema 2 (the first release): tree `sightings`, one record per (host, disk) keyed
//! node id + NUL + identity (+ NUL + device for a duplicate UUID); tree `index` (term keys);
//! `meta` key `term_index_v1`. `peers`, `attaches` and the `meta` keys `node_id` and
//! `local_seen` are the same in schema 3 and stay as they are.
//!
//! The conversion is crash-safe by order: (1) drop whatever a previous, interrupted run
//! left in `hosts`; (2) write every host's v3 value and flush; (3) set the schema to 3 and
//! flush (the commit point); (4) drop the old trees. Until (3) the store is still a whole
//! schema-2 store (the old trees are only read), so a `kill -9` anywhere before it means the
//! next start migrates again from scratch; after (3), a start that finds old trees left
//! over drops them.

use std::collections::BTreeMap;

use super::layout::{chunk_key, encode_entries, Entry};
use crate::model::Sighting;

pub(super) const V2_SIGHTINGS: &str = "sightings";
pub(super) const V2_INDEX: &str = "index";
pub(super) const V2_KEY_INDEXED: &[u8] = b"term_index_v1";

/// How far `from_v2` goes; anything short of `All` is for tests of an interrupted run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// Stop after writing the new trees (before the schema flips).
    NewTrees,
    /// The whole conversion.
    All,
}

/// Convert a schema-2 store to schema 3 (see the module documentation for the order).
pub(super) fn from_v2(
    db: &sled::Db,
    meta: &sled::Tree,
    hosts_name: &str,
    schema_key: &[u8],
    until: Until,
) -> Result<(), sled::Error> {
    // (1) A previous run may have been interrupted: start from scratch.
    db.drop_tree(hosts_name)?;
    let hosts = db.open_tree(hosts_name)?;

    // (2) Group the old records by host, in key order.
    let sightings = db.open_tree(V2_SIGHTINGS)?;
    let mut groups: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for item in sightings.iter() {
        let (k, v) = item?;
        let Ok(s) = postcard::from_bytes::<Sighting>(&v) else {
            continue; // unreadable then, unreadable now
        };
        let Some(nul) = k.iter().position(|&b| b == 0) else {
            continue;
        };
        let key = String::from_utf8_lossy(&k[nul + 1..]).into_owned();
        groups
            .entry(String::from_utf8_lossy(&k[..nul]).into_owned())
            .or_default()
            .push(Entry {
                key,
                since: s.first_seen,
                s,
            });
    }
    let mut batch = sled::Batch::default();
    for (node_id, mut entries) in groups {
        // The host's name and address: those of its most recently seen present disk (what
        // its latest inventory said), else of its most recently seen disk.
        let latest = entries
            .iter()
            .max_by_key(|e| (e.s.present, e.s.last_seen))
            .map(|e| (e.s.host.clone(), e.s.addr.clone()))
            .unwrap_or_default();
        // Keys must be what v3 derives from the disk (identity, + NUL + device).
        entries.retain(|e| {
            e.key == e.s.disk.identity()
                || e.key == format!("{}\0{}", e.s.disk.identity(), e.s.disk.device)
        });
        let chunks = encode_entries(&latest.0, latest.1.as_deref(), &entries)
            .map_err(|e| sled::Error::Unsupported(format!("cannot encode host {node_id}: {e}")))?;
        for (i, c) in chunks.into_iter().enumerate() {
            batch.insert(chunk_key(&node_id, i as u32), c);
        }
    }
    hosts.apply_batch(batch)?;
    db.flush()?;
    if until == Until::NewTrees {
        return Ok(());
    }

    // (3) The commit point.
    meta.insert(schema_key, super::SCHEMA_VERSION.to_string().as_bytes())?;
    db.flush()?;

    // (4) The old trees.
    drop_v2_leftovers(db, meta)?;
    Ok(())
}

/// Drop what schema 2 had and schema 3 does not (after a conversion, or left by one that
/// was interrupted after its commit point).
pub(super) fn drop_v2_leftovers(db: &sled::Db, meta: &sled::Tree) -> Result<(), sled::Error> {
    let names = db.tree_names();
    let mut dropped = false;
    for old in [V2_SIGHTINGS, V2_INDEX] {
        if names.iter().any(|n| n.as_ref() == old.as_bytes()) {
            db.drop_tree(old)?;
            dropped = true;
        }
    }
    if meta.remove(V2_KEY_INDEXED)?.is_some() || dropped {
        db.flush()?;
    }
    Ok(())
}
