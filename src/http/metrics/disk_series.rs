//! The per-disk series of `/metrics`: the SMART reading of every physical disk and the
//! capacity of every mounted filesystem, from exactly the rows `list --json` shows.
//!
//! Only live records count: a last-known disk's reading or capacity is history, and a
//! series that stayed after its disk left would keep alerts firing (or silent) for a disk
//! that is no longer there; Prometheus marks the series stale instead when it goes.
//!
//! Every series is labelled `host` (the node name), `device` and `serial` (the physical
//! disk's, an empty string when unknown, so a disk keeps its identity when it moves to
//! another port or host); the filesystem series add `mountpoint`. Label values are anyone's
//! text (a mountpoint may hold quotes or a newline): the crate escapes them.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use prometheus_client::registry::Unit;

use super::{int, labels, Metrics};
use crate::model::HealthState;
use crate::view::{DiskView, HealthView};

/// Every state `diskd_disk_health` has a series for, in the order a person reads them.
const STATES: [HealthState; 4] = [
    HealthState::Ok,
    HealthState::Warning,
    HealthState::Failing,
    HealthState::Unknown,
];

/// Add the health and filesystem families for `disks` (every row `list` shows).
pub(super) fn register(m: &mut Metrics, disks: &[DiskView]) {
    let live: Vec<&DiskView> = disks.iter().filter(|d| d.live).collect();
    let whole = whole_disks(&live);
    let physical = physical_disks(&live, &whole);

    // An enum as Prometheus practice has it (kube-state-metrics, node_exporter's systemd
    // units): one series per state, 1 for the current one and 0 for the others. Unlike a
    // single gauge holding a code, `== 1` needs no table of codes, `sum by (state)` counts
    // the disks in each state, no average or `max` of codes can mislead, and a state added
    // later is a new label value rather than a renumbering.
    let mut health = Vec::new();
    let mut temperature = Vec::new();
    let mut power_on = Vec::new();
    let mut reallocated = Vec::new();
    for d in &physical {
        let id = || labels([("host", d.host), ("device", d.device), ("serial", d.serial)]);
        for state in STATES {
            let mut l = id();
            l.push(("state".into(), state.as_str().into()));
            health.push((l, i64::from(d.health.state == state)));
        }
        if let Some(t) = d.health.temperature_c {
            temperature.push((id(), i64::from(t)));
        }
        if let Some(h) = d.health.power_on_hours {
            power_on.push((id(), int(h)));
        }
        if let Some(n) = d.health.reallocated_sectors {
            reallocated.push((id(), int(n)));
        }
    }
    m.gauges(
        "diskd_disk_health",
        "SMART verdict on each live physical disk with a reading (its partitions share it): \
         one series per state (ok, warning, failing, unknown), 1 for the current state and \
         0 for the others",
        health,
    );
    m.gauges_in(
        "diskd_disk_temperature",
        "Temperature of each live physical disk, as SMART reports it",
        Unit::Celsius,
        temperature,
    );
    // Hours, not seconds: the unit SMART counts in and every tool prints; a disk's age in
    // seconds would only be converted back.
    m.gauges_in(
        "diskd_disk_power_on",
        "Power-on time of each live physical disk, as SMART reports it",
        Unit::Other("hours".into()),
        power_on,
    );
    m.gauges(
        "diskd_disk_reallocated_sectors",
        "Reallocated sectors (ATA attribute 5) or grown defects (SCSI) of each live physical \
         disk that reports them",
        reallocated,
    );

    let mut size = Vec::new();
    let mut used = Vec::new();
    let mut avail = Vec::new();
    for d in &live {
        // The figures are those of the first mountpoint (what the mount watcher measures);
        // one series per filesystem, not per bind mount, so a sum over a fleet counts each
        // filesystem once.
        let (Some(mountpoint), Some(fs_size)) = (d.mountpoints.first(), d.fs_size) else {
            continue;
        };
        let l = labels([
            ("host", d.host.as_str()),
            ("device", d.device.as_str()),
            ("serial", serial_of(d, &whole)),
            ("mountpoint", mountpoint.as_str()),
        ]);
        size.push((l.clone(), int(fs_size)));
        if let Some(n) = d.fs_used {
            used.push((l.clone(), int(n)));
        }
        if let Some(n) = d.fs_avail {
            avail.push((l, int(n)));
        }
    }
    m.gauges_in(
        "diskd_filesystem_size",
        "Size of each mounted filesystem on a live disk",
        Unit::Bytes,
        size,
    );
    m.gauges_in(
        "diskd_filesystem_used",
        "Bytes in use on each mounted filesystem on a live disk (as df counts: size less free \
         blocks)",
        Unit::Bytes,
        used,
    );
    m.gauges_in(
        "diskd_filesystem_avail",
        "Bytes unprivileged users may still write on each mounted filesystem on a live disk",
        Unit::Bytes,
        avail,
    );
}

