//! Parse and verdict of every fixture (`tests/fixtures/smart`), and of every rule alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use super::parse::{exit, parse_smartctl, AtaCounters, NvmeHealth, SmartData};
use super::verdict::verdict;
use super::{DiskHealth, HealthState};

/// The fixtures' directory.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smart");

/// A fixture's text.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture parsed with the exit status smartctl gave with it.
fn parsed(name: &str, status: u8) -> SmartData {
    parse_smartctl(&fixture(name), status).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// smartctl's output `doc` parsed with exit status `status`.
fn parsed_json(doc: &Value, status: u8) -> SmartData {
    parse_smartctl(doc.to_string().as_bytes(), status).unwrap()
}

fn judged(name: &str, status: u8) -> DiskHealth {
    verdict(&parsed(name, status))
}

/// Every fixture's whole verdict, with the exit status it is paired with, as
/// `tests/fixtures/smart-verdicts.json` writes them (each saying what its fixture shows):
/// every figure is checked, not only those a rule reads, and a fixture added without its
/// verdict fails here.
#[test]
fn every_fixture_gets_the_verdict_written_for_it() {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Expected {
        exit: u8,
        why: String,
        verdict: DiskHealth,
    }
    let path = format!("{FIXTURES}/../smart-verdicts.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let expected: BTreeMap<String, Expected> =
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixtures: BTreeSet<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    assert_eq!(
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        fixtures,
        "one verdict per fixture"
    );
    for (name, e) in &expected {
        assert_eq!(judged(name, e.exit), e.verdict, "{name}: {}", e.why);
    }
}

#[test]
fn ata_ssd_healthy() {
    let data = parsed("ata-ssd-healthy", 0);
    assert_eq!(data.device_type.as_deref(), Some("sat"));
    assert_eq!(data.passed, Some(true));
    assert_eq!(data.ata.reallocated, Some(0));
    assert_eq!(data.ata.reported_uncorrect, Some(0));
    assert_eq!(data.ata.udma_crc_errors, Some(0));
    assert_eq!(data.ata.pending, None, "an SSD without attribute 197");
}

#[test]
fn ata_failing_on_either_sign_alone() {
    let mut data = parsed("ata-failing", 0);
    assert_eq!(verdict(&data).state, HealthState::Failing, "passed: false");
    data.passed = Some(true);
    data.exit_status = exit::DISK_FAILING;
    assert_eq!(verdict(&data).state, HealthState::Failing, "exit bit 3");
    data.exit_status = 0;
    assert_eq!(verdict(&data).state, HealthState::Warning);
}

#[test]
fn packed_raw_values_are_read_by_their_meaningful_bytes() {
    // Its verdict (smart-verdicts.json): 28 °C and 12345 hours from smartctl's own
    // decoding, 2 command timeouts from 188's low word.
    // Without smartctl's own decoding (top-level temperature and power-on time), the raw
    // values give the same: 194's low byte, 9's low 32 bits, 188's low word.
    let mut doc: Value = serde_json::from_slice(&fixture("ata-packed")).unwrap();
    let top = doc.as_object_mut().unwrap();
    top.remove("temperature");
    top.remove("power_on_time");
    let data = parsed_json(&doc, 0);
    assert_eq!(data.temperature_c, Some(28), "0x002D0017001C is 28 °C");
    assert_eq!(
        data.power_on_hours,
        Some(12345),
        "milliseconds above the hours"
    );
    assert_eq!(
        data.ata.command_timeout,
        Some(2),
        "three counters, \"0 1 2\""
    );

    // Without 194, 190's low byte.
    let table = doc
        .pointer_mut("/ata_smart_attributes/table")
        .and_then(Value::as_array_mut)
        .unwrap();
    table.retain(|a| a["id"] != 194);
    let data = parsed_json(&doc, 0);
    assert_eq!(data.temperature_c, Some(28));
}

#[test]
fn a_bogus_power_on_raw_value_is_no_figure() {
    let doc = json!({"ata_smart_attributes": {"table": [
        {"id": 9, "raw": {"value": 0x0000_7fff_ffffu64, "string": "2147483647"}}
    ]}});
    let data = parsed_json(&doc, 0);
    assert_eq!(data.power_on_hours, None);
}

#[test]
fn usb_sat_bridge_reads_as_ata() {
    let data = parsed("usb-sat", 0);
    assert_eq!(data.device_type.as_deref(), Some("sat"));
    let h = verdict(&data);
    // Another bridge type changes nothing.
    let text = String::from_utf8(fixture("usb-sat"))
        .unwrap()
        .replace("\"sat\"", "\"usbjmicron\"");
    let other = parse_smartctl(text.as_bytes(), 0).unwrap();
    assert_eq!(other.device_type.as_deref(), Some("usbjmicron"));
    assert_eq!(verdict(&other), h);
}

#[test]
fn nvme_healthy() {
    let data = parsed("nvme-healthy", 0);
    assert_eq!(
        data.nvme,
        NvmeHealth {
            critical_warning: Some(0),
            media_errors: Some(0),
            percentage_used: Some(2),
            available_spare: Some(100),
            available_spare_threshold: Some(10),
        }
    );
    assert_eq!(data.temperature_limit_c, Some(85));
}

#[test]
fn scsi_grown_defects() {
    let data = parsed("scsi-grown-defects", 0);
    assert_eq!(data.grown_defects, Some(12));
    assert_eq!(data.temperature_limit_c, Some(68), "drive_trip");
}

#[test]
fn attributes_only_fills_what_is_there() {
    let data = parsed("ata-attributes-only", 0);
    assert_eq!(data.passed, None);
    assert_eq!(
        verdict(&data).state,
        HealthState::Ok,
        "no assessment is no rule"
    );
}

#[test]
fn standby_is_recognised_from_the_message_or_the_power_mode() {
    let data = parsed("standby", 2);
    assert!(data.standby);
    assert!(!data.has_data());
    // The same output with bit 1 clear is no standby exit.
    assert!(!parsed("standby", 0).standby);
    // smartctl 7.5 also names the mode.
    let v75 = json!({
        "smartctl": {"exit_status": 2},
        "power_mode": {"ata_value": 0, "name": "STANDBY"}
    });
    assert!(parsed_json(&v75, 2).standby);
    let sleep = json!({"smartctl": {"messages": [
        {"string": "Device is in SLEEP mode, exit(2)", "severity": "information"}
    ]}});
    assert!(parsed_json(&sleep, 2).standby);
}

#[test]
fn no_smart_is_unknown_with_smartctls_words() {
    // The fixture (a real capture) has its verdict with the others.
    let unsupported = json!({"smart_support": {"available": false, "enabled": false}});
    let data = parsed_json(&unsupported, exit::COMMAND_FAILED);
    assert_eq!(
        verdict(&data).reasons,
        ["SMART not supported by the device"]
    );

    let open_failed = json!({"smartctl": {"messages": [
        {"string": "Smartctl open device: /dev/sdz failed: No such device", "severity": "error"}
    ]}});
    let data = parsed_json(&open_failed, exit::DEVICE_OPEN);
    assert!(!data.standby);
    let h = verdict(&data);
    assert_eq!(h.state, HealthState::Unknown);
    assert_eq!(
        h.reasons,
        ["smartctl: Smartctl open device: /dev/sdz failed: No such device"]
    );

    let silent = verdict(&parse_smartctl(b"{}", exit::DEVICE_OPEN).unwrap());
    assert_eq!(
        silent.reasons,
        ["smartctl exited with status 2 and no SMART data"]
    );
}

#[test]
fn exit_bits_beyond_3_and_failed_commands_with_data_do_not_change_the_verdict() {
    let mut data = parsed("ata-ssd-healthy", 0);
    for status in [
        exit::COMMAND_FAILED,
        exit::PREFAIL_AT_THRESHOLD,
        exit::USAGE_AT_THRESHOLD_BEFORE,
        exit::ERROR_LOG,
        exit::SELF_TEST_LOG,
        exit::COMMAND_FAILED | exit::ERROR_LOG | exit::SELF_TEST_LOG,
    ] {
        data.exit_status = status;
        assert_eq!(verdict(&data).state, HealthState::Ok, "status {status:#x}");
    }
    // Bits 0-1 with data: the data counts.
    data.exit_status = exit::DEVICE_OPEN;
    assert_eq!(verdict(&data).state, HealthState::Ok);
    data.exit_status = exit::DISK_FAILING | exit::ERROR_LOG;
    assert_eq!(verdict(&data).state, HealthState::Failing);
}

/// A reading with nothing wrong, to switch single rules on.
fn healthy() -> SmartData {
    SmartData {
        passed: Some(true),
        temperature_c: Some(40),
        ata: AtaCounters {
            reallocated: Some(0),
            reported_uncorrect: Some(0),
            command_timeout: Some(0),
            pending: Some(0),
            offline_uncorrectable: Some(0),
            udma_crc_errors: Some(0),
        },
        ..SmartData::default()
    }
}

#[test]
fn every_rule_alone() {
    type Tweak = fn(&mut SmartData);
    let failing: [(Tweak, &str); 4] = [
        (
            |d| d.passed = Some(false),
            "SMART overall-health assessment failed",
        ),
        (
            |d| d.exit_status = 8,
            "SMART overall-health assessment failed",
        ),
        (
            |d| d.nvme.critical_warning = Some(0x04),
            "NVMe critical warning 0x04",
        ),
        (
            |d| {
                d.nvme.available_spare = Some(5);
                d.nvme.available_spare_threshold = Some(10);
            },
            "available spare 5% below threshold 10%",
        ),
    ];
    let warning: [(Tweak, &str); 10] = [
        (|d| d.ata.reallocated = Some(1), "1 reallocated sector"),
        (
            |d| d.ata.reported_uncorrect = Some(3),
            "3 reported uncorrectable errors",
        ),
        (|d| d.ata.command_timeout = Some(1), "1 command timeout"),
        (|d| d.ata.pending = Some(2), "2 pending sectors"),
        (
            |d| d.ata.offline_uncorrectable = Some(4),
            "4 offline uncorrectable sectors",
        ),
        (|d| d.nvme.media_errors = Some(1), "1 media error"),
        (
            |d| d.nvme.percentage_used = Some(90),
            "90% of rated endurance used",
        ),
        (|d| d.grown_defects = Some(5), "5 grown defects"),
        (
            |d| d.temperature_limit_c = Some(40),
            "temperature 40°C at or above limit 40°C",
        ),
        (
            |d| {
                d.temperature_c = Some(70);
                d.temperature_limit_c = Some(70);
            },
            "temperature 70°C at or above limit 70°C",
        ),
    ];
    let cases = (failing.iter().map(|c| (HealthState::Failing, c)))
        .chain(warning.iter().map(|c| (HealthState::Warning, c)));
    for (state, (tweak, reason)) in cases {
        let mut data = healthy();
        tweak(&mut data);
        let h = verdict(&data);
        assert_eq!(
            (h.state, h.reasons.as_slice()),
            (state, &[reason.to_string()][..])
        );
    }
}

#[test]
fn just_below_every_limit_is_ok() {
    let mut data = healthy();
    data.nvme = NvmeHealth {
        critical_warning: Some(0),
        media_errors: Some(0),
        percentage_used: Some(89),
        available_spare: Some(10),
        available_spare_threshold: Some(10),
    };
    data.grown_defects = Some(0);
    data.temperature_limit_c = Some(41);
    // Interface CRC errors are a cable's, not the disk's.
    data.ata.udma_crc_errors = Some(1000);
    let h = verdict(&data);
    assert_eq!((h.state, h.reasons), (HealthState::Ok, vec![]));
}
