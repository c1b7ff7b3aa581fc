//! The older schemas' host values, frozen: what `layout`'s types were in schemas 3, 4 and
//! 5 (postcard is positional, so these copies never change), and how each becomes a
//! current value.

use serde::Deserialize;

use super::super::layout::{DiskView, EntryView, HardwareView, HealthLog, HostView, PastStay};
use crate::model::Millis;

// ---- schema 3, frozen ----

/// A schema-3 host value (what `layout::HostView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct HostV3<'a> {
    pub(super) host: &'a str,
    #[serde(borrow)]
    pub(super) addr: Option<&'a str>,
    #[serde(borrow)]
    pub(super) entries: Vec<EntryV3<'a>>,
}

/// A schema-3 entry (what `layout::EntryView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct EntryV3<'a> {
    #[serde(borrow)]
    pub(super) disk: DiskV3<'a>,
    pub(super) present: bool,
    pub(super) first_seen: Millis,
    pub(super) last_seen: Millis,
    pub(super) since: Millis,
    pub(super) dup: bool,
    #[serde(borrow)]
    pub(super) place: Option<(&'a str, Option<&'a str>)>,
    #[serde(borrow)]
    pub(super) past: Vec<PastStayV3<'a>>,
}

/// A schema-3 disk (what `layout::DiskView` was: no hardware).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct DiskV3<'a> {
    #[serde(borrow)]
    pub(super) uuid: Option<&'a str>,
    #[serde(borrow)]
    pub(super) label: Option<&'a str>,
    pub(super) device: &'a str,
    #[serde(borrow)]
    pub(super) fstype: Option<&'a str>,
    #[serde(borrow)]
    pub(super) mountpoints: Vec<&'a str>,
}

/// A schema-3 past stay (what `layout::PastStay` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct PastStayV3<'a> {
    pub(super) host: &'a str,
    #[serde(borrow)]
    pub(super) addr: Option<&'a str>,
    pub(super) device: &'a str,
    #[serde(borrow)]
    pub(super) label: Option<&'a str>,
    pub(super) first_seen: Millis,
    pub(super) last_seen: Millis,
}

impl<'a> HostV3<'a> {
    /// The same host now: every disk with its hardware and its probe unknown.
    pub(super) fn to_current(&self) -> HostView<'a> {
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
                    health: None,
                    fs: None,
                },
                present: e.present,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                since: e.since,
                dup: e.dup,
                place: e.place,
                past: past(&e.past),
                readings: HealthLog::default(),
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
pub(super) struct HostV4<'a> {
    pub(super) host: &'a str,
    #[serde(borrow)]
    pub(super) addr: Option<&'a str>,
    #[serde(borrow)]
    pub(super) entries: Vec<EntryV4<'a>>,
}

/// A schema-4 entry (what `layout::EntryView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct EntryV4<'a> {
    #[serde(borrow)]
    pub(super) disk: DiskV4<'a>,
    pub(super) present: bool,
    pub(super) first_seen: Millis,
    pub(super) last_seen: Millis,
    pub(super) since: Millis,
    pub(super) dup: bool,
    #[serde(borrow)]
    pub(super) place: Option<(&'a str, Option<&'a str>)>,
    #[serde(borrow)]
    pub(super) past: Vec<PastStayV3<'a>>,
}

/// A schema-4 disk (what `layout::DiskView` was: no probe).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct DiskV4<'a> {
    #[serde(borrow)]
    pub(super) uuid: Option<&'a str>,
    #[serde(borrow)]
    pub(super) label: Option<&'a str>,
    pub(super) device: &'a str,
    #[serde(borrow)]
    pub(super) fstype: Option<&'a str>,
    #[serde(borrow)]
    pub(super) mountpoints: Vec<&'a str>,
    #[serde(borrow)]
    pub(super) hardware: HardwareV4<'a>,
}

/// A schema-4 hardware (what `layout::HardwareView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct HardwareV4<'a> {
    pub(super) size: Option<u64>,
    #[serde(borrow)]
    pub(super) model: Option<&'a str>,
    #[serde(borrow)]
    pub(super) vendor: Option<&'a str>,
    #[serde(borrow)]
    pub(super) serial: Option<&'a str>,
    #[serde(borrow)]
    pub(super) wwn: Option<&'a str>,
    #[serde(borrow)]
    pub(super) transport: Option<&'a str>,
    pub(super) removable: Option<bool>,
    pub(super) rotational: Option<bool>,
    #[serde(borrow)]
    pub(super) parent: Option<&'a str>,
    #[serde(borrow)]
    pub(super) backing_file: Option<&'a str>,
}

