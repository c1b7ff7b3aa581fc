//! The daemon as a whole, driven through its socket and its files: hostile blkid output,
//! hung/failing/missing blkid, persistence across SIGTERM and SIGKILL, the socket and store
//! start-up checks, many sessions, bad input, script mode and the config file.

use crate::util;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{RawSession, TestDaemon};

const LONG: Duration = Duration::from_secs(20);

// ---- fixtures ----

/// One disk as a fixture: what blkid reports and what diskd must give back.
#[derive(Debug, Clone)]
struct Disk {
    device: String,
    uuid: Option<String>,
    label: Option<String>,
    fstype: String,
}

fn disk(device: &str, uuid: Option<&str>, label: Option<&str>, fstype: &str) -> Disk {
    Disk {
        device: device.into(),
        uuid: uuid.map(Into::into),
        label: label.map(Into::into),
        fstype: fstype.into(),
    }
}

/// blkid's `safe_print` (util-linux, misc-utils/blkid.c): a byte >= 0x80 is written as `M-`
/// plus the byte minus 0x80, a control character as `^` plus the character xor 0x40 (with
/// no further escaping), and the characters of `esc` get a backslash. Checked against
/// blkid 2.38 on an ext4 image labelled `Fotos — Ü"\$x`.
fn blkid_escape(value: &str, esc: &str) -> String {
    let mut out = String::new();
    for &b in value.as_bytes() {
        let mut ch = b;
        if ch >= 0x80 {
            out.push_str("M-");
            ch -= 0x80;
        }
        if ch < 0x20 || ch == 0x7f {
            out.push('^');
            ch ^= 0x40;
        } else if esc.as_bytes().contains(&ch) {
            out.push('\\');
        }
        out.push(ch as char);
    }
    out
}

/// What `blkid` (default form) prints for these disks.
fn blkid_plain(disks: &[Disk]) -> String {
    let esc = "\"\\";
    let mut out = String::new();
    for d in disks {
        out.push_str(&format!("{}:", d.device));
        if let Some(l) = &d.label {
            out.push_str(&format!(" LABEL=\"{}\"", blkid_escape(l, esc)));
        }
        if let Some(u) = &d.uuid {
            out.push_str(&format!(" UUID=\"{}\"", blkid_escape(u, esc)));
        }
        out.push_str(&format!(
            " BLOCK_SIZE=\"4096\" TYPE=\"{}\" PARTUUID=\"0c5bd0b4-01\"\n",
            d.fstype
        ));
    }
    out
}

/// What `blkid -o export` prints for these disks.
fn blkid_export(disks: &[Disk]) -> String {
    let esc = " \\\"'$`<>";
    let mut out = String::new();
    for d in disks {
        out.push_str(&format!("DEVNAME={}\n", d.device));
        if let Some(l) = &d.label {
            out.push_str(&format!("LABEL={}\n", blkid_escape(l, esc)));
        }
        if let Some(u) = &d.uuid {
            out.push_str(&format!("UUID={}\n", blkid_escape(u, esc)));
        }
        out.push_str(&format!(
            "BLOCK_SIZE=4096\nTYPE={}\nPARTUUID=0c5bd0b4-01\n\n",
            d.fstype
        ));
    }
    out
}

const BACKUP_UUID: &str = "6fe176fb-83a0-4e4a-af6a-f578ca7a1f65";

fn backup_disk() -> Disk {
    disk("/dev/sdb1", Some(BACKUP_UUID), Some("backup"), "ext4")
}

/// The `n`th disk of a series, each with its own UUID, label and device.
fn nth_disk(n: usize) -> Disk {
    Disk {
        device: format!("/dev/sd{}1", (b'b' + n as u8) as char),
        uuid: Some(format!("{n:08x}-0000-4000-8000-00000000abcd")),
        label: Some(format!("round {n}")),
        fstype: "ext4".into(),
    }
}

/// Assert that a JSON disk is this fixture, label byte for byte.
fn assert_is(v: &Value, d: &Disk) {
    assert_eq!(v["device"], d.device.as_str(), "{v}");
    assert_eq!(v["uuid"].as_str(), d.uuid.as_deref(), "{v}");
    assert_eq!(v["label"].as_str(), d.label.as_deref(), "{v}");
    assert_eq!(v["fstype"], d.fstype.as_str(), "{v}");
    assert_eq!(v["host"], "test-node", "{v}");
}

/// `query TERM --json` must find exactly `d`; returns its JSON.
fn query_one(daemon: &TestDaemon, term: &str, d: &Disk) -> Value {
    let r = daemon.client(&["query", term, "--json"]);
    r.expect_code(0);
    let v = r.json();
    let all = v.as_array().expect("an array");
    assert_eq!(all.len(), 1, "query {term:?} gave {v}");
    assert_is(&all[0], d);
    all[0].clone()
}

/// Make every scan from now on hang: the fake blkid and a `sleep 1000` child of it, both
/// pids appended to the returned file (read it with `read_pids`).
fn hang_blkid(d: &TestDaemon) -> PathBuf {
    let pids = d.dir.path().join("hung.pids");
    util::script(
        &d.blkid,
        &format!(
            "echo $$ >> '{p}'\nsleep 1000 &\necho $! >> '{p}'\nwait",
            p = pids.display()
        ),
    );
    pids
}

