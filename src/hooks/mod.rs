//! Hooks: the commands an operator configured (`hooks:` in the YAML file) to run on
//! changes of the fleet picture, such as "back up every disk labelled `backup*` when it
//! appears anywhere".
//!
//! A consumer of the fleet event bus (`telemetry.fleet`), beside the control server; it
//! reads nothing else and nobody reads it but `status` (through [`HooksHandle`]). Two
//! tasks: the dispatcher matches each event against every hook and queues a job per
//! match (bounded; overflow is dropped and counted, never waited for, so a slow hook
//! cannot hold up the bus); the executor starts queued jobs, at most
//! `hooks_max_running` at once. How one command is run (argv, never a shell; its own
//! process group; environment; output; timeout) is in [`run`].
//!
//! Shutdown: on the daemon's shutdown signal no event is taken any more, queued jobs are
//! discarded, and running commands get SIGTERM and, after a short grace, SIGKILL on their
//! whole process group, well within the daemon's drain deadline. A hook is a reaction to
//! a change while the daemon runs; a daemon that has stopped leaves nothing of it running.

pub mod run;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Hook};
use crate::model::{FleetEvent, NodeInfo};
use crate::telemetry::Telemetry;

use run::{Outcome, Runner};

/// Jobs waiting for a free slot, over all hooks; past this a match is dropped and counted.
pub const QUEUE: usize = 256;

/// Drops are logged at most this often (with how many there were); `status` counts all.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the hooks service needs.
pub struct Deps {
    /// The validated configuration (its `hooks` and `hooks_max_running`).
    pub config: Arc<Config>,
    /// Who we are (`DISKD_NODE`).
    pub node: NodeInfo,
    /// The fleet event bus and the counters.
    pub telemetry: Telemetry,
    /// The daemon-wide shutdown signal.
    pub shutdown: CancellationToken,
}

/// Counters of one hook.
#[derive(Debug, Default)]
struct Counters {
    runs: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    dropped: AtomicU64,
    running: AtomicU64,
    unsealed: AtomicU64,
}

struct Shared {
    config: Arc<Config>,
    counters: Vec<Counters>,
    queued: AtomicU64,
    missed: AtomicU64,
}

