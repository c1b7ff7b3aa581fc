//! Upgrades of older layouts, run by `Store::open`.
//!
//! Every older layout is read here with frozen copies of its own types: the records of
//! `crate::model` change (postcard is positional: a new field changes every value after
//! it), these copies never do.
//!
//! # Schemas 4 and 3 -> 5
//!
//! Schema 4 is schema 5 without the probe: the same trees and keys, one value per host in
//! tree `hosts`, framed the same way but with only the `FRAME_V4` mark on chunk 0's count
//! (schema 5: `FRAME_V5`), and each disk without its probe code (the last field of a
//! schema-5 disk). Schema 3 is schema 4 without the hardware (the last field of a schema-4
//! disk), and no mark at all. Both are converted the same way, each host in place, one at
//! a time:
//!
//! 1. for each host whose chunk 0 is not marked v5: read its v4 value (marked v4) or v3
//!    value (unmarked; a schema-3 store whose conversion to 4 was interrupted has both),
//!    write its v5 value as ONE sled batch (every chunk, and the removal of chunks it no
//!    longer needs), so that a crash leaves that host either old or v5, never a mix; hosts
//!    already marked v5 (converted by a run that was interrupted) are skipped; a value that
//!    does not read is left as it is (the old schema skipped it too; the host's next write
//!    replaces it);
//! 2. flush;
//! 3. set the schema to 5 and flush: the commit point.
//!
//! Before (3) the store says schema 3 or 4, and every host is a whole old or a whole v5
//! value, so a `kill -9` anywhere means the next start converts the hosts still old and
//! commits. Only after (3) does the normal path read the store, and it reads v5 values only.
//! A schema-4 (or 3) diskd started on a store interrupted before (3) skips the hosts already
//! converted (their marked count makes no value for it) instead of misreading them.
//!
//! Every disk of a converted store has the probe `Unknown`: schemas 4 and earlier did not
//! record whether blkid saw a device empty, so none of their records is offered as blank
//! (`list --blank`) until its host reports it again.
//!
//! # Schema 2 -> 4
//!
//! Schema 2 (the first release): tree `sightings`, one record per (host, disk) keyed
//! node id + NUL + identity (+ NUL + device for a duplicate UUID), its value a `Sighting`
//! whose disk had no hardware; tree `index` (term keys); `meta` key `term_index_v1`.
//! `peers`, `attaches` and the `meta` keys `node_id` and `local_seen` are the same in
//! schemas 2 to 5 and stay as they are. A schema-2 store goes to schema 5 directly.
//!
//! The conversion is crash-safe by order: (1) drop whatever a previous, interrupted run
//! left in `hosts`; (2) write every host's v5 value and flush; (3) set the schema to 5 and
//! flush (the commit point); (4) drop the old trees. Until (3) the store is still a whole
//! schema-2 store (the old trees are only read), so a `kill -9` anywhere before it means the
//! next start migrates again from scratch; after (3), a start that finds old trees left
//! over drops them (so do the conversions from schemas 3 and 4: they converted schema 2 the
//! same way and may have left them).

#[cfg(test)]
mod old_writers;
#[cfg(test)]
pub(super) use old_writers::*;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::layout::{
    chunk_key, encode_entries, frame_mark, join_framed, parse_chunk_key, unframed, DiskView, Entry,
    EntryView, HardwareView, HostView, PastStay, FRAME_V4, FRAME_V5,
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
    /// Schemas 3 and 4: stop after rewriting this many hosts, flushed (before the schema
    /// flips).
    Hosts(usize),
    /// The whole conversion.
    All,
}

// ---- schema 3, frozen ----

/// A schema-3 host value (what `layout::HostView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct HostV3<'a> {
    host: &'a str,
    #[serde(borrow)]
    addr: Option<&'a str>,
    #[serde(borrow)]
    entries: Vec<EntryV3<'a>>,
}

/// A schema-3 entry (what `layout::EntryView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct EntryV3<'a> {
    #[serde(borrow)]
    disk: DiskV3<'a>,
    present: bool,
    first_seen: Millis,
    last_seen: Millis,
    since: Millis,
    dup: bool,
    #[serde(borrow)]
    place: Option<(&'a str, Option<&'a str>)>,
    #[serde(borrow)]
    past: Vec<PastStayV3<'a>>,
}

/// A schema-3 disk (what `layout::DiskView` was: no hardware).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct DiskV3<'a> {
    #[serde(borrow)]
    uuid: Option<&'a str>,
    #[serde(borrow)]
    label: Option<&'a str>,
    device: &'a str,
    #[serde(borrow)]
    fstype: Option<&'a str>,
    #[serde(borrow)]
    mountpoints: Vec<&'a str>,
}

/// A schema-3 past stay (what `layout::PastStay` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct PastStayV3<'a> {
    host: &'a str,
    #[serde(borrow)]
    addr: Option<&'a str>,
    device: &'a str,
    #[serde(borrow)]
    label: Option<&'a str>,
    first_seen: Millis,
    last_seen: Millis,
}

