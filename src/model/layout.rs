//! The positional (postcard) layout of a disk's condition, its SMART health and
//! filesystem figures: one definition for the two places that write it, the wire's
//! condition trailer (revision 4) and the store (schema 6). postcard writes `&str` and
//! `String` alike, so a reading is written borrowed and read back borrowed from the bytes.

use serde::{Deserialize, Serialize};

use super::{DiskHealth, FsUsage, HealthState};

/// A [`DiskHealth`]'s reading, its verdict, reasons and time in the representation a
/// place wants: [`HealthLayout`] here, `view::HealthView` in JSON (the time in RFC 3339).
/// The field order is the layout's: JSON shows the fields in it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFigures<State, Reason, Time> {
    /// The verdict (`ok`, `warning`, `failing` or `unknown`).
    pub state: State,
    /// Why it is not `ok`.
    pub reasons: Vec<Reason>,
    /// See [`DiskHealth`] for this and the other figures.
    pub temperature_c: Option<i32>,
    /// `DiskHealth::power_on_hours`.
    pub power_on_hours: Option<u64>,
    /// `DiskHealth::reallocated_sectors`.
    pub reallocated_sectors: Option<u64>,
    /// `DiskHealth::pending_sectors`.
    pub pending_sectors: Option<u64>,
    /// `DiskHealth::media_errors`.
    pub media_errors: Option<u64>,
    /// `DiskHealth::percentage_used`.
    pub percentage_used: Option<u32>,
    /// `DiskHealth::checked`.
    pub checked: Option<Time>,
}

impl<State, Reason, Time> HealthFigures<State, Reason, Time> {
    /// A reading in this representation: its verdict, each reason (borrowed) and its time
    /// turned by `state`, `reason` and `time`.
    pub fn of_record<'a>(
        h: &'a DiskHealth,
        state: impl FnOnce(HealthState) -> State,
        reason: impl FnMut(&'a str) -> Reason,
        time: impl FnOnce(u64) -> Time,
    ) -> Self {
        HealthFigures {
            state: state(h.state),
            reasons: h.reasons.iter().map(String::as_str).map(reason).collect(),
            temperature_c: h.temperature_c,
            power_on_hours: h.power_on_hours,
            reallocated_sectors: h.reallocated_sectors,
            pending_sectors: h.pending_sectors,
            media_errors: h.media_errors,
            percentage_used: h.percentage_used,
            checked: h.checked.map(time),
        }
    }
}

/// A [`DiskHealth`], borrowed; the state as [`HealthState::code`]. The layout does not
/// follow the watcher's type: a field it adds is a new schema and a new trailer, never a
/// misread of an old one.
pub type HealthLayout<'a> = HealthFigures<u8, &'a str, u64>;

impl<'a> HealthLayout<'a> {
    /// The layout of a reading, borrowing its text.
    pub fn of(h: &'a DiskHealth) -> HealthLayout<'a> {
        HealthFigures::of_record(h, HealthState::code, |r| r, |t| t)
    }

    /// The reading it holds.
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

/// A [`FsUsage`], as stored and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsLayout {
    /// `FsUsage::size`.
    pub size: u64,
    /// `FsUsage::used`.
    pub used: u64,
    /// `FsUsage::avail`.
    pub avail: u64,
}

impl FsLayout {
    /// The layout of filesystem figures.
    pub fn of(f: &FsUsage) -> FsLayout {
        FsLayout {
            size: f.size,
            used: f.used,
            avail: f.avail,
        }
    }

    /// The figures it holds.
    pub fn to_record(self) -> FsUsage {
        FsUsage {
            size: self.size,
            used: self.used,
            avail: self.avail,
        }
    }
}