impl Shared {
    /// Nothing counted yet for any of `config`'s hooks.
    fn new(config: Arc<Config>) -> Shared {
        Shared {
            counters: config.hooks.iter().map(|_| Counters::default()).collect(),
            config,
            queued: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    fn hook(&self, index: usize) -> &Hook {
        &self.config.hooks[index]
    }
}

/// What `status` shows of the hooks: a cheap `Clone`.
#[derive(Clone)]
pub struct HooksHandle {
    shared: Arc<Shared>,
}

/// One hook in `status --json` (`hooks` array).
#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    /// Its place in the `hooks` list.
    pub index: usize,
    /// The events it runs on.
    pub on: Vec<&'static str>,
    /// Its argv, shell-quoted for reading (it is never run through a shell).
    pub run: String,
    /// Its UUID/label glob.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Its host-name glob.
    pub host: String,
    /// Only this machine's disks.
    pub local: bool,
    /// Its timeout (humantime).
    pub timeout: String,
    /// Runs started (a command that could not be started counts as a run and a failure).
    pub runs: u64,
    /// Runs that exited non-zero, died of a signal not sent by diskd, or could not start.
    pub failures: u64,
    /// Runs killed at their timeout.
    pub timeouts: u64,
    /// Matches not run: the queue was full (or the daemon stopped before their turn).
    pub dropped: u64,
    /// Running now.
    pub running: u64,
    /// Runs as this user (`null`: the daemon's).
    pub user: Option<String>,
    /// Also runs for unsealed peers' events.
    pub allow_unsealed: bool,
    /// Matches not run because the event came from a peer heard unsealed (no keys, or a
    /// legacy Perl peer) and the hook does not `allow_unsealed`.
    pub unsealed_refused: u64,
}

impl HooksHandle {
    /// Every hook with its counters, in the order configured.
    pub fn report(&self) -> Vec<HookReport> {
        let s = &self.shared;
        s.config
            .hooks
            .iter()
            .zip(&s.counters)
            .map(|(h, c)| HookReport {
                index: h.index,
                on: h.on.iter().map(|k| k.name()).collect(),
                run: h
                    .run
                    .iter()
                    .map(|w| crate::protocol::frame::quote(w))
                    .collect::<Vec<_>>()
                    .join(" "),
                pattern: h.disk.text().to_string(),
                host: h.host.text().to_string(),
                local: h.local,
                timeout: humantime::format_duration(h.timeout).to_string(),
                runs: c.runs.load(Ordering::Relaxed),
                failures: c.failures.load(Ordering::Relaxed),
                timeouts: c.timeouts.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                running: c.running.load(Ordering::Relaxed),
                user: h.run_as.as_ref().map(|r| r.user.clone()),
                allow_unsealed: h.allow_unsealed,
                unsealed_refused: c.unsealed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Jobs waiting for a free slot now.
    pub fn queued(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Fleet events the hooks never saw because the bus ran ahead of the dispatcher
    /// (whichever hooks they would have matched did not run).
    pub fn events_missed(&self) -> u64 {
        self.shared.missed.load(Ordering::Relaxed)
    }

    /// At most this many commands run at once.
    pub fn max_running(&self) -> usize {
        self.shared.config.hooks_max_running
    }
}

/// Whether `hook` runs on `event`: it [`matches`] it, and the event is this machine's or a
/// sealed peer's, or the hook allows unsealed ones.
pub fn runs_on(hook: &Hook, event: &FleetEvent) -> bool {
    matches(hook, event) && (event.sealed || hook.allow_unsealed)
}

/// Whether `hook` is about `event`, whoever said it.
///
/// `on` lists the event's kind; `local: true` wants this machine; `host` matches the
/// host's node name; `match` matches the disk's UUID, label, serial or WWN (a blank disk
/// has only its hardware to be known by); `health` lists the disk's SMART verdicts wanted
/// (`health: [failing]`). Peer events have no disk:
/// they match only a hook whose `match` is `*` (the default).
pub fn matches(hook: &Hook, event: &FleetEvent) -> bool {
    hook.on.contains(&event.kind)
        && (!hook.local || event.local)
        && hook.host.matches_any([Some(event.host.as_str())])
        && (hook.health.is_empty()
            || event
                .disk
                .as_ref()
                .and_then(|d| d.health.as_ref())
                .is_some_and(|h| hook.health.contains(&h.state)))
        && match &event.disk {
            Some(d) => {
                // A WWN as sysfs writes it (`naa.5000c500...`) and bare, lower case.
                let wwn_key = d.hardware.wwn.as_deref().map(crate::model::wwn_key);
                hook.disk.matches_any([
                    d.uuid.as_deref(),
                    d.label.as_deref(),
                    d.hardware.serial.as_deref(),
                    d.hardware.wwn.as_deref(),
                    wwn_key.as_deref(),
                ])
            }
            None => hook.disk.is_any(),
        }
}

struct Job {
    hook: usize,
    event: Arc<FleetEvent>,
}

/// Start the hooks service. It subscribes to the fleet bus here, before returning: call it
/// before the services that publish on the bus start, so their first events are seen.
pub fn spawn(deps: Deps, tracker: &TaskTracker) -> HooksHandle {
    let shared = Arc::new(Shared::new(deps.config.clone()));
    let handle = HooksHandle {
        shared: shared.clone(),
    };
    if deps.config.hooks.is_empty() {
        return handle;
    }
    for h in &deps.config.hooks {
        run::warn_if_missing(h);
    }
    tracing::info!(
        hooks = deps.config.hooks.len(),
        max_running = deps.config.hooks_max_running,
        "hooks ready"
    );
    let events = deps.telemetry.fleet.subscribe();
    let (jobs, queue) = mpsc::channel(QUEUE);
    let runner = Arc::new(Runner::new(&deps.config, &deps.node));
    tracker.spawn(dispatch(
        shared.clone(),
        events,
        jobs,
        deps.shutdown.clone(),
    ));
    tracker.spawn(execute(
        shared,
        runner,
        queue,
        tracker.clone(),
        deps.shutdown,
    ));
    handle
}

/// Drops are logged at once, then at most every [`DROP_LOG_EVERY`] with how many there
/// were meanwhile (the rest of a burst is reported when that time is up).
#[derive(Default)]
struct DropLog {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl DropLog {
    fn dropped(&mut self, job: &Job) {
        tracing::debug!(
            hook = job.hook,
            event = job.event.kind.name(),
            "hook[{}]: queue full, run dropped",
            job.hook
        );
        self.unlogged += 1;
        if self.last.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            tracing::warn!(
                "hook[{}]: run for {} dropped: {QUEUE} runs already wait for a free slot (hooks_max_running); `status` counts drops per hook",
                job.hook,
                describe(&job.event),
            );
            self.last = Some(tokio::time::Instant::now());
            self.unlogged = 0;
        }
    }

    /// When the drops not logged yet are due, if there are any.
    fn due(&self) -> Option<tokio::time::Instant> {
        match self.last {
            Some(t) if self.unlogged > 0 => Some(t + DROP_LOG_EVERY),
            _ => None,
        }
    }

    fn report(&mut self) {
        tracing::warn!(
            dropped = self.unlogged,
            "hooks: {} more runs dropped (queue full); `status` counts drops per hook",
            self.unlogged
        );
        self.last = Some(tokio::time::Instant::now());
        self.unlogged = 0;
    }
}

/// Match each event against the hooks; queue a job per match, never waiting.
async fn dispatch(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<Arc<FleetEvent>>,
    jobs: mpsc::Sender<Job>,
    shutdown: CancellationToken,
) {
    let mut drops = DropLog::default();
    loop {
        let due = drops.due();
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = sleep_until(due), if due.is_some() => {
                drops.report();
                continue;
            }
            r = events.recv() => r,
        };
        let event = match received {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                shared.missed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    missed = n,
                    "hooks: {n} fleet events were missed (a burst larger than the bus holds); hooks did not run for them"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for hook in shared.config.hooks.iter().filter(|h| matches(h, &event)) {
            if !runs_on(hook, &event) {
                // An unsealed peer's word (anyone on the LAN could have sent it): counted,
                // not run.
                shared.counters[hook.index]
                    .unsealed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    hook = hook.index,
                    "hook[{}]: not run for {}: the event came unsealed (allow_unsealed is off)",
                    hook.index,
                    describe(&event)
                );
                continue;
            }
            let job = Job {
                hook: hook.index,
                event: event.clone(),
            };
            // Counted before it can be taken, so `queued` never goes below zero.
            shared.queued.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = jobs.try_send(job) {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                let closed = matches!(e, mpsc::error::TrySendError::Closed(_));
                let job = e.into_inner();
                shared.counters[job.hook]
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                if closed {
                    return; // the executor stopped: shutting down
                }
                drops.dropped(&job);
            }
        }
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Start queued jobs as slots free up.
async fn execute(
    shared: Arc<Shared>,
    runner: Arc<Runner>,
    mut queue: mpsc::Receiver<Job>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.hooks_max_running));
    loop {
        // A slot first, then a job: a job is taken off the queue only when it can start.
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break, // never closed
            },
        };
        let job = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            j = queue.recv() => match j {
                Some(j) => j,
                None => break,
            },
        };
        shared.queued.fetch_sub(1, Ordering::Relaxed);
        let shared = shared.clone();
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            run_job(&shared, &runner, job, &shutdown).await;
            drop(slot);
        });
    }
    // Shutting down: what waits is not started.
    queue.close();
    let mut discarded = 0u64;
    while let Ok(job) = queue.try_recv() {
        shared.queued.fetch_sub(1, Ordering::Relaxed);
        shared.counters[job.hook]
            .dropped
            .fetch_add(1, Ordering::Relaxed);
        discarded += 1;
    }
    if discarded > 0 {
        tracing::info!("hooks: {discarded} queued runs not started: the daemon is stopping");
    }
}