impl<'a> HostV4<'a> {
    /// The same host now: every disk with its probe unknown (its key, made of its UUID,
    /// WWN, serial and device, is unchanged, and so is the order).
    pub(super) fn to_current(&self) -> HostView<'a> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let d = &e.disk;
                EntryView {
                    disk: DiskView {
                        uuid: d.uuid,
                        label: d.label,
                        device: d.device,
                        fstype: d.fstype,
                        mountpoints: d.mountpoints.clone(),
                        hardware: d.hardware.to_current(),
                        probe: 0,
                        health: None,
                        fs: None,
                    },
                    present: e.present,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    since: e.since,
                    dup: e.dup,
                    place: e.place,
                    past: past(&e.past),
                    readings: HealthLog::default(),
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

impl<'a> HardwareV4<'a> {
    /// The same hardware now (schemas 4 to 6 store the same fields).
    pub(super) fn to_current(&self) -> HardwareView<'a> {
        HardwareView {
            size: self.size,
            model: self.model,
            vendor: self.vendor,
            serial: self.serial,
            wwn: self.wwn,
            transport: self.transport,
            removable: self.removable,
            rotational: self.rotational,
            parent: self.parent,
            backing_file: self.backing_file,
        }
    }
}

/// Past stays, as every schema from 3 on stores them.
fn past<'a>(stays: &[PastStayV3<'a>]) -> Vec<PastStay<'a>> {
    stays
        .iter()
        .map(|p| PastStay {
            host: p.host,
            addr: p.addr,
            device: p.device,
            label: p.label,
            first_seen: p.first_seen,
            last_seen: p.last_seen,
        })
        .collect()
}

// ---- schema 5, frozen ----

/// A schema-5 host value (what `layout::HostView` was).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct HostV5<'a> {
    pub(super) host: &'a str,
    #[serde(borrow)]
    pub(super) addr: Option<&'a str>,
    #[serde(borrow)]
    pub(super) entries: Vec<EntryV5<'a>>,
}

/// A schema-5 entry (what `layout::EntryView` was: no health readings).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct EntryV5<'a> {
    #[serde(borrow)]
    pub(super) disk: DiskV5<'a>,
    pub(super) present: bool,
    pub(super) first_seen: Millis,
    pub(super) last_seen: Millis,
    pub(super) since: Millis,
    pub(super) dup: bool,
    #[serde(borrow)]
    pub(super) place: Option<(&'a str, Option<&'a str>)>,
    #[serde(borrow)]
    pub(super) past: Vec<PastStayV3<'a>>,
}

/// A schema-5 disk (what `layout::DiskView` was: no health, no filesystem usage).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct DiskV5<'a> {
    #[serde(borrow)]
    pub(super) uuid: Option<&'a str>,
    #[serde(borrow)]
    pub(super) label: Option<&'a str>,
    pub(super) device: &'a str,
    #[serde(borrow)]
    pub(super) fstype: Option<&'a str>,
    #[serde(borrow)]
    pub(super) mountpoints: Vec<&'a str>,
    #[serde(borrow)]
    pub(super) hardware: HardwareV4<'a>,
    pub(super) probe: u8,
}

impl<'a> HostV5<'a> {
    /// The same host now: every disk with its health and usage unknown and no readings
    /// (its key and the order are unchanged).
    pub(super) fn to_current(&self) -> HostView<'a> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let d = &e.disk;
                EntryView {
                    disk: DiskView {
                        uuid: d.uuid,
                        label: d.label,
                        device: d.device,
                        fstype: d.fstype,
                        mountpoints: d.mountpoints.clone(),
                        hardware: d.hardware.to_current(),
                        probe: d.probe,
                        health: None,
                        fs: None,
                    },
                    present: e.present,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    since: e.since,
                    dup: e.dup,
                    place: e.place,
                    past: past(&e.past),
                    readings: HealthLog::default(),
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
