//! Reading smartctl's `--json` output into the few figures a verdict needs.
//!
//! smartctl's JSON differs by protocol (an ATA attribute table, an NVMe health log, SCSI
//! log pages) and by version (7.0 to 7.5 add and move fields), and a drive fills only what
//! it supports. So nothing here is required: every figure is looked for where smartctl
//! puts it, and one that is absent, of the wrong type or implausible is `None`, never an
//! error. Only output that is not a JSON object at all is rejected.
//!
//! Where smartctl already decoded a value (the top-level `temperature.current` and
//! `power_on_time.hours`, which it derives from the drive's own raw format), that is
//! preferred; raw ATA attribute values are read only as a fallback, and then only their
//! meaningful bytes, since vendors pack several counters into the 48 raw bits.

use serde_json::Value;

/// The bits of smartctl's exit status (smartctl(8), "RETURN VALUES").
pub mod exit {
    /// Bit 0: the command line did not parse.
    pub const COMMAND_LINE: u8 = 1 << 0;
    /// Bit 1: the device could not be opened, or it is in a low-power mode that `-n`
    /// said not to leave.
    pub const DEVICE_OPEN: u8 = 1 << 1;
    /// Bit 2: a SMART or other command to the disk failed, or a checksum was wrong.
    pub const COMMAND_FAILED: u8 = 1 << 2;
    /// Bit 3: SMART status says "DISK FAILING".
    pub const DISK_FAILING: u8 = 1 << 3;
    /// Bit 4: prefail attributes at or below their threshold.
    pub const PREFAIL_AT_THRESHOLD: u8 = 1 << 4;
    /// Bit 5: some attribute was at or below its threshold in the past.
    pub const USAGE_AT_THRESHOLD_BEFORE: u8 = 1 << 5;
    /// Bit 6: the device error log has errors.
    pub const ERROR_LOG: u8 = 1 << 6;
    /// Bit 7: the self-test log has errors.
    pub const SELF_TEST_LOG: u8 = 1 << 7;
}

/// The ATA attribute counters a healthy disk keeps at zero (raw values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtaCounters {
    /// Attribute 5, reallocated sectors.
    pub reallocated: Option<u64>,
    /// Attribute 187, errors the drive could not correct.
    pub reported_uncorrect: Option<u64>,
    /// Attribute 188, aborted commands (the low word on drives that pack three counters).
    pub command_timeout: Option<u64>,
    /// Attribute 197, sectors waiting to be reallocated.
    pub pending: Option<u64>,
    /// Attribute 198, sectors the offline scan could not read.
    pub offline_uncorrectable: Option<u64>,
    /// Attribute 199, interface CRC errors (a cable, not the disk: read, but no rule).
    pub udma_crc_errors: Option<u64>,
}

/// What an NVMe drive's SMART / Health Information log says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeHealth {
    /// Critical warning bits (spare low, temperature, reliability, read-only, backup).
    pub critical_warning: Option<u8>,
    /// Media and data integrity errors.
    pub media_errors: Option<u64>,
    /// Percentage of the rated endurance used (may exceed 100).
    pub percentage_used: Option<u32>,
    /// Available spare, percent.
    pub available_spare: Option<u32>,
    /// The available spare below which the drive calls itself critical, percent.
    pub available_spare_threshold: Option<u32>,
}

/// One smartctl run, as far as the verdict is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmartData {
    /// smartctl's exit status (bitmask, see [`exit`]).
    pub exit_status: u8,
    /// `device.type` (`sat`, `nvme`, `scsi`, `usbjmicron`, ...), when smartctl got that far.
    pub device_type: Option<String>,
    /// The overall health self-assessment (`smart_status.passed`).
    pub passed: Option<bool>,
    /// `smart_support`: whether the device has SMART at all, and whether it is enabled.
    pub smart_available: Option<bool>,
    /// See [`SmartData::smart_available`].
    pub smart_enabled: Option<bool>,
    /// The disk was in a low-power mode and, as `-n standby` asks, was not woken.
    pub standby: bool,
    /// Current temperature, °C.
    pub temperature_c: Option<i32>,
    /// The drive's own temperature limit, °C: what smartctl reports of `op_limit_max`, the
    /// NVMe warning composite temperature threshold, a SCSI `drive_trip`, an ATA
    /// `limit_max`, in that order.
    pub temperature_limit_c: Option<i32>,
    /// Power-on hours.
    pub power_on_hours: Option<u64>,
    /// ATA attribute counters.
    pub ata: AtaCounters,
    /// NVMe health log.
    pub nvme: NvmeHealth,
    /// SCSI grown defect list length.
    pub grown_defects: Option<u64>,
    /// What smartctl said about why it did not get further: its `smartctl.messages`,
    /// errors first (the caller may add the first line of stderr).
    pub messages: Vec<String>,
}