async fn run_job(shared: &Shared, runner: &Runner, job: Job, shutdown: &CancellationToken) {
    let hook = shared.hook(job.hook);
    let c = &shared.counters[job.hook];
    c.runs.fetch_add(1, Ordering::Relaxed);
    c.running.fetch_add(1, Ordering::Relaxed);
    let what = describe(&job.event);
    tracing::debug!(
        hook = hook.index,
        "hook[{}]: running for {what}",
        hook.index
    );
    let started = Instant::now();
    let outcome = runner.run(hook, &job.event, shutdown).await;
    let took =
        humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64));
    let i = hook.index;
    match outcome {
        Outcome::Exited(status) if status.success() => {
            tracing::info!(hook = i, "hook[{i}]: done for {what} in {took}");
        }
        Outcome::Exited(status) => {
            c.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                hook = i,
                "hook[{i}]: failed for {what}: {status} after {took}"
            );
        }
        Outcome::NotStarted(e) => {
            c.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                hook = i,
                "hook[{i}]: cannot run {:?} for {what}: {e}",
                hook.run[0]
            );
        }
        Outcome::TimedOut(ended) => {
            c.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                hook = i,
                "hook[{i}]: timed out for {what} after {}: {}",
                humantime::format_duration(hook.timeout),
                killed(ended)
            );
        }
        Outcome::Stopped(ended) => {
            tracing::info!(
                hook = i,
                "hook[{i}]: stopped for {what} (the daemon is stopping): {}",
                killed(ended)
            );
        }
    }
    c.running.fetch_sub(1, Ordering::Relaxed);
}