fn read_pids(path: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only complete lines: the script may be writing the next one.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

// ---- 1. hostile labels ----

#[test]
fn hostile_labels_in_both_blkid_forms_are_found_exactly() {
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("pwned");
    let injection = format!(
        "$(touch {}); echo `touch {}`",
        canary.display(),
        canary.display()
    );
    let disks = vec![
        disk(
            "/dev/sdb1",
            Some(BACKUP_UUID),
            Some("my backup disk"),
            "ext4",
        ),
        disk(
            "/dev/sdc1",
            Some("0A1B-2C3D"),
            Some(r#"say "hi" \o/ C:\new"#),
            "vfat",
        ),
        disk(
            "/dev/sdd1",
            Some("3c1c2d2e-5b6a-4f70-9e8d-7c6b5a4f3e2d"),
            Some(&injection),
            "ext4",
        ),
        disk(
            "/dev/sde1",
            Some("5F2E-0001"),
            Some("Fotos 2024 — Ürlaub"),
            "exfat",
        ),
        disk(
            "/dev/sdf1",
            Some("b3a1c0de-0000-4000-8000-000000000005"),
            Some(" it's `odd`; <x> & $HOME "),
            "xfs",
        ),
        disk("/dev/mapper/vg-data", None, None, "LVM2_member"),
    ];

    for (form, output) in [
        ("plain", blkid_plain(&disks)),
        ("export", blkid_export(&disks)),
    ] {
        let d = TestDaemon::new(&output).start();
        d.wait_query("/dev/mapper/vg-data");
        for x in &disks {
            let what = format!("{form} form, {x:?}");
            if let Some(u) = &x.uuid {
                for term in [u.clone(), u.to_ascii_uppercase(), u.to_ascii_lowercase()] {
                    let v = query_one(&d, &term, x);
                    assert_eq!(v["live"], true, "{what}");
                }
            }
            if let Some(l) = &x.label {
                query_one(&d, l, x);
            }
            query_one(&d, &x.device, x);
        }
        // Labels match exactly: not by case, not by prefix, not trimmed.
        for near in [
            "fotos 2024 — ürlaub",
            "Fotos 2024",
            "it's `odd`; <x> & $HOME",
            "MY BACKUP DISK",
        ] {
            let r = d.client(&["query", near, "--json"]);
            r.expect_code(1);
            assert_eq!(r.json(), serde_json::json!([]), "{form}: {near:?}");
        }

        let r = d.client(&["list", "--json"]);
        r.expect_code(0);
        let listed = r.json();
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), disks.len(), "{form}: {listed:?}");
        for x in &disks {
            let v = listed
                .iter()
                .find(|v| v["device"] == x.device.as_str())
                .unwrap_or_else(|| panic!("{form}: {} not listed", x.device));
            assert_is(v, x);
        }

        // The table view shows them too, control characters and all escaped on one line.
        let r = d.client(&["list"]);
        r.expect_code(0);
        assert!(r.stdout().contains("Fotos 2024 — Ürlaub"), "{}", r.stdout());

        let h = d.disks_health();
        assert_eq!(h["state"], "ok", "{form}: {h}");
        assert_eq!(h["found"], disks.len(), "{form}: {h}");
    }
    assert!(!canary.exists(), "a label was executed");
}

// ---- 2. hung blkid ----

#[test]
fn hung_blkid_is_killed_and_queries_still_answer() {
    let mut d = TestDaemon::new(&blkid_plain(&[backup_disk()]))
        .arg("--disk-interval")
        .arg("1s")
        .arg("--disk-timeout")
        .arg("1s")
        .start();
    d.wait_query(BACKUP_UUID);
    let daemon_pid = d.pid() as i32;

    // From now on every scan hangs: the script and a child of it, both pids recorded.
    let pids = hang_blkid(&d);

    // A query sent while a scan hangs (its sleep is running before and after the reply)
    // is answered from the store. Scans time out every second or so, hence the retries.
    let mut s = d.session();
    let sleeping = |pids: &[i32]| -> Option<i32> {
        // Lines come in pairs: the script's pid, then its sleep's.
        let last_pair = (pids.len() / 2).checked_sub(1)?;
        let &pid = pids.get(last_pair * 2 + 1)?;
        util::running_with_argv(pid, &["sleep", "1000"]).then_some(pid)
    };
    util::wait_for("a query answered during a hung scan", LONG, || {
        let Some(sleep) = sleeping(&read_pids(&pids)) else {
            return false;
        };
        let r = s.call(&format!("where {BACKUP_UUID} --json"));
        assert!(r.status.starts_with("+OK"), "{r:?}");
        let v: Value = serde_json::from_str(&r.body[0]).unwrap();
        assert_is(&v[0], &backup_disk());
        assert_eq!(v[0]["live"], true, "{v}");
        util::running_with_argv(sleep, &["sleep", "1000"])
    });
    d.client(&["query", BACKUP_UUID]).expect_code(0);

    util::wait_for("status to report the timeout", LONG, || {
        let h = d.disks_health();
        h["failures"]["timed_out"].as_u64().unwrap_or(0) >= 1
    });
    let h = d.disks_health();
    assert_eq!(h["state"], "timed_out", "{h}");
    assert!(
        h["last_error"].as_str().unwrap_or("").contains("timed out"),
        "{h}"
    );

    // Back to a working blkid: once a scan succeeded, every hung process is gone, not
    // merely orphaned, and nothing under the daemon is still sleeping.
    util::fake_blkid(&d.blkid, &blkid_plain(&[backup_disk()]));
    util::wait_for("a good scan after the hangs", LONG, || {
        d.disks_health()["state"] == "ok"
    });
    let all = read_pids(&pids);
    assert!(all.len() >= 2, "{all:?}");
    util::wait_for("the killed blkid processes to be gone", LONG, || {
        all.chunks(2).all(|pair| {
            let sh_gone = !util::descendants(daemon_pid).contains(&pair[0]);
            let sleep_gone = pair
                .get(1)
                .is_none_or(|&p| !util::running_with_argv(p, &["sleep", "1000"]));
            sh_gone && sleep_gone
        })
    });
    let left: Vec<_> = util::descendants(daemon_pid)
        .into_iter()
        .filter(|&p| util::proc_argv(p).is_some_and(|a| a.iter().any(|w| w == "1000")))
        .collect();
    assert!(left.is_empty(), "still running under the daemon: {left:?}");
    assert!(
        d.exited().is_none(),
        "the daemon died; log:\n{}",
        d.log_text()
    );
}

// ---- 3. failing, missing and garbage-printing blkid ----

