//! The real watchers against real block devices: ext4 images on loop devices, found by the
//! system's blkid, mounted and bind-mounted in a temp dir, then detached.
//!
//! Needs root (loop devices, mounts), so every test is `#[ignore = "needs root"]` (see
//! `util::require_root`). Works in the host's mount namespace, so everything is mounted
//! below a temp dir and undone by a guard that also runs when an assertion fails.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use util::{wait_for, TestDaemon};

/// How long any change may take to show up (scans run every second).
const DEADLINE: Duration = Duration::from_secs(20);

/// Run a cleanup command; never panics (it runs in `Drop`), says what failed.
fn run_quietly(program: &str, args: &[&str]) -> bool {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "cleanup: {program} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("cleanup: cannot run {program}: {e}");
            false
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read /proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

/// A filesystem image with a known label and UUID.
struct Image {
    label: &'static str,
    uuid: String,
    file: PathBuf,
}

impl Image {
    fn create(dir: &Path, name: &str, label: &'static str) -> Image {
        let file = dir.join(name);
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(16 * 1024 * 1024))
            .expect("create image file");
        let uuid = random_uuid();
        util::system(
            "mkfs.ext4",
            &["-q", "-F", "-L", label, "-U", &uuid, path_str(&file)],
        );
        Image { label, uuid, file }
    }
}

/// Everything the test attached or mounted, undone in `Drop` even when the test panics:
/// the daemon first, then the mounts (newest first), then the loop devices; the images go
/// with the temp dir last.
struct Fixture {
    daemon: Option<TestDaemon>,
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            daemon: None,
            mounts: Vec::new(),
            loops: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The temp dir, canonical, so that paths compare equal to the kernel's mount table.
    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).expect("canonicalize temp dir")
    }

    fn daemon(&self) -> &TestDaemon {
        self.daemon.as_ref().expect("daemon started")
    }

    /// `losetup --find --show FILE`; returns `/dev/loopN`.
    fn attach(&mut self, file: &Path) -> String {
        let dev = util::system("losetup", &["--find", "--show", path_str(file)]);
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        self.loops.push(dev.clone());
        dev
    }

    fn detach(&mut self, dev: &str) {
        // Forget it first: if detaching fails, the number may already belong to someone else.
        self.loops.retain(|l| l != dev);
        util::system("losetup", &["-d", dev]);
    }

    /// `mount ARGS... TARGET`, remembering TARGET for the cleanup.
    fn mount(&mut self, args: &[&str], target: &Path) {
        std::fs::create_dir_all(target).expect("create mount dir");
        let mut all = args.to_vec();
        all.push(path_str(target));
        util::system("mount", &all);
        self.mounts.push(target.to_path_buf());
    }

    fn umount(&mut self, target: &Path) {
        util::system("umount", &[path_str(target)]);
        if let Some(i) = self.mounts.iter().rposition(|m| m == target) {
            self.mounts.remove(i);
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            if std::thread::panicking() {
                let list = d.client(&["list", "--json"]);
                eprintln!(
                    "list --json at failure:\n{}{}\ndaemon log:\n{}",
                    list.stdout(),
                    list.stderr(),
                    d.log_text()
                );
            }
            drop(d); // kills it
        }
        while let Some(m) = self.mounts.pop() {
            let m = path_str(&m).to_string();
            if !run_quietly("umount", &[&m]) {
                run_quietly("umount", &["-l", &m]);
            }
        }
        for dev in std::mem::take(&mut self.loops) {
            run_quietly("losetup", &["-d", &dev]);
        }
    }
}

/// `query TERM --json` as a list; exit 1 (no match) is the empty list.
fn query(d: &TestDaemon, term: &str) -> Vec<Value> {
    let r = d.client(&["query", term, "--json"]);
    if r.code() == 1 {
        r.expect_code(1);
        assert_eq!(r.json(), json!([]), "no match must print []");
        return Vec::new();
    }
    r.expect_code(0);
    r.json()
        .as_array()
        .expect("query --json is an array")
        .clone()
}

/// The one record of the disk with this UUID, if the daemon knows it.
fn record(d: &TestDaemon, uuid: &str) -> Option<Value> {
    let found = query(d, uuid);
    assert!(
        found.len() <= 1,
        "one record per disk on one host: {found:?}"
    );
    found.into_iter().next()
}

fn is_live(d: &TestDaemon, uuid: &str) -> bool {
    record(d, uuid).is_some_and(|r| r["live"] == true)
}

