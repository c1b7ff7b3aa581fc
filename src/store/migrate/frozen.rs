//! The older schemas' host values, frozen: what `layout`'s types were in schemas 3, 4 and
//! 5 (postcard is positional, so these copies never change), and how each becomes a
//! current value.
//!
//! The three schemas differ only in what a disk stores after the fields schema 3 gave it
//! (schema 4 added the hardware, schema 5 the probe after it), so one set of types serves
//! all three, generic over that tail (`A`, see [`Added`]). postcard writes a struct, a
//! tuple and a nested struct as their fields one after the other, with no tag or length,
//! and `()` as nothing at all, so `HostOld<'_, ()>` is byte for byte schema 3's value,
//! `HostOld<'_, HardwareV4<'_>>` schema 4's and `HostOld<'_, AddedV5<'_>>` schema 5's.

use serde::Deserialize;

use super::super::layout::{DiskView, EntryView, HardwareView, HealthLog, HostView, PastStay};
use crate::model::Millis;

// ---- schemas 3 to 5, frozen ----

/// A host value of schemas 3 to 5 (what `layout::HostView` was), its disks' tail `A`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct HostOld<'a, A> {
    pub(super) host: &'a str,
    #[serde(borrow)]
    pub(super) addr: Option<&'a str>,
    #[serde(borrow)]
    pub(super) entries: Vec<EntryOld<'a, A>>,
}

/// An entry of schemas 3 to 5 (what `layout::EntryView` was: no health readings).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct EntryOld<'a, A> {
    #[serde(borrow)]
    pub(super) disk: DiskOld<'a, A>,
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

/// A disk of schemas 3 to 5 (what `layout::DiskView` was): the fields of a schema-3 disk,
/// then `added`, what the later schema stored after them.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct DiskOld<'a, A> {
    #[serde(borrow)]
    pub(super) uuid: Option<&'a str>,
    #[serde(borrow)]
    pub(super) label: Option<&'a str>,
    pub(super) device: &'a str,
    #[serde(borrow)]
    pub(super) fstype: Option<&'a str>,
    #[serde(borrow)]
    pub(super) mountpoints: Vec<&'a str>,
    pub(super) added: A,
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

/// What a disk of schemas 3 to 5 stores after the fields of a schema-3 disk, and what a
/// current disk makes of it.
pub(super) trait Added<'a> {
    /// Whether a host's entries are sorted again once converted (their keys may differ).
    const SORT_AGAIN: bool = false;
    /// The disk's hardware now.
    fn hardware(&self) -> HardwareView<'a>;
    /// The disk's probe now (`Probe::code`; 0 is unknown).
    fn probe(&self) -> u8 {
        0
    }
}

impl<'a, A: Added<'a>> HostOld<'a, A> {
    /// The same host now: every disk with its health and usage unknown and no readings,
    /// its hardware and probe as `A` says.
    pub(super) fn to_current(&self) -> HostView<'a> {
        let mut entries: Vec<EntryView<'a>> = self
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
                        hardware: d.added.hardware(),
                        probe: d.added.probe(),
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
        if A::SORT_AGAIN {
            entries.sort_by(|a, b| a.key().cmp(&b.key()));
        }
        HostView {
            host: self.host,
            addr: self.addr,
            entries,
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

// ---- schema 3, frozen ----

/// A schema-3 host value (what `layout::HostView` was).
pub(super) type HostV3<'a> = HostOld<'a, ()>;

/// A schema-3 disk (what `layout::DiskView` was: no hardware): nothing after the fields
/// every schema from 3 on stores.
impl<'a> Added<'a> for () {
    /// Without hardware a v5 key is the v3 key; sorted again all the same, as v5 keeps
    /// them.
    const SORT_AGAIN: bool = true;

    /// Every disk with its hardware and its probe unknown.
    fn hardware(&self) -> HardwareView<'a> {
        HardwareView::default()
    }
}

// ---- schema 4, frozen ----

/// A schema-4 host value (what `layout::HostView` was).
pub(super) type HostV4<'a> = HostOld<'a, HardwareV4<'a>>;

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

/// A schema-4 disk (what `layout::DiskView` was: no probe): its hardware after the fields
/// of a schema-3 disk. Converted with its probe unknown (its key, made of its UUID, WWN,
/// serial and device, is unchanged, and so is the order).
impl<'a> Added<'a> for HardwareV4<'a> {
    fn hardware(&self) -> HardwareView<'a> {
        self.to_current()
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

// ---- schema 5, frozen ----

/// A schema-5 host value (what `layout::HostView` was).
pub(super) type HostV5<'a> = HostOld<'a, AddedV5<'a>>;

/// What a schema-5 disk (what `layout::DiskView` was: no health, no filesystem usage)
/// stores after the fields of a schema-3 disk. Converted with its health and usage unknown
/// and no readings (its key and the order are unchanged).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct AddedV5<'a> {
    #[serde(borrow)]
    pub(super) hardware: HardwareV4<'a>,
    pub(super) probe: u8,
}

impl<'a> Added<'a> for AddedV5<'a> {
    fn hardware(&self) -> HardwareView<'a> {
        self.hardware.to_current()
    }

    fn probe(&self) -> u8 {
        self.probe
    }
}