/// Start with a good blkid, break it with `break_it`, `refresh`: exit 3 with a message, the
/// disk is still there and live, and `status` names `reason`.
fn broken_blkid_keeps_the_inventory(break_it: impl FnOnce(&Path), reason: &str, detail: &str) {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    assert_eq!(d.disks_health()["state"], "ok");

    break_it(&d.blkid);
    let r = d.client(&["refresh"]);
    r.expect_code(3);
    assert!(
        r.stderr().contains("previous inventory is kept"),
        "{}",
        r.stderr()
    );
    let line = r
        .stdout()
        .lines()
        .find(|l| l.starts_with("disks:"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no disks line in {:?}", r.stdout()));
    assert!(
        line.contains("failed") && line.contains(detail),
        "{line:?} should say why ({detail})"
    );

    let v = query_one(&d, BACKUP_UUID, &backup_disk());
    assert_eq!(v["live"], true, "{v}");
    query_one(&d, "backup", &backup_disk());

    let h = d.disks_health();
    assert_eq!(h["state"], reason, "{h}");
    // At least the refresh's scan; a block uevent from another test's loop device (root
    // runs attach some in parallel) may have run one more with the broken blkid.
    assert!(h["failures"][reason].as_u64().unwrap_or(0) >= 1, "{h}");
    assert!(
        h["last_error"].as_str().unwrap_or("").contains(detail),
        "{h}"
    );
    assert_eq!(h["found"], 1, "the last good scan still counts: {h}");
}

#[test]
fn failing_blkid_keeps_the_previous_inventory() {
    broken_blkid_keeps_the_inventory(
        |blkid| {
            util::script(
                blkid,
                "echo 'blkid: /dev/sdz: Input/output error' >&2\nexit 1",
            )
        },
        "failed",
        "Input/output error",
    );
}

#[test]
fn missing_blkid_keeps_the_previous_inventory() {
    broken_blkid_keeps_the_inventory(
        |blkid| std::fs::remove_file(blkid).unwrap(),
        "not_found",
        "not found",
    );

    // Missing from the start: the daemon runs and says why it sees no disks.
    let d = TestDaemon::new("");
    std::fs::remove_file(&d.blkid).unwrap();
    let d = d.start();
    util::wait_for("status to report not_found", LONG, || {
        d.disks_health()["state"] == "not_found"
    });
    let h = d.disks_health();
    let err = h["last_error"].as_str().unwrap_or("");
    assert!(err.contains(&*d.blkid.to_string_lossy()), "{h}");
    d.client(&["list"]).expect_code(0);
}

#[test]
fn garbage_printing_blkid_keeps_the_previous_inventory() {
    broken_blkid_keeps_the_inventory(
        |blkid| {
            util::script(
                blkid,
                "echo 'this is not blkid output'\nprintf '\\001\\002\\377 = \"\\n;;;\\n'",
            )
        },
        "bad_output",
        "unusable output",
    );
}

// ---- 4. persistence across a clean restart ----

#[test]
fn inventory_and_node_id_survive_a_clean_restart() {
    let old = backup_disk();
    let new = nth_disk(7);
    let mut d = TestDaemon::new(&blkid_plain(std::slice::from_ref(&old))).start();
    d.wait_query(BACKUP_UUID);
    let id = d.node_id();
    assert_eq!(id.len(), 32, "{id}");

    assert_eq!(d.stop(), 0, "log:\n{}", d.log_text());
    assert!(
        std::fs::symlink_metadata(&d.socket).is_err(),
        "socket file left behind"
    );

    util::fake_blkid(&d.blkid, &blkid_plain(std::slice::from_ref(&new)));
    d.restart();
    // Answered from the store as soon as the socket is up, scan or no scan.
    let r = d.client(&["query", BACKUP_UUID, "--json"]);
    r.expect_code(0);
    assert_is(&r.json()[0], &old);

    // After the first scan: the old disk is a last known location, the new one live.
    d.wait_query(new.uuid.as_deref().unwrap());
    let v = query_one(&d, BACKUP_UUID, &old);
    assert_eq!(v["live"], false, "{v}");
    assert!(v["last_seen"].as_str().unwrap().ends_with('Z'), "{v}");
    let v = query_one(&d, "round 7", &new);
    assert_eq!(v["live"], true, "{v}");

    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    let all = r.json();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(
        all[0]["uuid"],
        new.uuid.as_deref().unwrap(),
        "live first: {all}"
    );
    assert_eq!(all[1]["uuid"], BACKUP_UUID, "{all}");

    assert_eq!(d.node_id(), id);
    assert_eq!(d.status_json()["node_id"], id.as_str());
}

/// How many starts of this daemon's log loaded the store from `source` ("the
/// warm-start image" or "the log").
fn loads_from(d: &TestDaemon, source: &str) -> usize {
    d.log_text()
        .matches(&format!("loaded from {source},"))
        .count()
}

/// The daemon's allocator runs with the binary's options (one arena) and its background
/// thread (which gives an idle daemon's freed pages back): were the exported symbol
/// misnamed or dropped by the linker, jemalloc would start with its defaults.
#[test]
fn the_allocator_runs_with_the_options_the_binary_carries() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()]))
        .env("RUST_LOG", "jemalloc=debug,info")
        .start();
    let tasks = PathBuf::from(format!("/proc/{}/task", d.pid()));
    let names: Vec<String> = std::fs::read_dir(&tasks)
        .expect("the daemon's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("jemalloc_bg")),
        "no jemalloc background thread among {names:?}"
    );
    let log = d.log_text();
    assert!(
        log.contains("allocator: jemalloc arenas=1 background_thread=true"),
        "{log}"
    );
}

#[test]
fn a_clean_stop_leaves_a_warm_start_image_that_the_next_start_reads() {
    let old = backup_disk();
    let mut d = TestDaemon::new(&blkid_plain(std::slice::from_ref(&old))).start();
    d.wait_query(BACKUP_UUID);
    let image = d.store.join("warm-start");
    assert_eq!(d.stop(), 0, "log:\n{}", d.log_text());
    assert!(
        image.is_file(),
        "no image after SIGTERM; log:\n{}",
        d.log_text()
    );

    // The next start reads it, answers from it before any scan, and removes it.
    util::fake_blkid(&d.blkid, "");
    d.restart();
    assert_eq!(
        loads_from(&d, "the warm-start image"),
        1,
        "{}",
        d.log_text()
    );
    assert!(!image.exists(), "an image is read once");
    let r = d.client(&["query", BACKUP_UUID, "--json"]);
    r.expect_code(0);
    assert_is(&r.json()[0], &old);

    // A kill -9 leaves none: the start after it walks the store, and finds the same.
    d.kill9();
    assert!(!image.exists());
    d.restart();
    assert_eq!(
        loads_from(&d, "the warm-start image"),
        1,
        "{}",
        d.log_text()
    );
    assert_eq!(loads_from(&d, "the log"), 2, "{}", d.log_text());
    let r = d.client(&["query", BACKUP_UUID, "--json"]);
    r.expect_code(0);
    assert_is(&r.json()[0], &old);
}

// ---- 5. kill -9 ----

/// Start the daemon and SIGKILL it the moment a query first shows `uuid`: the tightest
/// "queryable, then killed" there is (polling by hand, no client start-up in between).
fn kill_9_as_soon_as_queryable(d: &mut TestDaemon, uuid: &str) {
    d.spawn();
    let deadline = Instant::now() + LONG;
    // The previous daemon's socket file may still be there, with nobody behind it.
    while UnixStream::connect(&d.socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no socket; log:\n{}",
            d.log_text()
        );
        // Poll interval of a wait on the socket (as tight as it gets: the kill follows).
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut s = d.session();
    let line = format!("where {uuid}");
    while !s.call(&line).status.starts_with("+OK") {
        assert!(Instant::now() < deadline, "{uuid} never showed up");
    }
    d.kill9();
}