fn mountpoints(d: &TestDaemon, uuid: &str) -> Value {
    record(d, uuid).map_or(Value::Null, |r| r["mountpoints"].clone())
}

fn assert_disk(d: &TestDaemon, img: &Image, dev: &str, live: bool) {
    let r = record(d, &img.uuid).unwrap_or_else(|| panic!("no record for {}", img.uuid));
    assert_eq!(r["host"], "test-node", "{r}");
    assert_eq!(r["uuid"], img.uuid.as_str(), "{r}");
    assert_eq!(r["label"], img.label, "{r}");
    assert_eq!(r["device"], dev, "{r}");
    assert_eq!(r["fstype"], "ext4", "{r}");
    assert_eq!(r["live"], live, "{r}");
}

#[test]
#[ignore = "needs root"]
fn loop_devices_are_found_mounted_and_lost() {
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let a = Image::create(&root, "a.img", "diskd test A");
    let b = Image::create(&root, "b.img", "diskd-test-b");
    // Attached too, but not in --include-device: must never show up.
    let x = Image::create(&root, "x.img", "diskd-test-x");
    let dev_a = fx.attach(&a.file);
    let dev_b = fx.attach(&b.file);
    let dev_x = fx.attach(&x.file);

    fx.daemon = Some(
        TestDaemon::new("")
            .real_blkid()
            .arg("--include-device")
            .arg(&dev_a)
            .arg("--include-device")
            .arg(&dev_b)
            .arg("--disk-interval")
            .arg("1s")
            .arg("--mount-interval")
            .arg("1s")
            .start(),
    );
    let d = fx.daemon();

    // Found by the real blkid, with the label's space decoded.
    wait_for("both images live", DEADLINE, || {
        is_live(d, &a.uuid) && is_live(d, &b.uuid)
    });
    assert_disk(d, &a, &dev_a, true);
    assert_disk(d, &b, &dev_b, true);
    assert_eq!(mountpoints(d, &a.uuid), json!([]));
    assert_eq!(mountpoints(d, &b.uuid), json!([]));
    // The same record by label (with its space), by device, by upper-case UUID.
    for term in [a.label.to_string(), dev_a.clone(), a.uuid.to_uppercase()] {
        let found = query(d, &term);
        assert_eq!(found.len(), 1, "query {term:?}: {found:?}");
        assert_eq!(found[0]["uuid"], a.uuid.as_str(), "query {term:?}");
    }

    // Only the included devices: both came from the same scan, so the third one would be
    // there by now if the filter did not work.
    let list = d.client(&["list", "--json"]);
    list.expect_code(0);
    let mut uuids: Vec<String> = list
        .json()
        .as_array()
        .expect("list --json is an array")
        .iter()
        .map(|r| r["uuid"].as_str().unwrap_or_default().to_string())
        .collect();
    uuids.sort();
    let mut expected = vec![a.uuid.clone(), b.uuid.clone()];
    expected.sort();
    assert_eq!(uuids, expected, "{}", list.stdout());
    assert!(query(d, &x.uuid).is_empty());
    assert!(query(d, &dev_x).is_empty());

    // Mounted: the mount table names /dev/loopN, matched by major:minor.
    let mnt = root.join("mnt");
    fx.mount(&[&dev_a], &mnt);
    let d = fx.daemon();
    let mnt_s = path_str(&mnt).to_string();
    wait_for("the mountpoint of A", DEADLINE, || {
        mountpoints(d, &a.uuid) == json!([mnt_s])
    });

    // A bind mount of the mountpoint has the same device number; its path has a space,
    // which the mount table writes as \040.
    let bind = root.join("bind here");
    fx.mount(&["--bind", &mnt_s], &bind);
    let d = fx.daemon();
    let bind_s = path_str(&bind).to_string();
    let mut both = vec![mnt_s.clone(), bind_s.clone()];
    both.sort();
    wait_for("both mountpoints of A", DEADLINE, || {
        mountpoints(d, &a.uuid) == json!(both)
    });
    assert_eq!(mountpoints(d, &b.uuid), json!([]), "B is not mounted");
    assert!(is_live(d, &a.uuid));

    fx.umount(&bind);
    fx.umount(&mnt);
    let d = fx.daemon();
    wait_for("no mountpoints of A", DEADLINE, || {
        mountpoints(d, &a.uuid) == json!([])
    });

    // Detached: after a refresh A is no longer live, but its last known location stays.
    fx.detach(&dev_a);
    let d = fx.daemon();
    wait_for("A not live after refresh", DEADLINE, || {
        d.client(&["refresh"]).expect_code(0);
        record(d, &a.uuid).is_some_and(|r| r["live"] == false)
    });
    assert_disk(d, &a, &dev_a, false);
    assert_eq!(mountpoints(d, &a.uuid), json!([]));
    assert_disk(d, &b, &dev_b, true);
    // Live records first. Once A is detached its number is free: a parallel test's image
    // attached there is included too, so only such a record may join ours.
    let list = d.client(&["list", "--json"]);
    list.expect_code(0);
    let rows = list.json();
    let rows = rows.as_array().expect("list --json is an array");
    let ours: Vec<&Value> = rows
        .iter()
        .filter(|r| r["uuid"] == a.uuid.as_str() || r["uuid"] == b.uuid.as_str())
        .collect();
    assert_eq!(ours.len(), 2, "{rows:?}");
    assert_eq!(ours[0]["uuid"], b.uuid.as_str(), "{rows:?}");
    assert_eq!(ours[1]["uuid"], a.uuid.as_str(), "{rows:?}");
    for other in rows.iter().filter(|r| !ours.contains(r)) {
        assert_eq!(other["device"], dev_a.as_str(), "not ours: {other}");
    }
}

