//! New in schema 6: a disk's condition as stored (its health and filesystem usage, borrowed
//! like the rest of a [`DiskView`]) and each entry's last health readings.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::model::{DiskHealth, HealthPoint, HealthState, Millis};

/// Health readings kept per (host, disk) entry.
pub const MAX_READINGS: usize = 64;

/// A [`DiskHealth`] and a [`FsUsage`] as stored: the positional layout the wire's condition
/// trailer uses too (one layout, defined in the model).
pub(in crate::store) use crate::model::layout::{FsLayout as FsView, HealthLayout as HealthView};

/// One health reading kept in an entry's log: when, the verdict (as
/// [`HealthState::code`]), and the figures whose trend matters.
pub(in crate::store) type Reading = HealthPoint<Millis, u8>;

impl Reading {
    /// The reading `h` is, if it says when it was taken.
    pub fn of(h: &DiskHealth) -> Option<Reading> {
        Some(Reading {
            checked: h.checked?,
            state: h.state.code(),
            temperature_c: h.temperature_c,
            reallocated_sectors: h.reallocated_sectors,
            pending_sectors: h.pending_sectors,
            media_errors: h.media_errors,
        })
    }

    /// The reading, its verdict a [`HealthState`] again.
    pub fn to_point(self) -> HealthPoint {
        self.map(|checked| checked, HealthState::from_code)
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
