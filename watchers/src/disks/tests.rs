use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn disk(device: &str, uuid: Option<&str>, label: Option<&str>, t: Option<&str>) -> DiskInfo {
    DiskInfo {
        device: device.to_string(),
        uuid: uuid.map(str::to_string),
        label: label.map(str::to_string),
        fstype: t.map(str::to_string),
        devno: None,
        contents: Contents::Signature,
    }
}

#[test]
fn argv_single_word_gets_fresh_probe_and_export() {
    assert_eq!(
        effective_argv(&["blkid".into()]),
        vec!["blkid", "-c", "/dev/null", "-o", "export"]
    );
    assert_eq!(
        effective_argv(&["sudo".into(), "blkid".into()]),
        vec!["sudo", "blkid"]
    );
    assert_eq!(effective_argv(&[])[0], "blkid");
}

/// The six disks both forms of blkid's output list in the hostile-label tests, in order;
/// the labels of sdd1 and sdf1 are each form's own.
fn hostile_labels(sdd1: &str, sdf1: &str) -> Vec<DiskInfo> {
    vec![
        disk("/dev/sda1", Some("1111-AAAA"), None, Some("vfat")),
        disk("/dev/sdb1", Some("u2"), Some("my disk"), Some("ext4")),
        disk("/dev/sdc1", None, Some("say \"hi\" \\o/"), Some("ext4")),
        disk("/dev/sdd1", Some("u4"), Some(sdd1), None),
        disk(
            "/dev/sde1",
            None,
            Some("Fotos 2024 — Ürlaub"),
            Some("exfat"),
        ),
        disk("/dev/sdf1", None, Some(sdf1), Some("xfs")),
    ]
}

/// blkid's output parsed, with every record of it understood.
#[track_caller]
fn parsed_whole(out: &str) -> Vec<DiskInfo> {
    let (got, skipped) = parse_blkid_counted(out);
    assert_eq!(skipped, 0);
    got
}

#[test]
fn plain_form_with_hostile_labels() {
    let out = concat!(
        "/dev/sda1: UUID=\"1111-AAAA\" TYPE=\"vfat\" PARTUUID=\"abc-01\"\n",
        "/dev/sdb1: UUID=\"u2\" LABEL=\"my disk\" BLOCK_SIZE=\"4096\" TYPE=\"ext4\"\n",
        "/dev/sdc1: LABEL=\"say \\\"hi\\\" \\\\o/\" TYPE=\"ext4\"\n",
        "/dev/sdd1: LABEL=\"$(rm -rf /); echo pwned\" UUID=\"u4\"\n",
        "/dev/sde1: LABEL=\"Fotos 2024 — Ürlaub\" TYPE=\"exfat\"\n",
        "/dev/sdf1: LABEL=\"a\\x20b\\040c\\xc3\\x9c\" TYPE=\"xfs\"\n",
        "/dev/sdg1: PARTUUID=\"only-partuuid\"\n",
    );
    let got = parsed_whole(out);
    let mut want = hostile_labels("$(rm -rf /); echo pwned", "a b cÜ");
    want.push(disk("/dev/sdg1", None, None, None));
    assert_eq!(got, want);
}

#[test]
fn export_form_with_hostile_labels() {
    let out = concat!(
        "DEVNAME=/dev/sda1\nUUID=1111-AAAA\nTYPE=vfat\nPARTUUID=abc-01\n\n",
        "DEVNAME=/dev/sdb1\nUUID=u2\nLABEL=my\\ disk\nBLOCK_SIZE=4096\nTYPE=ext4\n\n",
        "DEVNAME=/dev/sdc1\nLABEL=say\\ \\\"hi\\\"\\ \\\\o/\nTYPE=ext4\n\n",
        "DEVNAME=/dev/sdd1\nLABEL=\\$(rm\\ -rf\\ /);\\ echo\\ \\`pwned\\`\\ \\<x\\>\nUUID=u4\n\n",
        "DEVNAME=/dev/sde1\nLABEL=Fotos\\ 2024\\ —\\ Ürlaub\nTYPE=exfat\n\n",
        "DEVNAME=/dev/sdf1\nLABEL=a\\x20b\\'c\nTYPE=xfs\n",
    );
    let got = parsed_whole(out);
    assert_eq!(
        got,
        hostile_labels("$(rm -rf /); echo `pwned` <x>", "a b'c")
    );
}