/// With scan intervals of ten minutes, only kernel events can explain a disk, a mount, an
/// unmount and a detach showing up within the deadline: the block uevent (or the
/// /proc/partitions fallback) and mountinfo's POLLPRI trigger the scans.
#[test]
#[ignore = "needs root"]
fn kernel_events_trigger_scans_without_waiting_for_the_interval() {
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let img = Image::create(&root, "ev.img", "diskd-events");
    fx.daemon = Some(
        TestDaemon::new("")
            .real_blkid()
            .arg("--include-device")
            .arg("/dev/loop*")
            .arg("--disk-interval")
            .arg("10m")
            .arg("--mount-interval")
            .arg("10m")
            .start(),
    );
    // Let the start-up scans pass, so the next ones must come from events.
    let d = fx.daemon();
    wait_for("start-up scans", DEADLINE, || {
        let st = d.client(&["status", "--json"]).json();
        st["watchers"]["disks"]["scans_ok"].as_u64().unwrap_or(0) >= 1
            && st["watchers"]["mounts"]["scans_ok"].as_u64().unwrap_or(0) >= 1
    });
    assert!(record(fx.daemon(), &img.uuid).is_none());
    let dev = fx.attach(&img.file);
    let d = fx.daemon();
    wait_for("the attached loop device", DEADLINE, || {
        is_live(d, &img.uuid)
    });
    let target = root.join("ev mnt");
    fx.mount(&[&dev], &target);
    let d = fx.daemon();
    let want = json!([path_str(&target)]);
    wait_for("the mount", DEADLINE, || mountpoints(d, &img.uuid) == want);
    fx.umount(&target);
    let d = fx.daemon();
    wait_for("the unmount", DEADLINE, || {
        mountpoints(d, &img.uuid) == json!([])
    });
    fx.detach(&dev);
    let d = fx.daemon();
    wait_for("the detach", DEADLINE, || {
        record(d, &img.uuid).is_some_and(|r| r["live"] == false)
    });
}

/// The one-writer rule: a device attached and mounted back to back makes both watchers
/// fire at nearly the same time; whatever order their scans finish in, the stored record
/// must end with the mountpoint, never with an older composition written last.
#[test]
#[ignore = "needs root"]
fn attach_then_mount_back_to_back_always_ends_with_the_mountpoint() {
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let img = Image::create(&root, "race.img", "diskd-race");
    fx.daemon = Some(
        TestDaemon::new("")
            .real_blkid()
            .arg("--include-device")
            .arg("/dev/loop*")
            .start(),
    );
    let target = root.join("race mnt");
    for round in 0..8 {
        let dev = fx.attach(&img.file);
        fx.mount(&[&dev], &target);
        let d = fx.daemon();
        let want = json!([path_str(&target)]);
        wait_for(&format!("round {round}: the mount"), DEADLINE, || {
            is_live(d, &img.uuid) && mountpoints(d, &img.uuid) == want
        });
        // Both watchers have run since; another scan of each changes nothing.
        d.client(&["refresh"]).expect_code(0);
        assert_eq!(mountpoints(d, &img.uuid), want, "round {round}");
        fx.umount(&target);
        fx.detach(&dev);
        let d = fx.daemon();
        wait_for(&format!("round {round}: the detach"), DEADLINE, || {
            record(d, &img.uuid).is_some_and(|r| r["live"] == false)
        });
    }
}