#[test]
fn kill_9_loses_nothing_that_was_queryable() {
    const ROUNDS: usize = 8;
    let mut d = TestDaemon::new(&blkid_plain(&[nth_disk(0)])).start();
    let id = d.node_id();
    d.kill9();
    for round in 0..ROUNDS {
        let x = nth_disk(round);
        util::fake_blkid(&d.blkid, &blkid_plain(std::slice::from_ref(&x)));
        kill_9_as_soon_as_queryable(&mut d, x.uuid.as_deref().unwrap());

        // A blkid that sees nothing: whatever is found now comes from the store.
        util::fake_blkid(&d.blkid, "");
        d.restart();
        assert_eq!(d.node_id(), id, "round {round}");
        for n in 0..=round {
            let x = nth_disk(n);
            let r = d.client(&["query", x.uuid.as_deref().unwrap(), "--json"]);
            r.expect_code(0);
            assert_is(&r.json()[0], &x);
        }
        d.kill9();
    }
    d.restart();
    util::wait_for("the first disk scan", LONG, || {
        d.disks_health()["scans_ok"].as_u64() >= Some(1)
    });
    for n in 0..ROUNDS {
        let x = nth_disk(n);
        let v = query_one(&d, x.label.as_deref().unwrap(), &x);
        assert_eq!(v["live"], false, "{v}");
    }
    assert_eq!(d.node_id(), id);
}

// ---- 6. the socket ----

#[test]
fn a_second_daemon_on_a_live_socket_is_refused() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    let mut other = TestDaemon::new("");
    other.socket = d.socket.clone();
    let (code, err) = other.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*d.socket.to_string_lossy()), "{err}");
    assert!(err.contains("live"), "{err}");
    // The first one is untouched.
    d.wait_query(BACKUP_UUID);
    d.client(&["status"]).expect_code(0);
}

/// A daemon whose backlog is full (stopped here with SIGSTOP, so it accepts nothing) still
/// serves its socket: a second daemon on the same path must leave it alone. Connecting
/// gives EAGAIN, not ECONNREFUSED: not stale.
#[test]
fn a_second_daemon_leaves_a_live_socket_with_a_full_backlog_alone() {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;

    /// Continues the stopped daemon however the test ends.
    struct Stopped(nix::unistd::Pid);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }

    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        hard.min(65_536),
        hard,
    )
    .unwrap();
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = Stopped(pid);
    util::wait_for("the daemon to stop", LONG, || {
        util::proc_stat(pid.as_raw()).is_some_and(|(state, _)| state == 'T')
    });
    // Fill its backlog: connections queue until the kernel says EAGAIN.
    let addr = UnixAddr::new(&d.socket).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => queued.push(fd),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect #{}: {e}", queued.len()),
        }
        assert!(queued.len() <= 65_536, "the backlog never filled");
    }

    let mut other = TestDaemon::new("");
    other.socket = d.socket.clone();
    let (code, err) = other.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*d.socket.to_string_lossy()), "{err}");
    assert!(err.contains("backlog is full"), "{err}");
    assert!(err.contains("not removing it"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        std::fs::symlink_metadata(&d.socket).is_ok(),
        "the live daemon's socket was removed"
    );

    // Let it go on: the queued clients leave, and it answers on the same socket.
    drop(queued);
    drop(stopped);
    d.client(&["status"]).expect_code(0);
    d.wait_query(BACKUP_UUID);
}

#[test]
fn a_stale_socket_is_taken_over() {
    let mut d = TestDaemon::new(&blkid_plain(&[backup_disk()]));
    drop(std::os::unix::net::UnixListener::bind(&d.socket).unwrap());
    assert!(UnixStream::connect(&d.socket).is_err(), "nobody listens");
    d.restart();
    d.wait_query(BACKUP_UUID);
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
    let d = TestDaemon::new("");
    std::fs::write(&d.socket, "precious\n").unwrap();
    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*d.socket.to_string_lossy()), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&d.socket).unwrap(), "precious\n");
}

#[test]
fn the_socket_is_private_and_needs_a_safe_directory() {
    let mut d = TestDaemon::new("").start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "socket mode {mode:o}");
    assert_eq!(d.stop(), 0);

    // World-writable without the sticky bit: anyone could swap the socket. Refused.
    let open = d.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut bad = TestDaemon::new("");
    bad.socket = open.join("sock");
    let (code, err) = bad.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*open.to_string_lossy()), "{err}");
    assert!(err.contains("writable by others"), "{err}");
    assert!(!bad.socket.exists());

    // With the sticky bit (like /tmp) only the owner can replace it: accepted.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut sticky = TestDaemon::new("");
    sticky.socket = open.join("sock");
    sticky.restart();
    let mode = std::fs::metadata(&sticky.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "socket mode {mode:o}");
    assert_eq!(sticky.stop(), 0);
}

// ---- 7. the store ----

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A store with one disk in it, written by a daemon that then stopped cleanly.
fn stopped_store_with_backup() -> TestDaemon {
    let mut d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    assert_eq!(d.stop(), 0);
    d
}

fn db_has_backup(db: &sled::Db) -> bool {
    // Schema 3: one value per host in tree `hosts` (records are postcard: strings as is).
    let hosts = db.open_tree("hosts").unwrap();
    let found = hosts
        .iter()
        .values()
        .any(|v| String::from_utf8_lossy(&v.unwrap()).contains(BACKUP_UUID));
    found
}

#[test]
fn a_store_in_use_is_refused() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    let mut other = TestDaemon::new("");
    other.store = d.store.clone();
    let (code, err) = other.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*d.store.to_string_lossy()), "{err}");
    assert!(err.contains("locked"), "{err}");
    assert!(!other.socket.exists(), "the refused daemon left a socket");
    d.wait_query(BACKUP_UUID);
}

#[test]
fn a_store_with_another_schema_is_refused_and_kept() {
    let mut d = stopped_store_with_backup();
    {
        let db = sled::open(&d.store).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", "99").unwrap();
        db.flush().unwrap();
    }
    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("schema"), "{err}");
    assert!(err.contains("99"), "{err}");
    assert!(err.contains(&*d.store.to_string_lossy()), "{err}");
    assert!(!d.socket.exists(), "the refused daemon left a socket");

    // Nothing was changed: the version is still 99 and the data is there.
    {
        let db = sled::open(&d.store).unwrap();
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(meta.get("schema_version").unwrap().unwrap(), b"99"[..]);
        meta.insert(
            "schema_version",
            diskd::store::SCHEMA_VERSION.to_string().as_bytes(),
        )
        .unwrap();
        db.flush().unwrap();
        // Checked on this handle: sled's threads may hold a dropped one for a moment, and
        // a second open in this process would find the store locked.
        assert!(db_has_backup(&db));
    }
    // Put back, the store is served again, disk and all.
    util::fake_blkid(&d.blkid, "");
    d.restart();
    query_one(&d, BACKUP_UUID, &backup_disk());
}

