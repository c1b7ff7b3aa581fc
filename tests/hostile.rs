//! Hostile clients on the control socket: stalled sessions by the thousand, binary garbage.

use crate::util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use util::TestDaemon;

const DISK: &str =
    "/dev/sdb1: UUID=\"6fe176fb-83a0-4e4a-af6a-f578ca7a1f65\" LABEL=\"backup\" TYPE=\"ext4\"\n";

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).unwrap();
}

#[test]
fn a_thousand_stalled_sessions_do_not_stop_the_daemon_answering() {
    raise_fd_limit();
    let d = TestDaemon::new(DISK).start();
    d.wait_query("backup");
    // Connect 1,000 sessions that never read their greeting nor send anything.
    let stalled: Vec<UnixStream> = (0..1000)
        .map(|i| UnixStream::connect(&d.socket).unwrap_or_else(|e| panic!("connect #{i}: {e}")))
        .collect();
    // One more session, kept open, asks: once it counts itself and the 1,000, exactly
    // 1,001 sessions are open and nothing else comes or goes.
    let mut probe = d.session();
    let open = |probe: &mut util::RawSession| -> u64 {
        let r = probe.call("status --json");
        assert_eq!(r.status, "+OK", "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.body.join("\n")).unwrap();
        util::counter(&v, "sessions_open")
    };
    util::wait_for(
        "the daemon to hold 1,000 sessions and the probe",
        Duration::from_secs(20),
        || open(&mut probe) == 1001,
    );
    let mut q = d.session();
    let r = q.call("where backup");
    assert_eq!(r.status, "+OK", "{r:?}");
    assert!(r.body.iter().any(|l| l.contains("backup")), "{r:?}");
    drop(q);
    util::wait_for(
        "the query's session to end",
        Duration::from_secs(20),
        || open(&mut probe) == 1001,
    );
    // Past the limit (1,024), newcomers get a clear error instead of waiting forever:
    // of 40 more, the first 23 fill the table and the other 17 are refused.
    let extra: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let mut refused = 0;
    for s in &extra {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        if line.starts_with("-ERR too many sessions") {
            refused += 1;
        }
    }
    let room = diskd::control::server::MAX_SESSIONS - 1001;
    assert_eq!(refused, 40 - room, "sessions refused past the limit");
    drop(extra);
    drop(stalled);
    drop(probe);
    util::wait_for(
        "stalled sessions to be released",
        Duration::from_secs(20),
        || {
            let st = d.client(&["status", "--json"]);
            st.code() == 0
                && st.json()["counters"]["sessions_open"]
                    .as_u64()
                    .unwrap_or(9999)
                    <= 1
        },
    );
}

#[test]
fn binary_garbage_gets_error_replies_and_the_daemon_lives_on() {
    let d = TestDaemon::new(DISK).start();
    d.wait_query("backup");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Deterministic pseudo-random bytes, with newlines now and then.
    let mut x: u32 = 12345;
    let garbage: Vec<u8> = (0..200_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&garbage);
            let _ = w.write_all(b"\nquit\n");
        })
    };
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("-USAGE"),
        "no usage errors in {} bytes of replies",
        all.len()
    );
    assert!(
        text.contains("+OK bye"),
        "the session did not survive to 'quit'"
    );
    // Still serving.
    d.client(&["query", "backup"]).expect_code(0);
}