/// The record in `rows` of the loop device backed by `file` (the number alone could be
/// reused by another test).
fn backed_by<'a>(rows: &'a [Value], file: &Path) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["backing_file"] == path_str(file) && r["live"] == true)
}

fn list(d: &TestDaemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    d.client(&all)
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root"]
fn a_blank_loop_device_is_listed_with_its_size_and_an_ext4_one_is_one_record() {
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let blank = root.join("blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(24 * 1024 * 1024))
        .expect("create blank image");
    let img = Image::create(&root, "fs.img", "diskd hw test");
    // Started before the devices exist: they arrive by kernel events, as a plugged disk.
    fx.daemon = Some(
        TestDaemon::new("")
            .real_blkid()
            .hardware(Path::new("/sys"))
            .arg("--include-device")
            .arg("/dev/loop*")
            .start(),
    );
    let events = fx.daemon().listening(&["events", "--json"]);
    let blank_dev = fx.attach(&blank);
    let fs_dev = fx.attach(&img.file);
    let d = fx.daemon();

    wait_for("the blank loop device in list --blank", DEADLINE, || {
        backed_by(&list(d, &["--blank"]), &blank).is_some()
    });
    let rows = list(d, &["--blank"]);
    let r = backed_by(&rows, &blank).unwrap();
    assert_eq!(r["device"], blank_dev.as_str(), "{r}");
    assert_eq!(r["size"], 24 * 1024 * 1024, "{r}");
    assert_eq!(r["transport"], "loop", "{r}");
    assert_eq!(r["uuid"], Value::Null, "{r}");
    assert_eq!(r["fstype"], Value::Null, "{r}");

    wait_for("the ext4 loop device", DEADLINE, || is_live(d, &img.uuid));
    let r = record(d, &img.uuid).unwrap();
    assert_eq!(r["device"], fs_dev.as_str(), "{r}");
    assert_eq!(r["fstype"], "ext4", "{r}");
    assert_eq!(r["size"], 16 * 1024 * 1024, "{r}");
    assert_eq!(r["transport"], "loop", "{r}");
    assert_eq!(r["backing_file"], path_str(&img.file), "{r}");
    let same: Vec<_> = list(d, &[])
        .into_iter()
        .filter(|x| x["device"] == fs_dev.as_str() && x["live"] == true)
        .collect();
    assert_eq!(same.len(), 1, "one record per device: {same:#?}");
    assert!(
        backed_by(&list(d, &["--blank"]), &img.file).is_none(),
        "a filesystem is not blank"
    );
    // Told once, whole: blkid's and sysfs's views met before the fleet heard of either
    // device (never a blank record first, nor a record without its size, then a change).
    // By backing file: a loop number may be another test's device before or after ours.
    let (fs_file, blank_file) = (path_str(&img.file), path_str(&blank));
    let ours = || -> Vec<Value> {
        events
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["backing_file"] == fs_file || e["backing_file"] == blank_file)
            .collect()
    };
    wait_for("both devices in the event stream", DEADLINE, || {
        ours().len() >= 2
    });
    // A marker after them: an image with a UUID (its identity survives a parallel test
    // taking its loop number), attached and detached. Its vanishing is told after anything
    // the scans that saw both devices arrive could still have told about them.
    let marker = Image::create(&root, "marker.img", "diskd hw marker");
    let told_of = |uuid: &str, kind: &str| {
        events
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["uuid"] == uuid && e["event"] == kind)
    };
    let marker_dev = fx.attach(&marker.file);
    wait_for("the marker's appearance", DEADLINE, || {
        told_of(&marker.uuid, "appeared")
    });
    fx.detach(&marker_dev);
    wait_for("the marker's vanishing", DEADLINE, || {
        told_of(&marker.uuid, "vanished")
    });
    let told = ours();
    let fs_told: Vec<&Value> = told
        .iter()
        .filter(|e| e["backing_file"] == fs_file)
        .collect();
    assert_eq!(fs_told.len(), 1, "{told:#?}");
    assert_eq!(fs_told[0]["event"], "appeared", "{told:#?}");
    assert_eq!(fs_told[0]["uuid"], img.uuid.as_str(), "{told:#?}");
    assert_eq!(fs_told[0]["size"], 16 * 1024 * 1024, "{told:#?}");
    let blank_told: Vec<&Value> = told
        .iter()
        .filter(|e| e["backing_file"] == blank_file)
        .collect();
    let kinds: Vec<&Value> = blank_told.iter().map(|e| &e["event"]).collect();
    assert_eq!(kinds, ["appeared"], "{told:#?}");
    assert_eq!(blank_told[0]["size"], 24 * 1024 * 1024, "{told:#?}");
    drop(events);

    fx.detach(&blank_dev);
    let d = fx.daemon();
    wait_for("the detached blank device to be gone", DEADLINE, || {
        backed_by(&list(d, &["--blank"]), &blank).is_none()
    });
}

