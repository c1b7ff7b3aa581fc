//! Upgrades of older layouts, run by `Store::open`.
//!
//! Every older layout is read here with frozen copies of its own types: the records of
//! `crate::model` change (postcard is positional: a new field changes every value after
//! it), these copies never do.
//!
//! # Schemas 5, 4 and 3 -> 6
//!
//! Schema 5 is schema 6 without the condition: the same trees and keys, one value per host
//! in tree `hosts`, framed the same way but with the `FRAME_V5` mark on chunk 0's count
//! (schema 6: `FRAME_V6`), each disk without its health and filesystem usage (the last two
//! fields of a schema-6 disk) and each entry without its health readings (the last field
//! of a schema-6 entry). Schema 4 is schema 5 without the probe (the last field of a
//! schema-5 disk), marked `FRAME_V4`; schema 3 is schema 4 without the hardware, and no
//! mark at all. All three are converted the same way, each host in place, one at a time:
//!
//! 1. for each host whose chunk 0 is not marked v6: read its v5, v4 or v3 value (by its
//!    mark; a store whose conversion to 4 or 5 was interrupted holds several), write its
//!    v6 value as ONE sled batch (every chunk, and the removal of chunks it no longer
//!    needs), so that a crash leaves that host either old or v6, never a mix; hosts already
//!    marked v6 (converted by a run that was interrupted) are skipped; a value that does
//!    not read is left as it is (the old schema skipped it too; the host's next write
//!    replaces it);
//! 2. flush;
//! 3. set the schema to 6 and flush: the commit point.
//!
//! Before (3) the store says schema 3, 4 or 5, and every host is a whole old or a whole v6
//! value, so a `kill -9` anywhere means the next start converts the hosts still old and
//! commits. Only after (3) does the normal path read the store, and it reads v6 values only.
//! A schema-5 (or 4, or 3) diskd started on a store interrupted before (3) skips the hosts
//! already converted (their mark makes no value for it) instead of misreading them; and if
//! it then commits its own conversion, the v6 values it skipped are still v6 values, which
//! the next schema-6 start (schema 5 then) keeps as they are.
//!
//! Every disk of a converted store has its health and filesystem usage unknown (`None`)
//! and no readings until its host reports it again; one converted from schema 4 or 3 also
//! has the probe `Unknown` (those schemas did not record whether blkid saw a device empty,
//! so none of their records is offered as blank by `list --blank`).
//!
//! # Schema 2 -> 6
//!
//! Schema 2 (the first release): tree `sightings`, one record per (host, disk) keyed
//! node id + NUL + identity (+ NUL + device for a duplicate UUID), its value a `Sighting`
//! whose disk had no hardware; tree `index` (term keys); `meta` key `term_index_v1`.
//! `peers`, `attaches` and the `meta` keys `node_id` and `local_seen` are the same in
//! schemas 2 to 6 and stay as they are. A schema-2 store goes to schema 6 directly.
//!
//! The conversion is crash-safe by order: (1) drop whatever a previous, interrupted run
//! left in `hosts`; (2) write every host's v6 value and flush; (3) set the schema to 6 and
//! flush (the commit point); (4) drop the old trees. Until (3) the store is still a whole
//! schema-2 store (the old trees are only read), so a `kill -9` anywhere before it means the
//! next start migrates again from scratch; after (3), a start that finds old trees left
//! over drops them (so do the conversions from schemas 3, 4 and 5: they converted schema 2 the
//! same way and may have left them).

mod frozen;
#[cfg(test)]
mod old_writers;
#[cfg(test)]
pub(super) use old_writers::*;

use std::collections::BTreeMap;

use serde::Deserialize;

use frozen::*;

use super::layout::{
    chunk_key, encode_entries, frame_mark, join_framed, parse_chunk_key, unframed, Entry, FRAME_V4,
    FRAME_V5, FRAME_V6,
};
use crate::model::{DiskRecord, Millis, Sighting};

pub(super) const V2_SIGHTINGS: &str = "sightings";
pub(super) const V2_INDEX: &str = "index";
pub(super) const V2_KEY_INDEXED: &[u8] = b"term_index_v1";

/// How far a conversion goes; anything short of `All` is for tests of an interrupted run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// Schema 2: stop after writing the new trees (before the schema flips).
    NewTrees,
    /// Schemas 3, 4 and 5: stop after rewriting this many hosts, flushed (before the schema
    /// flips).
    Hosts(usize),
    /// The whole conversion.
    All,
}

