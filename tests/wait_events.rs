//! `wait` and `events` against a real daemon: the one-shot client (exit codes, Ctrl-C, the
//! daemon stopping) and the socket (framing, cancel by a line). A fake blkid plus `refresh`
//! makes disks come and go; `--mounted` needs a real mount, so that test needs root.

use crate::util;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{wait_for, TestDaemon};

const BACKUP_UUID: &str = "6fe176fb-83a0-4e4a-af6a-f578ca7a1f65";
const NEW_UUID: &str = "0a0a0a0a-1111-4222-8333-444444444444";
const MARK_UUID: &str = "0b0b0b0b-1111-4222-8333-555555555555";

/// Generous: a debug build on a busy machine; never a speed claim.
const LONG: Duration = Duration::from_secs(30);

fn line(dev: &str, uuid: &str, label: &str) -> String {
    format!("{dev}: UUID=\"{uuid}\" LABEL=\"{label}\" TYPE=\"ext4\"\n")
}

fn backup() -> String {
    line("/dev/sdb1", BACKUP_UUID, "backup")
}

/// A daemon whose disks change only when a test says so (`refresh`), not on a timer.
fn daemon(blkid: &str) -> TestDaemon {
    TestDaemon::new(blkid)
        .arg("--disk-interval")
        .arg("1h")
        .start()
}

/// Make the fake blkid print `output` and scan now.
fn set_disks(d: &TestDaemon, output: &str) {
    util::fake_blkid(&d.blkid, output);
    d.client(&["refresh"]).expect_code(0);
}

fn sessions_open(d: &TestDaemon) -> u64 {
    d.status_json()["counters"]["sessions_open"]
        .as_u64()
        .unwrap()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn wait_for_a_disk_that_is_there_returns_it_at_once_as_query_does() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let r = d.client(&["wait", "backup", "--json", "--timeout", "20s"]);
    r.expect_code(0);
    let got = r.json();
    let (code, want) = d.query_json("backup");
    assert_eq!(code, 0);
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(keys(&got[0]), keys(&want[0]), "the shape of query --json");
    for k in [
        "host",
        "addr",
        "uuid",
        "label",
        "device",
        "fstype",
        "mountpoints",
    ] {
        assert_eq!(got[0][k], want[0][k], "{k}");
    }
    assert_eq!(got[0]["live"], true);
    // The table too, and by UUID in upper case, and on the host it is on.
    let r = d.client(&["wait", &BACKUP_UUID.to_uppercase(), "--host", "test-node"]);
    r.expect_code(0);
    let out = r.stdout();
    assert!(out.starts_with("HOST "), "{out}");
    assert!(out.contains(BACKUP_UUID) && out.contains(" live "), "{out}");
    // On another host it is not: the timeout, then exit 1.
    let r = d.client(&["wait", "backup", "--host", "elsewhere", "--timeout", "0s"]);
    r.expect_code(1);
    assert!(
        r.stderr().contains("on host \"elsewhere\""),
        "{}",
        r.stderr()
    );
}

#[test]
fn wait_returns_once_the_disk_appears() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let mut w = d.listening(&["wait", "new disk", "--json", "--timeout", "5m"]);
    assert!(
        w.running(),
        "wait returned before the disk existed: {:?}",
        w.lines()
    );
    set_disks(
        &d,
        &format!("{}{}", backup(), line("/dev/sdc1", NEW_UUID, "new disk")),
    );
    let status = w.finish();
    assert_eq!(status.code(), Some(0), "{}", w.stderr());
    let out = w.lines().join("\n");
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["uuid"], NEW_UUID);
    assert_eq!(rows[0]["label"], "new disk");
    assert_eq!(rows[0]["host"], "test-node");
    assert_eq!(rows[0]["live"], true);
}