/// The whole disks among live rows, by host and kernel name: where a partition finds its
/// disk's device path and serial.
type WholeDisks<'a> = HashMap<(&'a str, &'a str), &'a DiskView>;

fn whole_disks<'a>(live: &[&'a DiskView]) -> WholeDisks<'a> {
    live.iter()
        .filter(|d| d.hardware.parent.is_none())
        .map(|d| ((d.host.as_str(), kernel_name(&d.device)), *d))
        .collect()
}

/// `sda` for `/dev/sda` (and for `sda`): a parent written either way finds its disk.
fn kernel_name(device: &str) -> &str {
    device.strip_prefix("/dev/").unwrap_or(device)
}

/// The physical disk a row belongs to: its parent when it is a partition, else itself.
fn disk_device(d: &DiskView) -> &str {
    d.hardware.parent.as_deref().unwrap_or(&d.device)
}

/// A row's physical disk's serial: the whole disk's row has it (a partition's row names
/// only its parent); else the row's own; else empty.
fn serial_of<'a>(d: &'a DiskView, whole: &WholeDisks<'a>) -> &'a str {
    whole
        .get(&(d.host.as_str(), kernel_name(disk_device(d))))
        .and_then(|w| w.hardware.serial.as_deref())
        .or(d.hardware.serial.as_deref())
        .unwrap_or("")
}

/// One physical disk with a SMART reading.
struct Physical<'a> {
    host: &'a str,
    device: &'a str,
    serial: &'a str,
    health: &'a HealthView,
    /// The reading is the whole disk's own row's (preferred over a partition's copy).
    own: bool,
}

