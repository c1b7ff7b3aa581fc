//! `health [TERM] [--check] [--json]`: the SMART verdict of every physical disk in the
//! fleet, worst first.
//!
//! One row per physical disk: a partition shows its parent's reading, so the records of a
//! disk and its partitions collapse into the disk's row. With `--check` the status line
//! says whether anything needs attention, which the one-shot client turns into its exit
//! code (1 when any disk is `warning` or `failing`) for cron jobs and monitoring scripts.

use std::cmp::Reverse;
use std::collections::HashSet;

use super::{list, rows_body, where_is, Column, QueryError};
use crate::control::{table, Context};
use crate::model::HealthState;
use crate::protocol::commands::Health;
use crate::protocol::frame::{Reply, Status};
use crate::view::{DiskView, HealthRow};

/// The status text of a `--check` reply when some disk is `warning` or `failing`: the
/// one-shot client exits 1 on it.
pub const ATTENTION: &str = "attention:";

/// Build the reply.
pub fn apply(cmd: &Health, ctx: &Context) -> Reply {
    let rows = match rows(cmd.term.as_deref(), ctx) {
        Ok(rows) => rows,
        // Nothing read is nothing to worry about: `--check` in a fleet without smartctl
        // must not page anyone.
        Err(QueryError::NoMatch(why)) if cmd.check => {
            return Reply {
                status: Status::Ok(why),
                body: if cmd.json { vec!["[]".into()] } else { vec![] },
            }
        }
        Err(e) => return e.reply(cmd.json),
    };
    let status = if cmd.check {
        Status::Ok(summary(&rows))
    } else {
        Status::Ok(String::new())
    };
    render(rows, cmd.json, status)
}

/// The disks with a health reading (those TERM names, or all), worst first, then live
/// first, by host and device.
pub fn rows(term: Option<&str>, ctx: &Context) -> Result<Vec<HealthRow>, QueryError> {
    let disks = match term {
        Some(t) => where_is::disks(t, ctx)?,
        None => list::disks(&Default::default(), ctx)?,
    };
    let rows = physical(disks);
    if rows.is_empty() {
        return Err(QueryError::NoMatch(match term {
            Some(t) => format!("no health reading of a disk matching {t:?}"),
            None => "no disk health known (smartctl runs on none of the fleet's hosts?)".into(),
        }));
    }
    Ok(rows)
}

/// One row per physical disk that has a reading: a partition stands for its parent (its
/// reading is the parent's), the first record of each (host, disk) wins (the live one:
/// records come live first).
fn physical(disks: Vec<DiskView>) -> Vec<HealthRow> {
    let mut seen = HashSet::new();
    let mut rows: Vec<HealthRow> = disks
        .into_iter()
        .filter_map(|d| {
            let health = d.health?;
            let device = match &d.hardware.parent {
                Some(p) if p.starts_with('/') => p.clone(),
                Some(p) => format!("/dev/{p}"),
                None => d.device,
            };
            if !seen.insert((d.host.clone(), device.clone())) {
                return None;
            }
            let own = d.hardware.parent.is_none();
            Some(HealthRow {
                host: d.host,
                addr: d.addr,
                device,
                // A partition's record carries only its own size: the disk's is unknown here.
                model: d.hardware.model,
                serial: d.hardware.serial,
                size: if own { d.hardware.size } else { None },
                live: d.live,
                health,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        Reverse(a.health.state)
            .cmp(&Reverse(b.health.state))
            .then(b.live.cmp(&a.live))
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.device.cmp(&b.device))
    });
    rows
}

/// The `--check` status text: [`ATTENTION`] and the counts, or that all is well. Only
/// live disks count: a failed drive pulled out of its server stays in the store as last
/// known, and must not keep the check failing.
fn summary(rows: &[HealthRow]) -> String {
    let count = |s: HealthState| {
        rows.iter()
            .filter(|r| r.live && r.health.state == s)
            .count()
    };
    let (failing, warning) = (count(HealthState::Failing), count(HealthState::Warning));
    if failing + warning > 0 {
        format!("{ATTENTION} {failing} failing, {warning} warning")
    } else {
        format!("no disk needs attention ({} read)", rows.len())
    }
}

fn render(rows: Vec<HealthRow>, json: bool, status: Status) -> Reply {
    let columns: [Column<HealthRow>; 9] = [
        ("HOST", |r| r.host.clone()),
        ("DEVICE", |r| r.device.clone()),
        ("MODEL", |r| table::opt(&r.model)),
        ("SERIAL", |r| table::opt(&r.serial)),
        ("HEALTH", |r| r.health.state.to_string()),
        ("TEMP", |r| {
            r.health
                .temperature_c
                .map(|t| format!("{t}°C"))
                .unwrap_or_default()
        }),
        ("POWER-ON", |r| {
            r.health
                .power_on_hours
                .map(|p| format!("{p}h"))
                .unwrap_or_default()
        }),
        ("CHECKED", |r| table::opt(&r.health.checked)),
        ("REASONS", |r| r.health.reasons.join("; ")),
    ];
    let body = rows_body(&rows, json, &columns);
    Reply { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{DiskView, HealthView};

    fn view(host: &str, device: &str, parent: Option<&str>, state: HealthState) -> DiskView {
        let mut v = DiskView::sample(host, device);
        v.hardware.parent = parent.map(str::to_string);
        v.hardware.size = Some(1 << 30);
        v.health = Some(HealthView::sample(state));
        v
    }

    #[test]
    fn one_row_per_physical_disk_worst_first() {
        let mut no_reading = view("a", "/dev/loop0", None, HealthState::Ok);
        no_reading.health = None;
        let rows = physical(vec![
            view("a", "/dev/sda", None, HealthState::Ok),
            view("a", "/dev/sda1", Some("/dev/sda"), HealthState::Ok),
            view("a", "/dev/sdb1", Some("sdb"), HealthState::Warning),
            view("b", "/dev/sda", None, HealthState::Unknown),
            view("b", "/dev/nvme0n1", None, HealthState::Failing),
            no_reading,
        ]);
        let got: Vec<(&str, &str, HealthState)> = rows
            .iter()
            .map(|r| (r.host.as_str(), r.device.as_str(), r.health.state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", "/dev/nvme0n1", HealthState::Failing),
                ("a", "/dev/sdb", HealthState::Warning),
                ("b", "/dev/sda", HealthState::Unknown),
                ("a", "/dev/sda", HealthState::Ok),
            ]
        );
        // The partition's row does not claim the disk's size as its own.
        assert_eq!(rows[1].size, None);
        assert_eq!(rows[3].size, Some(1 << 30));
        assert!(summary(&rows).starts_with(ATTENTION));
        assert!(!summary(&rows[2..]).starts_with(ATTENTION));
        // A failing disk that is only last known does not count.
        let mut gone = rows.clone();
        for r in &mut gone {
            r.live =
                r.health.state != HealthState::Failing && r.health.state != HealthState::Warning;
        }
        assert!(!summary(&gone).starts_with(ATTENTION), "{}", summary(&gone));
    }
}