#[test]
#[ignore = "needs root"]
fn a_peer_sees_a_blank_loop_device_and_an_ext4_one_with_their_sizes() {
    use diskd_lab::Lab;
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let blank = root.join("peer-blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(20 * 1024 * 1024))
        .expect("create blank image");
    let img = Image::create(&root, "peer-fs.img", "diskd hw peer");
    // One that a's blkid cannot open: b must not be told it is blank either.
    let denied = empty_image(&root, "peer-denied.img", 18);
    let blank_dev = fx.attach(&blank);
    let fs_dev = fx.attach(&img.file);
    let denied_dev = fx.attach(&denied);

    let mut lab = Lab::new(2, &["--announce-interval", "2s"]);
    {
        let a = lab.host("a");
        a.hardware = true;
        a.args
            .extend(["--include-device".into(), blank_dev.clone()]);
        a.args.extend(["--include-device".into(), fs_dev.clone()]);
        a.args
            .extend(["--include-device".into(), denied_dev.clone()]);
        // The system's blkid behind the lab's fake one, but for the denied device.
        util::script(&a.blkid, &blkid_denying(&denied_dev));
    }
    lab.start_all();
    let b = lab.get("b");
    wait_for("b to see a's ext4 loop device", DEADLINE, || {
        !b.query(&img.uuid).is_empty()
    });
    let rows = b.query(&img.uuid);
    assert_eq!(rows[0]["host"], "a", "{rows:?}");
    assert_eq!(rows[0]["size"], 16 * 1024 * 1024, "{rows:?}");
    assert_eq!(rows[0]["fstype"], "ext4", "{rows:?}");
    wait_for("b to see a's blank loop device", DEADLINE, || {
        let r = b.client(&["list", "--blank", "--json"]);
        r.json()
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["device"] == blank_dev.as_str()))
    });
    let r = b.client(&["list", "--blank", "--json"]).json();
    let x = r
        .as_array()
        .and_then(|v| v.iter().find(|x| x["device"] == blank_dev.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(x["host"], "a", "{x}");
    assert_eq!(x["size"], 20 * 1024 * 1024, "{x}");
    assert_eq!(x["backing_file"], path_str(&blank), "{x}");
    assert_eq!(x["probe"], "empty", "{x}");
    // The device a could not probe reached b with its hardware, as not probed: never
    // blank there either.
    let list = |_: &(), args: &[&str]| -> Vec<Value> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        b.client(&all)
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let b = &();
    wait_for("b to see a's unprobed loop device", DEADLINE, || {
        list(b, &[])
            .iter()
            .any(|x| x["device"] == denied_dev.as_str() && x["probe"] == "failed")
    });
    let all = list(b, &[]);
    let x = all
        .iter()
        .find(|x| x["device"] == denied_dev.as_str())
        .unwrap();
    assert_eq!(x["size"], 18 * 1024 * 1024, "{x}");
    assert_eq!(x["fstype"], Value::Null, "{x}");
    let blank_on_b: Vec<Value> = list(b, &["--blank"]);
    assert!(
        !blank_on_b
            .iter()
            .any(|x| x["device"] == denied_dev.as_str()),
        "{blank_on_b:#?}"
    );
    drop(lab);
}

/// A blkid that cannot open `deny`, as in a VM where `blkid -p /dev/vda` says "Operation
/// not permitted": its scan leaves the device out (the system's blkid, that device's record
/// filtered away), its probe of it fails as util-linux blkid does (a line on stderr, exit
/// 2). Everything else is the system's blkid.
fn blkid_denying(deny: &str) -> String {
    format!(
        r#"deny='{deny}'
probe=
for a in "$@"; do
  [ "$a" = "-p" ] && probe=1
  last="$a"
done
if [ -n "$probe" ]; then
  if [ "$last" = "$deny" ]; then
    echo "blkid: error: $deny: Operation not permitted" >&2
    exit 2
  fi
  exec blkid "$@"
fi
blkid "$@" | awk -v d="DEVNAME=$deny" 'BEGIN {{ RS = ""; ORS = "\n\n" }} {{ n = split($0, l, "\n"); keep = 1; for (i = 1; i <= n; i++) if (l[i] == d) keep = 0; if (keep) print }}'
"#
    )
}

/// An image of `mib` MiB with a DOS partition table (one partition) and no filesystem.
fn partitioned_image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let file = dir.join(name);
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(mib * 1024 * 1024))
        .expect("create image file");
    let mut child = Command::new("sfdisk")
        .args(["-q", path_str(&file)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run sfdisk (package fdisk)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("sfdisk stdin");
        stdin
            .write_all(b"label: dos\n,4M\n")
            .expect("write sfdisk script");
    }
    assert!(
        child.wait().expect("wait for sfdisk").success(),
        "sfdisk failed"
    );
    file
}