/// What blkid 2.38 really prints, without `-d`, for labels with non-ASCII characters
/// (captured from ext4 images).
#[test]
fn meta_notation_from_real_blkid() {
    let export = concat!(
        "DEVNAME=/dev/a\nLABEL=FotosM-bM-^@M-^TM-CM-^\\\\ \\$(x)\n\n",
        "DEVNAME=/dev/b\nLABEL=M-CM-^\\rlaub\n\n",
        "DEVNAME=/dev/c\nLABEL=MM-CM-^\\\n\n",
        "DEVNAME=/dev/d\nLABEL=Fotos\\ M-bM-^@M-^T\\ M-CM-^\\\n\n",
        "DEVNAME=/dev/e\nLABEL=a\\\\b\\\"c\n",
    );
    let plain = concat!(
        "/dev/a: LABEL=\"FotosM-bM-^@M-^TM-CM-^\\ $(x)\" TYPE=\"ext4\"\n",
        "/dev/b: LABEL=\"M-CM-^\\rlaub\" TYPE=\"ext4\"\n",
        "/dev/c: LABEL=\"MM-CM-^\\\" TYPE=\"ext4\"\n",
        "/dev/d: LABEL=\"Fotos M-bM-^@M-^T M-CM-^\\\" TYPE=\"ext4\"\n",
        "/dev/e: LABEL=\"a\\\\b\\\"c\" TYPE=\"ext4\"\n",
    );
    let want = ["Fotos—Ü $(x)", "Ürlaub", "MÜ", "Fotos — Ü", "a\\b\"c"];
    for out in [export, plain] {
        let labels: Vec<String> = parse_blkid(out)
            .unwrap()
            .into_iter()
            .map(|d| d.label.unwrap())
            .collect();
        assert_eq!(labels, want, "{out}");
    }
    // Text that merely looks like the notation stays as it is.
    let plain = "/dev/x: LABEL=\"TEAM-A M-x ^b TEAM-M-CM-^\\\"\n";
    assert_eq!(
        parse_blkid(plain).unwrap()[0].label.as_deref(),
        Some("TEAM-A M-x ^b TEAM-Ü")
    );
}

#[test]
fn garbage_lines_and_records_are_skipped() {
    let out = concat!(
        "blkid: warning: something odd\n",
        "/dev/sda1: UUID=\"u1\" TYPE=\"ext4\"\n",
        "/dev/sdz: UUID=\"unterminated\n",
        "\x00\x01 binary junk\n",
        "/dev/sdy: UUID=\"x\"garbage\n",
        "\n",
        "UUID=no-devname\nTYPE=ext4\n\n",
        "DEVNAME=/dev/sdb1\nthis line is junk\nUUID=u2\n\n",
    );
    let (got, skipped) = parse_blkid_counted(out);
    assert_eq!(
        got,
        vec![
            disk("/dev/sda1", Some("u1"), None, Some("ext4")),
            disk("/dev/sdb1", Some("u2"), None, None),
        ]
    );
    assert_eq!(skipped, 6);
}

#[test]
fn overlong_values_drop_the_record() {
    let long = "x".repeat(MAX_VALUE_LEN + 1);
    let out = format!(
        "/dev/sda1: LABEL=\"{long}\"\n/dev/sdb1: UUID=\"u\"\nDEVNAME=/dev/sdc1\nLABEL={long}\n"
    );
    let got = parse_blkid(&out).unwrap();
    assert_eq!(got, vec![disk("/dev/sdb1", Some("u"), None, None)]);
}

