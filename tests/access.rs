//! Who may use the control socket: a `socket_group` socket (mode 0660) serves its members
//! the read-only commands, the commands that change something need root, the daemon's
//! user or `control.admin_group`; and the log as JSON lines for log shippers.
//!
//! The access tests need root (they make throw-away users and groups, removed in `Drop`
//! even when a test fails): `#[ignore = "needs root"]`.

use crate::util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use util::TestDaemon;

const UUID: &str = "6fe176fb-83a0-4e4a-af6a-f578ca7a1f65";

fn blkid() -> String {
    format!("/dev/sdb1: UUID=\"{UUID}\" LABEL=\"backup\" TYPE=\"ext4\"\n")
}

/// Throw-away groups and users (names unique to this test process), deleted in `Drop`.
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    fn new() -> Accounts {
        Accounts {
            users: Vec::new(),
            groups: Vec::new(),
        }
    }

    fn group(&mut self, tag: &str) -> String {
        let name = format!("dk{tag}{}", std::process::id());
        util::system("groupadd", &["--system", &name]);
        self.groups.push(name.clone());
        name
    }

    /// A user with no home and no login, a member of `groups`.
    fn user(&mut self, tag: &str, groups: &[&str]) -> String {
        let name = format!("dk{tag}{}", std::process::id());
        let mut args = vec![
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        util::system("useradd", &args);
        self.users.push(name.clone());
        name
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).status();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).status();
        }
    }
}

