//! Revision 4: each disk's condition (its SMART health and how full its filesystem is), in
//! a trailer of its own after the probe's, and after a delta's own bytes.
//!
//! The layout is frozen here rather than taken from [`DiskHealth`] and [`FsUsage`] (which
//! the watchers define and may grow): one entry per disk of the chunk, in order, each a
//! postcard `(Option<health>, Option<fs>)`, so a disk with neither costs two bytes. The
//! state travels as [`HealthState::code`]; a code this build does not know reads as
//! `Unknown`.

use serde::{Deserialize, Serialize};

use super::Reject;
use crate::model::layout::{FsLayout, HealthLayout};
use crate::model::{printable, DiskHealth, DiskRecord, FsUsage};

/// Most reasons one disk's health carries on the wire.
pub const MAX_REASONS: usize = 8;
/// Longest reason on the wire, in bytes.
pub const REASON_BYTES: usize = 120;
/// Coldest and hottest temperature a reading may claim, degrees Celsius (a drive's sensor
/// beyond these is broken, or the datagram is forged).
pub const TEMPERATURE_C: std::ops::RangeInclusive<i32> = -100..=200;
/// Highest NVMe "percentage used" a reading may claim (it may pass 100; not tenfold).
pub const MAX_PERCENTAGE_USED: u32 = 1000;

/// One disk's entry in the trailer: its reading and its filesystem figures, in the layout
/// the store keeps them in too.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    health: Option<HealthLayout<'a>>,
    fs: Option<FsLayout>,
}

/// One disk's entry, borrowed.
fn entry(d: &DiskRecord) -> Entry<'_> {
    Entry {
        health: d.health.as_ref().map(HealthLayout::of),
        fs: d.fs.as_ref().map(FsLayout::of),
    }
}

/// Whether any of `disks` has a condition to tell: without one, no trailer is sent (the
/// datagram stays revision 3 to the byte).
pub fn any_condition<'a>(mut disks: impl Iterator<Item = &'a DiskRecord>) -> bool {
    disks.any(|d| d.health.is_some() || d.fs.is_some())
}

/// `out` followed by the tag [`super::TRAILER_CONDITION`] and the condition of each of
/// `disks`, in order.
pub fn append_condition(
    mut out: Vec<u8>,
    disks: &[DiskRecord],
) -> Result<Vec<u8>, postcard::Error> {
    out.push(super::TRAILER_CONDITION);
    let list: Vec<Entry<'_>> = disks.iter().map(entry).collect();
    postcard::to_extend(&list, out)
}

/// The bytes one disk's entry takes in the trailer.
pub fn condition_size(d: &DiskRecord) -> usize {
    postcard::experimental::serialized_size(&entry(d)).unwrap_or(usize::MAX)
}

/// Read a condition trailer's list (the bytes after its tag) onto `disks`, in order;
/// the bytes after it. A list that does not decode is `Undecodable`, one of another length
/// than the disks `BadChunk`, as for the other trailers; the values are checked with the
/// rest of each disk ([`super::valid_disk`]).
pub fn read_condition<'b>(body: &'b [u8], disks: &mut [DiskRecord]) -> Result<&'b [u8], Reject> {
    let (list, after) = super::take_list::<Entry<'_>>(body, disks.len())?;
    for (d, c) in disks.iter_mut().zip(list) {
        d.health = c.health.as_ref().map(HealthLayout::to_record);
        d.fs = c.fs.map(FsLayout::to_record);
    }
    Ok(after)
}

/// Whether a health reading from the wire is within bounds: a few short printable reasons
/// and figures a drive can report.
pub fn valid_health(h: &DiskHealth) -> bool {
    h.reasons.len() <= MAX_REASONS
        && h.reasons.iter().all(|r| printable(r, REASON_BYTES))
        && h.temperature_c.is_none_or(|t| TEMPERATURE_C.contains(&t))
        && h.percentage_used.is_none_or(|p| p <= MAX_PERCENTAGE_USED)
}

/// Whether filesystem figures from the wire add up: nothing used or free beyond the size.
pub fn valid_fs(f: &FsUsage) -> bool {
    f.used <= f.size && f.avail <= f.size
}

/// Make a local reading fit the wire's bounds: the first [`MAX_REASONS`] reasons, each
/// without control characters and cut to [`REASON_BYTES`]; a reading whose figures are
/// still out of bounds, or filesystem figures that do not add up, are left out (the disk
/// is sent without them).
pub fn fit_condition(d: &mut DiskRecord) {
    if let Some(h) = d.health.as_mut() {
        h.reasons.truncate(MAX_REASONS);
        for r in &mut h.reasons {
            if !printable(r, REASON_BYTES) {
                let clean: String = r
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let mut end = clean.len().min(REASON_BYTES);
                while !clean.is_char_boundary(end) {
                    end -= 1;
                }
                *r = clean[..end].to_string();
            }
        }
    }
    if let Some(h) = d.health.as_mut() {
        // A figure out of bounds is left out, not the verdict: a peer must still hear
        // that the disk is failing.
        if h.temperature_c.is_some_and(|t| !TEMPERATURE_C.contains(&t)) {
            h.temperature_c = None;
        }
        if h.percentage_used.is_some_and(|p| p > MAX_PERCENTAGE_USED) {
            h.percentage_used = None;
        }
    }
    if d.health.as_ref().is_some_and(|h| !valid_health(h)) {
        d.health = None;
    }
    if d.fs.as_ref().is_some_and(|f| !valid_fs(f)) {
        d.fs = None;
    }
}