/// Deterministic garbage.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Overwrite the store files `which` selects with garbage: the daemon must refuse with
/// exit 2 and leave every file exactly as it was.
fn corrupt_store_is_refused(which: impl Fn(&Path) -> bool, seed: u64) {
    let d = stopped_store_with_backup();
    let files = snapshot(&d.store);
    let mut hit = 0;
    for (path, content) in &files {
        if which(path) {
            std::fs::write(path, garbage(content.len().max(64), seed + hit)).unwrap();
            hit += 1;
        }
    }
    assert!(hit > 0, "nothing to corrupt in {files:?}");
    let before = snapshot(&d.store);

    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&*d.store.to_string_lossy()), "{err}");
    assert!(
        err.contains("nothing was"),
        "should say it kept the data: {err}"
    );
    assert!(!d.socket.exists(), "the refused daemon left a socket");

    let after = snapshot(&d.store);
    for (path, content) in &before {
        let now = after
            .get(path)
            .unwrap_or_else(|| panic!("{} was deleted", path.display()));
        assert!(now == content, "{} was changed", path.display());
    }
}

#[test]
fn a_corrupt_store_is_refused_and_nothing_is_deleted() {
    let names = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    // Every file sled made (conf, db, any snapshot or blob).
    for seed in [1, 2, 3] {
        corrupt_store_is_refused(|_| true, seed);
    }
    // Only the data file: conf still says "a sled store lives here".
    for seed in [4, 5, 6] {
        corrupt_store_is_refused(|p| names(p) == "db", seed);
    }
}

// ---- 8. many sessions ----

#[test]
fn two_hundred_concurrent_sessions_and_an_idle_one() {
    const N: usize = 200;
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);

    // Connects and then neither reads nor writes, for the whole test.
    let idle = UnixStream::connect(&d.socket).unwrap();
    let sessions: Vec<RawSession> = (0..N).map(|_| RawSession::connect(&d.socket)).collect();
    let barrier = std::sync::Barrier::new(N);
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for mut s in sessions {
            let (barrier, ok) = (&barrier, &ok);
            scope.spawn(move || {
                let g = s.read_reply();
                assert!(g.status.starts_with("+OK"), "{g:?}");
                barrier.wait();
                let r = s.call(&format!("where {BACKUP_UUID} --json"));
                assert_eq!(r.status, "+OK", "{r:?}");
                assert_eq!(r.body.len(), 1, "{r:?}");
                let v: Value = serde_json::from_str(&r.body[0]).unwrap();
                assert_is(&v[0], &backup_disk());
                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    assert_eq!(ok.into_inner(), N);

    let st = d.status_json();
    assert_eq!(st["counters"]["sessions_refused"], 0, "{st}");
    d.client(&["query", BACKUP_UUID]).expect_code(0);
    drop(idle);
}

// ---- 9. bad input ----

#[test]
fn bad_input_gets_a_usage_reply_and_the_session_goes_on() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    let mut s = d.session();

    // 1 MiB without a newline, then the newline.
    s.send(&vec![b'x'; 1 << 20]);
    s.send(b"\n");
    let r = s.read_reply();
    assert!(r.status.starts_with("-USAGE"), "{r:?}");
    assert!(r.status.contains("4096"), "should name the limit: {r:?}");
    assert_eq!(s.call("status").status, "+OK");

    s.send(b"where \xff\xfe\xc3(\n");
    let r = s.read_reply();
    assert!(r.status.starts_with("-USAGE"), "{r:?}");
    assert!(r.status.contains("UTF-8"), "{r:?}");

    let r = s.call("frobnicate --now");
    assert!(r.status.starts_with("-USAGE"), "{r:?}");
    assert!(r.status.contains("frobnicate"), "{r:?}");

    let r = s.call("where \"backup");
    assert!(r.status.starts_with("-USAGE"), "{r:?}");
    assert!(r.status.contains("unterminated"), "{r:?}");

    let r = s.call("where");
    assert!(r.status.starts_with("-USAGE"), "{r:?}");

    let r = s.call("where backup --json");
    assert_eq!(r.status, "+OK", "{r:?}");
    let v: Value = serde_json::from_str(&r.body[0]).unwrap();
    assert_is(&v[0], &backup_disk());

    let st = d.status_json();
    assert!(
        st["counters"]["command_errors"].as_u64().unwrap() >= 5,
        "{st}"
    );
}

#[test]
fn debug_streams_scan_events_until_the_client_sends_a_line() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    let mut s = d.session();
    s.send(b"debug\n");
    let head = s.read_line();
    assert!(head.starts_with("+OK"), "{head:?}");

    d.client(&["refresh"]).expect_code(0);
    let mut seen = Vec::new();
    loop {
        let l = s.read_line();
        assert_ne!(l, ".", "stream ended early: {seen:?}");
        let done = l.contains(" scan: disks:");
        seen.push(l);
        if done {
            break;
        }
        assert!(seen.len() < 1000, "no disk scan event in {seen:?}");
    }

    s.send(b"stop\n");
    let mut rest = 0;
    while s.read_line() != "." {
        rest += 1;
        assert!(rest < 1000, "the stream did not end");
    }
    assert_eq!(s.call("status").status, "+OK");
}

// ---- 10. script mode ----

#[test]
fn script_mode_runs_every_line_and_exits_with_the_worst_code() {
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()])).start();
    d.wait_query(BACKUP_UUID);
    let sock = d.socket.to_string_lossy().into_owned();
    let r = util::run_diskd(&["--socket", &sock], Some("where backup\nfoo\nquit\n"));
    r.expect_code(2);
    let out = r.stdout();
    let header = out.lines().next().unwrap_or("");
    assert!(
        header.starts_with("HOST") && header.contains("LABEL"),
        "{out}"
    );
    assert!(out.contains(BACKUP_UUID) && out.contains("backup"), "{out}");
    assert!(r.stderr().contains("unknown command"), "{}", r.stderr());
    assert!(r.stderr().contains("foo"), "{}", r.stderr());
    assert!(
        !out.contains("unknown command"),
        "errors go to stderr: {out}"
    );
}

// ---- 11. the config file ----

