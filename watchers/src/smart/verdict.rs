//! The verdict on one smartctl reading: one function, so the rules an operator reads in
//! the documentation are the rules the code applies, each firing with its own phrase.
//!
//! The rules are deliberately few and conservative. Only what the drive itself declares
//! bad (its overall assessment, an NVMe critical warning, spare below its own threshold)
//! makes a disk `failing`; counters that are zero on a healthy disk and only grow as it
//! degrades make it `warning`. Vendor-specific attributes and normalised values, whose
//! meaning varies by model, are not judged.

use super::parse::{exit, SmartData};
use super::{DiskHealth, HealthState};

/// Wear at or above which a disk gets a warning, percent of its rated endurance.
pub const WORN_PERCENT: u32 = 90;

/// The verdict on `data`, with one reason per rule that fired and the figures filled in
/// (`checked` is left to the caller, who knows when the reading was taken).
///
/// - `failing`: SMART's overall assessment failed (`smart_status.passed` false or exit
///   bit 3), an NVMe critical warning is set, or the available spare is below its
///   threshold.
/// - `warning`: a raw ATA 5, 187, 188, 197 or 198 above zero, NVMe media errors, 90 % or
///   more of the rated endurance used, SCSI grown defects, or the temperature at or
///   above the drive's own limit.
/// - `ok`: none of these, from a reading with data.
/// - `unknown`: no data at all (no SMART, device not opened, ...), with smartctl's own
///   words as the reason.
pub fn verdict(data: &SmartData) -> DiskHealth {
    let ata = data.ata;
    let nvme = data.nvme;
    let mut failing = Vec::new();
    let mut warning = Vec::new();

    if data.passed == Some(false) || data.exit_status & exit::DISK_FAILING != 0 {
        failing.push("SMART overall-health assessment failed".to_string());
    }
    if let Some(w) = nvme.critical_warning.filter(|&w| w != 0) {
        failing.push(format!("NVMe critical warning {w:#04x}"));
    }
    if let (Some(spare), Some(threshold)) = (nvme.available_spare, nvme.available_spare_threshold) {
        if spare < threshold {
            failing.push(format!(
                "available spare {spare}% below threshold {threshold}%"
            ));
        }
    }

    for (value, what) in [
        (ata.reallocated, "reallocated sector"),
        (ata.reported_uncorrect, "reported uncorrectable error"),
        (ata.command_timeout, "command timeout"),
        (ata.pending, "pending sector"),
        (ata.offline_uncorrectable, "offline uncorrectable sector"),
        (nvme.media_errors, "media error"),
        (data.grown_defects, "grown defect"),
    ] {
        if let Some(n) = value.filter(|&n| n > 0) {
            warning.push(counted(n, what));
        }
    }
    if let Some(used) = nvme.percentage_used.filter(|&u| u >= WORN_PERCENT) {
        warning.push(format!("{used}% of rated endurance used"));
    }
    if let (Some(t), Some(limit)) = (data.temperature_c, data.temperature_limit_c) {
        if t >= limit {
            warning.push(format!("temperature {t}°C at or above limit {limit}°C"));
        }
    }

    let state = if !failing.is_empty() {
        HealthState::Failing
    } else if !warning.is_empty() {
        HealthState::Warning
    } else if data.has_data() {
        HealthState::Ok
    } else {
        HealthState::Unknown
    };
    let reasons = match state {
        HealthState::Unknown => vec![no_data_reason(data)],
        _ => failing.into_iter().chain(warning).collect(),
    };
    DiskHealth {
        state,
        reasons,
        temperature_c: data.temperature_c,
        power_on_hours: data.power_on_hours,
        reallocated_sectors: ata.reallocated.or(data.grown_defects),
        pending_sectors: ata.pending,
        media_errors: nvme.media_errors,
        percentage_used: nvme.percentage_used,
        checked: None,
    }
}

/// `1 pending sector`, `8 pending sectors`.
fn counted(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Why a reading without data says nothing: the disk's own answer if it gave one, else
/// smartctl's words, else its exit status.
fn no_data_reason(data: &SmartData) -> String {
    if data.smart_available == Some(false) {
        return "SMART not supported by the device".into();
    }
    if data.smart_enabled == Some(false) {
        return "SMART is disabled on the device".into();
    }
    if let Some(first) = data.messages.first() {
        return format!("smartctl: {first}");
    }
    match data.exit_status {
        0 => "smartctl reported no SMART data".into(),
        status => format!("smartctl exited with status {status} and no SMART data"),
    }
}