impl SmartData {
    /// Whether the run yielded any health figure at all (a disk with no SMART, a device
    /// that could not be opened or a standby exit yields none).
    pub fn has_data(&self) -> bool {
        let ata = self.ata;
        let nvme = self.nvme;
        self.passed.is_some()
            || self.temperature_c.is_some()
            || self.power_on_hours.is_some()
            || self.grown_defects.is_some()
            || [
                ata.reallocated,
                ata.reported_uncorrect,
                ata.command_timeout,
                ata.pending,
                ata.offline_uncorrectable,
                ata.udma_crc_errors,
                nvme.media_errors,
            ]
            .iter()
            .any(Option::is_some)
            || nvme.critical_warning.is_some()
            || nvme.percentage_used.is_some()
            || nvme.available_spare.is_some()
    }
}

/// Longest message kept, in characters: one line of `status`, not a log.
const MAX_MESSAGE: usize = 200;

/// Parses smartctl's `--json` stdout; `exit_status` is the process's own (the JSON's
/// `smartctl.exit_status` is the same number when smartctl got to write it). `Err` only
/// for output that is not a JSON object: why, in a few words.
pub fn parse_smartctl(stdout: &[u8], exit_status: u8) -> Result<SmartData, String> {
    let root: Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON ({e})"))?;
    if !root.is_object() {
        return Err("not a JSON object".into());
    }
    let at = |path: &str| root.pointer(path);

    let mut data = SmartData {
        exit_status,
        device_type: at("/device/type")
            .and_then(Value::as_str)
            .map(str::to_string),
        passed: at("/smart_status/passed").and_then(Value::as_bool),
        smart_available: at("/smart_support/available").and_then(Value::as_bool),
        smart_enabled: at("/smart_support/enabled").and_then(Value::as_bool),
        grown_defects: at("/scsi_grown_defect_list").and_then(count),
        ..SmartData::default()
    };

    let table: &[Value] = at("/ata_smart_attributes/table")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let raw = |id: u64| -> Option<u64> {
        table
            .iter()
            .find(|a| a.get("id").and_then(Value::as_u64) == Some(id))
            .and_then(|a| a.pointer("/raw/value"))
            .and_then(count)
    };
    data.ata = AtaCounters {
        reallocated: raw(5),
        reported_uncorrect: raw(187),
        // Seagate packs three 16-bit counters (timeouts, and those over 5 s and 7.5 s):
        // the low word is the count.
        command_timeout: raw(188).map(|r| r & 0xffff),
        pending: raw(197),
        offline_uncorrectable: raw(198),
        udma_crc_errors: raw(199),
    };

    let log = |field: &str| at(&format!("/nvme_smart_health_information_log/{field}"));
    let percent = |v: &Value| count(v).and_then(|n| u32::try_from(n).ok());
    data.nvme = NvmeHealth {
        critical_warning: log("critical_warning")
            .and_then(count)
            .and_then(|n| u8::try_from(n).ok()),
        media_errors: log("media_errors").and_then(count),
        percentage_used: log("percentage_used").and_then(percent),
        available_spare: log("available_spare").and_then(percent),
        available_spare_threshold: log("available_spare_threshold").and_then(percent),
    };

    data.temperature_c = at("/temperature/current")
        .and_then(celsius)
        .or_else(|| log("temperature").and_then(celsius))
        // smartctl's own reading of 194 (and of 190) is the low byte, whatever the
        // vendor packed above it (lowest and highest seen, an over-limit count).
        .or_else(|| raw(194).or_else(|| raw(190)).and_then(low_byte_celsius));
    data.temperature_limit_c = [
        "/temperature/op_limit_max",
        "/nvme_composite_temperature_threshold/warning",
        "/temperature/drive_trip",
        "/temperature/limit_max",
    ]
    .iter()
    .find_map(|p| at(p).and_then(celsius).filter(|&t| t > 0));
    data.power_on_hours = at("/power_on_time/hours")
        .and_then(count)
        .or_else(|| log("power_on_hours").and_then(count))
        // The hours are the low 32 bits: some drives keep minutes or milliseconds above
        // them. More than 2^24 hours (1,900 years) is bogus, as smartctl also judges.
        .or_else(|| {
            raw(9)
                .map(|r| r & 0xffff_ffff)
                .filter(|&h| h <= 0x00ff_ffff)
        });

    data.standby = exit_status & exit::DEVICE_OPEN != 0 && in_low_power_mode(&root);
    data.messages = messages(&root);
    Ok(data)
}

