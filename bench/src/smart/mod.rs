//! `diskd-bench smart`: what one SMART pass costs on a host with 60 disks, and whether
//! queries wait for it (no root).
//!
//! The host is simulated (see `fake.rs`): a sysfs tree with N whole disks, a fake blkid,
//! and a fake smartctl that prints a real smartctl 7 output per disk after a delay that
//! stands in for the drive's answer time. The daemon is the real release `diskd daemon`
//! with `--smart-interval 1h`, so exactly one pass runs, at start; it is measured from
//! outside: `/proc/PID/stat` and `/proc/PID/status` for CPU and memory, `status --json`
//! for the watcher's own timing, and `where UUID` over the control socket for latency.
//!
//! Each run of one configuration (fake and delay) starts three daemons in turn, each on a
//! fresh store, so nothing one measures disturbs another:
//!
//! - *quiet*: SMART on, only `status` polled; the pass's time, CPU (the daemon's own, and
//!   its children's: the smartctl runs), memory; then a `refresh`, whose SMART pass finds
//!   no disk due (the steady state between two readings of a disk).
//! - *control*: the same with `--no-smart`, measured at the same time after start: what
//!   start-up and the other watchers cost, to subtract.
//! - *loaded*: SMART on and one client asking `where UUID` back to back while the pass
//!   runs; then, once the pass is over and the daemon has settled, the same queries again
//!   (idle). Same process, same client: the difference is the pass.
//!
//! Loopback only, as every other subcommand: `--interface lo --ttl 0`, a private group and
//! port, never the default group. Every wait is bounded; every daemon is stopped by its
//! PID (SIGTERM, then SIGKILL after 5 s); the temp directory goes with the run.

mod fake;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diskd::client::Session;
use serde_json::{json, Value};

use crate::scale::proc_status_kib;
use fake::{FakeKind, Host};
use report::{print_table, Figures};

/// Options of `diskd-bench smart`.
#[derive(clap::Args, Debug, Clone)]
pub struct SmartOptions {
    /// Whole disks on the simulated host (one in three NVMe, the rest SATA).
    #[arg(long, default_value_t = 60)]
    pub disks: usize,
    /// How long the fake smartctl waits before it answers, per disk: the drive's own
    /// answer time. Comma-separated for several configurations (`0,20ms`).
    #[arg(long, value_delimiter = ',', default_value = "20ms", value_parser = humantime::parse_duration)]
    pub smartctl_delay: Vec<Duration>,
    /// Which fake smartctl: the compiled helper or a shell script. Comma-separated for
    /// several configurations (`binary,shell`).
    #[arg(long, value_delimiter = ',', default_value = "binary")]
    pub fake: Vec<FakeKind>,
    /// `where` queries on the idle daemon after the pass (during the pass: as many as it
    /// lasts).
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// Runs of each configuration (three daemons each); figures are medians over runs,
    /// latency percentiles over every run's queries.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The diskd binary to measure (default: the one built beside this bench).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How often `status --json` is asked whether the pass is over: the wall-time figures are
/// the watcher's own (ms), this only bounds when the CPU snapshot is taken after it.
const POLL: Duration = Duration::from_millis(20);
/// After the pass, before the idle queries: the inventory's write of 60 health readings,
/// the announce it triggers and the store's flush are over well within this.
const SETTLE: Duration = Duration::from_millis(500);
/// At most this many `where` samples during one pass (memory bound; a 60-disk pass at
/// 20 ms per disk sees about 10,000).
const MAX_DURING: usize = 500_000;
/// /proc's clock ticks per second (`USER_HZ`): 100 on every Linux architecture's ABI.
const USER_HZ: u64 = 100;

/// CPU times of a process.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// The daemon's own threads: the sum of their `/proc/PID/task/*/schedstat` run time
    /// (ns; `stat`'s utime + stime are whole 10 ms ticks, as coarse as a 60-disk pass's
    /// cost). A thread that ended takes its share with it; the daemon's threads live for
    /// the few seconds of a run (tokio keeps an idle blocking thread 10 s).
    own: Duration,
    /// cutime + cstime: its children that it has waited for (every smartctl, blkid).
    children: Duration,
}

