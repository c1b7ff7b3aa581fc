//! `diskd-bench latency`: the automation issue's budget, "disk plugged into host A ->
//! something on host B reacts", measured from outside the daemons.
//!
//! The internal `devices` figure starts its clock after `losetup` returns and polls over a
//! session kept open by the bench itself; a script on B sees neither shortcut. Here the
//! clock starts *before* `losetup` runs on A, and what stops it is a separate process on B
//! that was already running: a poller running `diskd query UUID --json` (or `where` over
//! one session) every `--poll`, or a blocked `diskd wait UUID`, or a hook on B that
//! creates a marker file. Each trial gives the filesystem a fresh UUID, so every trial is
//! a disk B has never seen.
//!
//! Each step in between is timed from the daemons' debug logs (both daemons and the bench
//! share one clock): A's uevent, scan start and end, store write (the `fleet change`
//! line), announce, B's receipt of the inventory chunk (a trace line of the peer layer,
//! turned on for this bench only) and B's store write. See BENCHMARKS.md, "Latency
//! budget".
//!
//! Root only; everything runs in lab namespaces and is torn down at the end, and every loop
//! device backed by the bench's image is detached even when a trial fails or the bench is
//! interrupted (Ctrl-C / SIGTERM stop it between steps).

mod watch;
use watch::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diskd::client::Session;
use diskd_lab::Lab;

/// Who watches for the disk on host B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Observer {
    /// A separate process that runs `diskd query UUID --json` every `--poll` (a process
    /// per poll, as a shell script would).
    Query,
    /// A separate process that asks `where UUID --json` every `--poll` over one control
    /// session (no process start per poll).
    Session,
    /// `diskd wait UUID`, started and connected before the clock starts; seen when it
    /// exits.
    Wait,
    /// A hook on B (`on: [appeared]`, `host: a`) running `touch DIR/marker`; seen when
    /// the marker is created (inotify). B runs with the hook configured in this round only.
    Hook,
}

impl Observer {
    fn name(self) -> &'static str {
        match self {
            Observer::Query => "query",
            Observer::Session => "session",
            Observer::Wait => "wait",
            Observer::Hook => "hook",
        }
    }
}

/// Options of `diskd-bench latency`.
#[derive(clap::Args, Clone, Debug)]
pub struct LatencyOptions {
    /// Attach/detach cycles per observer.
    #[arg(long, default_value_t = 100)]
    pub trials: usize,
    /// Who watches on host B (comma-separated: each gets its own round of trials).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "query")]
    pub observer: Vec<Observer>,
    /// Poll period of the `query` and `session` observers.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Quiet time after a trial's detach has reached B, before the next attach: a plug is
    /// an isolated event, not part of a burst.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub gap: Duration,
    /// Copy both daemons' logs and a CSV of every trial (times in microseconds since the
    /// clock started) into this directory.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// Set by Ctrl-C / SIGTERM: the trial loop stops at the next step and everything is torn
/// down by the guards' `Drop` (a signal that killed the bench outright would leave loop
/// devices attached).
static STOP: AtomicBool = AtomicBool::new(false);

fn stop_on_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("\nstopping: cleaning up the lab and the loop devices");
            STOP.store(true, Ordering::SeqCst);
        });
    });
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Microseconds since the Unix epoch: the clock of the daemons' log lines.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Detaches every loop device backed by the image when dropped, whatever happened: the
/// kernel's list (`losetup -j`) is asked, not our bookkeeping, so a device attached by a
/// `losetup` whose output we never read is detached too.
struct LoopGuard {
    img: PathBuf,
}