/// Convert a schema-3, 4 or 5 store to schema 6, host by host in place (see the module
/// documentation for the order).
pub(super) fn hosts_in_place(
    db: &sled::Db,
    meta: &sled::Tree,
    hosts: &sled::Tree,
    schema_key: &[u8],
    until: Until,
) -> Result<(), sled::Error> {
    // Every host's keys, counted (keys only: values are read one host at a time).
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for k in hosts.iter().keys() {
        let k = k?;
        if let Some((id, i)) = parse_chunk_key(&k) {
            let n = counts.entry(id.to_string()).or_default();
            *n = (*n).max(i.saturating_add(1));
        }
    }
    // (1) Each host still old, one batch each.
    let mut converted = 0usize;
    for (node_id, keys) in counts {
        if until == Until::Hosts(converted) {
            break;
        }
        let Some(first) = hosts.get(chunk_key(&node_id, 0))? else {
            continue; // no value without its chunk 0; left as it is
        };
        let mark = match frame_mark(&first) {
            Some(FRAME_V6) => continue, // converted by an interrupted run
            Some(m @ (0 | FRAME_V4 | FRAME_V5)) => m,
            _ => continue, // no schema's value; left as it is
        };
        let mut chunks = vec![first];
        for i in 1..keys {
            match hosts.get(chunk_key(&node_id, i))? {
                Some(c) => chunks.push(c),
                None => break,
            }
        }
        let Some(bytes) = join_framed(&chunks, mark) else {
            continue; // unreadable then, unreadable now
        };
        let old = unframed(&bytes);
        let current = match mark {
            FRAME_V5 => postcard::from_bytes::<HostV5<'_>>(old).map(|v| v.to_current()),
            FRAME_V4 => postcard::from_bytes::<HostV4<'_>>(old).map(|v| v.to_current()),
            _ => postcard::from_bytes::<HostV3<'_>>(old).map(|v| v.to_current()),
        };
        let Ok(current) = current else {
            continue; // unreadable then, unreadable now
        };
        let (new, _) = current
            .encode()
            .map_err(|e| sled::Error::Unsupported(format!("cannot encode host {node_id}: {e}")))?;
        let n = new.len() as u32;
        let mut batch = sled::Batch::default();
        for (i, c) in new.into_iter().enumerate() {
            batch.insert(chunk_key(&node_id, i as u32), c);
        }
        for i in n..keys {
            batch.remove(chunk_key(&node_id, i));
        }
        hosts.apply_batch(batch)?;
        converted += 1;
    }
    // (2)
    db.flush()?;
    if until != Until::All {
        return Ok(());
    }
    // (3) The commit point.
    meta.insert(schema_key, super::SCHEMA_VERSION.to_string().as_bytes())?;
    db.flush()?;
    Ok(())
}

// ---- schema 2, frozen ----

/// A schema-2 sighting (what `model::Sighting` was).
#[derive(Deserialize)]
struct SightingV2 {
    node_id: String,
    host: String,
    addr: Option<String>,
    disk: DiskV2,
    present: bool,
    first_seen: Millis,
    last_seen: Millis,
}

/// A schema-2 disk (what `model::DiskRecord` was before the hardware).
#[derive(Deserialize)]
struct DiskV2 {
    uuid: Option<String>,
    label: Option<String>,
    device: String,
    fstype: Option<String>,
    mountpoints: Vec<String>,
}

impl SightingV2 {
    /// The same sighting now: its disk's hardware unknown.
    fn into_current(self) -> Sighting {
        Sighting {
            node_id: self.node_id,
            host: self.host,
            addr: self.addr,
            disk: DiskRecord {
                uuid: self.disk.uuid,
                label: self.disk.label,
                device: self.disk.device,
                fstype: self.disk.fstype,
                mountpoints: self.disk.mountpoints,
                hardware: Default::default(),
                probe: Default::default(),
                health: None,
                fs: None,
            },
            present: self.present,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// Convert a schema-2 store to schema 6 (see the module documentation for the order).
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
        let Ok(s) = postcard::from_bytes::<SightingV2>(&v) else {
            continue; // unreadable then, unreadable now
        };
        let s = s.into_current();
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
        // Keys must be what v6 derives from the disk (identity, + NUL + device); without
        // hardware that is what v2 had.
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

/// Drop what schema 2 had and later schemas do not (after a conversion, or left by one
/// that was interrupted after its commit point).
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