fn killed(ended: run::Ended) -> &'static str {
    match ended {
        run::Ended::OnTerm => "ended on SIGTERM to its process group",
        run::Ended::Killed => "SIGTERM, then SIGKILL, to its process group",
    }
}

/// The event in a log line: `appeared "backup" on node-a`. Labels are anyone's text:
/// quoted and escaped (Debug), never printed raw.
fn describe(e: &FleetEvent) -> String {
    match &e.disk {
        Some(d) => {
            let name = d
                .label
                .as_deref()
                .or(d.uuid.as_deref())
                .unwrap_or(&d.device);
            format!("{} {name:?} on {:?}", e.kind.name(), e.host)
        }
        None => format!("{} {:?}", e.kind.name(), e.host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fleet::Host;
    use crate::model::{DiskRecord, FleetEventKind};
    use std::collections::HashMap;
    use std::ffi::OsString;

    /// A config with `yaml`'s hooks, as a daemon with keys has it (the key file is only
    /// read when the daemon starts).
    fn config(yaml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, format!("security:\n  key_files: [/k]\n{yaml}")).unwrap();
        Config::load(Some(&p), None, &crate::flags::DaemonArgs::default()).unwrap()
    }

    fn disk(label: Option<&str>, uuid: Option<&str>) -> DiskRecord {
        DiskRecord {
            probe: Default::default(),
            uuid: uuid.map(str::to_string),
            label: label.map(str::to_string),
            device: "/dev/sdb1".into(),
            fstype: Some("ext4".into()),
            mountpoints: vec![],
            hardware: Default::default(),
            health: None,
            fs: None,
        }
    }

    fn host(name: &str, local: bool) -> Host<'_> {
        Host {
            node_id: "00000000000000000000000000000001",
            name,
            addr: Some("198.18.0.1"),
            local,
            sealed: true,
        }
    }

    /// The environment a run of one of `c`'s hooks gets for `e`, by name.
    fn environment(c: &Config, e: &FleetEvent) -> HashMap<&'static str, OsString> {
        let node = NodeInfo::new("node", "00000000000000000000000000000002");
        run::Runner::new(c, &node)
            .environment(e)
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn a_lagging_bus_and_a_full_queue_are_counted_never_waited_for() {
        let c = Arc::new(config(
            "hooks:\n- {on: [appeared], run: x}\n- {on: [vanished], run: x}\n",
        ));
        let shared = Arc::new(Shared::new(c));
        let (tx, rx) = broadcast::channel(4);
        let (jobs, mut queue) = mpsc::channel(2);
        let ev = |k| {
            Arc::new(FleetEvent::disk(
                k,
                0,
                &host("a", false),
                &disk(Some("x"), None),
            ))
        };
        // 10 events into a bus that keeps 4: the first 6 are lost to the dispatcher.
        for _ in 0..10 {
            tx.send(ev(FleetEventKind::Vanished)).unwrap();
        }
        drop(tx);
        dispatch(shared.clone(), rx, jobs, CancellationToken::new()).await;
        assert_eq!(shared.missed.load(Ordering::Relaxed), 6);
        // Of the 4 it saw, 2 fit the queue; 2 were dropped, all for hook 1.
        assert_eq!(shared.counters[1].dropped.load(Ordering::Relaxed), 2);
        assert_eq!(shared.counters[0].dropped.load(Ordering::Relaxed), 0);
        assert_eq!(shared.queued.load(Ordering::Relaxed), 2);
        assert_eq!(queue.recv().await.unwrap().hook, 1);
    }

    #[test]
    fn hooks_match_kind_glob_host_and_locality() {
        let c = config(
            "hooks:\n\
             - {on: [appeared, mounted], match: 'backup*', run: x}\n\
             - {on: [appeared, peer-live], host: 'node-?', run: x}\n\
             - {on: [vanished], local: true, run: x}\n\
             - {on: [appeared], match: '6FE1*', run: x}\n",
        );
        let [h0, h1, h2, h3] = &c.hooks[..] else {
            panic!("{:?}", c.hooks)
        };
        let a = |label, uuid, h: &Host<'_>| {
            FleetEvent::disk(FleetEventKind::Appeared, 0, h, &disk(label, uuid))
        };
        let far = host("node-a", false);
        let other = host("store-1", false);
        assert!(matches(h0, &a(Some("backup-1"), None, &far)));
        assert!(!matches(h0, &a(Some("photos"), None, &far)));
        // `*` stops at `/`, as in mount.allow.
        assert!(!matches(h0, &a(Some("backup/x"), None, &far)));
        // A disk with neither UUID nor label matches only `*`.
        assert!(!matches(h0, &a(None, None, &far)));
        assert!(matches(h1, &a(None, None, &far)));
        assert!(!matches(h1, &a(None, None, &other)));
        // Peer events: no disk, so only a hook with `match: *` runs on them.
        let live = FleetEvent::peer(FleetEventKind::PeerLive, 0, &far);
        assert!(matches(h1, &live));
        let mut h0_peer = h0.clone();
        h0_peer.on.push(FleetEventKind::PeerLive);
        assert!(!matches(&h0_peer, &live));
        // local
        let gone =
            |h: &Host<'_>| FleetEvent::disk(FleetEventKind::Vanished, 0, h, &disk(Some("x"), None));
        assert!(!matches(h2, &gone(&far)));
        assert!(matches(h2, &gone(&host("me", true))));
        assert!(!matches(h2, &a(Some("x"), None, &host("me", true))));
        // UUID globs match as written (case-sensitive), as mount.allow does.
        assert!(matches(h3, &a(None, Some("6FE176FB-1"), &far)));
        assert!(!matches(h3, &a(None, Some("6fe176fb-1"), &far)));
    }

    #[test]
    fn an_unsealed_peer_runs_only_hooks_that_allow_it_and_the_run_is_told() {
        let c = config(
            "hooks:\n\
             - {on: [appeared], run: x}\n\
             - {on: [appeared], allow_unsealed: true, run: x}\n",
        );
        let [strict, lax] = &c.hooks[..] else {
            panic!("{:?}", c.hooks)
        };
        let from = |sealed, local| {
            let h = Host {
                sealed,
                ..host("a", local)
            };
            FleetEvent::disk(FleetEventKind::Appeared, 0, &h, &disk(Some("x"), None))
        };
        let (sealed, unsealed, mine) = (from(true, false), from(false, false), from(false, true));
        assert!(runs_on(strict, &sealed) && runs_on(lax, &sealed));
        assert!(matches(strict, &unsealed) && !runs_on(strict, &unsealed));
        assert!(runs_on(lax, &unsealed));
        assert!(
            runs_on(strict, &mine),
            "this machine's own events are trusted"
        );
        let env = |e: &FleetEvent| -> String {
            environment(&c, e)["DISKD_SEALED"]
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(env(&sealed), "1");
        assert_eq!(env(&unsealed), "0");
        assert_eq!(env(&mine), "1");
    }

    #[tokio::test]
    async fn an_unsealed_event_a_hook_refuses_is_counted_not_queued() {
        let c = Arc::new(config("hooks:\n- {on: [appeared], run: x}\n"));
        let shared = Arc::new(Shared::new(c));
        let (tx, rx) = broadcast::channel(8);
        let (jobs, mut queue) = mpsc::channel(8);
        let h = Host {
            sealed: false,
            ..host("a", false)
        };
        let forged = FleetEvent::disk(FleetEventKind::Appeared, 0, &h, &disk(Some("x"), None));
        let real = FleetEvent::disk(
            FleetEventKind::Appeared,
            0,
            &host("a", false),
            &disk(Some("y"), None),
        );
        tx.send(Arc::new(forged)).unwrap();
        tx.send(Arc::new(real)).unwrap();
        drop(tx);
        dispatch(shared.clone(), rx, jobs, CancellationToken::new()).await;
        assert_eq!(shared.counters[0].unsealed.load(Ordering::Relaxed), 1);
        let job = queue.recv().await.unwrap();
        assert_eq!(job.event.disk.as_ref().unwrap().label.as_deref(), Some("y"));
        assert!(queue.try_recv().is_err(), "the unsealed event was queued");
    }

    #[test]
    fn a_blank_disk_matches_by_its_serial_or_wwn_and_its_run_gets_them() {
        let c = config(
            "hooks:\n\
             - {on: [appeared], match: 'ZFN*', run: x}\n\
             - {on: [appeared], match: 'naa.5000c500*', run: x}\n",
        );
        let [serial, wwn] = &c.hooks[..] else {
            panic!("{:?}", c.hooks)
        };
        let mut blank = disk(None, None);
        blank.fstype = None;
        blank.hardware.serial = Some("ZFN0A1B2".into());
        blank.hardware.size = Some(4_000_787_030_016);
        let e = FleetEvent::disk(FleetEventKind::Appeared, 0, &host("a", false), &blank);
        assert!(matches(serial, &e));
        assert!(!matches(wwn, &e));
        blank.hardware.wwn = Some("naa.5000c500a1b2c3d4".into());
        let e = FleetEvent::disk(FleetEventKind::Appeared, 0, &host("a", false), &blank);
        assert!(matches(wwn, &e));
        let bare = config("hooks:\n- {on: [appeared], match: '5000c500a1b2*', run: x}\n");
        assert!(matches(&bare.hooks[0], &e), "the WWN without its prefix");
        let env = environment(&c, &e);
        assert_eq!(env["DISKD_SERIAL"], "ZFN0A1B2");
        assert_eq!(env["DISKD_WWN"], "naa.5000c500a1b2c3d4");
        assert_eq!(env["DISKD_SIZE"], "4000787030016");
        assert_eq!(env["DISKD_MODEL"], "");
        assert_eq!(env["DISKD_UUID"], "");
    }

    #[test]
    fn health_filters_and_variables() {
        use crate::model::{DiskHealth, FsUsage, HealthState};
        let c = config("hooks:\n- {on: [health-changed], health: [warning, failing], run: x}\n");
        let h = &c.hooks[0];
        let mut d = disk(None, None);
        d.hardware.serial = Some("S1".into());
        let event = |d: &DiskRecord| {
            FleetEvent::disk(FleetEventKind::HealthChanged, 0, &host("a", false), d)
        };
        // No reading: a health filter never matches.
        assert!(!matches(h, &event(&d)));
        d.health = Some(DiskHealth {
            state: HealthState::Ok,
            ..Default::default()
        });
        assert!(!matches(h, &event(&d)));
        d.health = Some(DiskHealth {
            state: HealthState::Failing,
            reasons: vec![
                "SMART overall-health assessment failed".into(),
                "8 reallocated sectors".into(),
            ],
            ..Default::default()
        });
        d.fs = Some(FsUsage {
            size: 100,
            used: 40,
            avail: 55,
        });
        let mut e = event(&d);
        e.health_was = Some(HealthState::Ok);
        assert!(matches(h, &e));
        let env = environment(&c, &e);
        assert_eq!(env["DISKD_EVENT"], "health-changed");
        assert_eq!(env["DISKD_HEALTH"], "failing");
        assert_eq!(
            env["DISKD_HEALTH_REASONS"],
            "SMART overall-health assessment failed; 8 reallocated sectors"
        );
        assert_eq!(env["DISKD_HEALTH_WAS"], "ok");
        assert_eq!(env["DISKD_FS_AVAIL"], "55");
        // A state that is not one is a config error naming the key.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "hooks:\n- {on: [health-changed], local: true, health: [dying], run: x}\n",
        )
        .unwrap();
        let bad = Config::load(Some(&p), None, &crate::flags::DaemonArgs::default());
        assert!(bad.unwrap_err().to_string().contains("hooks[0].health"));
    }
}