/// Each physical disk with a reading, once: a disk and its partitions all carry the disk's
/// reading, and counting it per partition would count one failing disk several times.
/// Sorted by host and device.
fn physical_disks<'a>(live: &[&'a DiskView], whole: &WholeDisks<'a>) -> Vec<Physical<'a>> {
    let mut out: BTreeMap<(&str, &str), Physical<'a>> = BTreeMap::new();
    for d in live {
        let Some(health) = &d.health else { continue };
        let disk = disk_device(d);
        let key = (d.host.as_str(), kernel_name(disk));
        let row = Physical {
            host: &d.host,
            device: whole.get(&key).map_or(disk, |w| w.device.as_str()),
            serial: serial_of(d, whole),
            health,
            own: d.hardware.parent.is_none(),
        };
        match out.entry(key) {
            Entry::Vacant(e) => {
                e.insert(row);
            }
            Entry::Occupied(mut e) => {
                if row.own && !e.get().own {
                    e.insert(row);
                }
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn view(host: &str, device: &str) -> DiskView {
        DiskView::sample(host, device)
    }

    fn reading(state: HealthState) -> HealthView {
        HealthView::sample(state)
    }

    fn partition(host: &str, device: &str, parent: &str, h: Option<HealthState>) -> DiskView {
        let mut v = view(host, device);
        v.hardware.parent = Some(parent.into());
        v.health = h.map(reading);
        v
    }

    fn render(disks: &[DiskView], openmetrics: bool) -> String {
        let mut m = Metrics(Registry::default());
        register(&mut m, disks);
        super::super::encode(&m.0, openmetrics).unwrap()
    }

    /// The sample lines of `family` (the name before `{` or a space), sorted.
    fn samples(text: &str, family: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(family))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// A fleet: host a has a warning disk sda (serial S1) with two partitions, a failing
    /// NVMe seen only through its partition, a disk with no reading; host b an ok disk, and
    /// a last-known failing disk that must not show.
    fn fleet() -> Vec<DiskView> {
        let mut sda = view("a", "/dev/sda");
        sda.hardware.serial = Some("S1".into());
        sda.health = Some(HealthView {
            temperature_c: Some(41),
            power_on_hours: Some(12_345),
            reallocated_sectors: Some(8),
            reasons: vec!["8 reallocated sectors".into()],
            ..reading(HealthState::Warning)
        });
        let mut sda1 = partition("a", "/dev/sda1", "/dev/sda", Some(HealthState::Warning));
        sda1.health = sda.health.clone();
        let sda2 = partition("a", "/dev/sda2", "/dev/sda", Some(HealthState::Warning));
        let nvme = partition(
            "a",
            "/dev/nvme0n1p1",
            "/dev/nvme0n1",
            Some(HealthState::Failing),
        );
        let sdc = view("a", "/dev/sdc");
        let mut b = view("b", "/dev/sda");
        b.hardware.serial = Some("S2".into());
        b.health = Some(HealthView {
            temperature_c: Some(-3),
            ..reading(HealthState::Ok)
        });
        let mut gone = view("b", "/dev/sdz");
        gone.live = false;
        gone.health = Some(reading(HealthState::Failing));
        vec![sda, sda1, sda2, nvme, sdc, b, gone]
    }

    #[test]
    fn health_is_one_series_per_state_once_per_physical_disk() {
        let text = render(&fleet(), false);
        let series = |host: &str, device: &str, serial: &str, current: &str| {
            ["ok", "warning", "failing", "unknown"].map(|s| {
                format!(
                    "diskd_disk_health{{host=\"{host}\",device=\"{device}\",serial=\"{serial}\",\
                     state=\"{s}\"}} {}",
                    u8::from(s == current)
                )
            })
        };
        let mut want: Vec<String> = [
            series("a", "/dev/sda", "S1", "warning"),
            series("a", "/dev/nvme0n1", "", "failing"),
            series("b", "/dev/sda", "S2", "ok"),
        ]
        .concat();
        want.sort();
        assert_eq!(samples(&text, "diskd_disk_health"), want, "{text}");
        assert!(text.contains("# TYPE diskd_disk_health gauge\n"), "{text}");
        assert!(
            text.contains("# HELP diskd_disk_health SMART verdict"),
            "{text}"
        );
    }

    #[test]
    fn smart_figures_show_only_where_known() {
        let text = render(&fleet(), false);
        assert_eq!(
            samples(&text, "diskd_disk_temperature_celsius"),
            [
                "diskd_disk_temperature_celsius{host=\"a\",device=\"/dev/sda\",serial=\"S1\"} 41",
                "diskd_disk_temperature_celsius{host=\"b\",device=\"/dev/sda\",serial=\"S2\"} -3",
            ],
            "{text}"
        );
        assert_eq!(
            samples(&text, "diskd_disk_power_on_hours"),
            ["diskd_disk_power_on_hours{host=\"a\",device=\"/dev/sda\",serial=\"S1\"} 12345"]
        );
        assert_eq!(
            samples(&text, "diskd_disk_reallocated_sectors"),
            ["diskd_disk_reallocated_sectors{host=\"a\",device=\"/dev/sda\",serial=\"S1\"} 8"]
        );
        assert!(text.contains("# TYPE diskd_disk_temperature_celsius gauge\n"));
        // OpenMetrics states the units.
        let om = render(&fleet(), true);
        assert!(
            om.contains("# UNIT diskd_disk_temperature_celsius celsius\n"),
            "{om}"
        );
        assert!(
            om.contains("# UNIT diskd_disk_power_on_hours hours\n"),
            "{om}"
        );
    }

    #[test]
    fn a_partition_alone_is_named_after_its_disk_and_its_reading_counts_once() {
        // Only partitions of sdb are listed (no row of the whole disk): one disk, named by
        // the parent; a parent given without /dev/ still joins the whole disk's row.
        let disks = vec![
            partition("h", "/dev/sdb1", "/dev/sdb", Some(HealthState::Unknown)),
            partition("h", "/dev/sdb2", "/dev/sdb", Some(HealthState::Unknown)),
            partition("h", "/dev/sdd1", "sdd", None),
            {
                let mut d = view("h", "/dev/sdd");
                d.hardware.serial = Some("D".into());
                d.health = Some(reading(HealthState::Ok));
                d
            },
        ];
        let text = render(&disks, false);
        let got = samples(&text, "diskd_disk_health");
        assert_eq!(got.len(), 8, "{text}");
        assert!(got.contains(
            &"diskd_disk_health{host=\"h\",device=\"/dev/sdb\",serial=\"\",state=\"unknown\"} 1"
                .to_string()
        ));
        assert!(got.contains(
            &"diskd_disk_health{host=\"h\",device=\"/dev/sdd\",serial=\"D\",state=\"ok\"} 1"
                .to_string()
        ));
    }

    #[test]
    fn filesystems_show_per_mounted_filesystem_of_live_disks() {
        let mut disks = fleet();
        disks[1].mountpoints = vec!["/srv".into(), "/bind/of/srv".into()];
        (disks[1].fs_size, disks[1].fs_used, disks[1].fs_avail) =
            (Some(1000), Some(600), Some(350));
        // Mounted, but not measured: no series.
        disks[2].mountpoints = vec!["/var".into()];
        // Measured but last known: no series.
        disks[6].mountpoints = vec!["/old".into()];
        disks[6].fs_size = Some(5);
        let text = render(&disks, false);
        let l = "host=\"a\",device=\"/dev/sda1\",serial=\"S1\",mountpoint=\"/srv\"";
        assert_eq!(
            samples(&text, "diskd_filesystem_size_bytes"),
            [format!("diskd_filesystem_size_bytes{{{l}}} 1000")],
            "{text}"
        );
        assert_eq!(
            samples(&text, "diskd_filesystem_used_bytes"),
            [format!("diskd_filesystem_used_bytes{{{l}}} 600")]
        );
        assert_eq!(
            samples(&text, "diskd_filesystem_avail_bytes"),
            [format!("diskd_filesystem_avail_bytes{{{l}}} 350")]
        );
        assert!(text.contains("# TYPE diskd_filesystem_avail_bytes gauge\n"));
    }

    #[test]
    fn no_reading_and_no_filesystem_make_no_series() {
        let text = render(
            &[
                view("a", "/dev/sda"),
                partition("a", "/dev/sda1", "/dev/sda", None),
            ],
            false,
        );
        for family in [
            "diskd_disk_health",
            "diskd_disk_temperature_celsius",
            "diskd_filesystem_size_bytes",
        ] {
            assert!(samples(&text, family).is_empty(), "{text}");
        }
    }

    /// Labels are anyone's text: quotes, backslashes, newlines and markup come out escaped
    /// as the exposition format wants, and Prometheus's own parser reads them back intact.
    #[test]
    fn hostile_labels_are_escaped_and_parse_back() {
        let hostile = "/mnt/a \"quoted\" \\ back\nslash <b>&";
        let mut d = view("host \"x\"\n", "/dev/sd\\a");
        d.hardware.serial = Some("S\"1\n".into());
        d.health = Some(reading(HealthState::Failing));
        d.mountpoints = vec![hostile.into()];
        (d.fs_size, d.fs_used, d.fs_avail) = (Some(10), Some(4), Some(6));
        let text = render(&[d], false);
        assert!(
            text.contains(
                "diskd_filesystem_size_bytes{host=\"host \\\"x\\\"\\n\",device=\"/dev/sd\\\\a\",\
                 serial=\"S\\\"1\\n\",mountpoint=\"/mnt/a \\\"quoted\\\" \\\\ back\\nslash <b>&\"} 10"
            ),
            "{text}"
        );
        for openmetrics in [false, true] {
            let text = render(
                &[{
                    let mut d = view("h", "/dev/sda1");
                    d.mountpoints = vec![hostile.into()];
                    d.fs_size = Some(10);
                    d.health = Some(reading(HealthState::Warning));
                    d
                }],
                openmetrics,
            );
            let Some(parsed) = python_parse(&text, openmetrics) else {
                return;
            };
            assert!(
                parsed.contains(&format!(
                    "diskd_filesystem_size_bytes mountpoint={hostile:?} 10"
                )),
                "{parsed}"
            );
            assert!(
                parsed.contains("diskd_disk_health state=\"warning\" 1"),
                "{parsed}"
            );
        }
    }

    /// What Prometheus's own Python parser reads from `text`, one sample a line:
    /// `NAME mountpoint=JSON VALUE` or `NAME state=JSON VALUE`. `None` (the test skips)
    /// without Debian's python3-prometheus-client, except under DISKD_REQUIRE_ROOT_TESTS=1
    /// (CI, where `scripts/debian-deps --test` installs it).
    fn python_parse(text: &str, openmetrics: bool) -> Option<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let module = if openmetrics {
            "prometheus_client.openmetrics.parser"
        } else {
            "prometheus_client.parser"
        };
        let have = Command::new("/usr/bin/python3")
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var("DISKD_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
                "python3-prometheus-client missing"
            );
            eprintln!("SKIPPED: /usr/bin/python3 with prometheus_client missing");
            return None;
        }
        // JSON's quoting of a str matches Rust's {:?} for these characters.
        let script = format!(
            "import sys, json\n\
             from {module} import text_string_to_metric_families\n\
             for f in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in f.samples:\n\
             \x20       k = 'mountpoint' if 'mountpoint' in s.labels else 'state'\n\
             \x20       v = s.labels.get(k, '')\n\
             \x20       print(s.name, k + '=' + json.dumps(v), int(s.value))\n"
        );
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser refused:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
