//! A small harness that drives the real `diskd` binary (ripgrep's `tests/util.rs` style):
//! a daemon in a temp dir with its own socket and store, a fake blkid, one-shot client runs
//! that print their command, stdout and stderr when an assertion fails.
//!
//! Processes are ended by PID in `Drop`, so a failing test leaves nothing running.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_diskd"))
}

/// Tests that need root (loop devices, mounts, namespaces) are `#[ignore = "needs root"]`,
/// so a normal user's `cargo test` lists them as ignored; root and CI run them with
/// `-- --include-ignored`. They call this first: run without root, such a test fails with a
/// clear message rather than passing without having tested anything.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: run as root, or without --include-ignored"
    );
}

/// Write an executable shell script.
pub fn script(path: &Path, body: &str) {
    // Write to a temp name and rename, so a running daemon never execs a half-written file
    // (and never hits ETXTBSY on a file still open for writing).
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub use diskd_lab::{fake_blkid, wait_for, Run};

/// Run a system command (losetup, mkfs, useradd, ...); panics with its output when it
/// fails. Returns stdout, trimmed.
pub fn system(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `diskd ARGS` (a client) with a timeout-free plain spawn.
pub fn run_diskd(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("DISKD_SOCKET")
        .env_remove("DISKD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("diskd {}", args.join(" "));
    let mut child = cmd.spawn().expect("spawn diskd");
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            si.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Run { cmd: shown, out }
}

/// Daemon flags that keep the peer layer on this machine: the loopback interface, TTL 0
/// (datagrams are never transmitted on any network), an administratively scoped group and
/// a port of its own per test process, never the default 230.1.2.3:32003.
pub fn local_only_multicast(node: &str) -> Vec<String> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 40000 + (std::process::id() % 20000) as u16 + n;
    vec![
        "--node-name".into(),
        node.into(),
        "--interface".into(),
        "lo".into(),
        "--ttl".into(),
        "0".into(),
        "--group".into(),
        format!("239.255.{}.{}", (port >> 8) & 0xff, port & 0xff),
        "--port".into(),
        port.to_string(),
    ]
}

/// A running daemon with its own directory, socket and store.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub store: PathBuf,
    pub blkid: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    /// Extra environment of the daemon process (see `env`).
    envs: Vec<(String, std::ffi::OsString)>,
    child: Option<Child>,
}

impl TestDaemon {
    /// A daemon (not started) with a fake blkid printing `blkid_output`.
    pub fn new(blkid_output: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let blkid = dir.path().join("blkid");
        fake_blkid(&blkid, blkid_output);
        TestDaemon {
            socket: dir.path().join("sock"),
            store: dir.path().join("store"),
            log: dir.path().join("daemon.log"),
            blkid,
            dir,
            // The host's own block devices would be listed as blank disks; tests that
            // want the hardware watcher ask for it (`hardware`), and the SMART watcher
            // (`smart`) never reads this machine's disks.
            args: [
                local_only_multicast("test-node"),
                vec!["--no-hardware".into(), "--no-smart".into()],
            ]
            .concat(),
            envs: Vec::new(),
            child: None,
        }
    }

    /// Run the sysfs hardware watcher (reading `sysfs`, a fake tree or `/sys`).
    pub fn hardware(mut self, sysfs: &Path) -> Self {
        self.args.retain(|a| a != "--no-hardware");
        self.args.push("--sysfs".into());
        self.args.push(sysfs.display().to_string());
        self
    }

    /// Run the SMART watcher with this smartctl (a fake that prints fixtures).
    pub fn smart(mut self, smartctl: &Path) -> Self {
        self.args.retain(|a| a != "--no-smart");
        self.args.push("--smartctl".into());
        self.args.push(smartctl.display().to_string());
        self
    }

    /// Add daemon flags.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// Set an environment variable of the daemon process (e.g. NOTIFY_SOCKET).
    pub fn env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--store")
            .arg(&self.store)
            .arg("--blkid")
            .arg(&self.blkid)
            .args(&self.args)
            .env_remove("DISKD_SOCKET")
            .env_remove("DISKD_CONFIG")
            // A test run inside a systemd service must not report to that service.
            .env_remove("NOTIFY_SOCKET")
            // The allocator runs with the options the binary carries.
            .env_remove("_RJEM_MALLOC_CONF")
            .env("RUST_LOG", "diskd=debug,diskd_watchers=debug,info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Start and wait until the socket answers.
    pub fn start(mut self) -> Self {
        self.spawn();
        self.wait_ready();
        self
    }

    /// Start without waiting.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self.command().stderr(log).spawn().expect("spawn daemon");
        self.child = Some(child);
    }

    /// Run the daemon to completion expecting it to fail at start; returns (code, stderr).
    pub fn run_expect_exit(&self) -> (i32, String) {
        let out = self
            .command()
            .stderr(Stdio::piped())
            .output()
            .expect("run daemon");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Wait until the socket greets.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "daemon exited at start with {status}; log:\n{}",
                        self.log_text()
                    );
                }
            }
            if self.greets() {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("daemon not ready after 20s; log:\n{}", self.log_text());
            }
            // Poll interval of a wait on a real condition, not a wait for time.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn greets(&self) -> bool {
        let Ok(s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+OK")
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Run a client command against this daemon.
    pub fn client(&self, args: &[&str]) -> Run {
        let sock = self.socket.to_string_lossy().into_owned();
        let mut all = vec!["--socket", sock.as_str()];
        all.extend_from_slice(args);
        run_diskd(&all, None)
    }

    /// Wait until `query TERM` exits 0.
    pub fn wait_query(&self, term: &str) {
        wait_for(&format!("query {term}"), Duration::from_secs(20), || {
            self.client(&["query", term]).code() == 0
        });
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns its exit code.
    pub fn stop(&mut self) -> i32 {
        let mut c = self.child.take().expect("daemon running");
        // Reaped already: its PID may be another process's now, so it gets no signal.
        if let Ok(Some(status)) = c.try_wait() {
            return status.code().unwrap_or(-1);
        }
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not stop on SIGTERM; log:\n{}", self.log_text());
            }
            // Poll interval of a wait on a real condition, not a wait for time.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The end of the daemon's log, for a test that failed (a flake is diagnosed
            // from this, not re-run).
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "----- end of the daemon's log ({}) -----\n{}",
                self.log.display(),
                tail.join("\n")
            );
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                eprintln!("----- the daemon had exited: {status} -----");
            }
        }
        self.kill9();
    }
}

