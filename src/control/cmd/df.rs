//! `df [--json]`: every mounted filesystem in the fleet, fullest first.
//!
//! The figures are what each host's mount watcher got from `statvfs`, carried with its
//! inventory: they move with the fleet only when use changes by 1 % of the size or more,
//! so a row may lag the host's own `df` by that much.

use std::collections::HashSet;

use super::{list, rows_body, Column, QueryError};
use crate::control::{table, Context};
use crate::protocol::commands::Json;
use crate::protocol::frame::{Reply, Status};
use crate::view::{DfRow, DiskView};

/// Build the reply.
pub fn apply(cmd: &Json, ctx: &Context) -> Reply {
    match rows(ctx) {
        Ok(rows) => render(rows, cmd.json),
        Err(e) => e.reply(cmd.json),
    }
}

/// The live mounted filesystems with figures, fullest first.
pub fn rows(ctx: &Context) -> Result<Vec<DfRow>, QueryError> {
    let rows = mounted(list::disks(&Default::default(), ctx)?);
    if rows.is_empty() {
        return Err(QueryError::NoMatch("no mounted filesystem known".into()));
    }
    Ok(rows)
}

/// Rows of the live records that are mounted and have figures, one per (host, device),
/// fullest first (then least space left).
fn mounted(disks: Vec<DiskView>) -> Vec<DfRow> {
    let mut seen = HashSet::new();
    let mut rows: Vec<DfRow> = disks
        .into_iter()
        .filter(|d| d.live)
        .filter_map(|d| {
            let use_percent = d.use_percent();
            let (fs_size, fs_used, fs_avail) = (d.fs_size?, d.fs_used?, d.fs_avail?);
            let mountpoint = d.mountpoints.first()?.clone();
            seen.insert((d.host.clone(), d.device.clone()))
                .then_some(DfRow {
                    host: d.host,
                    addr: d.addr,
                    device: d.device,
                    uuid: d.uuid,
                    label: d.label,
                    fstype: d.fstype,
                    mountpoint,
                    fs_size,
                    fs_used,
                    fs_avail,
                    use_percent,
                })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.use_percent
            .cmp(&a.use_percent)
            .then(a.fs_avail.cmp(&b.fs_avail))
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.device.cmp(&b.device))
    });
    rows
}

fn render(rows: Vec<DfRow>, json: bool) -> Reply {
    let columns: [Column<DfRow>; 8] = [
        ("HOST", |r| r.host.clone()),
        ("DEVICE", |r| r.device.clone()),
        ("MOUNTPOINT", |r| r.mountpoint.clone()),
        ("SIZE", |r| table::size(r.fs_size)),
        ("USED", |r| table::size(r.fs_used)),
        ("AVAIL", |r| table::size(r.fs_avail)),
        ("USE%", |r| table::percent(r.use_percent)),
        ("LABEL", |r| table::opt(&r.label)),
    ];
    let body = rows_body(&rows, json, &columns);
    Reply {
        status: Status::Ok(String::new()),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(host: &str, device: &str, used: u64, live: bool) -> DiskView {
        DiskView {
            fstype: Some("ext4".into()),
            mountpoints: vec![format!("/mnt/{used}")],
            fs_size: Some(1000),
            fs_used: Some(used),
            fs_avail: Some(950 - used),
            live,
            ..DiskView::sample(host, device)
        }
    }

    #[test]
    fn live_mounted_filesystems_fullest_first() {
        let mut unmounted = view("a", "/dev/sdc1", 10, true);
        unmounted.mountpoints.clear();
        let mut no_figures = view("a", "/dev/sdd1", 10, true);
        no_figures.fs_size = None;
        let rows = mounted(vec![
            view("a", "/dev/sda1", 100, true),
            view("b", "/dev/sda1", 900, true),
            view("a", "/dev/sdb1", 500, false),
            unmounted,
            no_figures,
        ]);
        let got: Vec<(&str, &str, Option<u64>)> = rows
            .iter()
            .map(|r| (r.host.as_str(), r.device.as_str(), r.use_percent))
            .collect();
        // 900 used of 950 usable: 95 % (rounded up, as df does).
        assert_eq!(
            got,
            vec![("b", "/dev/sda1", Some(95)), ("a", "/dev/sda1", Some(11))]
        );
    }
}
