//! New in schema 6: a disk's condition as stored (its health and filesystem usage, borrowed
//! like the rest of a [`DiskView`]) and each entry's last health readings.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::model::{DiskHealth, FsUsage, HealthPoint, HealthState, Millis};

/// Health readings kept per (host, disk) entry.
pub const MAX_READINGS: usize = 64;

/// A [`DiskHealth`], borrowed; the state as [`HealthState::code`] (the store's layout does
/// not follow the watchers' type: a field they add is a new schema, not a misread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct HealthView<'a> {
    pub state: u8,
    #[serde(borrow)]
    pub reasons: Vec<&'a str>,
    pub temperature_c: Option<i32>,
    pub power_on_hours: Option<u64>,
    pub reallocated_sectors: Option<u64>,
    pub pending_sectors: Option<u64>,
    pub media_errors: Option<u64>,
    pub percentage_used: Option<u32>,
    pub checked: Option<u64>,
}

impl<'a> HealthView<'a> {
    pub fn of(h: &'a DiskHealth) -> HealthView<'a> {
        HealthView {
            state: h.state.code(),
            reasons: h.reasons.iter().map(String::as_str).collect(),
            temperature_c: h.temperature_c,
            power_on_hours: h.power_on_hours,
            reallocated_sectors: h.reallocated_sectors,
            pending_sectors: h.pending_sectors,
            media_errors: h.media_errors,
            percentage_used: h.percentage_used,
            checked: h.checked,
        }
    }

    pub fn to_record(&self) -> DiskHealth {
        DiskHealth {
            state: HealthState::from_code(self.state),
            reasons: self.reasons.iter().map(|r| r.to_string()).collect(),
            temperature_c: self.temperature_c,
            power_on_hours: self.power_on_hours,
            reallocated_sectors: self.reallocated_sectors,
            pending_sectors: self.pending_sectors,
            media_errors: self.media_errors,
            percentage_used: self.percentage_used,
            checked: self.checked,
        }
    }

    /// Whether it says the same as `h`.
    pub fn same_as(&self, h: &DiskHealth) -> bool {
        // Destructured, so that a field added to `DiskHealth` cannot be forgotten here.
        let DiskHealth {
            state,
            reasons,
            temperature_c,
            power_on_hours,
            reallocated_sectors,
            pending_sectors,
            media_errors,
            percentage_used,
            checked,
        } = h;
        HealthState::from_code(self.state) == *state
            && self.reasons.len() == reasons.len()
            && self.reasons.iter().zip(reasons).all(|(a, b)| a == b)
            && self.temperature_c == *temperature_c
            && self.power_on_hours == *power_on_hours
            && self.reallocated_sectors == *reallocated_sectors
            && self.pending_sectors == *pending_sectors
            && self.media_errors == *media_errors
            && self.percentage_used == *percentage_used
            && self.checked == *checked
    }
}

/// A [`FsUsage`], as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct FsView {
    pub size: u64,
    pub used: u64,
    pub avail: u64,
}

impl FsView {
    pub fn of(f: &FsUsage) -> FsView {
        FsView {
            size: f.size,
            used: f.used,
            avail: f.avail,
        }
    }

    pub fn to_record(self) -> FsUsage {
        FsUsage {
            size: self.size,
            used: self.used,
            avail: self.avail,
        }
    }
}

/// One health reading kept in an entry's log: when, the verdict, and the figures whose
/// trend matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct Reading {
    pub checked: Millis,
    /// `HealthState::code`.
    pub state: u8,
    pub temperature_c: Option<i32>,
    pub reallocated: Option<u64>,
    pub pending: Option<u64>,
    pub media_errors: Option<u64>,
}

impl Reading {
    /// The reading `h` is, if it says when it was taken.
    pub fn of(h: &DiskHealth) -> Option<Reading> {
        Some(Reading {
            checked: h.checked?,
            state: h.state.code(),
            temperature_c: h.temperature_c,
            reallocated: h.reallocated_sectors,
            pending: h.pending_sectors,
            media_errors: h.media_errors,
        })
    }

    pub fn to_point(self) -> HealthPoint {
        HealthPoint {
            checked: self.checked,
            state: HealthState::from_code(self.state),
            temperature_c: self.temperature_c,
            reallocated_sectors: self.reallocated,
            pending_sectors: self.pending,
            media_errors: self.media_errors,
        }
    }
}

/// An entry's health readings, newest first, at most [`MAX_READINGS`]: postcard
/// [`Reading`]s one after the other inside one byte string.
///
/// Kept encoded (borrowed from the host's value when decoded) because every query decodes
/// whole host values and almost none wants the readings: they cost a length and a slice
/// there, and are decoded only by `Store::health_log` and by a merge that adds one. Newest
/// first, so that the newest one (what a merge compares with) is read without the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(in crate::store) struct HealthLog<'a>(#[serde(borrow)] pub Cow<'a, [u8]>);

impl Serialize for HealthLog<'_> {
    /// As a byte string (what its `Deserialize` borrows).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl HealthLog<'_> {
    /// The log of one reading.
    pub fn one(r: Reading) -> HealthLog<'static> {
        HealthLog::default().with(r)
    }

    /// The newest reading, if any (and if it decodes).
    pub fn newest(&self) -> Option<Reading> {
        postcard::take_from_bytes::<Reading>(&self.0)
            .ok()
            .map(|(r, _)| r)
    }

    /// Every reading, newest first; decoding stops at the first that does not decode.
    pub fn readings(&self) -> Vec<Reading> {
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.0;
        while !rest.is_empty() && out.len() < MAX_READINGS {
            match postcard::take_from_bytes::<Reading>(rest) {
                Ok((r, after)) => {
                    out.push(r);
                    rest = after;
                }
                Err(_) => break,
            }
        }
        out
    }

    /// The log with `r` as its newest reading, the oldest dropped past [`MAX_READINGS`].
    pub fn with(&self, r: Reading) -> HealthLog<'static> {
        let mut bytes = postcard::to_allocvec(&r).unwrap_or_default();
        for old in self.readings().into_iter().take(MAX_READINGS - 1) {
            if let Ok(b) = postcard::to_allocvec(&old) {
                bytes.extend(b);
            }
        }
        HealthLog(Cow::Owned(bytes))
    }
}

/// The log an entry keeps after `health` arrived for a disk whose log was `log`: with the
/// reading added when it says when it was taken and that time is not the newest stored
/// one's (an unchanged reading, re-sent with every inventory, is one point).
pub(in crate::store) fn log_after<'a>(
    log: &HealthLog<'a>,
    health: Option<&DiskHealth>,
) -> HealthLog<'a> {
    match health.and_then(Reading::of) {
        Some(r) if log.newest().map(|n| n.checked) != Some(r.checked) => log.with(r),
        _ => log.clone(),
    }
}