#[test]
fn config_errors_stop_the_daemon_with_one_line_naming_the_key() {
    let cases = [
        ("multicast:\n  grop: 230.1.2.3\n", "grop"),
        ("wathcers: {}\n", "wathcers"),
        (
            "watchers:\n  disks:\n    interval: soon\n",
            "watchers.disks.interval",
        ),
        (
            "multicast:\n  announce_interval: 10 parsecs\n",
            "multicast.announce_interval",
        ),
    ];
    for (yaml, key) in cases {
        let d = TestDaemon::new("");
        let file = d.dir.path().join("diskd.yaml");
        std::fs::write(&file, yaml).unwrap();
        let d = d.arg("--config").arg(&file.to_string_lossy());
        let (code, err) = d.run_expect_exit_within(LONG);
        assert_eq!(code, 2, "{yaml:?}: {err}");
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{yaml:?}: not one line: {err:?}");
        assert!(
            lines[0].contains(key),
            "{yaml:?}: {err:?} should name {key}"
        );
        assert!(!d.socket.exists());
    }

    // The same for a flag.
    let d = TestDaemon::new("").arg("--disk-timeout").arg("soon");
    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("watchers.disks.timeout"), "{err}");
}

#[test]
fn gossip_without_keys_or_on_a_taken_port_stops_the_daemon_with_one_line() {
    // A seed without keys: gossip never runs unsealed.
    let d = TestDaemon::new("").arg("--seed").arg("198.18.9.9");
    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("gossip.seeds"), "{err}");
    assert!(err.contains("key"), "{err}");
    assert!(!d.socket.exists());

    // Keys, but the gossip port is taken: named at start, not retried forever.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = TestDaemon::new("");
    let key = d.dir.path().join("fleet.key");
    util::run_diskd(&["keygen", &key.to_string_lossy()], None).expect_code(0);
    let d = d
        .arg("--key-file")
        .arg(&key.to_string_lossy())
        .arg("--gossip-listen")
        .arg(&format!("127.0.0.1:{port}"));
    let (code, err) = d.run_expect_exit_within(LONG);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gossip.listen 127.0.0.1:"), "{err}");
    assert!(!d.socket.exists());
}