#[test]
fn consecutive_devnames_without_blank_line() {
    let out = "DEVNAME=/dev/a\nTYPE=ext4\nDEVNAME=/dev/b\nTYPE=xfs\n";
    let got = parse_blkid(out).unwrap();
    assert_eq!(
        got,
        vec![
            disk("/dev/a", None, None, Some("ext4")),
            disk("/dev/b", None, None, Some("xfs"))
        ]
    );
}

#[test]
fn empty_and_all_garbage_output() {
    assert_eq!(parse_blkid("").unwrap(), vec![]);
    assert_eq!(parse_blkid("\n \n").unwrap(), vec![]);
    let err = parse_blkid("hello\nworld: nope\nUUID=x\n").unwrap_err();
    assert_eq!(err.kind(), "bad_output");
}

fn watcher(cfg: DiskWatcherConfig) -> DiskWatcher {
    DiskWatcher::new(cfg)
}

#[test]
fn include_and_exclude_globs() {
    let w = watcher(DiskWatcherConfig {
        filter: DeviceFilter::new(
            &["/dev/sd*".into(), "/dev/mapper/**".into()],
            &["/dev/sda*".into()],
        )
        .unwrap(),
        ..DiskWatcherConfig::default()
    });
    assert!(w.wanted("/dev/sdb1"));
    assert!(w.wanted("/dev/mapper/vg-data"));
    assert!(!w.wanted("/dev/sda1"));
    assert!(!w.wanted("/dev/nvme0n1p1"));
    assert!(!w.wanted("/dev/sdx/deeper"));

    let all = watcher(DiskWatcherConfig {
        filter: DeviceFilter::new(&[], &["/dev/loop*".into()]).unwrap(),
        ..DiskWatcherConfig::default()
    });
    assert!(all.wanted("/dev/nvme0n1p1"));
    assert!(!all.wanted("/dev/loop3"));

    assert!(DeviceFilter::new(&["[".into()], &[]).is_err());
}

#[test]
fn devno_split_and_stat() {
    assert_eq!(split_dev(0x0811), (8, 17));
    // Large numbers use the extended encoding; check against the libc macro.
    let dev = nix::sys::stat::makedev(4321, 0x12345);
    assert_eq!(split_dev(dev), (4321, 0x12345));
    assert_eq!(device_number("/nonexistent/dev"), None);
    assert_eq!(device_number("/etc/hostname"), None);
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A new directory holding the script `name`, which runs from there: its body names the
/// files it leaves for the test (its arguments, its pids) plainly, with no paths formatted
/// into it.
fn script_in_new_dir(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), name, &format!("cd '{}'\n{body}", s(dir.path())));
    (dir, path)
}

