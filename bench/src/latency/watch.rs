//! Watching one trial from outside the daemons: the log lines and the timestamps each step
//! leaves, and the watchers (wait, hook, query) whose reaction is measured.

use super::*;

/// One line of a daemon log: its time stamp and text.
pub(super) struct LogLine {
    pub(super) t_us: i64,
    pub(super) text: String,
}

/// A daemon log read incrementally (only what was appended since the last read).
pub(super) struct Log {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) lines: Vec<LogLine>,
}

impl Log {
    pub(super) fn new(path: PathBuf) -> Log {
        Log {
            path,
            offset: 0,
            lines: Vec::new(),
        }
    }

    /// Read what was appended; keep only lines from `since_us` on.
    pub(super) fn read_since(&mut self, since_us: i64) {
        use std::io::{Read, Seek, SeekFrom};
        self.lines.clear();
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            return;
        }
        // Only whole lines; a partial last line is read next time.
        let whole = buf.rfind('\n').map_or(0, |i| i + 1);
        self.offset += whole as u64;
        for line in buf[..whole].lines() {
            let Some((stamp, rest)) = line.split_once(' ') else {
                continue;
            };
            let Ok(t) = humantime::parse_rfc3339(stamp) else {
                continue;
            };
            let t_us = t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            if t_us >= since_us {
                self.lines.push(LogLine {
                    t_us,
                    text: rest.to_string(),
                });
            }
        }
    }

    /// The time of the first line at or after `from_us` that contains every needle.
    pub(super) fn first(&self, from_us: Option<i64>, needles: &[&str]) -> Option<i64> {
        let from = from_us?;
        self.lines
            .iter()
            .find(|l| l.t_us >= from && needles.iter().all(|n| l.text.contains(n)))
            .map(|l| l.t_us)
    }
}

/// The steps of the path, in order; each is timed from the previous mark.
pub(super) const MARKS: [(&str, &str); 10] = [
    (
        "losetup",
        "`losetup` runs (clock start -> it returns; overlaps the next steps)",
    ),
    (
        "uevent",
        "uevent reaches A's watcher (clock start -> `block device event`)",
    ),
    ("settle", "settle before the scan (-> `scan started`)"),
    ("blkid", "blkid run and parse (-> `disks: N found`)"),
    (
        "store_a",
        "compose + A's store write and fsync (-> A's `fleet change appeared`)",
    ),
    ("announce", "announce sent (-> `announced`)"),
    (
        "network",
        "datagram to B (-> B's `inventory chunk received`)",
    ),
    (
        "store_b",
        "B's store write (-> B's `fleet change appeared`)",
    ),
    (
        "react",
        "B's daemon reacts (-> `hook[0]: running for`; hooks only)",
    ),
    (
        "observe",
        "B's observer sees it (-> query/wait returns, hook's marker created)",
    ),
];

/// Marks that only some observers have: a missing one is skipped, the next step is timed
/// from the mark before it.
pub(super) const OPTIONAL: [&str; 1] = ["react"];

/// One trial's marks, microseconds since the clock started.
#[derive(Default, Clone)]
pub(super) struct Trial {
    pub(super) t: BTreeMap<&'static str, i64>,
}

impl Trial {
    /// Duration of each step (from the previous mark present), and the total.
    pub(super) fn steps(&self) -> Vec<(&'static str, Option<f64>)> {
        let mut out = Vec::new();
        let mut prev = Some(0i64);
        for (name, _) in MARKS {
            let at = self.t.get(name).copied();
            if name == "losetup" {
                // Reported, but the chain goes on from the clock start: the uevent
                // usually reaches A before `losetup` has returned.
                out.push((name, at.map(|a| a as f64 / 1000.0)));
                continue;
            }
            out.push((
                name,
                match (prev, at) {
                    (Some(p), Some(a)) => Some((a - p) as f64 / 1000.0),
                    _ => None,
                },
            ));
            if at.is_some() || !OPTIONAL.contains(&name) {
                prev = at;
            }
        }
        out.push(("total", self.t.get("observe").map(|&a| a as f64 / 1000.0)));
        out
    }
}

/// A running observer process on B: what it reports arrives on `seen` as the Unix
/// microseconds at which it saw the disk.
pub(super) struct Watch {
    /// The observer process (poller or `diskd wait`), killed when the trial is over.
    pub(super) pid: i32,
    pub(super) seen: mpsc::Receiver<i64>,
}

impl Watch {
    /// A process of this bench (`latency-poll`) polling B; returns once it has polled once.
    pub(super) fn poller(kind: Observer, sock: &Path, uuid: &str, poll: Duration) -> Watch {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.arg("latency-poll")
            .arg("--socket")
            .arg(sock)
            .arg("--uuid")
            .arg(uuid)
            .arg("--poll-us")
            .arg(poll.as_micros().to_string());
        if kind == Observer::Session {
            cmd.arg("--session");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn poller");
        let pid = child.id() as i32;
        let out = child.stdout.take().expect("poller stdout");
        let (ready_tx, ready) = mpsc::channel();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(t) = line
                    .strip_prefix("found ")
                    .and_then(|t| t.split_whitespace().nth(1))
                    .and_then(|t| t.parse().ok())
                {
                    let _ = tx.send(t);
                }
            }
            let _ = child.wait();
        });
        // Already running and asking before the clock starts.
        ready
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{} observer did not start", kind.name()));
        Watch { pid, seen }
    }

    /// `diskd wait UUID` on B; returns once B has accepted its session (and a moment more
    /// for it to subscribe). The disk is seen when the process exits with 0.
    pub(super) fn wait(sock: &Path, uuid: &str, b: &mut Session) -> Watch {
        let accepted_before = sessions_total(b);
        let mut child = Command::new(diskd_lab::binary())
            .arg("--socket")
            .arg(sock)
            .args(["wait", uuid, "--timeout", "20s"])
            .env_remove("DISKD_SOCKET")
            .env_remove("DISKD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn diskd wait");
        let pid = child.id() as i32;
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            if child.wait().is_ok_and(|st| st.success()) {
                let _ = tx.send(now_us());
            }
        });
        let start = Instant::now();
        while sessions_total(b) <= accepted_before {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "`diskd wait` never connected"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        Watch { pid, seen }
    }

    /// When it saw the disk (Unix microseconds), or `None` after `limit`; the observer
    /// process is killed either way.
    pub(super) fn seen(self, limit: Duration) -> Option<i64> {
        let r = self.seen.recv_timeout(limit).ok();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        r
    }
}

/// Control sessions B has accepted since it started: a counter that only grows, so a new
/// session is seen even while an earlier observer's session is still being closed (the
/// number of open sessions could stay the same).
pub(super) fn sessions_total(b: &mut Session) -> u64 {
    b.call("status --json")
        .ok()
        .and_then(|r| r.body.first().cloned())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["counters"]["sessions_total"].as_u64())
        .unwrap_or(0)
}

/// The hook's marker file appearing, seen through inotify on its directory: every
/// creation of `marker` is sent as the Unix microseconds it was read at.
pub(super) fn watch_marker(dir: &Path) -> mpsc::Receiver<i64> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_CLOEXEC).expect("inotify");
    ino.add_watch(dir, AddWatchFlags::IN_CREATE)
        .expect("inotify watch");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let Ok(events) = ino.read_events() else {
            return;
        };
        let t = now_us();
        for e in events {
            if e.name.as_deref().is_some_and(|n| n == "marker") && tx.send(t).is_err() {
                return;
            }
        }
    });
    rx
}
