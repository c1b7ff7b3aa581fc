//! `list [host] [--blank] [--json]`: every disk known, live ones first.

use std::collections::HashSet;

use super::{rows_body, Column, QueryError};
use crate::control::table;
use crate::control::Context;
use crate::model::now_millis as now;
use crate::model::Sighting;
use crate::protocol::commands::List;
use crate::protocol::frame::{Reply, Status};
use crate::view::{self, DiskView};

/// Build the reply.
pub fn apply(cmd: &List, ctx: &Context) -> Reply {
    match disks(cmd, ctx) {
        Ok(disks) => render(disks, cmd.json, Status::Ok(String::new())),
        Err(e) => e.reply(cmd.json),
    }
}

/// The disks `list` shows (all, one host's, or the blank ones), live first, then most
/// recently seen: the socket's `list` and HTTP's `/api/v1/disks` both answer from this.
pub fn disks(cmd: &List, ctx: &Context) -> Result<Vec<DiskView>, QueryError> {
    let store = &ctx.store;
    let mut sightings = match cmd.node() {
        Some(h) => store.find_host(h),
        None => store.sightings(),
    }?;
    if let Some(h) = cmd.node() {
        if sightings.is_empty() {
            return Err(QueryError::NoMatch(format!("no disks known on host {h:?}")));
        }
    }
    if cmd.blank {
        sightings = blank(sightings);
        if sightings.is_empty() {
            return Err(QueryError::NoMatch("no blank devices known".into()));
        }
    }
    Ok(view::disks(store, sightings, now(), ctx.peer_expiry()))
}

/// The devices an operator may format: their host's blkid probed them and found no
/// signature, nothing uses them (holders, mounts), they hold no filesystem
/// ([`DiskRecord::probed_empty`](crate::model::DiskRecord::probed_empty)), and no
/// partition of theirs is attached (a disk whose partitions are listed is not blank, even
/// though it holds no filesystem itself). A device that could not be probed, or a record
/// from a peer or a store that predates probing (its probe `Unknown`), is never blank: no
/// one saw it empty.
fn blank(sightings: Vec<Sighting>) -> Vec<Sighting> {
    // Partitions still attached: a disk whose old partitions are only last known (a
    // replaced drive in the same bay) is blank again.
    let parents: HashSet<(String, String)> = sightings
        .iter()
        .filter(|s| s.present)
        .filter_map(|s| {
            let parent = s.disk.hardware.parent.clone()?;
            Some((s.node_id.clone(), parent))
        })
        .collect();
    sightings
        .into_iter()
        .filter(|s| {
            s.disk.probed_empty() && !parents.contains(&(s.node_id.clone(), s.disk.device.clone()))
        })
        .collect()
}

/// A no-match reply; in JSON mode its body is an empty array so scripts can parse it.
pub fn no_match(msg: String, json: bool) -> Reply {
    Reply {
        status: Status::NoMatch(msg),
        body: if json { vec!["[]".into()] } else { Vec::new() },
    }
}

/// Render disks as a table or JSON.
pub fn render(disks: Vec<DiskView>, json: bool, status: Status) -> Reply {
    let columns: [Column<DiskView>; 12] = [
        ("HOST", |d| d.host.clone()),
        ("ADDR", |d| table::opt(&d.addr)),
        ("UUID", |d| table::opt(&d.uuid)),
        ("LABEL", |d| table::opt(&d.label)),
        ("DEVICE", |d| d.device.clone()),
        ("SIZE", |d| {
            d.hardware.size.map(table::size).unwrap_or_default()
        }),
        ("FSTYPE", |d| table::opt(&d.fstype)),
        ("MOUNTPOINTS", |d| d.mountpoints.join(",")),
        ("USE%", |d| table::percent(d.use_percent())),
        ("HEALTH", |d| {
            d.health
                .as_ref()
                .map(|h| h.state.to_string())
                .unwrap_or_default()
        }),
        ("STATE", |d| {
            if d.live { "live" } else { "last-known" }.to_string()
        }),
        ("LAST SEEN", |d| d.last_seen.clone()),
    ];
    let body = rows_body(&disks, json, &columns);
    Reply { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DiskRecord, Probe};

    /// A sighting; a device without a UUID was probed and found empty, one with a UUID
    /// holds ext4.
    fn seen(device: &str, parent: Option<&str>, uuid: Option<&str>, present: bool) -> Sighting {
        let mut disk = DiskRecord {
            device: device.into(),
            uuid: uuid.map(str::to_string),
            fstype: uuid.map(|_| "ext4".to_string()),
            probe: if uuid.is_some() {
                Probe::Signature
            } else {
                Probe::Empty
            },
            ..DiskRecord::default()
        };
        disk.hardware.parent = parent.map(str::to_string);
        Sighting {
            node_id: "00000000000000000000000000000001".into(),
            host: "a".into(),
            addr: None,
            disk,
            present,
            first_seen: 0,
            last_seen: 0,
        }
    }

    fn devices(s: Vec<Sighting>) -> Vec<String> {
        blank(s).into_iter().map(|s| s.disk.device).collect()
    }

    #[test]
    fn blank_means_no_filesystem_and_no_attached_partition() {
        // A disk with an attached partition is not blank; its blank partition is.
        let partitioned = vec![
            seen("/dev/sdb", None, None, true),
            seen("/dev/sdb1", Some("/dev/sdb"), None, true),
            seen("/dev/sdb2", Some("/dev/sdb"), Some("u"), true),
        ];
        assert_eq!(devices(partitioned), ["/dev/sdb1"]);
        // The drive in that bay replaced by a new blank one: the old partitions are only
        // last known, so the new disk is blank.
        let replaced = vec![
            seen("/dev/sdb", None, None, true),
            seen("/dev/sdb1", Some("/dev/sdb"), Some("u"), false),
        ];
        assert_eq!(devices(replaced), ["/dev/sdb"]);
    }

    #[test]
    fn blank_means_probed_and_found_empty_unused_and_unmounted() {
        let with = |device: &str, probe: Probe| {
            let mut s = seen(device, None, None, true);
            s.disk.probe = probe;
            s
        };
        let mut mounted = with("/dev/vdc", Probe::Empty);
        mounted.disk.mountpoints = vec!["/srv".into()];
        let mut typed = with("/dev/vdd", Probe::Empty);
        typed.disk.fstype = Some("weird".into());
        let all = vec![
            with("/dev/vda", Probe::Failed),
            // A record from a peer or a store that predates probing: nobody saw it empty.
            with("/dev/vdb", Probe::Unknown),
            mounted,
            typed,
            with("/dev/vde", Probe::InUse),
            // A partition table only: no filesystem, no UUID, a signature all the same.
            with("/dev/vdf", Probe::Signature),
            with("/dev/vdg", Probe::Empty),
        ];
        assert_eq!(devices(all), ["/dev/vdg"]);
        // A probe code from a later release reads as unknown: not blank either.
        let mut later = with("/dev/vdh", Probe::from_code(200));
        assert_eq!(later.disk.probe, Probe::Unknown);
        later.disk.uuid = None;
        assert!(devices(vec![later]).is_empty());
    }
}