fn empty_image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let file = dir.join(name);
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(mib * 1024 * 1024))
        .expect("create image file");
    file
}

/// Blank means probed and empty: a mounted device blkid cannot open is listed (hardware,
/// no filesystem type) but never blank, and status says why; a device with a partition
/// table and no filesystem is not blank; an empty one is.
#[test]
#[ignore = "needs root"]
fn only_a_device_blkid_probed_and_found_empty_is_blank() {
    util::require_root();
    let mut fx = Fixture::new();
    let root = fx.path();
    let empty = empty_image(&root, "empty.img", 12);
    let table = partitioned_image(&root, "table.img", 14);
    let denied = Image::create(&root, "denied.img", "diskd-denied");
    let empty_dev = fx.attach(&empty);
    let table_dev = fx.attach(&table);
    let denied_dev = fx.attach(&denied.file);
    let mnt = root.join("denied mnt");
    fx.mount(&[&denied_dev], &mnt);

    let mut daemon = TestDaemon::new("")
        .hardware(Path::new("/sys"))
        .arg("--disk-interval")
        .arg("1s");
    for dev in [&empty_dev, &table_dev, &denied_dev] {
        daemon = daemon.arg("--include-device").arg(dev);
    }
    util::script(&daemon.blkid, &blkid_denying(&denied_dev));
    fx.daemon = Some(daemon.start());
    let d = fx.daemon();

    wait_for("all three devices, the empty one blank", DEADLINE, || {
        let all = list(d, &[]);
        [&empty, &table, &denied.file]
            .iter()
            .all(|f| backed_by(&all, f).is_some())
            && backed_by(&list(d, &["--blank"]), &empty).is_some()
    });
    let blank = list(d, &["--blank"]);
    let devices: Vec<&str> = blank.iter().filter_map(|r| r["device"].as_str()).collect();
    assert_eq!(devices, [empty_dev.as_str()], "{blank:#?}");
    assert_eq!(backed_by(&blank, &empty).unwrap()["probe"], "empty");

    let all = list(d, &[]);
    let r = backed_by(&all, &denied.file).unwrap();
    assert_eq!(r["device"], denied_dev.as_str(), "{r}");
    assert_eq!(r["fstype"], Value::Null, "{r}");
    assert_eq!(r["probe"], "failed", "{r}");
    assert_eq!(r["size"], 16 * 1024 * 1024, "{r}");
    assert_eq!(r["mountpoints"], json!([path_str(&mnt)]), "{r}");
    let r = backed_by(&all, &table).unwrap();
    assert_eq!(r["fstype"], Value::Null, "{r}");
    assert_eq!(r["uuid"], Value::Null, "{r}");
    assert_eq!(
        r["probe"], "signature",
        "a partition table is a signature: {r}"
    );

    // status says why, instead of "ok".
    let why = format!("cannot probe {denied_dev}: Operation not permitted");
    let h = d.disks_health();
    assert_eq!(h["state"], "cannot_probe", "{h}");
    assert_eq!(h["problems"], json!([why]), "{h}");
    assert_eq!(h["last_error"], why.as_str(), "{h}");
    let text = d.client(&["status"]);
    text.expect_code(0);
    assert!(
        text.stdout()
            .lines()
            .any(|l| l.contains("watcher    disks: cannot_probe") && l.contains(&why)),
        "{}",
        text.stdout()
    );
}