fn proc_cpu(pid: u32) -> Result<Cpu, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name is in parentheses and may hold spaces: fields count from its end.
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = |a: usize, b: usize| {
        let t = f.get(a).copied().unwrap_or(0) + f.get(b).copied().unwrap_or(0);
        Duration::from_millis(t * 1000 / USER_HZ)
    };
    let own = threads_cpu(pid).unwrap_or_else(|| ticks(0, 1));
    Ok(Cpu {
        own,
        children: ticks(2, 3),
    })
}

/// The run time of every live thread of `pid`, from schedstat (see [`Cpu::own`]).
fn threads_cpu(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing counts nothing.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// A daemon of this benchmark, stopped by its PID when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    started: Instant,
    /// Its store and socket (removed when dropped, after the daemon is stopped).
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Start `diskd daemon` on `host` with these extra flags (`--smartctl ...` or
    /// `--no-smart`), and wait until its socket greets.
    fn start(bin: &Path, host: &Host, port: u16, extra: &[String]) -> Result<Daemon, String> {
        let dir = tempfile::Builder::new()
            .prefix("daemon.")
            .tempdir_in(host.dir.path())
            .map_err(|e| format!("tempdir: {e}"))?;
        let socket = dir.path().join("sock");
        let log = dir.path().join("daemon.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--blkid")
            .arg(&host.blkid)
            .arg("--sysfs")
            .arg(&host.sysfs)
            .args(["--interface", "lo", "--ttl", "0"])
            .args(["--group", &format!("239.255.{}.{}", port >> 8, port & 0xff)])
            .args(["--port", &port.to_string(), "--node-name", "bench-smart"])
            .args(extra)
            .env_remove("DISKD_SOCKET")
            .env_remove("DISKD_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut d = Daemon {
            child,
            socket,
            log,
            started,
            _dir: dir,
        };
        while Session::connect(&d.socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!(
                    "the daemon exited at start ({status}):\n{}",
                    d.log_tail()
                ));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "the daemon did not answer in 20 s:\n{}",
                    d.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(d)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn session(&self) -> Result<Session, String> {
        Session::connect(&self.socket).map_err(|e| format!("connect: {e}"))
    }

    /// The end of its log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        // SIGTERM first, so that it ends a smartctl it is running with its process group.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `status --json`'s entry for the SMART watcher.
fn smart_status(s: &mut Session) -> Result<Value, String> {
    let r = s
        .call("status --json")
        .map_err(|e| format!("status: {e}"))?;
    let v: Value =
        serde_json::from_str(&r.body.join("\n")).map_err(|e| format!("status --json: {e}"))?;
    Ok(v.pointer("/watchers/smart").cloned().unwrap_or(Value::Null))
}

/// Whether the watcher's first pass is over; an error if it failed.
fn pass_done(smart: &Value) -> Result<bool, String> {
    let n = |k: &str| smart.get(k).and_then(Value::as_u64).unwrap_or(0);
    if n("scans_failed") > 0 {
        return Err(format!("the SMART pass failed: {smart}"));
    }
    Ok(n("scans_ok") > 0)
}

fn duration_ms(smart: &Value) -> Option<u64> {
    smart.get("last_duration_ms").and_then(Value::as_u64)
}

/// How long to wait for a pass of `disks` at `delay` each before calling it hung.
fn pass_limit(disks: usize, delay: Duration) -> Duration {
    Duration::from_secs(60) + delay.saturating_mul(u32::try_from(disks * 5).unwrap_or(u32::MAX))
}

/// A disk whose record has no SMART reading (yet).
const NO_READING: &str = "(no reading)";

/// Every disk's health state, from `list --json`: proof that all N were read and parsed.
fn verdicts(s: &mut Session, host: &Host) -> Result<BTreeMap<String, usize>, String> {
    let r = s.call("list --json").map_err(|e| format!("list: {e}"))?;
    let rows: Value =
        serde_json::from_str(&r.body.join("\n")).map_err(|e| format!("list --json: {e}"))?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    let mut states = BTreeMap::new();
    for d in &host.disks {
        let device = format!("/dev/{}", d.name);
        let state = rows
            .iter()
            .find(|r| r["device"] == device.as_str())
            .filter(|r| !r["health"]["checked"].is_null())
            .and_then(|r| r["health"]["state"].as_str())
            .unwrap_or(NO_READING);
        *states.entry(state.to_string()).or_insert(0) += 1;
    }
    Ok(states)
}

/// What a quiet run measured.
struct Quiet {
    /// The watcher's own time for the pass (`last_duration_ms`).
    pass: Duration,
    /// From spawn until `list` showed every disk's reading (start-up included; polled
    /// every `POLL`).
    seen: Duration,
    cpu: Cpu,
    rss_kib: u64,
    hwm_kib: u64,
    states: BTreeMap<String, usize>,
    refresh_wall: Duration,
    refresh_pass: Duration,
    refresh_cpu: Cpu,
}

fn quiet_run(
    bin: &Path,
    host: &Host,
    port: u16,
    flags: &[String],
    limit: Duration,
) -> Result<Quiet, String> {
    let d = Daemon::start(bin, host, port, flags)?;
    let mut s = d.session()?;
    let smart = loop {
        let smart = smart_status(&mut s)?;
        if pass_done(&smart)? {
            break smart;
        }
        if d.started.elapsed() > limit {
            return Err(format!("no SMART pass in {limit:?}:\n{}", d.log_tail()));
        }
        std::thread::sleep(POLL);
    };
    // `status` counts the scan before the inventory has written its readings into the
    // records: the pass is over for a user when `list` shows every disk's.
    let states = loop {
        let states = verdicts(&mut s, host)?;
        if !states.contains_key(NO_READING) {
            break states;
        }
        if d.started.elapsed() > limit {
            return Err(format!(
                "not every disk has a reading in {limit:?}: {states:?}\n{}",
                d.log_tail()
            ));
        }
        std::thread::sleep(POLL);
    };
    let seen = d.started.elapsed();
    let cpu = proc_cpu(d.pid())?;
    let rss_kib = proc_status_kib(d.pid(), "VmRSS:");
    let hwm_kib = proc_status_kib(d.pid(), "VmHWM:");
    let pass = Duration::from_millis(duration_ms(&smart).unwrap_or(0));
    std::thread::sleep(SETTLE);

    // `refresh`: every watcher scans now; SMART finds no disk due (1 h interval).
    let before = proc_cpu(d.pid())?;
    let t = Instant::now();
    let r = s.call("refresh").map_err(|e| format!("refresh: {e}"))?;
    let refresh_wall = t.elapsed();
    if !matches!(r.status, diskd::protocol::frame::Status::Ok(_)) {
        return Err(format!("refresh: {:?} {:?}", r.status, r.body));
    }
    let after = proc_cpu(d.pid())?;
    let smart = smart_status(&mut s)?;
    Ok(Quiet {
        pass,
        seen,
        cpu,
        rss_kib,
        hwm_kib,
        states,
        refresh_wall,
        refresh_pass: Duration::from_millis(duration_ms(&smart).unwrap_or(0)),
        refresh_cpu: Cpu {
            own: after.own.saturating_sub(before.own),
            children: after.children.saturating_sub(before.children),
        },
    })
}

/// The control daemon (`--no-smart`), measured `at` after its start.
fn control_run(bin: &Path, host: &Host, port: u16, at: Duration) -> Result<(Cpu, u64), String> {
    let d = Daemon::start(bin, host, port, &["--no-smart".to_string()])?;
    let mut s = d.session()?;
    // The same status polling as the quiet run, for as long.
    while d.started.elapsed() < at {
        smart_status(&mut s)?;
        std::thread::sleep(POLL.min(at.saturating_sub(d.started.elapsed())));
    }
    Ok((proc_cpu(d.pid())?, proc_status_kib(d.pid(), "VmHWM:")))
}

/// What a loaded run measured.
struct Loaded {
    /// The pass's own time while queried.
    pass: Duration,
    /// `where` that found the disk, while the pass ran.
    during: Vec<Duration>,
    /// `where` answered "not found" (before the first disk scan), not in `during`.
    not_found: usize,
    /// `where` after the pass.
    idle: Vec<Duration>,
}

/// One `where` exchange, timed, and whether it found the disk. A "not found" (before the
/// disks watcher's first scan is in) is a shorter answer than a record: those are not
/// counted, so that both phases time the same work.
fn timed_where(s: &mut Session, line: &str) -> Result<(Duration, bool), String> {
    let t = Instant::now();
    let r = s.call(line).map_err(|e| format!("where: {e}"))?;
    let found = matches!(r.status, diskd::protocol::frame::Status::Ok(_)) && !r.body.is_empty();
    Ok((t.elapsed(), found))
}

fn loaded_run(
    bin: &Path,
    host: &Host,
    port: u16,
    flags: &[String],
    limit: Duration,
    queries: usize,
) -> Result<Loaded, String> {
    let d = Daemon::start(bin, host, port, flags)?;
    let mut q = d.session()?;
    let mut st = d.session()?;
    let term = &host.disks[host.disks.len() / 2].uuid;
    let line = format!("where {term}");
    let mut during = Vec::new();
    let mut not_found = 0;
    let mut polled = Instant::now();
    let smart = loop {
        if polled.elapsed() >= POLL {
            let smart = smart_status(&mut st)?;
            if pass_done(&smart)? {
                break smart;
            }
            if d.started.elapsed() > limit {
                return Err(format!("no SMART pass in {limit:?}:\n{}", d.log_tail()));
            }
            polled = Instant::now();
        }
        let (t, found) = timed_where(&mut q, &line)?;
        if !found {
            not_found += 1;
        } else if during.len() < MAX_DURING {
            during.push(t);
        }
    };
    std::thread::sleep(SETTLE);
    let mut idle = Vec::with_capacity(queries);
    for _ in 0..queries {
        let (t, found) = timed_where(&mut q, &line)?;
        if !found {
            return Err(format!("`{line}` found nothing after the pass"));
        }
        idle.push(t);
    }
    Ok(Loaded {
        pass: Duration::from_millis(duration_ms(&smart).unwrap_or(0)),
        during,
        not_found,
        idle,
    })
}

/// A port (and the group derived from it) of this process's own, as `client` picks one.
fn port_for(n: usize) -> u16 {
    40000 + ((std::process::id() as usize + n) % 20000) as u16
}

/// Run the benchmark; an error says what broke (every daemon is stopped and the temp
/// directory removed by then).
pub fn smart(o: &SmartOptions) -> Result<(), String> {
    if o.disks == 0 || o.runs == 0 {
        return Err("--disks and --runs must be at least 1".into());
    }
    let bin = o.binary.clone().unwrap_or_else(diskd_lab::binary);
    let host = Host::new(o.disks)?;
    let mut all = Vec::new();
    let mut n = 0;
    for &fake in &o.fake {
        for &delay in &o.smartctl_delay {
            let cmd = fake::smartctl_command(fake, host.dir.path(), &host.data, delay)?;
            let flags = vec![
                "--smartctl".to_string(),
                cmd,
                "--smart-interval".to_string(),
                "1h".to_string(),
            ];
            let limit = pass_limit(o.disks, delay);
            let mut f = Figures {
                fake,
                delay,
                quiet: Vec::new(),
                control: Vec::new(),
                loaded: Vec::new(),
            };
            for run in 0..o.runs {
                eprint!(
                    "\r{} fake, delay {:?}: run {}/{}",
                    fake.as_str(),
                    delay,
                    run + 1,
                    o.runs
                );
                n += 1;
                let q = quiet_run(&bin, &host, port_for(n), &flags, limit)?;
                let at = q.seen;
                f.quiet.push(q);
                n += 1;
                f.control.push(control_run(&bin, &host, port_for(n), at)?);
                n += 1;
                f.loaded.push(loaded_run(
                    &bin,
                    &host,
                    port_for(n),
                    &flags,
                    limit,
                    o.queries,
                )?);
            }
            eprintln!();
            all.push(f.to_json(o.disks));
        }
    }
    let nvme = host.disks.iter().filter(|d| d.nvme).count();
    let report = json!({
        "disks": o.disks,
        "sata": o.disks - nvme,
        "nvme": nvme,
        "runs": o.runs,
        "idle_queries_per_run": o.queries,
        "binary": bin.display().to_string(),
        "configurations": all,
    });
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_table(&report);
    }
    Ok(())
}
