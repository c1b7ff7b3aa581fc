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