impl TestDaemon {
    /// Use the system's real `blkid` instead of the fake one: the one-word command, which
    /// the daemon runs as `blkid -c /dev/null -o export`. Combine with `--include-device`
    /// so that the host's own disks do not matter.
    pub fn real_blkid(mut self) -> Self {
        self.blkid = PathBuf::from("blkid");
        self
    }
}

// ---- additions for tests/daemon.rs: restarts, status, raw sessions, processes ----

impl TestDaemon {
    /// Start again (after `stop` or `kill9`) and wait until the socket answers.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Whether the daemon process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.client(&["status", "--json"]);
        r.expect_code(0);
        r.json()
    }

    /// The `disks` watcher's health from `status --json`.
    pub fn disks_health(&self) -> serde_json::Value {
        self.status_json()["watchers"]["disks"].clone()
    }

    /// `node_id` of `localhost --json` (a control command; the client has no subcommand
    /// for it, so it goes over a raw session).
    pub fn node_id(&self) -> String {
        let r = self.session().call("localhost --json");
        assert_eq!(r.status, "+OK", "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.body[0]).unwrap();
        v["node_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no node_id in {r:?}"))
            .to_string()
    }

    /// A raw session on the socket, past its greeting.
    pub fn session(&self) -> RawSession {
        let mut s = RawSession::connect(&self.socket);
        let g = s.read_reply();
        assert!(g.status.starts_with("+OK"), "greeting: {g:?}");
        s
    }

    /// Start a client that listens to the fleet's changes (`events ...` or `wait ...`) in
    /// the background, and return once the daemon counts it among its `event_listeners`:
    /// from then on it sees every change, so the test can make one.
    pub fn listening(&self, args: &[&str]) -> Bg {
        let before = counter(&self.status_json(), "event_listeners");
        let bg = Bg::spawn(&self.socket, args);
        wait_for(
            "the client to listen for events",
            Duration::from_secs(20),
            || counter(&self.status_json(), "event_listeners") > before,
        );
        bg
    }

    /// `query TERM --json`: the exit code and the parsed array.
    pub fn query_json(&self, term: &str) -> (i32, serde_json::Value) {
        let r = self.client(&["query", term, "--json"]);
        let code = r.code();
        (code, r.json())
    }
}