#[test]
fn wait_gives_up_at_its_timeout_with_exit_1() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let start = Instant::now();
    let r = d.client(&["wait", "never-plugged", "--timeout", "1s"]);
    let took = start.elapsed();
    r.expect_code(1);
    assert!(took >= Duration::from_secs(1), "returned after {took:?}");
    assert!(took < LONG, "returned after {took:?}");
    assert!(
        r.stderr()
            .contains("timed out after 1s: no live disk matches \"never-plugged\""),
        "{}",
        r.stderr()
    );
    assert_eq!(r.stdout(), "");
    // JSON: an empty array, as `query --json` prints for no match.
    let r = d.client(&["wait", "never-plugged", "--timeout", "1s", "--json"]);
    r.expect_code(1);
    assert_eq!(r.json(), serde_json::json!([]));
    // Not a duration: usage, exit 2, before anything is sent.
    let r = d.client(&["wait", "x", "--timeout", "soon"]);
    r.expect_code(2);
}

/// Ctrl-C: the client dies of SIGINT, which a shell reports as 130, and the daemon ends the
/// session (the wait does not linger there).
#[test]
fn ctrl_c_ends_wait_and_events_with_130() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    for args in [&["wait", "never-plugged"][..], &["events", "--json"][..]] {
        let mut c = d.listening(args);
        assert!(c.running(), "{args:?} ended by itself: {}", c.stderr());
        c.signal(nix::sys::signal::Signal::SIGINT);
        let status = c.finish();
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGINT as i32),
            "{args:?}: {status:?} {}",
            c.stderr()
        );
        // Only the session of the `status` asking is left.
        wait_for("the daemon to end the session", LONG, || {
            sessions_open(&d) == 1
        });
    }
    // What a shell makes of it: `$?` is 130.
    let script = "\"$0\" --socket \"$1\" wait never-plugged; echo \"exit $?\"";
    let sh = util::default_sigint(&mut Command::new("sh"))
        .args(["-c", script])
        .arg(util::bin())
        .arg(&d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    let children = format!("/proc/{sh_pid}/task/{sh_pid}/children");
    let mut client = 0;
    wait_for("the shell to start diskd wait", LONG, || {
        client = std::fs::read_to_string(&children)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        client > 0 && sessions_open(&d) >= 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = sh.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit 130");
}

/// A daemon that stops while a client waits or streams: exit 3, with the reason.
#[test]
fn a_daemon_that_stops_ends_wait_and_events_with_exit_3() {
    let mut d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let mut w = d.listening(&["wait", "never-plugged"]);
    let mut e = d.listening(&["events"]);
    assert_eq!(d.stop(), 0);
    for (c, what) in [(&mut w, "wait"), (&mut e, "events")] {
        let status = c.finish();
        assert_eq!(status.code(), Some(3), "{what}: {}", c.stderr());
        assert!(
            c.stderr().contains("shutting down"),
            "{what}: {}",
            c.stderr()
        );
    }
}

/// On the socket: `wait` replies once, framed as any reply; a line sent meanwhile cancels
/// it and the session goes on.
#[test]
fn wait_on_the_socket_is_one_reply_and_a_line_cancels_it() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let mut s = d.session();
    let r = s.call("wait backup --json");
    assert_eq!(r.status, "+OK", "{r:?}");
    let v: Value = serde_json::from_str(&r.body[0]).unwrap();
    assert_eq!(v[0]["uuid"], BACKUP_UUID);
    let r = s.call("wait nothing --timeout 50ms");
    assert!(
        r.status.starts_with("-NOMATCH timed out after 50ms"),
        "{r:?}"
    );
    s.send(b"wait nothing-at-all --json\n");
    s.send(b"\n");
    let r = s.read_reply();
    assert!(r.status.starts_with("-NOMATCH wait cancelled"), "{r:?}");
    assert_eq!(r.body, vec!["[]"]);
    assert_eq!(s.call("status").status, "+OK");
    let r = s.call("wait x --timeout never");
    assert!(r.status.starts_with("-USAGE"), "{r:?}");
}

/// Read stream lines until one satisfies `done`; panics at the end of the stream.
fn read_until(s: &mut util::RawSession, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = s.read_line();
        assert_ne!(l, ".", "the stream ended: {seen:?}");
        let stop = done(&l);
        seen.push(l);
        if stop {
            return seen;
        }
    }
}