impl<'a> HostV3<'a> {
    /// The same host now: every disk with its hardware and its probe unknown.
    fn to_current(&self) -> HostView<'a> {
        let mut entries: Vec<EntryView<'a>> = self
            .entries
            .iter()
            .map(|e| EntryView {
                disk: DiskView {
                    uuid: e.disk.uuid,
                    label: e.disk.label,
                    device: e.disk.device,
                    fstype: e.disk.fstype,
                    mountpoints: e.disk.mountpoints.clone(),
                    hardware: HardwareView::default(),
                    probe: 0,
                },
                present: e.present,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                since: e.since,
                dup: e.dup,
                place: e.place,
                past: e
                    .past
                    .iter()
                    .map(|p| PastStay {
                        host: p.host,
                        addr: p.addr,
                        device: p.device,
                        label: p.label,
                        first_seen: p.first_seen,
                        last_seen: p.last_seen,
                    })
                    .collect(),
            })
            .collect();
        // Without hardware a v5 key is the v3 key; sorted again all the same, as v5 keeps
        // them.
        entries.sort_by(|a, b| a.key().cmp(&b.key()));
        HostView {
            host: self.host,
            addr: self.addr,
            entries,
        }
    }
}

// ---- schema 4, frozen ----

/// A schema-4 host value (what `layout::HostView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct HostV4<'a> {
    host: &'a str,
    #[serde(borrow)]
    addr: Option<&'a str>,
    #[serde(borrow)]
    entries: Vec<EntryV4<'a>>,
}

/// A schema-4 entry (what `layout::EntryView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct EntryV4<'a> {
    #[serde(borrow)]
    disk: DiskV4<'a>,
    present: bool,
    first_seen: Millis,
    last_seen: Millis,
    since: Millis,
    dup: bool,
    #[serde(borrow)]
    place: Option<(&'a str, Option<&'a str>)>,
    #[serde(borrow)]
    past: Vec<PastStayV3<'a>>,
}

/// A schema-4 disk (what `layout::DiskView` was: no probe).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct DiskV4<'a> {
    #[serde(borrow)]
    uuid: Option<&'a str>,
    #[serde(borrow)]
    label: Option<&'a str>,
    device: &'a str,
    #[serde(borrow)]
    fstype: Option<&'a str>,
    #[serde(borrow)]
    mountpoints: Vec<&'a str>,
    #[serde(borrow)]
    hardware: HardwareV4<'a>,
}

/// A schema-4 hardware (what `layout::HardwareView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct HardwareV4<'a> {
    size: Option<u64>,
    #[serde(borrow)]
    model: Option<&'a str>,
    #[serde(borrow)]
    vendor: Option<&'a str>,
    #[serde(borrow)]
    serial: Option<&'a str>,
    #[serde(borrow)]
    wwn: Option<&'a str>,
    #[serde(borrow)]
    transport: Option<&'a str>,
    removable: Option<bool>,
    rotational: Option<bool>,
    #[serde(borrow)]
    parent: Option<&'a str>,
    #[serde(borrow)]
    backing_file: Option<&'a str>,
}

impl<'a> HostV4<'a> {
    /// The same host now: every disk with its probe unknown (its key, made of its UUID,
    /// WWN, serial and device, is unchanged, and so is the order).
    fn to_current(&self) -> HostView<'a> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let h = &e.disk.hardware;
                EntryView {
                    disk: DiskView {
                        uuid: e.disk.uuid,
                        label: e.disk.label,
                        device: e.disk.device,
                        fstype: e.disk.fstype,
                        mountpoints: e.disk.mountpoints.clone(),
                        hardware: HardwareView {
                            size: h.size,
                            model: h.model,
                            vendor: h.vendor,
                            serial: h.serial,
                            wwn: h.wwn,
                            transport: h.transport,
                            removable: h.removable,
                            rotational: h.rotational,
                            parent: h.parent,
                            backing_file: h.backing_file,
                        },
                        probe: 0,
                    },
                    present: e.present,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    since: e.since,
                    dup: e.dup,
                    place: e.place,
                    past: e
                        .past
                        .iter()
                        .map(|p| PastStay {
                            host: p.host,
                            addr: p.addr,
                            device: p.device,
                            label: p.label,
                            first_seen: p.first_seen,
                            last_seen: p.last_seen,
                        })
                        .collect(),
                }
            })
            .collect();
        HostView {
            host: self.host,
            addr: self.addr,
            entries,
        }
    }
}

/// Convert a schema-3 or schema-4 store to schema 5, host by host in place (see the module
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
            Some(FRAME_V5) => continue, // converted by an interrupted run
            Some(m @ (0 | FRAME_V4)) => m,
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
        let current = if mark == FRAME_V4 {
            match postcard::from_bytes::<HostV4<'_>>(unframed(&bytes)) {
                Ok(old) => old.to_current(),
                Err(_) => continue,
            }
        } else {
            match postcard::from_bytes::<HostV3<'_>>(unframed(&bytes)) {
                Ok(old) => old.to_current(),
                Err(_) => continue,
            }
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

/// Convert a schema-2 store to schema 5 (see the module documentation for the order).
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
        // Keys must be what v5 derives from the disk (identity, + NUL + device); without
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