/// One reply as it arrived on the wire, body lines un-dot-stuffed.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: String,
    pub body: Vec<String>,
}

/// A control session spoken by hand, so tests see exactly what the daemon sends. Every read
/// has a deadline: a daemon that stops answering fails the test instead of hanging it.
pub struct RawSession {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// How long a raw session waits for any one line.
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(20);

impl RawSession {
    /// Connect; nothing is read yet (the greeting is the first reply).
    pub fn connect(path: &Path) -> RawSession {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(RAW_READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(RAW_READ_TIMEOUT)).unwrap();
        let writer = s.try_clone().unwrap();
        RawSession {
            reader: BufReader::new(s),
            writer,
        }
    }

    /// The next line without its newline; panics on end of stream or timeout.
    pub fn read_line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("the daemon closed the session"),
            Ok(_) => {}
            Err(e) => panic!("reading from the daemon: {e}"),
        }
        assert_eq!(buf.pop(), Some(b'\n'), "line without newline: {buf:?}");
        String::from_utf8(buf).unwrap_or_else(|e| panic!("reply line is not UTF-8: {e}"))
    }

    /// One whole reply (status line, body, terminating `.`).
    pub fn read_reply(&mut self) -> RawReply {
        let status = self.read_line();
        let mut body = Vec::new();
        loop {
            let l = self.read_line();
            if l == "." {
                break;
            }
            body.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
        }
        RawReply { status, body }
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Send a line and read its reply.
    pub fn call(&mut self, line: &str) -> RawReply {
        self.send(format!("{line}\n").as_bytes());
        self.read_reply()
    }
}

/// `(state, ppid)` from `/proc/PID/stat`, or `None` when there is no such process.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The argv of a process, or `None` when it is gone (or a zombie, which has none).
pub fn proc_argv(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Whether `pid` is a running (not zombie) process with exactly this argv; a recycled pid
/// running something else does not count.
pub fn running_with_argv(pid: i32, argv: &[&str]) -> bool {
    match proc_stat(pid) {
        Some((state, _)) if state != 'Z' && state != 'X' => {
            proc_argv(pid).is_some_and(|a| a.iter().map(String::as_str).eq(argv.iter().copied()))
        }
        _ => false,
    }
}

/// Every live (not zombie) process whose parent chain leads to `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid)) = proc_stat(pid) {
            if state != 'Z' && state != 'X' {
                parent.insert(pid, ppid);
            }
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            // Bounded walk: pids can be recycled while we look.
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

impl TestDaemon {
    /// Like `run_expect_exit`, but a daemon that is still running after `limit` (it started
    /// instead of refusing) is killed and the test fails, rather than hanging the test.
    pub fn run_expect_exit_within(&self, limit: Duration) -> (i32, String) {
        let err_path = self.dir.path().join("refused.stderr");
        let err_file = std::fs::File::create(&err_path).unwrap();
        let mut child = self.command().stderr(err_file).spawn().expect("run daemon");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon was expected to stop at start but still runs after {limit:?}; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            // Poll interval of a wait on a real condition, not a wait for time.
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&err_path).unwrap_or_default(),
        )
    }
}

// ---- a client in the background (`wait`, `events`), for tests/wait_events.rs and labs ----

/// How long a background client may take to end once it should.
const BG_LIMIT: Duration = Duration::from_secs(30);

/// Let `cmd`'s process die of SIGINT, as a program started from a terminal does. A shell
/// without job control starts its background jobs with SIGINT ignored (`cmd &` in a CI
/// script), and an ignored signal stays ignored across exec, so a test that sends Ctrl-C
/// must set it back to the default.
pub fn default_sigint(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only the async-signal-safe sigaction is called.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler, Signal};
            signal(Signal::SIGINT, SigHandler::SigDfl)
                .map(|_| ())
                .map_err(std::io::Error::from)
        })
    }
}

/// A client run in the background: its stdout lines as they come, its exit status.
/// Killed (by its PID) in `Drop`, so a failing test leaves nothing running.
pub struct Bg {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    shown: String,
}