/// `events --json` on a session: a disk added then removed is `appeared` then `vanished`,
/// once each; re-announcing or rescanning an unchanged inventory says nothing.
#[test]
fn events_stream_appeared_then_vanished_and_nothing_on_a_reannounce() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let mut s = d.session();
    s.send(b"events --json\n");
    let head = s.read_line();
    assert!(head.starts_with("+OK"), "{head:?}");

    let ev = |l: &str| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    };
    set_disks(
        &d,
        &format!("{}{}", backup(), line("/dev/sdc1", NEW_UUID, "new disk")),
    );
    let seen = read_until(&mut s, |l| ev(l)["uuid"] == NEW_UUID);
    let first = ev(seen.last().unwrap());
    assert_eq!(seen.len(), 1, "only the new disk changed: {seen:?}");
    assert_eq!(first["event"], "appeared");
    assert_eq!(first["host"], "test-node");
    assert_eq!(first["label"], "new disk");
    assert_eq!(first["device"], "/dev/sdc1");
    assert_eq!(first["fstype"], "ext4");
    assert_eq!(first["mountpoints"], serde_json::json!([]));
    assert_eq!(first["local"], true);
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(first.get("addr").is_some(), "{first}");

    set_disks(&d, &backup());
    let seen = read_until(&mut s, |l| ev(l)["uuid"] == NEW_UUID);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(ev(&seen[0])["event"], "vanished");

    // Nothing changes: no event. The next line must be the marker disk's.
    d.client(&["announce"]).expect_code(0);
    d.client(&["refresh"]).expect_code(0);
    d.client(&["announce"]).expect_code(0);
    set_disks(
        &d,
        &format!("{}{}", backup(), line("/dev/sdd1", MARK_UUID, "marker")),
    );
    let next = ev(&s.read_line());
    assert_eq!(next["uuid"], MARK_UUID, "an event without a change: {next}");
    assert_eq!(next["event"], "appeared");

    // A line ends the stream; the session goes on.
    s.send(b"\n");
    let mut rest = 0;
    while s.read_line() != "." {
        rest += 1;
        assert!(rest < 100, "the stream did not end");
    }
    assert_eq!(s.call("status").status, "+OK");
}

/// `diskd events` prints readable lines (or NDJSON) as the fleet changes.
#[test]
fn diskd_events_prints_a_line_per_change() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let text = d.listening(&["events"]);
    let json = d.listening(&["events", "--json"]);
    set_disks(
        &d,
        &format!("{}{}", backup(), line("/dev/sdc1", NEW_UUID, "new disk")),
    );
    set_disks(&d, &backup());
    wait_for("appeared and vanished on both streams", LONG, || {
        text.lines().len() >= 2 && json.lines().len() >= 2
    });
    let t = text.lines();
    assert!(
        t[0].contains(" appeared  test-node /dev/sdc1 uuid=0a0a0a0a-")
            && t[0].contains(" label=\"new disk\" fstype=ext4")
            && t[0].ends_with(" (local)"),
        "{t:?}"
    );
    assert!(t[1].contains(" vanished  test-node /dev/sdc1 "), "{t:?}");
    let kinds: Vec<Value> = json.objects().iter().map(|o| o["event"].clone()).collect();
    assert_eq!(kinds, vec!["appeared", "vanished"]);
}