fn cfg_for(command: Vec<String>, timeout: Duration) -> DiskWatcherConfig {
    let mut cfg = DiskWatcherConfig {
        command,
        ..DiskWatcherConfig::default()
    };
    cfg.schedule.timeout = timeout;
    cfg
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A scan by the program at `path` (no arguments, 5 s to answer) as blkid.
async fn scan_by(path: &Path) -> Result<Observation, WatchError> {
    watcher(cfg_for(vec![s(path)], Duration::from_secs(5)))
        .scan()
        .await
}

#[tokio::test]
async fn fake_blkid_output_is_parsed_and_filtered() {
    let (dir, path) = script_in_new_dir(
        "blkid",
        "echo \"$@\" > args\ncat <<'EOF'\nDEVNAME=/dev/null\nTYPE=weird\n\nDEVNAME=/dev/sdb1\nLABEL=my\\ disk\nUUID=u\n\nDEVNAME=/dev/loop0\nTYPE=squashfs\nEOF\n",
    );
    let mut cfg = cfg_for(vec![s(&path)], Duration::from_secs(5));
    cfg.filter = DeviceFilter::new(&[], &["/dev/loop*".into()]).unwrap();
    let obs = watcher(cfg).scan().await.unwrap();
    assert_eq!(
        obs,
        Observation::Disks(vec![
            // /dev/null is a character device: no devno.
            disk("/dev/null", None, None, Some("weird")),
            disk("/dev/sdb1", Some("u"), Some("my disk"), None),
        ])
    );
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(args.trim(), "-c /dev/null -o export");
}

#[tokio::test]
async fn failing_command_reports_first_stderr_line() {
    let (_dir, path) = script_in_new_dir(
        "fail",
        "echo '  \n  first problem  ' >&2\necho second >&2\nexit 1\n",
    );
    let err = watcher(cfg_for(vec![s(&path), "x".into()], Duration::from_secs(5)))
        .scan()
        .await
        .unwrap_err();
    match err {
        WatchError::Failed {
            program,
            status,
            stderr,
        } => {
            assert_eq!(program, s(&path));
            assert!(status.contains('1'), "{status}");
            assert_eq!(stderr, "first problem");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn exit_2_without_output_means_no_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = script(dir.path(), "none", "exit 2\n");
    let obs = scan_by(&path).await.unwrap();
    assert_eq!(obs, Observation::Disks(vec![]));

    let path = script(dir.path(), "two", "echo '/dev/sda1: UUID=\"u\"'\nexit 2\n");
    let err = scan_by(&path).await.unwrap_err();
    assert_eq!(err.kind(), "failed");

    // Exit 2 with a message is no "nothing found": dash says this, with status 2, when
    // the script it was started for is gone; taking it as empty dropped the inventory.
    let path = script(
        dir.path(),
        "said",
        "echo 'sh: 0: cannot open /x/blkid: No such file' >&2\nexit 2\n",
    );
    let err = scan_by(&path).await.unwrap_err();
    assert_eq!(err.kind(), "failed");
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[tokio::test]
async fn missing_and_non_executable_programs() {
    let err = watcher(cfg_for(
        vec!["/nonexistent/dir/blkid".into()],
        Duration::from_secs(5),
    ))
    .scan()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::NotFound { .. }), "{err:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noexec");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = scan_by(&path).await.unwrap_err();
    assert!(
        matches!(err, WatchError::PermissionDenied { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn huge_output_is_refused() {
    let (_dir, path) = script_in_new_dir("yes", "exec yes DEVNAME=/dev/sda\n");
    let started = Instant::now();
    let err = watcher(cfg_for(vec![s(&path)], Duration::from_secs(10)))
        .scan()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_output", "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A fake blkid for quick looks: without device arguments it prints `full`; with
/// some, the `probe-<name>` file of each device that has one (and exits 2, as blkid
/// does, when none has). Every call's arguments are appended to `calls`.
fn quick_fixture(dir: &Path, full: &str) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    std::fs::write(dir.join("full"), full).unwrap();
    let body = format!(
        r#"echo "$*" >> '{calls}'
shift 4
if [ $# -eq 0 ]; then cat '{dir}/full'; exit 0; fi
found=0
for d in "$@"; do
  f='{dir}/probe-'$(basename "$d")
  if [ -f "$f" ]; then cat "$f"; found=1; fi
done
[ $found -eq 1 ] || exit 2
"#,
        calls = s(&calls),
        dir = s(dir),
    );
    (script(dir, "blkid", &body), calls)
}

fn devices(obs: Option<Observation>) -> Option<Vec<(String, Option<String>)>> {
    match obs? {
        Observation::Disks(d) => Some(d.into_iter().map(|d| (d.device, d.uuid)).collect()),
        other => panic!("disks expected, got {other:?}"),
    }
}

fn pair(device: &str, uuid: &str) -> (String, Option<String>) {
    (device.to_string(), Some(uuid.to_string()))
}

#[tokio::test]
async fn a_quick_look_probes_only_the_named_devices_and_patches_the_last_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (blkid, calls) = quick_fixture(
        dir.path(),
        "DEVNAME=/dev/loop1\nUUID=u1\nTYPE=ext4\n\nDEVNAME=/dev/loop2\nUUID=u2\n",
    );
    std::fs::write(
        dir.path().join("probe-loop7"),
        "DEVNAME=/dev/loop7\nUUID=u7\n",
    )
    .unwrap();
    let w = watcher(cfg_for(vec![s(&blkid)], Duration::from_secs(5)));
    // Nothing to patch before the first full scan.
    w.note(Some(vec!["/dev/loop7".into()]));
    assert_eq!(w.scan_changed().await, None);
    w.scan().await.unwrap();

    // An attach: probed alone, added to what the full scan saw.
    w.note(Some(vec!["/dev/loop7".into()]));
    assert_eq!(
        devices(w.scan_changed().await),
        Some(vec![
            pair("/dev/loop1", "u1"),
            pair("/dev/loop2", "u2"),
            pair("/dev/loop7", "u7")
        ])
    );
    let last = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        last.lines().last(),
        Some("-c /dev/null -o export /dev/loop7")
    );

    // A detach: blkid finds nothing there (exit 2), so it is gone; the patch builds on
    // the previous quick look, not only on the last full scan.
    w.note(Some(vec!["/dev/loop2".into()]));
    assert_eq!(
        devices(w.scan_changed().await),
        Some(vec![pair("/dev/loop1", "u1"), pair("/dev/loop7", "u7")])
    );

    // Nothing noted since: nothing to look at quickly.
    assert_eq!(w.scan_changed().await, None);
}

#[tokio::test]
async fn a_quick_look_declines_what_only_a_full_scan_gets_right() {
    let dir = tempfile::tempdir().unwrap();
    let (blkid, calls) = quick_fixture(dir.path(), "DEVNAME=/dev/loop1\nUUID=u1\n");
    std::fs::write(
        dir.path().join("probe-loop5"),
        "DEVNAME=/dev/loop5\nUUID=u1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("probe-loop6"),
        "DEVNAME=/dev/mapper/x\nUUID=u6\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("probe-loop9"),
        "DEVNAME=/dev/loop9\nUUID=u9\n",
    )
    .unwrap();
    let mut cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
    cfg.filter = DeviceFilter::new(&[], &["/dev/loop9".into()]).unwrap();
    let w = watcher(cfg);
    w.scan().await.unwrap();
    // Events that named nothing, or a device blkid lists under another name.
    w.note(None);
    assert_eq!(w.scan_changed().await, None);
    w.note(Some(vec!["/dev/dm-0".into()]));
    assert_eq!(w.scan_changed().await, None);
    // A probe answering for another device than asked.
    w.note(Some(vec!["/dev/loop6".into()]));
    assert_eq!(w.scan_changed().await, None);
    // A clone of a listed disk: which one is listed first is blkid's order.
    w.note(Some(vec!["/dev/loop5".into()]));
    assert_eq!(w.scan_changed().await, None);
    // An excluded device is not even probed.
    let before = std::fs::read_to_string(&calls).unwrap().lines().count();
    w.note(Some(vec!["/dev/loop9".into()]));
    assert_eq!(
        devices(w.scan_changed().await),
        Some(vec![pair("/dev/loop1", "u1")])
    );
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap().lines().count(),
        before
    );
    // A full scan forgets what was noted before it.
    w.note(Some(vec!["/dev/loop7".into()]));
    w.scan().await.unwrap();
    assert_eq!(w.scan_changed().await, None);

    // A configured command line is run as given, never extended.
    let custom = watcher(cfg_for(
        vec![
            s(&blkid),
            "-c".into(),
            "/dev/null".into(),
            "-o".into(),
            "export".into(),
        ],
        Duration::from_secs(5),
    ));
    custom.scan().await.unwrap();
    custom.note(Some(vec!["/dev/loop1".into()]));
    assert_eq!(custom.scan_changed().await, None);
}

#[test]
fn a_lone_probe_is_empty_only_when_blkid_found_nothing_and_said_nothing() {
    let dev = "/dev/loop7";
    let judge = |code, out: &str, err: &str| judge_probe(dev, code, out, err.as_bytes());
    // Nothing there.
    assert_eq!(judge(Some(2), "", "").unwrap().contents, Contents::Empty);
    // blkid could not open it: exit 2 as well, after a line on stderr.
    assert_eq!(
        judge(
            Some(2),
            "",
            "blkid: error: /dev/loop7: Operation not permitted\n"
        ),
        Err("Operation not permitted".to_string())
    );
    // A signature, as `-p -o export` prints it.
    let found = judge(
        Some(0),
        "DEVNAME=/dev/loop7\nUUID=u7\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n",
        "",
    )
    .unwrap();
    assert_eq!(found.contents, Contents::Signature);
    assert_eq!(
        (found.uuid.as_deref(), found.fstype.as_deref()),
        (Some("u7"), Some("ext4"))
    );
    // A partition table only: a signature without a filesystem.
    let table = judge(
        Some(0),
        "DEVNAME=/dev/loop7\nPTUUID=0ec59955\nPTTYPE=dos\n",
        "",
    );
    assert_eq!(table.unwrap().contents, Contents::Signature);
    // Several signatures (ambivalent): a signature all the same.
    assert_eq!(
        judge(Some(8), "", "blkid: /dev/loop7: ambivalent result")
            .unwrap()
            .contents,
        Contents::Signature
    );
    // Answers that are not believed: another device, nothing parsable, output with
    // "nothing found", other exits, a signal.
    for (code, out, err) in [
        (Some(0), "DEVNAME=/dev/sda1\nTYPE=ext4\n", ""),
        (
            Some(0),
            "DEVNAME=/dev/loop7\nTYPE=ext4\n\nDEVNAME=/dev/loop8\n",
            "",
        ),
        (Some(0), "garbage\n", ""),
        (Some(0), "", ""),
        (Some(2), "DEVNAME=/dev/loop7\n", ""),
        (Some(4), "", "blkid: out of memory"),
        (Some(1), "", ""),
        (None, "", ""),
    ] {
        assert!(judge(code, out, err).is_err(), "{code:?} {out:?} {err:?}");
    }
    // What goes to status has no control characters and is capped.
    let hostile = format!("blkid: error: /dev/loop7: \x1b[31mred{}", "x".repeat(1000));
    let why = judge(Some(2), "", &hostile).unwrap_err();
    assert!(
        !why.contains('\x1b') && why.len() <= MAX_STDERR_LINE,
        "{why:?}"
    );
    assert_eq!(
        judge(Some(3), "", "something odd"),
        Err("blkid ended with exit status 3: something odd".to_string())
    );
}

/// Add to the fake sysfs at `root` the virtual block device `name`, numbered `dev`, of
/// `size` sectors (each as the file holds it), with no holders; its directory.
fn sysfs_block(root: &Path, name: &str, dev: &str, size: &str) -> PathBuf {
    let d = root.join("devices/virtual/block").join(name);
    std::fs::create_dir_all(d.join("holders")).unwrap();
    std::fs::write(d.join("dev"), dev).unwrap();
    std::fs::write(d.join("size"), size).unwrap();
    std::fs::create_dir_all(root.join("class/block")).unwrap();
    std::os::unix::fs::symlink(&d, root.join("class/block").join(name)).unwrap();
    d
}

#[test]
fn sysfs_devices_to_probe_skip_empty_and_ram_and_mark_used_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let block = |name: &str, dev: &str, size: &str| sysfs_block(root, name, dev, size);
    block("loop0", "7:0\n", "0\n");
    block("ram0", "1:0\n", "8192\n");
    block("loop1", "7:1\n", "2048\n");
    let held = block("loop2", "7:2\n", "2048\n");
    std::fs::write(held.join("holders/dm-0"), "").unwrap();
    let parted = block("loop3", "7:3\n", "2048\n");
    std::fs::create_dir_all(parted.join("loop3p1")).unwrap();
    std::fs::write(parted.join("loop3p1/partition"), "1\n").unwrap();
    block("loop4", "garbage", "2048\n");
    let got = list_block_devices(root, |d| d != "/dev/loop9");
    let want = [
        ("/dev/loop1", (7, 1), false),
        ("/dev/loop2", (7, 2), true),
        ("/dev/loop3", (7, 3), true),
    ];
    let got: Vec<(&str, (u32, u32), bool)> = got
        .iter()
        .map(|b| (b.device.as_str(), b.devno, b.in_use))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn devices_the_scan_missed_are_probed_and_a_missing_node_is_never_empty() {
    // A fake sysfs listing /dev/sdz9 (no such node here) and /dev/null's neighbour;
    // a fake blkid whose scan reports nothing and whose probes say "nothing found"
    // (as blkid does for a path that does not exist).
    let (dir, blkid) = script_in_new_dir("blkid", "echo \"$*\" >> calls\nexit 2\n");
    let sys = dir.path().join("sys");
    sysfs_block(&sys, "sdz9", "259:999\n", "2048\n");
    let mut cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
    cfg.probe_sysfs = Some(sys.clone());
    let obs = watcher(cfg).scan().await.unwrap();
    let Observation::Disks(disks) = &obs else {
        panic!("{obs:?}")
    };
    assert_eq!(disks.len(), 1, "{disks:?}");
    assert_eq!(disks[0].device, "/dev/sdz9");
    assert_eq!(disks[0].devno, Some((259, 999)));
    assert_eq!(
        disks[0].contents,
        Contents::Unreadable(
            "cannot probe /dev/sdz9: /dev/sdz9 is not the block device 259:999".into()
        )
    );
    assert_eq!(
        obs.problems(),
        ["cannot probe /dev/sdz9: /dev/sdz9 is not the block device 259:999"]
    );
    // Only the scan ran: a node that is not the device is not even probed.
    let ran = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(ran.trim(), "-c /dev/null -o export");

    // Without probing (no hardware watcher), nothing but the scan.
    let cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
    assert_eq!(
        watcher(cfg).scan().await.unwrap(),
        Observation::Disks(vec![])
    );
}

#[test]
fn probe_argv_for_plain_blkid_only() {
    let w = watcher(cfg_for(
        vec!["/usr/sbin/blkid".into()],
        Duration::from_secs(1),
    ));
    assert_eq!(
        w.probe_argv("/dev/sdb").unwrap(),
        ["/usr/sbin/blkid", "-p", "-o", "export", "/dev/sdb"]
    );
    let custom = watcher(cfg_for(
        vec!["sudo".into(), "blkid".into()],
        Duration::from_secs(1),
    ));
    assert_eq!(custom.probe_argv("/dev/sdb"), None);
}

#[test]
fn quick_kinds() {
    for ok in [
        "/dev/loop3",
        "/dev/sdb1",
        "/dev/nvme0n1p2",
        "/dev/vdc",
        "/dev/mmcblk0p1",
    ] {
        assert!(quick_kind(ok), "{ok}");
    }
    for no in [
        "/dev/dm-0",
        "/dev/md127",
        "/dev/mapper/vg-lv",
        "loop3",
        "/dev/loop/0",
    ] {
        assert!(!quick_kind(no), "{no}");
    }
}

/// State letter from /proc/<pid>/stat, or None when the process is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

#[tokio::test]
async fn hanging_command_and_its_children_are_killed() {
    let (dir, path) = script_in_new_dir(
        "hang",
        "sleep 1000 &\necho \"$$ $!\" > pids\nsleep 1000; wait\n",
    );
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = watcher(cfg_for(vec![s(&path), "arg".into()], timeout))
        .scan()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, WatchError::TimedOut { .. }), "{err:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    let text = std::fs::read_to_string(dir.path().join("pids")).unwrap();
    let mut it = text.split_whitespace().map(|p| p.parse::<i32>().unwrap());
    let (shell, background) = (it.next().unwrap(), it.next().unwrap());
    // We reaped the shell ourselves: it must be gone entirely.
    assert_eq!(proc_state(shell), None, "shell {shell} still there");
    // The orphaned grandchild is reaped by init (or not, in some containers): gone or
    // a zombie is fine, running or sleeping is not.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match proc_state(background) {
            None | Some('Z') | Some('X') => break,
            Some(state) if Instant::now() > deadline => {
                panic!("background sleep {background} survived in state {state}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