/// Whether smartctl stopped because the device sleeps: smartctl 7.5 says so in
/// `power_mode.name`, every 7.x in an information message, `Device is in STANDBY mode,
/// exit(2)` (also `STANDBY_Y`, `SLEEP`, `STANDBY (OS)`, and SCSI's `STANDBY BY TIMER`).
fn in_low_power_mode(root: &Value) -> bool {
    let named = root
        .pointer("/power_mode/name")
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with("STANDBY") || m.starts_with("SLEEP"));
    named
        || message_list(root)
            .iter()
            .any(|(text, _)| text.starts_with("Device is in ") && text.contains(" mode"))
}

/// `smartctl.messages` as (text, severity).
fn message_list(root: &Value) -> Vec<(String, String)> {
    root.pointer("/smartctl/messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|m| {
            let text = m.get("string")?.as_str()?.trim();
            let severity = m.get("severity").and_then(Value::as_str).unwrap_or("");
            (!text.is_empty()).then(|| (text.chars().take(MAX_MESSAGE).collect(), severity.into()))
        })
        .collect()
}

/// The messages, errors first, then warnings, then the rest.
fn messages(root: &Value) -> Vec<String> {
    let mut list = message_list(root);
    let rank = |severity: &str| match severity {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    };
    list.sort_by_key(|(_, severity)| rank(severity));
    list.into_iter().map(|(text, _)| text).collect()
}

/// A non-negative count: an integer, or (from the 128-bit NVMe counters smartctl cannot
/// always print as an integer) a float or a decimal string.
fn count(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    if let Some(f) = v.as_f64() {
        // Saturates: a counter beyond u64 is "very many", not garbage.
        return (f >= 0.0 && f.is_finite()).then_some(f as u64);
    }
    v.as_str()?.trim().parse().ok()
}

/// A plausible temperature, °C.
fn celsius(v: &Value) -> Option<i32> {
    let t = i32::try_from(v.as_i64()?).ok()?;
    (-60..=200).contains(&t).then_some(t)
}

/// The current temperature in an ATA temperature attribute's raw value: its low byte,
/// signed; 0 means "no reading", as smartctl takes it.
fn low_byte_celsius(raw: u64) -> Option<i32> {
    let t = i32::from((raw & 0xff) as u8 as i8);
    // A vendor's other packing can put anything in that byte: only a temperature a drive
    // can have counts (as for `celsius`).
    (t != 0 && (-60..=200).contains(&t)).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_byte_no_drive_could_have_is_no_temperature() {
        assert_eq!(low_byte_celsius(0x002D_0017_001C), Some(28));
        assert_eq!(low_byte_celsius(0x9B), None, "-101 degrees");
        assert_eq!(low_byte_celsius(0x80), None);
        assert_eq!(low_byte_celsius(0xF6), Some(-10));
        assert_eq!(low_byte_celsius(0), None);
    }

    #[test]
    fn packed_temperature_and_hours_keep_only_their_meaningful_bytes() {
        assert_eq!(low_byte_celsius(0x002D_0017_001C), Some(28));
        assert_eq!(low_byte_celsius(0x0000_0000_00F6), Some(-10));
        assert_eq!(low_byte_celsius(0x0000_2D17_0000), None);
    }

    #[test]
    fn counts_come_as_integers_floats_or_strings() {
        assert_eq!(count(&serde_json::json!(7)), Some(7));
        assert_eq!(count(&serde_json::json!(3.0e20)), Some(u64::MAX));
        assert_eq!(count(&serde_json::json!("12")), Some(12));
        assert_eq!(count(&serde_json::json!(-1)), None);
        assert_eq!(count(&serde_json::json!(null)), None);
        assert_eq!(celsius(&serde_json::json!(400)), None);
    }

    #[test]
    fn garbage_is_an_error_and_an_empty_object_is_no_data() {
        assert!(parse_smartctl(b"smartctl 6.6: unrecognized option --json", 1).is_err());
        assert!(parse_smartctl(b"[1, 2]", 0).is_err());
        assert!(parse_smartctl(b"", 0).is_err());
        let empty = parse_smartctl(b"{}", 0).unwrap();
        assert!(!empty.has_data());
        assert!(!empty.standby);
    }
}
