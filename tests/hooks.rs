//! Hooks on one real daemon: config errors, hostile labels, the timeout killing a whole
//! process group, shutdown, the concurrency cap and the queue. Hooks across hosts are in
//! `lab_hooks`. The harness here (a recording hook, `Runs`) is shared with it.

use crate::util;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use util::TestDaemon;

const LONG: Duration = Duration::from_secs(30);

/// Every variable a hook is given, as docs/hooks-and-events.md lists them (plus diskd's extras).
pub const VARS: &[&str] = &[
    "DISKD_EVENT",
    "DISKD_HOST",
    "DISKD_ADDR",
    "DISKD_UUID",
    "DISKD_LABEL",
    "DISKD_DEVICE",
    "DISKD_FSTYPE",
    "DISKD_MOUNTPOINT",
    "DISKD_LOCAL",
    "DISKD_SEALED",
    "DISKD_NODE",
    "DISKD_SOCKET",
    "DISKD_TIME",
    "DISKD_SERIAL",
    "DISKD_HEALTH",
    "DISKD_HEALTH_WAS",
    "DISKD_FS_AVAIL",
];

/// A hook script that records each run as a directory `DIR/TAG.<ns>.<pid>` holding one file
/// per variable with its exact value (`printf '%s' "$VAR"`: expanded once, never
/// evaluated), and the count of its arguments.
pub fn recorder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    let path = dir.join("record.sh");
    let mut body = format!(
        "d=\"{}/runs/$1.$(date +%s%N).$$\"\nmkdir \"$d\"\nprintf '%s' \"$#\" > \"$d/ARGC\"\n",
        dir.display()
    );
    for v in VARS {
        body.push_str(&format!("printf '%s' \"${v}\" > \"$d/{v}\"\n"));
    }
    util::script(&path, &body);
    path
}

/// The runs a [`recorder`] made with `tag`, oldest first: variable -> value.
pub fn runs(dir: &Path, tag: &str) -> Vec<BTreeMap<String, String>> {
    let mut names: Vec<(u128, PathBuf)> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&format!("{tag}."))?;
            let ns = rest.split('.').next()?.parse().ok()?;
            Some((ns, e.path()))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|(_, d)| {
            let mut vars = BTreeMap::new();
            for v in VARS.iter().chain(&["ARGC"]) {
                // The hook writes the files one after another: a run still writing is
                // read again by the caller's wait.
                let value = std::fs::read(d.join(v))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|_| "<missing>".into());
                vars.insert(v.to_string(), value);
            }
            vars
        })
        .collect()
}

/// Wait until `tag` has exactly `n` complete runs (every variable written).
pub fn wait_runs(dir: &Path, tag: &str, n: usize) -> Vec<BTreeMap<String, String>> {
    util::wait_for(&format!("{n} runs of {tag}"), LONG, || {
        let r = runs(dir, tag);
        r.len() >= n && r.iter().all(|v| v.values().all(|x| x != "<missing>"))
    });
    let r = runs(dir, tag);
    assert_eq!(r.len(), n, "{tag}: {r:#?}");
    r
}

/// Write `yaml` as the daemon's config file and pass `--config`.
fn with_config(d: TestDaemon, yaml: &str) -> TestDaemon {
    let file = d.dir.path().join("diskd.yaml");
    std::fs::write(&file, yaml).unwrap();
    let f = file.to_string_lossy().into_owned();
    d.arg("--config").arg(&f)
}

