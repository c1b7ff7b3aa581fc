//! The one-shot client and the REPL's script mode against a real daemon.

use crate::util;

use util::TestDaemon;

const TWO_DISKS: &str =
    "/dev/sdb1: UUID=\"6fe176fb-83a0-4e4a-af6a-f578ca7a1f65\" LABEL=\"backup\" TYPE=\"ext4\"\n\
/dev/sdc1: UUID=\"ABCD-1234\" LABEL=\"my photos\" TYPE=\"vfat\"\n";

#[test]
fn query_list_and_exit_codes() {
    let d = TestDaemon::new(TWO_DISKS).start();
    d.wait_query("backup");
    let r = d.client(&["query", "6FE176FB-83A0-4E4A-AF6A-F578CA7A1F65", "--json"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v[0]["host"], "test-node");
    assert_eq!(v[0]["label"], "backup");
    assert_eq!(v[0]["device"], "/dev/sdb1");
    assert_eq!(v[0]["fstype"], "ext4");
    assert_eq!(v[0]["live"], true);
    assert!(v[0]["mountpoints"].is_array());
    assert!(v[0]["last_seen"].as_str().unwrap().ends_with('Z'));

    let r = d.client(&["query", "my photos"]);
    r.expect_code(0);
    assert!(r.stdout().contains("ABCD-1234"), "{}", r.stdout());

    let r = d.client(&["query", "nothing-like-this", "--json"]);
    r.expect_code(1);
    assert_eq!(r.json(), serde_json::json!([]));

    let r = d.client(&["list", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    d.client(&["list", "--host", "elsewhere"]).expect_code(1);
    let r = d.client(&["announce"]);
    r.expect_code(0);
    assert!(r.stdout().contains("announced 2 disks"), "{}", r.stdout());
}

#[test]
fn unreachable_daemon_is_exit_3_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nothing-here");
    let r = util::run_diskd(&["--socket", sock.to_str().unwrap(), "status"], None);
    r.expect_code(3);
    assert!(r.stderr().contains("diskd daemon"), "{}", r.stderr());
}

/// The interactive REPL on a real terminal (a pty from util-linux `script`): commands run,
/// Ctrl-C cancels the line being typed, Tab completes commands and known UUIDs, end of
/// input (Ctrl-D) exits, and the history is kept in ~/.diskd_history.
#[test]
fn the_repl_on_a_terminal_keeps_history_and_cancels_with_ctrl_c() {
    let d = TestDaemon::new(TWO_DISKS).start();
    d.wait_query("backup");
    let home = tempfile::tempdir().unwrap();
    let mut repl = util::Repl::spawn(&d.socket, home.path());
    // Each line goes in once the prompt is up (the terminal is in raw mode then, so
    // Ctrl-C reaches the line editor instead of killing the client).
    repl.shows("diskd> ", 1);
    repl.type_in("where nothing-to-see\x03");
    repl.shows("diskd> ", 2);
    repl.type_in("where backup\r");
    repl.shows("diskd> ", 3);
    repl.type_in("status\r");
    repl.shows("diskd> ", 4);
    // Tab completes a command name, then a UUID the daemon knows.
    repl.type_in("ann\t\r");
    repl.shows("diskd> ", 5);
    repl.type_in("where 6fe1\t\r");
    repl.shows("diskd> ", 6);
    let status = repl.finish(); // end of input: Ctrl-D at the prompt
    let text = repl.text();
    assert!(status.success(), "{text}");
    assert!(text.contains("awaiting commands"), "{text}");
    assert!(
        text.contains("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
        "{text}"
    );
    assert!(text.contains("watcher    disks"), "{text}");
    let history = std::fs::read_to_string(home.path().join(".diskd_history")).unwrap();
    assert!(
        history.contains("where backup") && history.contains("status"),
        "{history}"
    );
    assert!(text.contains("announced"), "{text}");
    assert!(
        history.contains("announce\n")
            && history.contains("where 6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
        "Tab did not complete: {history}"
    );
    assert!(
        !history.contains("nothing-to-see"),
        "a cancelled line was kept: {history}"
    );
}

/// Every socket command is a `diskd` subcommand too, and `help` lists every command: both
/// come from one definition.
#[test]
fn every_command_is_a_subcommand_and_in_help() {
    let d = TestDaemon::new(TWO_DISKS).start();
    d.wait_query("backup");
    let r = d.client(&["localhost", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()["node"], "test-node", "{}", r.stdout());
    let sock = d.socket.to_string_lossy().into_owned();
    let help = util::run_diskd(&["--socket", &sock], Some("help\nhelp umount\n"));
    help.expect_code(0);
    let text = help.stdout();
    for cmd in [
        "query | where",
        "list",
        "peers",
        "status",
        "localhost",
        "refresh",
        "announce",
        "ping",
        "mount",
        "umount",
        "debug",
        "help",
        "quit",
    ] {
        assert!(text.contains(cmd), "help lacks {cmd}: {text}");
    }
    assert!(text.contains("umount | unmount TERM [--json]:"), "{text}");
}

/// `diskd debug` streams the daemon's events until it is interrupted.
#[test]
fn diskd_debug_streams_events() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let d = TestDaemon::new(TWO_DISKS).start();
    d.wait_query("backup");
    let mut child = Command::new(util::bin())
        .args(["--socket", &d.socket.to_string_lossy(), "debug"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn diskd debug");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains(" scan: disks:");
            seen.push(line);
            if done {
                return (true, seen);
            }
        }
        (false, seen)
    });
    // Scans until the stream shows one (the first may run before `debug` subscribed).
    util::wait_for(
        "a disk scan event on diskd debug",
        std::time::Duration::from_secs(20),
        || {
            d.client(&["refresh"]).expect_code(0);
            reader.is_finished()
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    let (found, seen) = reader.join().unwrap();
    assert!(found, "no scan event in {seen:?}");
}

/// A label that starts with a dash is a term, on the command line and on the socket.
#[test]
fn a_term_that_starts_with_a_dash_is_found() {
    let d =
        TestDaemon::new("/dev/sdd1: UUID=\"dddd-0001\" LABEL=\"-dash\" TYPE=\"ext4\"\n").start();
    d.wait_query("dddd-0001");
    let r = d.client(&["query", "-dash", "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()[0]["uuid"], "dddd-0001");
    d.client(&["history", "--", "-dash"]).expect_code(0);
    let mut s = d.session();
    assert_eq!(s.call("where -dash").status, "+OK");
    assert!(s.call("where").status.contains("needs <TERM>"));
}

/// With no socket named, the client tries the user's socket, then the system daemon's: a
/// stale socket file (a killed daemon's) does not hide a live daemon behind it.
#[test]
fn a_stale_socket_gives_way_to_the_next_one() {
    let d = TestDaemon::new("").start();
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let missing = dir.path().join("missing.sock");
    let (s, used) =
        diskd::client::Session::connect_first(&[stale.clone(), missing, d.socket.clone()])
            .expect("the live daemon answers");
    assert_eq!(used, d.socket);
    assert!(s.greeting.status.text().contains("awaiting commands"));
    // Nothing answers anywhere: the error names the first place tried.
    let err = diskd::client::Session::connect_first(std::slice::from_ref(&stale))
        .err()
        .expect("nobody answers");
    assert!(err.to_string().contains("stale.sock"), "{err}");
    // The client removes nothing: a stale socket is the daemon's to take over.
    assert!(stale.exists(), "the client removed a stale socket");
}