#[test]
fn flags_win_over_the_config_file() {
    let yaml = "node_name: from-file\nwatchers:\n  disks:\n    interval: 7s\n";
    let d = TestDaemon::new(&blkid_plain(&[backup_disk()]));
    let file = d.dir.path().join("diskd.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.to_string_lossy().into_owned();

    // The harness passes --node-name test-node: the flag wins, the rest of the file holds.
    let mut d = d.arg("--config").arg(&file).start();
    assert_eq!(node_name(&d), "test-node");
    assert_eq!(d.disks_health()["interval"], "7s");
    assert_eq!(d.stop(), 0);

    // Without the flag the file's name is used.
    let i = d.args.iter().position(|a| a == "--node-name").unwrap();
    d.args.drain(i..i + 2);
    d.restart();
    assert_eq!(node_name(&d), "from-file");
    assert_eq!(d.status_json()["node"], "from-file");
}

fn node_name(d: &TestDaemon) -> String {
    let r = d.session().call("localhost --json");
    assert_eq!(r.status, "+OK", "{r:?}");
    let v: Value = serde_json::from_str(&r.body[0]).unwrap();
    v["node"].as_str().unwrap().to_string()
}

// ---- 11. shutdown ----

#[test]
fn sigterm_during_a_hung_scan_stops_at_once_and_kills_blkid() {
    // The scan may run for a minute before the daemon's own timeout would stop it.
    let disk_timeout = Duration::from_secs(60);
    let mut d = TestDaemon::new(&blkid_plain(&[backup_disk()]))
        .arg("--disk-timeout")
        .arg(&format!("{}s", disk_timeout.as_secs()))
        .start();
    d.wait_query(BACKUP_UUID);
    let daemon_pid = d.pid() as i32;

    // Every scan from now on hangs; `refresh` starts one (and waits for it, so it is sent
    // from a thread of its own).
    let pids = hang_blkid(&d);
    let socket = d.socket.to_string_lossy().into_owned();
    let refresher =
        std::thread::spawn(move || util::run_diskd(&["--socket", &socket, "refresh"], None));
    util::wait_for("a hung scan", LONG, || {
        read_pids(&pids).len() >= 2 && d.disks_health()["running_since"].is_string()
    });
    let hung = read_pids(&pids);

    let started = Instant::now();
    assert_eq!(d.stop(), 0, "log:\n{}", d.log_text());
    let took = started.elapsed();
    // Every task stopped on the signal itself: the drain deadline (after which the daemon
    // warns and exits anyway) was never reached.
    let log = d.log_text();
    assert!(!log.contains("did not stop within"), "{log}");
    // So it stopped far below the scan's own timeout (generous: CI machines are loaded).
    assert!(
        took < disk_timeout / 20,
        "took {took:?} with a hung scan; log:\n{log}"
    );
    assert!(!d.socket.exists(), "the socket was not removed");
    for &pid in &hung {
        util::wait_for("the hung blkid to be killed", LONG, || {
            !util::running_with_argv(pid, &["sleep", "1000"])
                && !util::descendants(daemon_pid).contains(&pid)
        });
    }
    // The client waiting for the refresh got an answer or an error, never a hang.
    let r = refresher.join().unwrap();
    assert_ne!(
        r.code(),
        0,
        "a refresh cut short by shutdown cannot succeed: {}",
        r.stderr()
    );
}

// ---- 12. store schema 4: history, conversion of schema-2 and schema-3 stores, kill -9 mid-write ----

#[test]
fn history_shows_each_stay_newest_first() {
    let first = backup_disk();
    let mut moved = backup_disk();
    moved.device = "/dev/sdc1".into();
    let d = TestDaemon::new(&blkid_plain(std::slice::from_ref(&first))).start();
    d.wait_query(BACKUP_UUID);
    // A deliberate wait for time to pass: the first stay lasts over a second (the JSON's
    // times are whole seconds, and the order of the two stays is checked on them), then
    // the disk moves to another device.
    std::thread::sleep(Duration::from_millis(1100));
    util::fake_blkid(&d.blkid, &blkid_plain(std::slice::from_ref(&moved)));
    d.client(&["refresh"]).expect_code(0);
    d.wait_query("/dev/sdc1");

    let r = d.client(&["history", &BACKUP_UUID.to_ascii_uppercase(), "--json"]);
    r.expect_code(0);
    let v = r.json();
    let stays = v.as_array().expect("an array");
    assert_eq!(stays.len(), 2, "{v}");
    let keys: Vec<&str> = stays[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "host",
        "addr",
        "device",
        "label",
        "first_seen",
        "last_seen",
        "live",
    ] {
        assert!(keys.contains(&k), "{k} missing: {v}");
    }
    assert_eq!(stays[0]["device"], "/dev/sdc1", "newest first: {v}");
    assert_eq!(stays[0]["live"], true, "{v}");
    assert_eq!(stays[1]["device"], "/dev/sdb1", "{v}");
    assert_eq!(stays[1]["live"], false, "{v}");
    assert_eq!(stays[0]["host"], "test-node", "{v}");
    assert_eq!(stays[1]["label"], "backup", "{v}");
    let t = |x: &Value, k: &str| x[k].as_str().unwrap().to_string();
    assert!(t(&stays[0], "first_seen").ends_with('Z'), "{v}");
    assert!(
        t(&stays[1], "first_seen") < t(&stays[0], "first_seen"),
        "{v}"
    );
    assert!(
        t(&stays[1], "last_seen") <= t(&stays[0], "first_seen"),
        "{v}"
    );

    // The old device path finds the disk too; a table without --json.
    let r = d.client(&["history", "/dev/sdb1"]);
    r.expect_code(0);
    let out = r.stdout();
    assert!(out.contains("FIRST SEEN"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    // Nothing known: no match, exit 1.
    let r = d.client(&["history", "no-such-disk", "--json"]);
    r.expect_code(1);
    assert_eq!(r.stdout().trim(), "[]");
    let mut s = d.session();
    assert!(s
        .call("history no-such-disk")
        .status
        .starts_with("-NOMATCH"));
}

/// Copy the sled files of a fixture store (`tests/fixtures/NAME`, written by an earlier
/// release) into `store`.
fn copy_fixture(name: &str, store: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "conf" || name == "db" || name.starts_with("snap.") {
            std::fs::copy(e.path(), store.join(&name)).unwrap();
        }
    }
}

#[test]
fn a_schema_2_store_is_converted_at_start() {
    // A blkid that never answers: everything shown comes from the converted store.
    let mut d = TestDaemon::new("");
    util::script(&d.blkid, "sleep 600");
    copy_fixture("store-v2", &d.store);
    let mut d = {
        d.spawn();
        d.wait_ready();
        d
    };
    assert_eq!(d.node_id(), "07964bbb2408b9270cc78230daa887cc");
    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    let all = r.json();
    assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
    let (code, v) = d.query_json("my \"big\" disk 2");
    assert_eq!(code, 0);
    assert_eq!(v[0]["live"], false, "{v}");
    assert_eq!(v[0]["last_seen"], "2026-11-26T10:18:08Z", "{v}");
    assert_eq!(v[0]["host"], "fixture-a", "{v}");
    let (code, v) = d.query_json("/dev/sdd1");
    assert_eq!(code, 0);
    assert_eq!(v[0]["host"], "fixture-b", "{v}");
    let r = d.client(&["list", "fixture-b", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = d.client(&["peers", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()[0]["node"], "fixture-b");
    let status = d.status_json();
    assert!(status["store_records"].as_u64().unwrap() >= 7, "{status}");
    assert_eq!(d.stop(), 0);
    let db = sled::open(&d.store).unwrap();
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap(),
        diskd::store::SCHEMA_VERSION.to_string().as_bytes()
    );
}

#[test]
fn a_schema_3_store_is_converted_at_start() {
    // A blkid that never answers: everything shown comes from the converted store.
    let mut d = TestDaemon::new("");
    util::script(&d.blkid, "sleep 600");
    copy_fixture("store-v3", &d.store);
    let mut d = {
        d.spawn();
        d.wait_ready();
        d
    };
    assert_eq!(d.node_id(), "e9570b22aa8ac2c1c200563a4cced0c4");
    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    let all = r.json();
    assert_eq!(all.as_array().unwrap().len(), 6, "{all}");
    for x in all.as_array().unwrap() {
        assert!(x["serial"].is_null() && x["wwn"].is_null(), "{x}");
    }
    let (code, v) = d.query_json("my \"big\" disk 3");
    assert_eq!(code, 0);
    assert_eq!(v[0]["live"], false, "{v}");
    assert_eq!(v[0]["host"], "fixture-a", "{v}");
    let (code, v) = d.query_json("no uuid 'here'");
    assert_eq!(code, 0);
    assert_eq!(v[0]["host"], "fixture-b", "{v}");
    let r = d.client(&["history", "moving disk", "--json"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["device"], "/dev/sdg1", "{v}");
    assert_eq!(v[1]["device"], "/dev/sdf1", "{v}");
    let r = d.client(&["peers", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()[0]["node"], "fixture-b");
    assert_eq!(d.stop(), 0);
    let db = sled::open(&d.store).unwrap();
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap(),
        diskd::store::SCHEMA_VERSION.to_string().as_bytes()
    );
}

/// `n` disks of generation `gen`, each with its own UUID, label and device.
fn generation(gen: usize, n: usize) -> Vec<Disk> {
    (0..n)
        .map(|i| Disk {
            device: format!("/dev/disk/by-id/gen{gen}-disk{i:05}"),
            uuid: Some(format!("{gen:08x}-{i:04x}-4000-8000-00000000abcd")),
            label: Some(format!("gen {gen} disk {i}")),
            fstype: "ext4".into(),
        })
        .collect()
}

/// For each generation of host `node`'s disks on daemon `d`: (live, known) counts.
fn by_generation(d: &TestDaemon, node: &str) -> BTreeMap<usize, (usize, usize)> {
    let r = d.client(&["list", node, "--json"]);
    let mut out: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    if r.code() == 1 {
        return out; // nothing known of that host
    }
    r.expect_code(0);
    for x in r.json().as_array().unwrap() {
        let label = x["label"].as_str().unwrap();
        let gen: usize = label.split(' ').nth(1).unwrap().parse().unwrap();
        let e = out.entry(gen).or_default();
        e.0 += usize::from(x["live"] == true);
        e.1 += 1;
    }
    out
}

/// A peer announces a large inventory (one write of one host value on the receiver); the
/// receiver is killed at various moments while it arrives. After a restart, every
/// generation of that host is whole or absent, and exactly one is live, whole.
#[test]
fn kill_9_during_a_large_peer_inventory_leaves_it_whole_or_absent() {
    // Eight generations (the first and seven rounds) stay known as last-known disks: all
    // must fit under the per-host cap, or the oldest are (rightly) forgotten part-way.
    const N: usize = diskd::store::MAX_ABSENT_PER_HOST / 8;
    let net = util::local_only_multicast("receiver");
    let mut sender_args = net.clone();
    sender_args[1] = "sender".into();
    let mut receiver = TestDaemon::new("");
    receiver.args.splice(..net.len(), net);
    let mut receiver = receiver.arg("--peer-expiry").arg("600s").start();
    let mut sender = TestDaemon::new(&blkid_plain(&generation(1, N)));
    sender.args.splice(..sender_args.len(), sender_args);
    let mut sender = sender.start();
    let has = |d: &TestDaemon, gen: usize| by_generation(d, "sender").get(&gen) == Some(&(N, N));
    util::wait_for("the first generation on the receiver", LONG, || {
        has(&receiver, 1)
    });
    for (round, delay_ms) in [0u64, 120, 160, 200, 240, 300, 1000]
        .into_iter()
        .enumerate()
    {
        let gen = round + 2;
        util::fake_blkid(&sender.blkid, &blkid_plain(&generation(gen, N)));
        sender.client(&["refresh"]).expect_code(0);
        // A deliberate wait for time to pass: the kill lands at this point of the transfer.
        std::thread::sleep(Duration::from_millis(delay_ms));
        receiver.kill9();
        // Nothing more arrives while the receiver restarts.
        sender.kill9();
        receiver.restart();
        let seen = by_generation(&receiver, "sender");
        eprintln!("round {round} (killed {delay_ms} ms after the refresh): {seen:?}");
        for (g, (live, known)) in &seen {
            assert!(
                *known == N && (*live == 0 || *live == N),
                "round {round}: generation {g} is half there: {seen:?}"
            );
        }
        let live: Vec<usize> = seen
            .iter()
            .filter(|(_, c)| c.0 == N)
            .map(|(g, _)| *g)
            .collect();
        assert!(
            live == [gen] || live == [gen - 1],
            "round {round}: live generations {live:?}: {seen:?}"
        );
        sender.restart();
        util::wait_for("the receiver has the latest generation", LONG, || {
            has(&receiver, gen)
        });
    }
}

/// Datagrams of a fleet of `peers` made-up hosts with `disks` disks each (one chunk per
/// host, unsealed), as the peer layer would receive them on first contact.
fn fleet_datagrams(peers: usize, disks: usize) -> Vec<Vec<u8>> {
    use diskd::peer::wire::{encode, Body, Chunk, Envelope};
    (0..peers)
        .map(|p| {
            encode(&Envelope {
                node_id: format!("{:032x}", 0x000f_1ee7_0000_0000_u64 + p as u64),
                node: format!("fleet-{p:05}"),
                boot: 1,
                seq: 1,
                sent_ms: diskd::model::now_millis(),
                body: Body::Inventory(Chunk {
                    generation: 1,
                    index: 0,
                    count: 1,
                    total: disks as u32,
                    disks: (0..disks)
                        .map(|d| diskd::model::DiskRecord {
                            probe: Default::default(),
                            uuid: Some(format!("{p:08x}-{d:04x}-4000-8000-0000f1ee7000")),
                            label: Some(format!("fleet {p} disk {d}")),
                            device: format!("/dev/disk/by-id/fleet-{p:05}-{d:02}"),
                            fstype: Some("ext4".into()),
                            mountpoints: vec![],
                            hardware: Default::default(),
                            health: None,
                            fs: None,
                        })
                        .collect(),
                }),
            })
        })
        .collect()
}

/// Send datagrams to the group and port of `net` (flags from `util::local_only_multicast`)
/// on the loopback interface, TTL 0: they never leave this machine. Paced, so a receiver
/// without a large socket buffer keeps up.
fn send_on_loopback(net: &[String], datagrams: &[Vec<u8>]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let value = |flag: &str| {
        let i = net.iter().position(|a| a == flag).unwrap();
        net[i + 1].clone()
    };
    let group: std::net::Ipv4Addr = value("--group").parse().unwrap();
    let port: u16 = value("--port").parse().unwrap();
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_multicast_if_v4(&std::net::Ipv4Addr::LOCALHOST)
        .unwrap();
    s.set_multicast_ttl_v4(0).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    let to = std::net::SocketAddr::from((group, port)).into();
    for (i, d) in datagrams.iter().enumerate() {
        if i % 64 == 63 {
            // Pacing of the load: the receiver's socket buffer is not what is tested.
            std::thread::sleep(Duration::from_millis(2));
        }
        s.send_to(d, &to).unwrap();
    }
}

/// For each fleet host on `d`: how many of its disks are known.
fn fleet_hosts(d: &TestDaemon) -> BTreeMap<String, usize> {
    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for x in r.json().as_array().unwrap() {
        let host = x["host"].as_str().unwrap();
        if host.starts_with("fleet-") {
            *out.entry(host.to_string()).or_default() += 1;
        }
    }
    out
}

/// The issue's first contact: 4,000 hosts x 16 disks (64,000 records) arriving at once. The
/// daemon is killed (-9) in the middle of it; after a restart every host it stored is
/// complete, none half-written; sent again, the whole fleet is there.
#[test]
fn kill_9_in_the_middle_of_a_64000_record_first_contact_leaves_no_host_half_written() {
    const PEERS: usize = 4000;
    const DISKS: usize = 16;
    let net = util::local_only_multicast("receiver");
    let mut d = TestDaemon::new("");
    d.args.splice(..net.len(), net.clone());
    let mut d = d.arg("--peer-expiry").arg("600s").start();
    let fleet = fleet_datagrams(PEERS, DISKS);
    let sender = {
        let (net, fleet) = (net.clone(), fleet.clone());
        std::thread::spawn(move || send_on_loopback(&net, &fleet))
    };
    // In the middle: some hosts have arrived, not all.
    util::wait_for("a part of the fleet", LONG, || {
        let n = d.status_json()["peers"].as_u64().unwrap_or(0) as usize;
        n >= PEERS / 10
    });
    d.kill9();
    sender.join().unwrap();
    d.restart();
    let stored = fleet_hosts(&d);
    let half: Vec<_> = stored.iter().filter(|(_, n)| **n != DISKS).collect();
    assert!(half.is_empty(), "half-written hosts: {half:?}");
    eprintln!(
        "{} of {PEERS} hosts were stored before the kill",
        stored.len()
    );
    // The fleet again (it announces again after a restart): every host, whole.
    util::wait_for("the whole fleet", Duration::from_secs(60), || {
        send_on_loopback(&net, &fleet);
        let hosts = fleet_hosts(&d);
        hosts.len() == PEERS && hosts.values().all(|n| *n == DISKS)
    });
}