/// A byte string as `blkid -o export` may write a value: every byte other than a letter or
/// digit as `\xHH` (the parser decodes them; no shell ever sees this text).
pub fn export_escape(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// One disk in `blkid -o export` form.
pub fn export_disk(device: &str, uuid: &str, label: &[u8]) -> String {
    format!(
        "DEVNAME={device}\nUUID={uuid}\nLABEL={}\nTYPE=ext4\n\n",
        export_escape(label)
    )
}

/// `status --json`'s `hooks[i]`.
fn hook_status(d: &TestDaemon, i: usize) -> Value {
    d.status_json()["hooks"][i].clone()
}

#[test]
fn bad_hook_entries_stop_the_daemon_with_one_line_naming_them() {
    let ok = "  - on: [appeared]\n    local: true\n    run: /bin/true\n";
    let cases = [
        (
            format!("hooks:\n{ok}{ok}  - on: [plugged]\n    run: x\n"),
            "hooks[2].on: unknown event \"plugged\" (appeared, vanished, changed, mounted, unmounted, peer-live, peer-lost, health-changed)",
        ),
        (format!("hooks:\n{ok}  - on: []\n    run: x\n"), "hooks[1].on"),
        (format!("hooks:\n{ok}  - run: x\n"), "hooks[1].on"),
        (
            format!("hooks:\n{ok}  - on: [appeared]\n    run: []\n"),
            "hooks[1].run",
        ),
        (
            format!("hooks:\n{ok}  - on: [appeared]\n    run: \"\"\n"),
            "hooks[1].run",
        ),
        (
            "hooks:\n  - on: [appeared]\n    run: x\n    match: \"[a\"\n".to_string(),
            "hooks[0].match",
        ),
        (
            "hooks:\n  - on: [appeared]\n    run: x\n    host: \"{a\"\n".to_string(),
            "hooks[0].host",
        ),
        (
            "hooks:\n  - on: [appeared]\n    run: x\n    timeout: ten minutes\n".to_string(),
            "hooks[0].timeout",
        ),
        (
            "hooks:\n  - on: [appeared]\n    run: x\n    colour: red\n".to_string(),
            "hooks[0]: unknown field `colour`",
        ),
        (
            "hooks:\n  - on: [peer-lost]\n    run: x\n    match: \"b*\"\n".to_string(),
            "hooks[0].match",
        ),
        ("hooks_max_running: 0\n".to_string(), "hooks_max_running"),
        // Without keys, peers' events are anyone's: a hook on them must say it accepts that.
        (
            format!("hooks:\n{ok}  - on: [appeared]\n    run: /bin/true\n"),
            "hooks[1]: runs on other hosts' events, and without security.key_files",
        ),
        (
            format!("hooks:\n{ok}  - on: [appeared]\n    local: true\n    user: no-such-user-here\n    run: x\n"),
            "hooks[1].user: no user \"no-such-user-here\"",
        ),
    ];
    for (yaml, want) in cases {
        let d = with_config(TestDaemon::new(""), &yaml);
        let (code, err) = d.run_expect_exit_within(LONG);
        assert_eq!(code, 2, "{yaml:?}: {err}");
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{yaml:?}: not one line: {err:?}");
        assert!(
            lines[0].starts_with(&format!("diskd: {want}")),
            "{yaml:?}: {err:?} should start with {want:?}"
        );
        assert!(!d.socket.exists());
    }
}

#[test]
fn a_hostile_label_reaches_the_hook_verbatim_and_runs_nothing() {
    let d = TestDaemon::new("");
    let dir = d.dir.path().to_path_buf();
    let rec = recorder(&dir);
    let pwned: Vec<PathBuf> = (1..=5).map(|i| dir.join(format!("pwned{i}"))).collect();
    let p = |i: usize| pwned[i].display().to_string();
    // Every way a shell could be made to run something: quotes closed early, `;`, command
    // substitution both ways, a newline starting a new command, a redirection.
    let hostile = format!(
        "x'; touch {} $(touch {}) \"`touch {}`\n$(id) ; touch {} # \\ > {}",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4)
    );
    // And a NUL: the environment cannot hold one, so the value is cut there.
    let with_nul = b"cut here\x00; touch /nonexistent".to_vec();
    let uuid1 = "11111111-2222-4333-8444-555555555555";
    let uuid2 = "11111111-2222-4333-8444-666666666666";
    let blkid = format!(
        "{}{}",
        export_disk("/dev/hostile1", uuid1, hostile.as_bytes()),
        export_disk("/dev/hostile2", uuid2, &with_nul)
    );
    std::fs::write(d.blkid.with_extension("out"), blkid).unwrap();
    let yaml = format!(
        "hooks:\n  - on: [appeared]\n    local: true\n    run: [{}, appeared]\n",
        rec.display()
    );
    let d = with_config(d, &yaml).start();
    let r = wait_runs(&dir, "appeared", 2);
    let by_uuid = |u: &str| r.iter().find(|v| v["DISKD_UUID"] == u).unwrap().clone();
    let v = by_uuid(uuid1);
    assert_eq!(v["DISKD_LABEL"], hostile, "{v:#?}");
    assert_eq!(v["DISKD_DEVICE"], "/dev/hostile1");
    assert_eq!(v["ARGC"], "1", "the argv is exactly as configured: {v:#?}");
    assert_eq!(by_uuid(uuid2)["DISKD_LABEL"], "cut here");
    // `query` sees the whole label: the hook got all of it as one value.
    let (code, rows) = d.query_json(uuid1);
    assert_eq!(code, 0);
    assert_eq!(rows[0]["label"], hostile.as_str());
    let h = hook_status(&d, 0);
    assert_eq!(
        (h["runs"].as_u64(), h["failures"].as_u64()),
        (Some(2), Some(0)),
        "{h}"
    );
    for f in &pwned {
        assert!(
            !f.exists(),
            "{} was created: a label ran a command",
            f.display()
        );
    }
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_whole_process_group() {
    let d = TestDaemon::new(&export_disk(
        "/dev/slow1",
        "22222222-2222-4333-8444-555555555555",
        b"slow",
    ));
    let dir = d.dir.path().to_path_buf();
    let hook = dir.join("slow.sh");
    // One child dies of the SIGTERM; the script and a second child ignore it, so only the
    // SIGKILL that follows the grace ends them.
    util::script(
        &hook,
        &format!(
            "cd {}\nsleep 1000 &\necho $! > child1.pid\ntrap '' TERM\nsleep 1001 &\necho $! > child2.pid\necho $$ > leader.pid\necho started\nwait\n",
            dir.display()
        ),
    );
    let yaml = format!(
        "hooks:\n  - on: [appeared]\n    local: true\n    timeout: 1s\n    run: {}\n",
        hook.display()
    );
    let d = with_config(d, &yaml).start();
    let pid = |name: &str| -> i32 {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    util::wait_for("the hook to start", LONG, || pid("leader.pid") > 0);
    let (leader, c1, c2) = (pid("leader.pid"), pid("child1.pid"), pid("child2.pid"));
    // `$!` is known as soon as the shell forks; the child becomes `sleep` a moment later.
    util::wait_for("both children to be running sleep", LONG, || {
        util::running_with_argv(c1, &["sleep", "1000"])
            && util::running_with_argv(c2, &["sleep", "1001"])
    });
    util::wait_for("the timeout to count", LONG, || {
        hook_status(&d, 0)["timeouts"] == 1
    });
    let script = hook.display().to_string();
    util::wait_for("the hook and its children to be gone", LONG, || {
        !util::running_with_argv(leader, &["/bin/sh", &script])
            && !util::running_with_argv(c1, &["sleep", "1000"])
            && !util::running_with_argv(c2, &["sleep", "1001"])
    });
    let h = hook_status(&d, 0);
    assert_eq!(h["runs"], 1, "{h}");
    assert_eq!(h["failures"], 0, "{h}");
    assert_eq!(h["running"], 0, "{h}");
    let log = d.log_text();
    assert!(
        log.contains("hook[0]: started"),
        "output not logged:\n{log}"
    );
    assert!(
        log.contains("hook[0]: timed out") && log.contains("SIGTERM, then SIGKILL"),
        "{log}"
    );
    // The text form too.
    let st = d.client(&["status"]);
    st.expect_code(0);
    assert!(
        st.stdout()
            .lines()
            .any(|l| l.starts_with("hook[0]") && l.contains("timeouts 1")),
        "{}",
        st.stdout()
    );
}

#[test]
fn stopping_the_daemon_kills_running_hooks_and_exits_cleanly() {
    let d = TestDaemon::new(&export_disk(
        "/dev/long1",
        "33333333-2222-4333-8444-555555555555",
        b"long",
    ));
    let dir = d.dir.path().to_path_buf();
    let hook = dir.join("long.sh");
    util::script(
        &hook,
        &format!(
            "cd {}\nsleep 1000 &\necho $! > child.pid\necho $$ > leader.pid\nwait\n",
            dir.display()
        ),
    );
    let yaml = format!(
        "hooks:\n  - on: [appeared]\n    local: true\n    timeout: 1h\n    run: {}\n",
        hook.display()
    );
    let mut d = with_config(d, &yaml).start();
    let pid = |name: &str| -> i32 {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    util::wait_for("the hook to start", LONG, || pid("leader.pid") > 0);
    let (leader, child) = (pid("leader.pid"), pid("child.pid"));
    // `$!` is known as soon as the shell forks; the child becomes `sleep` a moment later.
    util::wait_for("the hook's child to become sleep", LONG, || {
        util::running_with_argv(child, &["sleep", "1000"])
    });
    assert_eq!(d.stop(), 0, "{}", d.log_text());
    let script = hook.display().to_string();
    util::wait_for("the hook's group to be gone", LONG, || {
        !util::running_with_argv(child, &["sleep", "1000"])
            && !util::running_with_argv(leader, &["/bin/sh", &script])
    });
    let log = d.log_text();
    assert!(
        log.contains("hook[0]: stopped for") && log.contains("the daemon is stopping"),
        "{log}"
    );
    assert!(!log.contains("did not stop within"), "{log}");
}

/// `n` disks with UUIDs `{offset+i:08x}-...` in export form.
fn many_disks(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            export_disk(
                &format!("/dev/many{i}"),
                &format!("{i:08x}-1111-4222-8333-444455556666"),
                format!("many{i}").as_bytes(),
            )
        })
        .collect()
}

/// Intervals `(start, end)` in ns recorded by the cap test's hook.
fn intervals(dir: &Path) -> Vec<(u128, u128)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let t = std::fs::read_to_string(e.path()).ok()?;
            let mut w = t.split_whitespace().map(|x| x.parse::<u128>());
            Some((w.next()?.ok()?, w.next()?.ok()?))
        })
        .collect()
}