impl Bg {
    /// Start `diskd --socket SOCKET ARGS...`.
    pub fn spawn(socket: &Path, args: &[&str]) -> Bg {
        let mut child = default_sigint(&mut Command::new(bin()))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env_remove("DISKD_SOCKET")
            .env_remove("DISKD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn diskd");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut s);
            sink.lock().unwrap().push_str(&s);
        });
        Bg {
            child,
            lines,
            reader: Some(reader),
            stderr,
            shown: format!("diskd {}", args.join(" ")),
        }
    }

    /// Its stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit (at most `BG_LIMIT`), then for the last of its output.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < BG_LIMIT,
                "{} still runs after {BG_LIMIT:?}; stdout so far: {:?}",
                self.shown,
                self.lines()
            );
            // Poll interval of a wait on a real condition, not a wait for time.
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status
    }

    /// Its stderr (complete once it has exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send it a signal.
    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        // Reaped already: its PID may be another process's now, so it gets no signal.
        if !self.running() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// The parsed JSON objects among the lines so far.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter from `status --json` (`counters.NAME`), 0 when absent.
pub fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// How many datagrams `status --json` counts as rejected for `reason`.
pub fn rejected(status: &serde_json::Value, reason: &str) -> u64 {
    status["counters"]["rejected_by_reason"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Whether a check's tool is there (`ok`). If not, the check prints `SKIPPED: WHAT missing`
/// and is left out; under `DISKD_REQUIRE_ROOT_TESTS=1` (CI, which installs every tool with
/// `scripts/debian-deps --test`) it fails instead, so CI never passes a check it did not run.
pub fn have_or_skip(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        std::env::var("DISKD_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
        "{what} missing, although `scripts/debian-deps --test` installs it for CI"
    );
    eprintln!("SKIPPED: {what} missing");
    false
}

/// Whether `tool` is an executable on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(tool);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

/// How long the REPL may take to show what a test waits for.
const REPL_LIMIT: Duration = Duration::from_secs(20);

/// The interactive client on a terminal: `diskd --socket SOCKET` under util-linux
/// `script`, which gives it a pty, with `HOME` set to `home` (its history file goes there).
/// What it prints is collected as it comes. Killed in `Drop`.
pub struct Repl {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    seen: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Repl {
    /// Start the REPL against the daemon at `socket`.
    pub fn spawn(socket: &Path, home: &Path) -> Repl {
        let line = format!("{} --socket {}", bin().display(), socket.display());
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("HOME", home)
            .env_remove("DISKD_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux)");
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Repl {
            stdin: child.stdin.take(),
            child,
            seen,
            reader: Some(reader),
        }
    }

    /// Everything the terminal showed so far.
    pub fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Wait until the terminal has shown `what` at least `n` times.
    pub fn shows(&self, what: &str, n: usize) {
        let start = Instant::now();
        while self.text().matches(what).count() < n {
            assert!(
                start.elapsed() < REPL_LIMIT,
                "no {n} x {what:?} in the REPL after {REPL_LIMIT:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20)); // poll interval of a wait on the terminal
        }
    }

    /// Type `keys` (`\r` is Enter, `\x03` Ctrl-C, `\t` Tab).
    pub fn type_in(&mut self, keys: &str) {
        let stdin = self.stdin.as_mut().expect("input still open");
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// End the input (Ctrl-D at the prompt) and wait for the REPL to exit; returns its
    /// status, with everything it printed collected.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A helper process (a python listener or sender) that is killed, by its PID, when dropped,
/// so a failing test leaves nothing running.
pub struct Reaper(pub Option<Child>);

impl Reaper {
    /// Wait for the process to end by itself; its standard output.
    pub fn output(mut self) -> String {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "helper failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `diskd keygen FILE`; returns the path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let r = run_diskd(&["keygen", path.to_str().unwrap()], None);
    r.expect_code(0);
    path
}

pub fn key_args(keys: &[&Path]) -> Vec<String> {
    keys.iter()
        .flat_map(|k| ["--key-file".to_string(), k.display().to_string()])
        .collect()
}

/// A lab of `n` hosts that all hold one fresh fleet key; returns the key's directory (keep
/// it alive), the key file and the lab.
pub fn keyed_lab(n: usize, extra: &[&str]) -> (tempfile::TempDir, PathBuf, diskd_lab::Lab) {
    let keys = tempfile::tempdir().unwrap();
    let k = keygen(keys.path(), "fleet.key");
    let args = key_args(&[&k]);
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let lab = diskd_lab::Lab::new(n, &all);
    (keys, k, lab)
}