/// `--mounted`: a disk that is live but not mounted does not end the wait; its mount does.
/// A real ext4 image on a loop device, found by the real blkid and mounted in a temp dir.
#[test]
#[ignore = "needs root"]
fn wait_mounted_returns_when_the_disk_gets_a_mountpoint() {
    util::require_root();
    let mut fx = Loop::new();
    let uuid = fx.uuid.clone();
    let d = TestDaemon::new("")
        .real_blkid()
        .arg("--include-device")
        .arg(&fx.dev)
        .arg("--mount-interval")
        .arg("1s")
        .start();
    d.wait_query(&uuid);
    let mut w = d.listening(&["wait", &uuid, "--mounted", "--json", "--timeout", "5m"]);
    // Live, not mounted: still waiting (checked after a mount scan has run since).
    d.client(&["refresh"]).expect_code(0);
    assert!(
        w.running(),
        "returned for an unmounted disk: {:?}",
        w.lines()
    );
    let mnt = fx.mount();
    let status = w.finish();
    assert_eq!(status.code(), Some(0), "{}\n{}", w.stderr(), d.log_text());
    let v: Value = serde_json::from_str(&w.lines().join("\n")).unwrap();
    assert_eq!(v[0]["uuid"], uuid.as_str());
    assert_eq!(v[0]["mountpoints"], serde_json::json!([mnt]));
    assert_eq!(v[0]["live"], true);
}

/// An ext4 image on a loop device, unmounted and detached in `Drop`.
pub struct Loop {
    dir: tempfile::TempDir,
    pub dev: String,
    pub uuid: String,
    mounted: Option<String>,
}

impl Loop {
    pub fn new() -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("w.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 * 1024 * 1024))
            .unwrap();
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        let img = img.to_str().unwrap();
        util::system(
            "mkfs.ext4",
            &["-q", "-F", "-L", "diskd-wait", "-U", &uuid, img],
        );
        let dev = util::system("losetup", &["--find", "--show", img]);
        assert!(dev.starts_with("/dev/loop"), "{dev}");
        Loop {
            dir,
            dev,
            uuid,
            mounted: None,
        }
    }

    /// Mount it below the temp dir; returns the mountpoint as the mount table shows it.
    pub fn mount(&mut self) -> String {
        let root = std::fs::canonicalize(self.dir.path()).unwrap();
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mnt = mnt.to_str().unwrap().to_string();
        util::system("mount", &[&self.dev, &mnt]);
        self.mounted = Some(mnt.clone());
        mnt
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let ok = Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").args(["-l", &m]).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// In the REPL on a terminal (a pty from util-linux `script`): a `wait` that is answered
/// gives the prompt back by itself; one that is not is cancelled by Enter; `events`
/// streams until Enter. The session goes on after each.
#[test]
fn the_repl_waits_and_streams_until_enter() {
    let d = daemon(&backup());
    d.wait_query(BACKUP_UUID);
    let home = tempfile::tempdir().unwrap();
    let mut repl = util::Repl::spawn(&d.socket, home.path());
    repl.shows("diskd> ", 1);
    // Answered at once: the table, then the prompt, with no Enter.
    repl.type_in("wait backup\r");
    repl.shows("diskd> ", 2);
    assert!(repl.text().contains(" live "), "{}", repl.text());
    // Never answered: Enter cancels it.
    repl.type_in("wait never-plugged\r");
    // The second notice: an Enter typed before it could reach the line editor.
    repl.shows("(waiting; press Enter to cancel)", 2);
    repl.type_in("\r");
    repl.shows("diskd> ", 3);
    assert!(
        repl.text().contains("error: wait cancelled"),
        "{}",
        repl.text()
    );
    // A stream, with a change while it runs.
    let listeners = || util::counter(&d.status_json(), "event_listeners");
    let before = listeners();
    repl.type_in("events\r");
    repl.shows("(press Enter to stop)", 1);
    wait_for("the stream to be listening", LONG, || listeners() > before);
    set_disks(
        &d,
        &format!("{}{}", backup(), line("/dev/sdc1", NEW_UUID, "new disk")),
    );
    repl.shows(" appeared  test-node /dev/sdc1", 1);
    repl.type_in("\r");
    repl.shows("diskd> ", 4);
    repl.type_in("status\r");
    repl.shows("diskd> ", 5);
    let status = repl.finish(); // end of input: Ctrl-D at the prompt
    assert!(status.success(), "{}", repl.text());
    assert!(repl.text().contains("watcher    disks"), "{}", repl.text());
}