/// The most intervals that overlap at any instant.
fn max_overlap(iv: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = iv.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // At equal times an end comes before a start: touching is not overlapping.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[test]
fn at_most_hooks_max_running_run_at_once_and_overflow_is_counted() {
    let d = TestDaemon::new(&many_disks(0..100))
        .arg("--disk-interval")
        .arg("1h");
    let dir = d.dir.path().to_path_buf();
    let out = dir.join("spans");
    std::fs::create_dir_all(&out).unwrap();
    let gate = dir.join("gate");
    std::fs::write(&gate, "").unwrap();
    let hook = dir.join("span.sh");
    // Each run records when it started and ended; the script's span lies inside the
    // daemon's (spawn to reap), so overlapping spans are hooks running at once. While
    // `gate` is missing, runs wait for it.
    util::script(
        &hook,
        &format!(
            "s=$(date +%s%N)\nwhile [ ! -e {gate} ]; do sleep 0.05; done\nsleep 0.05\ne=$(date +%s%N)\necho \"$s $e\" > {out}/$DISKD_UUID\n",
            gate = gate.display(),
            out = out.display()
        ),
    );
    let yaml = format!(
        "hooks_max_running: 2\nhooks:\n  - on: [appeared]\n    local: true\n    run: {}\n",
        hook.display()
    );
    let d = with_config(d, &yaml).start();
    let settled = |d: &TestDaemon, total: u64| {
        let st = d.status_json();
        let h = &st["hooks"][0];
        h["runs"].as_u64().unwrap() + h["dropped"].as_u64().unwrap() == total
            && h["running"] == 0
            && st["hooks_queued"] == 0
    };
    util::wait_for("100 runs", Duration::from_secs(120), || settled(&d, 100));
    let h = hook_status(&d, 0);
    assert_eq!(
        (h["runs"].as_u64(), h["dropped"].as_u64()),
        (Some(100), Some(0)),
        "{h}"
    );
    assert_eq!(h["failures"], 0, "{h}");
    let iv = intervals(&out);
    assert_eq!(iv.len(), 100);
    let most = max_overlap(&iv);
    assert!(most <= 2, "{most} hooks ran at once");

    // 300 more at once, with the first two runs held at the gate: 2 run, 256 wait in
    // the queue, the rest are dropped and counted.
    std::fs::remove_file(&gate).unwrap();
    std::fs::write(d.blkid.with_extension("out"), many_disks(0..400)).unwrap();
    d.client(&["refresh"]).expect_code(0);
    util::wait_for("the burst to be queued or dropped", LONG, || {
        let st = d.status_json();
        let h = &st["hooks"][0];
        h["runs"].as_u64().unwrap()
            + h["dropped"].as_u64().unwrap()
            + st["hooks_queued"].as_u64().unwrap()
            == 400
            && h["running"] == 2
    });
    let st = d.status_json();
    let dropped = st["hooks"][0]["dropped"].as_u64().unwrap();
    // The queue holds 256; the two held runs may or may not have left it during the burst.
    assert!((42..=44).contains(&dropped), "{st}");
    assert!(d.log_text().contains("dropped"), "overflow not logged");
    std::fs::write(&gate, "").unwrap();
    util::wait_for("the queue to drain", Duration::from_secs(300), || {
        settled(&d, 400)
    });
    let h = hook_status(&d, 0);
    let runs = h["runs"].as_u64().unwrap();
    assert_eq!(h["dropped"].as_u64().unwrap(), dropped, "{h}");
    assert_eq!(runs + dropped, 400, "{h}");
    assert_eq!(h["failures"], 0, "{h}");
    let iv = intervals(&out);
    assert_eq!(iv.len() as u64, runs, "every run that was counted ran");
    let most = max_overlap(&iv);
    assert!(most <= 2, "{most} hooks ran at once");
}

/// `user: nobody`: the command runs with nobody's uid, gid and groups (what it creates is
/// nobody's), and `HOME`, `USER` are nobody's; the daemon stays root.
#[test]
#[ignore = "needs root"]
fn a_hook_with_a_user_runs_as_that_user_with_its_groups() {
    util::require_root();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    // A directory nobody can write in: its parent is a fresh temp dir, made searchable.
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let drop_dir = out.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    std::fs::set_permissions(&drop_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let made = drop_dir.join("made");
    let yaml = format!(
        "hooks:\n  - on: [appeared]\n    local: true\n    user: nobody\n    run: [/bin/sh, -c, \
         'id -u > \"$0\"; id -g >> \"$0\"; id -G >> \"$0\"; echo \"$HOME $USER\" >> \"$0\"', {}]\n",
        made.display()
    );
    let disk = export_disk("/dev/sdu1", "44444444-2222-4333-8444-555555555555", b"user");
    let d = with_config(TestDaemon::new(&disk), &yaml).start();
    util::wait_for("the hook's file", LONG, || {
        std::fs::read_to_string(&made).is_ok_and(|t| t.lines().count() == 4)
    });
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw(), "the file is not nobody's");
    assert_eq!(meta.gid(), nobody.gid.as_raw());
    let text = std::fs::read_to_string(&made).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[1], nobody.gid.to_string());
    // Its groups are nobody's (from the group database), none of root's.
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut want: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    want.sort();
    want.dedup();
    let mut got: Vec<u32> = lines[2]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want, "supplementary groups");
    assert_eq!(lines[3], format!("{} nobody", nobody.dir.display()));
    assert_eq!(hook_status(&d, 0)["user"], "nobody");
    assert_eq!(hook_status(&d, 0)["failures"], 0);
}