impl LoopGuard {
    fn detach_all(&self) {
        let Ok(out) = Command::new("losetup")
            .arg("-j")
            .arg(&self.img)
            .stdin(Stdio::null())
            .output()
        else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((dev, _)) = line.split_once(':') {
                let _ = Command::new("losetup").args(["-d", dev]).output();
            }
        }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// `latency-poll`: run by the bench as the observer process on B. Prints `ready` after
/// its first poll, then `found START END` (Unix microseconds of the successful poll's start
/// and of its answer) and exits; exits 1 after 20 s.
pub fn poll(socket: &Path, uuid: &str, poll_us: u64, session: bool) {
    let mut out = std::io::stdout();
    let live = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|rows| rows.iter().any(|r| r["live"] == true))
    };
    let mut conn = session.then(|| Session::connect(socket).expect("connect"));
    let line = format!("where {uuid} --json");
    let bin = diskd_lab::binary();
    let start = Instant::now();
    let mut first = true;
    while start.elapsed() < Duration::from_secs(20) {
        let t0 = now_us();
        let found = match conn.as_mut() {
            Some(s) => s
                .call(&line)
                .ok()
                .and_then(|r| r.body.first().cloned())
                .is_some_and(|b| live(b.as_bytes())),
            None => Command::new(&bin)
                .arg("--socket")
                .arg(socket)
                .args(["query", uuid, "--json"])
                .env_remove("DISKD_SOCKET")
                .env_remove("DISKD_CONFIG")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success() && live(&o.stdout)),
        };
        let t1 = now_us();
        if found {
            let _ = writeln!(out, "found {t0} {t1}");
            let _ = out.flush();
            return;
        }
        if first {
            first = false;
            let _ = writeln!(out, "ready");
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_micros(poll_us));
    }
    std::process::exit(1);
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Wait until `where UUID` on B shows no live row (the detach arrived), polling a session.
fn until_gone(b: &mut Session, uuid: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit && !stopped() {
        if let Ok(r) = b.call(&format!("where {uuid} --json")) {
            let gone = r
                .body
                .first()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| v.as_array().cloned())
                .is_none_or(|rows| rows.iter().all(|r| r["live"] != true));
            if gone {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Run the rounds and print the tables.
pub fn latency(o: &LatencyOptions) {
    stop_on_signals();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("latency.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .expect("image");
    let img_s = img.to_str().expect("utf-8 path").to_string();
    sh(&["mkfs.ext4", "-q", "-F", "-L", "latency", &img_s]);
    let loops = LoopGuard { img: img.clone() };
    let mut csv = String::from("observer,trial,uuid");
    for (m, _) in MARKS {
        csv.push(',');
        csv.push_str(m);
    }
    csv.push('\n');
    let mut results = Vec::new();
    for (round, &kind) in o.observer.iter().enumerate() {
        if stopped() {
            break;
        }
        let before = Pressure::now();
        let (trials, missed) = round_of(o, kind, round, &img_s, dir.path(), &mut csv);
        let noise = before.and_then(|b| b.since());
        results.push((kind, trials, missed, noise));
    }
    drop(loops);
    if let Some(keep) = &o.keep {
        let _ = std::fs::create_dir_all(keep);
        let _ = std::fs::write(keep.join("trials.csv"), &csv);
    }
    for (kind, trials, missed, noise) in results {
        report(kind, &trials, missed, noise, o);
    }
}

/// One observer's trials, in a lab of its own (a hook configured on B must not run during
/// another observer's round).
fn round_of(
    o: &LatencyOptions,
    kind: Observer,
    round: usize,
    img: &str,
    dir: &Path,
    csv: &mut String,
) -> (Vec<Trial>, usize) {
    // Ten-minute intervals: only kernel events can explain what B sees in milliseconds.
    let mut lab = Lab::new(
        2,
        &[
            "--announce-interval",
            "600s",
            "--disk-interval",
            "600s",
            "--mount-interval",
            "600s",
        ],
    );
    {
        let a = lab.host("a");
        a.blkid = "blkid".into();
        a.args
            .extend(["--include-device".into(), "/dev/loop*".into()]);
    }
    let marks = dir.join(format!("marks-{round}"));
    std::fs::create_dir_all(&marks).expect("marker dir");
    let marker = marks.join("marker");
    {
        let b = lab.host("b");
        // The peer layer's per-datagram trace line times the network hop.
        b.log_filter = "diskd=debug,diskd::peer::inbound=trace,info".into();
        if kind == Observer::Hook {
            let conf = dir.join(format!("hooks-{round}.yaml"));
            std::fs::write(
                &conf,
                format!(
                    "hooks:\n  - on: [appeared]\n    host: \"a\"\n    run: [\"/usr/bin/touch\", {:?}]\n",
                    marker.to_str().expect("utf-8 path")
                ),
            )
            .expect("hook config");
            b.args
                .extend(["--config".into(), conf.to_string_lossy().into()]);
        }
    }
    lab.start_all();
    // The start-up scans and announces are over before the first plug.
    std::thread::sleep(Duration::from_secs(1).max(o.gap));
    let created = (kind == Observer::Hook).then(|| watch_marker(&marks));
    let b_sock = lab.host("b").socket();
    let mut b = Session::connect(&b_sock).expect("connect b");
    let mut log_a = Log::new(lab.host("a").log());
    let mut log_b = Log::new(lab.host("b").log());
    let run = std::process::id();
    let mut trials = Vec::new();
    let mut missed = 0;
    for i in 0..o.trials {
        if stopped() {
            break;
        }
        let uuid = format!("{run:08x}-{round:04x}-4000-8000-{i:012x}");
        sh(&["tune2fs", "-U", &uuid, img]);
        let watch = match kind {
            Observer::Query | Observer::Session => {
                Some(Watch::poller(kind, &b_sock, &uuid, o.poll))
            }
            Observer::Wait => Some(Watch::wait(&b_sock, &uuid, &mut b)),
            Observer::Hook => {
                let _ = std::fs::remove_file(&marker);
                // Creations of earlier trials are not this one's.
                while created.as_ref().is_some_and(|rx| rx.try_recv().is_ok()) {}
                None
            }
        };
        log_a.read_since(i64::MAX);
        log_b.read_since(i64::MAX);
        // The clock starts before `losetup` runs.
        let t0 = now_us();
        let dev = sh(&["losetup", "--find", "--show", img]);
        let t_losetup = now_us();
        let limit = Duration::from_secs(10);
        let seen = match (watch, &created) {
            (Some(w), _) => w.seen(limit),
            (None, Some(rx)) => rx.recv_timeout(limit).ok(),
            (None, None) => None,
        };
        // Let the settled scan and its log lines land before reading the logs.
        std::thread::sleep(Duration::from_millis(50));
        log_a.read_since(t0);
        log_b.read_since(t0);
        let tr = marks_of(t0, t_losetup, seen, &dev, &uuid, &log_a, &log_b);
        csv.push_str(&format!("{},{i},{uuid}", kind.name()));
        for (m, _) in MARKS {
            csv.push(',');
            if let Some(v) = tr.t.get(m) {
                csv.push_str(&v.to_string());
            }
        }
        csv.push('\n');
        if seen.is_none() {
            missed += 1;
            eprintln!("\ntrial {i}: B's {} observer never saw {uuid}", kind.name());
        } else {
            trials.push(tr);
        }
        sh(&["losetup", "-d", &dev]);
        if !until_gone(&mut b, &uuid, Duration::from_secs(10)) && !stopped() {
            eprintln!("\ntrial {i}: B never saw the detach of {uuid}");
        }
        std::thread::sleep(o.gap);
        eprint!("\r{} trial {}/{}", kind.name(), i + 1, o.trials);
    }
    eprintln!();
    if let Some(keep) = &o.keep {
        let _ = std::fs::create_dir_all(keep);
        for h in ["a", "b"] {
            let _ = std::fs::copy(
                lab.get(h).log(),
                keep.join(format!("daemon-{}-{h}.log", kind.name())),
            );
        }
    }
    (trials, missed)
}

/// One trial's marks from the daemons' logs (microseconds since `t0`).
fn marks_of(
    t0: i64,
    t_losetup: i64,
    seen: Option<i64>,
    dev: &str,
    uuid: &str,
    log_a: &Log,
    log_b: &Log,
) -> Trial {
    let devname = dev.trim_start_matches("/dev/");
    let mut tr = Trial::default();
    tr.t.insert("losetup", t_losetup - t0);
    let uevent = log_a.first(Some(t0), &["block device event", devname]);
    let scan = log_a.first(uevent, &["scan started", "watcher=\"disks\""]);
    let found = log_a.first(scan, &["disks: ", " found in "]);
    let appeared_on_a = ["fleet change", "event=\"appeared\"", "host=a ", uuid];
    let store_a = log_a.first(Some(t0), &appeared_on_a);
    let announce = log_a.first(store_a, &["announced ", "event=\"peer\""]);
    // A's line is written after its send returns: B may log the receipt first.
    let recv = log_b.first(
        announce.map(|t| t - 5_000),
        &["inventory chunk received", "peer=a "],
    );
    let store_b = log_b.first(Some(t0), &appeared_on_a);
    let react = log_b.first(store_b, &["hook[0]: running for"]);
    for (name, t) in [
        ("uevent", uevent),
        ("settle", scan),
        ("blkid", found),
        ("store_a", store_a),
        ("announce", announce),
        ("network", recv),
        ("store_b", store_b),
        ("react", react),
        ("observe", seen),
    ] {
        if let Some(t) = t {
            tr.t.insert(name, t - t0);
        }
    }
    tr
}

/// The kernel's pressure stall counters (`/proc/pressure/{cpu,io}`, "some" line: total
/// microseconds during which at least one task waited): on a shared 2-core machine the
/// figures mean little without how busy it was meanwhile. Over a round it is mostly the
/// neighbours (a trial is ~20 ms of work then a 300 ms gap); within one trial it would be
/// mostly the trial's own processes competing for two cores, so it is not taken per trial.
struct Pressure {
    at: Instant,
    cpu: u64,
    io: u64,
}

impl Pressure {
    fn total(kind: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/pressure/{kind}")).ok()?;
        let some = text.lines().find(|l| l.starts_with("some "))?;
        some.split_whitespace()
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|t| t.parse().ok())
    }

    fn now() -> Option<Pressure> {
        Some(Pressure {
            at: Instant::now(),
            cpu: Pressure::total("cpu")?,
            io: Pressure::total("io")?,
        })
    }

    /// Percent of the time since `self` that some task waited for CPU, and for I/O.
    fn since(&self) -> Option<(f64, f64)> {
        let us = self.at.elapsed().as_micros() as f64;
        let pct = |now: u64, then: u64| now.saturating_sub(then) as f64 * 100.0 / us;
        Some((
            pct(Pressure::total("cpu")?, self.cpu),
            pct(Pressure::total("io")?, self.io),
        ))
    }
}

/// Print one round's table: p50 / p99 of each step and of the total.
fn report(
    kind: Observer,
    trials: &[Trial],
    missed: usize,
    noise: Option<(f64, f64)>,
    o: &LatencyOptions,
) {
    println!(
        "\nobserver `{}` ({} trials, {} missed, poll {:?}): milliseconds",
        kind.name(),
        trials.len(),
        missed,
        o.poll
    );
    if let Some((cpu, io)) = noise {
        println!(
            "machine during the round: some task waited for CPU {cpu:.0} % of the time, for I/O {io:.0} % (/proc/pressure)"
        );
    }
    println!("\n| step | p50 | p99 | max | trials timed |");
    println!("|---|---:|---:|---:|---:|");
    let mut by_step: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut order = Vec::new();
    for t in trials {
        for (name, v) in t.steps() {
            if !order.contains(&name) {
                order.push(name);
            }
            if let Some(v) = v {
                by_step.entry(name).or_default().push(v);
            }
        }
    }
    for name in order {
        let label = MARKS
            .iter()
            .find(|(m, _)| *m == name)
            .map_or("**end to end** (clock start -> observer)", |(_, l)| l);
        let Some(v) = by_step.get_mut(name) else {
            if !OPTIONAL.contains(&name) {
                println!("| {label} | - | - | - | 0 |");
            }
            continue;
        };
        v.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {} |",
            pct(v, 0.5),
            pct(v, 0.99),
            v[v.len() - 1],
            v.len()
        );
    }
}

/// For `diskd-bench all`: the default round.
pub fn default_options() -> LatencyOptions {
    LatencyOptions {
        trials: 100,
        observer: vec![Observer::Query, Observer::Wait, Observer::Hook],
        poll: Duration::from_millis(1),
        gap: Duration::from_millis(300),
        keep: None,
    }
}