/// `diskd --socket SOCKET ARGS...` run as `user` (with its groups); exit code and output.
fn as_user(user: &str, socket: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(util::bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("DISKD_SOCKET")
        .env_remove("DISKD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("runuser");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A daemon whose directory others may enter (the socket's mode is what guards it).
fn daemon(args: &[&str]) -> TestDaemon {
    let mut d = TestDaemon::new(&blkid());
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for a in args {
        d = d.arg(a);
    }
    d.start()
}

#[test]
#[ignore = "needs root"]
fn group_members_read_and_only_admins_change_things() {
    util::require_root();
    let mut acc = Accounts::new();
    let readers = acc.group("r");
    let ops = acc.group("o");
    let member = acc.user("m", &[&readers]);
    let operator = acc.user("p", &[&readers, &ops]);
    let stranger = acc.user("s", &[]);

    let d = daemon(&["--socket-group", &readers, "--admin-group", &ops]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = nix::unistd::Group::from_name(&readers)
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.gid(), gid.as_raw());

    // A member of the socket's group reads...
    for args in [
        &["query", UUID, "--json"][..],
        &["list", "--json"],
        &["status", "--json"],
        &["peers"],
        &["localhost"],
        &["history", UUID],
    ] {
        let (code, out) = as_user(&member, &d.socket, args);
        assert_eq!(code, 0, "{args:?} as a member: {out}");
    }
    let (code, out) = as_user(&member, &d.socket, &["query", UUID, "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("backup"), "{out}");
    // ...but changes nothing and sees no debug feed: refused, naming what it needs.
    for cmd in ["refresh", "announce", "ping", "debug"] {
        let (code, out) = as_user(&member, &d.socket, &[cmd]);
        assert_eq!(code, 1, "{cmd} as a member: {out}");
        assert!(
            out.contains(&format!(
                "{cmd} needs root or membership in group \"{ops}\""
            )),
            "{cmd}: {out}"
        );
    }
    let (code, out) = as_user(&member, &d.socket, &["mount", UUID]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mount needs root"), "{out}");
    // A member of the admin group may.
    let (code, out) = as_user(&operator, &d.socket, &["refresh"]);
    assert_eq!(code, 0, "refresh as an operator: {out}");
    // Root may, without being in any group.
    d.client(&["refresh"]).expect_code(0);
    // Anyone else cannot even connect.
    let (code, out) = as_user(&stranger, &d.socket, &["list"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("ermission denied"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn without_an_admin_group_only_root_changes_things_and_without_a_group_nobody_else_connects() {
    util::require_root();
    let mut acc = Accounts::new();
    let readers = acc.group("q");
    let member = acc.user("n", &[&readers]);

    let d = daemon(&["--socket-group", &readers]);
    let (code, out) = as_user(&member, &d.socket, &["list"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = as_user(&member, &d.socket, &["ping"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ping needs root or the daemon's user (control.admin_group is not set)"),
        "{out}"
    );
    drop(d);

    // The default: mode 0600, the group means nothing.
    let d = daemon(&[]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (code, out) = as_user(&member, &d.socket, &["list"]);
    assert_eq!(code, 3, "{out}");
}

#[test]
fn an_unknown_group_or_log_format_stops_the_daemon_with_one_line() {
    for (args, key) in [
        (
            &["--socket-group", "no-such-group-diskd"][..],
            "socket_group: no group named \"no-such-group-diskd\"",
        ),
        (
            &["--admin-group", "no-such-group-diskd"],
            "control.admin_group: no group named",
        ),
        (
            &["--log-format", "xml"],
            "log.format: \"xml\" is not a log format",
        ),
    ] {
        let mut d = TestDaemon::new("");
        for a in args {
            d = d.arg(a);
        }
        let (code, stderr) = d.run_expect_exit();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_expected_keys() {
    let mut d = TestDaemon::new(&blkid())
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "diskd=debug,info")
        .start();
    d.client(&["refresh"]).expect_code(0);
    d.client(&["query", "backup"]).expect_code(0);
    d.stop();
    let text = d.log_text();
    let mut lines = 0;
    let mut with_fields = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nwhole log:\n{text}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key:?} in {line}");
        }
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{line}"
        );
        // Structured fields sit beside the message (the start line names the node).
        if v.get("node").is_some() || v.get("watcher").is_some() {
            with_fields += 1;
        }
        lines += 1;
    }
    assert!(lines >= 3, "{text}");
    assert!(with_fields >= 1, "no structured field in:\n{text}");
    assert!(
        text.contains("\"message\":\"diskd 0.1.0"),
        "the start line: {text}"
    );
}

/// Opens N sessions on a socket, one after the other, reads each one's first line, and
/// prints how many were greeted, how many refused (and the first refusal's line); then
/// holds them all until its stdin closes.
const HOLDER: &str = r#"
import resource, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, greeted, refused, first_refusal, other = [], 0, 0, "", []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    f = s.makefile("rb")
    line = f.readline().decode().rstrip("\n")
    if line.startswith("+OK"):
        greeted += 1
    elif line.startswith("-ERR"):
        refused += 1
        first_refusal = first_refusal or line
    else:
        other.append(line)
    held.append((s, f))
print("greeted", greeted)
print("refused", refused)
print("refusal", first_refusal)
print("other", repr(other))
print("holding", flush=True)
sys.stdin.read()
"#;

/// The helper above, run as `user` (its own groups, no PAM), holding `n` sessions.
struct Holder {
    child: std::process::Child,
    lines: Vec<String>,
}

impl Holder {
    fn start(user: &str, socket: &Path, n: usize) -> Holder {
        use std::io::BufRead;
        let mut child = Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .args(["/usr/bin/python3", "-c", HOLDER])
            .arg(socket)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("setpriv python3");
        let out = child.stdout.take().expect("stdout");
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("the helper's output");
            if line == "holding" {
                return Holder { child, lines };
            }
            lines.push(line);
        }
        let status = child.wait();
        panic!("the helper ended before holding its sessions ({status:?}): {lines:?}");
    }

    /// The value after `key` in the helper's report.
    fn get(&self, key: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key:?} in {:?}", self.lines))
            .to_string()
    }

    fn count(&self, key: &str) -> usize {
        self.get(key).parse().expect("a count")
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its stdin ends it (its sessions with it); kill only if it does not.
        drop(self.child.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                // Poll interval of a wait on a real condition (the helper's exit).
                std::thread::sleep(std::time::Duration::from_millis(20)); // poll interval
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Root's `status` on a fresh session: its greeting, then the reply. Returns the reply's
/// lines. What is asserted is that root is admitted and answered while the table is held;
/// how fast is printed (speed is measured by benchmarks, not asserted here), and a read
/// waits up to `limit` before the test fails.
fn root_status(socket: &Path, limit: std::time::Duration) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let start = std::time::Instant::now();
    let s = std::os::unix::net::UnixStream::connect(socket).expect("root connects");
    s.set_read_timeout(Some(limit)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let read_reply = |r: &mut BufReader<std::os::unix::net::UnixStream>| {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l)
                .unwrap_or_else(|e| panic!("root's session, after {:?}: {e}", start.elapsed()));
            assert!(!l.is_empty(), "the daemon closed root's session: {lines:?}");
            let l = l.trim_end_matches('\n').to_string();
            if l == "." {
                return lines;
            }
            lines.push(l);
        }
    };
    let greeting = read_reply(&mut r);
    assert!(
        greeting[0].starts_with("+OK"),
        "root's greeting: {greeting:?}"
    );
    w.write_all(b"status --json\n").unwrap();
    let reply = read_reply(&mut r);
    assert_eq!(reply[0], "+OK", "{reply:?}");
    eprintln!("root's status answered in {:?}", start.elapsed());
    reply
}

fn refused_for(status: &serde_json::Value, reason: &str) -> u64 {
    status["counters"]["sessions_refused_by_reason"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root"]
fn one_user_holding_two_thousand_sessions_gets_its_share_and_root_still_gets_status() {
    use std::time::Duration;
    util::require_root();
    raise_fd_limit();
    let mut acc = Accounts::new();
    let readers = acc.group("h");
    let hog = acc.user("g", &[&readers]);
    let d = daemon(&["--socket-group", &readers]);

    let holder = Holder::start(&hog, &d.socket, 2000);
    let uid = nix::unistd::User::from_name(&hog).unwrap().unwrap().uid;
    assert_eq!(holder.count("greeted"), 32, "{:?}", holder.lines);
    assert_eq!(holder.count("refused"), 2000 - 32, "{:?}", holder.lines);
    assert_eq!(
        holder.get("refusal"),
        format!(
            "-ERR too many sessions for uid {uid} (control.max_sessions_per_user: 32); close some"
        )
    );
    assert_eq!(holder.get("other"), "[]");

    let reply = root_status(&d.socket, Duration::from_secs(20));
    let st: serde_json::Value = serde_json::from_str(&reply[1..].join("\n")).unwrap();
    assert_eq!(util::counter(&st, "sessions_refused"), 1968, "{st}");
    assert_eq!(refused_for(&st, "user_share"), 1968, "{st}");
    assert_eq!(refused_for(&st, "table_full"), 0, "{st}");
    // The hog's 32 and root's own.
    assert_eq!(util::counter(&st, "sessions_open"), 33, "{st}");
    // Its client, too, is told why, in one line (exit 3: no session).
    let (code, out) = as_user(&hog, &d.socket, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("refused the session: too many sessions for uid"),
        "{out}"
    );
    // Another member is not held to the hog's share.
    let other = acc.user("k", &[&readers]);
    let (code, out) = as_user(&other, &d.socket, &["list"]);
    assert_eq!(code, 0, "{out}");

    drop(holder);
    util::wait_for("the hog's sessions to end", Duration::from_secs(20), || {
        util::counter(&d.status_json(), "sessions_open") <= 1
    });
    // Its share is whole again.
    let (code, out) = as_user(&hog, &d.socket, &["list"]);
    assert_eq!(code, 0, "{out}");
}

/// With a share as large as the table, one user fills what users may: the reserve is
/// still root's.
#[test]
#[ignore = "needs root"]
fn users_filling_the_table_leave_the_reserve_to_root() {
    use diskd::control::server::{MAX_SESSIONS, RESERVED_SESSIONS};
    use std::time::Duration;
    util::require_root();
    raise_fd_limit();
    let mut acc = Accounts::new();
    let readers = acc.group("t");
    let hog = acc.user("w", &[&readers]);
    let share = MAX_SESSIONS.to_string();
    let d = daemon(&[
        "--socket-group",
        &readers,
        "--max-sessions-per-user",
        &share,
    ]);
    let holder = Holder::start(&hog, &d.socket, 2000);
    let room = MAX_SESSIONS - RESERVED_SESSIONS;
    assert_eq!(holder.count("greeted"), room, "{:?}", holder.lines);
    assert_eq!(holder.count("refused"), 2000 - room, "{:?}", holder.lines);
    assert!(
        holder.get("refusal").starts_with(&format!(
            "-ERR too many sessions (limit {room}; the other {RESERVED_SESSIONS} are kept for root"
        )),
        "{:?}",
        holder.lines
    );
    let reply = root_status(&d.socket, Duration::from_secs(20));
    let st: serde_json::Value = serde_json::from_str(&reply[1..].join("\n")).unwrap();
    assert_eq!(refused_for(&st, "table_full"), (2000 - room) as u64, "{st}");
    assert_eq!(refused_for(&st, "user_share"), 0, "{st}");
}

/// Admin rights come from the connecting process's own groups (SO_PEERGROUPS), not from
/// what the group database says of its user.
#[test]
#[ignore = "needs root"]
fn admin_rights_are_the_processes_groups_not_the_group_databases() {
    util::require_root();
    let mut acc = Accounts::new();
    let readers = acc.group("a");
    let ops = acc.group("b");
    // Listed in `ops` by the group database...
    let listed = acc.user("l", &[&readers, &ops]);
    // ...and not listed anywhere but `readers`.
    let unlisted = acc.user("u", &[&readers]);
    let d = daemon(&["--socket-group", &readers, "--admin-group", &ops]);

    let run = |user: &str, groups: &[&str], cmd: &str| -> (i32, String) {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", user, "--regid", &readers]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.args(["--groups", &groups.join(",")]);
        }
        let out = c
            .arg("--")
            .arg(util::bin())
            .arg("--socket")
            .arg(&d.socket)
            .arg(cmd)
            .env_remove("DISKD_SOCKET")
            .env_remove("DISKD_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("setpriv");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    // In the database's `ops`, but the process dropped it: no admin.
    let (code, out) = run(&listed, &[], "refresh");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refresh needs root or membership"), "{out}");
    // The same user with the group on its process: admin.
    let (code, out) = run(&listed, &[&ops], "refresh");
    assert_eq!(code, 0, "{out}");
    // Not in the database's `ops`, but its process carries it: admin.
    let (code, out) = run(&unlisted, &[&ops], "refresh");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&unlisted, &[], "refresh");
    assert_eq!(code, 1, "{out}");
    // Reading needs no group beyond reaching the socket (here the primary one).
    let (code, out) = run(&unlisted, &[], "list");
    assert_eq!(code, 0, "{out}");
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).unwrap();
}
