//! This node's inventory: the watchers observe, one writer composes and stores.
//!
//! Each watcher runs in a task of its own (a hung blkid never delays the mount table): at
//! start, every `interval`, on a kernel change event (at once when the event is isolated,
//! and again once its burst has settled), and on `refresh`. A scan
//! task never writes: it sends what it saw over a bounded channel to the single writer
//! task, which owns the latest observation of every watcher, composes this node's
//! inventory from them and writes it to the store off the async runtime (one flush per
//! write, so it is durable before anyone is told). Because only the writer composes, an
//! older composition can never land after a newer one. When the store cannot write (a
//! full disk), the inventory is published in memory all the same and the store retries
//! (`Store::keep`): the daemon keeps answering what the watchers found.
//!
//! A failed scan changes nothing in the store: the previous inventory stays until the next
//! good scan. Every task stops at once on shutdown, whatever a watcher is doing (dropping
//! a DiskWatcher scan kills blkid with its process group).

mod compose;
mod health;
mod writer;

use writer::Writer;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskd_watchers::{Observation, Watcher};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use health::{WatcherHealth, WatcherState};

use crate::model::{now_millis, rfc3339, NodeInfo};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Extra time the daemon allows beyond a watcher's own timeout before it gives up on the
/// scan future itself (the watcher is expected to clean up within its timeout).
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// How long after a kernel change event the scan that closes its burst runs (a disk and
/// its partitions, a loop attach and its partition scan arrive as several events). The
/// first event of an isolated burst is scanned at once as well (see [`LEADING_QUIET`]),
/// so this no longer delays the first change: it is the window within which anything the
/// kernel finishes after its first event is still picked up without waiting for another
/// event or the interval, as before.
const EVENT_SETTLE: Duration = Duration::from_millis(10);

/// A kernel event is scanned at once (a "leading" scan, before the settle window) only when
/// no scan of this watcher started within this long before it. A plugged disk is such an
/// isolated event and reaches the fleet without waiting for [`EVENT_SETTLE`]; a storm of
/// events (a flapping device, a machine attaching hundreds of loop devices) costs at most
/// one extra scan per `LEADING_QUIET` and is otherwise handled as before: settle, scan.
const LEADING_QUIET: Duration = Duration::from_millis(250);

/// The name of the hardware watcher, whose first look the first write waits for.
const HARDWARE: &str = diskd_watchers::HardwareWatcher::NAME;

/// Observations waiting for the writer; a scan task waits when it is full.
const OBSERVATION_QUEUE: usize = 16;

/// What one watcher's scan came to, as `refresh` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The watcher (`disks`, `mounts`).
    pub watcher: &'static str,
    /// How it went.
    pub outcome: ScanOutcome,
}

/// How a scan went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// It found `found` items in `took`, and the inventory was written.
    Ok {
        /// Items found.
        found: usize,
        /// How long the scan took.
        took: Duration,
        /// What it could still not do (a device blkid could not probe).
        problems: Vec<String>,
    },
    /// It failed; the previous inventory is kept.
    Failed {
        /// Stable reason (`timed_out`, `not_found`, ...).
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The watcher did not answer within the caller's deadline, or is stopping.
    NoAnswer,
}

impl ScanReport {
    /// Whether the scan worked.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, ScanOutcome::Ok { .. })
    }
}

impl fmt::Display for ScanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.watcher;
        match &self.outcome {
            ScanOutcome::Ok {
                found,
                took,
                problems,
            } if problems.is_empty() => write!(f, "{name}: ok, {found} found in {took:.0?}"),
            ScanOutcome::Ok {
                found,
                took,
                problems,
            } => write!(
                f,
                "{name}: {found} found in {took:.0?}, but {}",
                problems.join("; ")
            ),
            ScanOutcome::Failed { message, .. } => write!(f, "{name}: failed: {message}"),
            ScanOutcome::NoAnswer => write!(f, "{name}: did not finish in time"),
        }
    }
}

/// A request to scan now; answered once the result is in the store.
type RefreshRequest = oneshot::Sender<ScanReport>;

/// What the rest of the daemon may do with the inventory: ask for a scan, read watcher
/// health, and learn when the local inventory changed. Cheap to clone.
#[derive(Clone)]
pub struct InventoryHandle {
    refresh: Arc<Vec<(&'static str, mpsc::Sender<RefreshRequest>)>>,
    health: Arc<Mutex<BTreeMap<&'static str, WatcherHealth>>>,
    changed: Arc<Notify>,
}

impl InventoryHandle {
    /// Scan with every watcher now (or only `only`); one report per watcher, in order,
    /// each once its result is in the store.
    pub async fn refresh(&self, only: Option<&str>, deadline: Duration) -> Vec<ScanReport> {
        // One deadline for the whole call, queueing included.
        let until = tokio::time::Instant::now() + deadline;
        let mut waits = Vec::new();
        for (name, tx) in self.refresh.iter() {
            if only.is_some_and(|o| o != *name) {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            match tokio::time::timeout_at(until, tx.send(reply)).await {
                Ok(Ok(())) => waits.push((*name, Some(answer))),
                _ => waits.push((*name, None)),
            }
        }
        let mut out = Vec::new();
        for (watcher, answer) in waits {
            let report = match answer {
                Some(a) => tokio::time::timeout_at(until, a)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            out.push(report.unwrap_or(ScanReport {
                watcher,
                outcome: ScanOutcome::NoAnswer,
            }));
        }
        out
    }

    /// Every watcher's health now.
    pub fn health(&self) -> BTreeMap<&'static str, WatcherHealth> {
        lock(&self.health).clone()
    }

    /// Notified after each write that changed our inventory (the peer layer announces).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }
}

/// What the inventory service needs from the daemon.
pub struct Deps {
    /// Who we are (the records are stored under our node id and name).
    pub node: NodeInfo,
    /// Where the inventory goes.
    pub store: Store,
    /// Counters and events.
    pub telemetry: Telemetry,
    /// Stops every task.
    pub shutdown: CancellationToken,
}

/// One scan's result on its way to the writer.
struct Seen {
    /// What it saw; `None` when the scan failed (the writer keeps what it had, but knows
    /// the watcher has had its try).
    observation: Option<Observation>,
    /// The watcher.
    watcher: &'static str,
    /// When the scan began (see `compose`: what a device waits for).
    started: tokio::time::Instant,
    /// It was a quick look at the devices the kernel named, not at every device.
    quick: bool,
    /// Told once the writer has stored what this observation changed.
    written: oneshot::Sender<()>,
}

/// Start the writer and one scan task per watcher on `tracker`.
pub fn spawn(
    deps: Deps,
    tracker: &TaskTracker,
    watchers: Vec<Arc<dyn Watcher>>,
) -> InventoryHandle {
    let (seen_tx, seen_rx) = mpsc::channel(OBSERVATION_QUEUE);
    let hardware_expected = watchers.iter().any(|w| w.name() == HARDWARE);
    let watchers_named: Vec<&'static str> = watchers.iter().map(|w| w.name()).collect();
    let health = Arc::new(Mutex::new(BTreeMap::new()));
    let changed = Arc::new(Notify::new());
    let mut refresh = Vec::new();
    for w in watchers {
        let (tx, rx) = mpsc::channel::<RefreshRequest>(16);
        refresh.push((w.name(), tx));
        lock(&health).insert(w.name(), WatcherHealth::starting(w.schedule().interval));
        let scanner = Scanner {
            watcher: w,
            health: health.clone(),
            telemetry: deps.telemetry.clone(),
            seen: seen_tx.clone(),
        };
        tracker.spawn(scanner.run(rx, deps.shutdown.clone()));
    }
    let smart_expected = watchers_named.contains(&diskd_watchers::SmartWatcher::NAME);
    let mut composer = compose::Composer::new(hardware_expected);
    if smart_expected {
        // Until the SMART watcher's first pass of this run, each disk keeps the reading
        // stored before the restart (else a restart would tell the fleet every reading
        // went and came back, and a failing disk would raise `health-changed` again).
        composer.remember_health(&deps.store.local_inventory());
    }
    let writer = Writer {
        node: deps.node,
        store: deps.store,
        telemetry: deps.telemetry,
        changed: changed.clone(),
        composer,
        written: None,
    };
    tracker.spawn(writer.run(seen_rx, deps.shutdown));
    InventoryHandle {
        refresh: Arc::new(refresh),
        health,
        changed,
    }
}

/// Sleeps until `t`; never wakes without one.
async fn at(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs one watcher on its schedule and hands what it sees to the writer.
struct Scanner {
    watcher: Arc<dyn Watcher>,
    health: Arc<Mutex<BTreeMap<&'static str, WatcherHealth>>>,
    telemetry: Telemetry,
    seen: mpsc::Sender<Seen>,
}

impl Scanner {
    async fn run(self, mut refresh: mpsc::Receiver<RefreshRequest>, shutdown: CancellationToken) {
        let name = self.watcher.name();
        let mut next = tokio::time::Instant::now();
        // When the scan that closes the current burst of kernel events is due.
        let mut settled: Option<tokio::time::Instant> = None;
        let mut last_start: Option<tokio::time::Instant> = None;
        loop {
            let (reply, quick) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => (None, false),
                Some(reply) = refresh.recv() => {
                    // Its caller gave up while it waited (a hung scan before it): no scan
                    // for nobody.
                    if reply.is_closed() {
                        continue;
                    }
                    (Some(reply), false)
                }
                _ = at(settled) => {
                    settled = None;
                    self.telemetry.events.emit("scan", format!("{name}: kernel events settled"));
                    (None, false)
                }
                _ = self.watcher.changed() => {
                    if settled.is_some() {
                        // Part of a burst: the settled scan, still to come, covers it.
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    // Whatever happens, one scan after the burst has settled, so anything
                    // the kernel completes just after its event is seen.
                    settled = Some(now + EVENT_SETTLE);
                    if last_start.is_some_and(|t| now < t + LEADING_QUIET) {
                        // Events in quick succession: settle first, as one scan.
                        continue;
                    }
                    // An isolated event (a disk plugged in): look now, at what it named
                    // if the watcher can (the settled scan looks at everything).
                    self.telemetry.events.emit("scan", format!("{name}: change notified by the kernel"));
                    (None, true)
                }
            };
            last_start = Some(tokio::time::Instant::now());
            // The scan itself is cancelled by shutdown too: a hung blkid must not hold up
            // `systemctl stop` (dropping the scan kills it with its process group).
            let report = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.scan_once(quick) => r,
            };
            if let Some(reply) = reply {
                // The requester may have given up; that is fine.
                let _ = reply.send(report);
            }
            next = tokio::time::Instant::now() + self.watcher.schedule().interval;
        }
    }

    /// Scan once (`quick`: only what the kernel events named, when the watcher can; see
    /// [`Watcher::scan_changed`]), record health, and wait until the writer has stored
    /// the result.
    async fn scan_once(&self, quick: bool) -> ScanReport {
        let w = self.watcher.as_ref();
        let name = w.name();
        let started = Instant::now();
        let began = tokio::time::Instant::now();
        tracing::debug!(watcher = name, quick, "scan started");
        self.set_health(|h| h.running_since = Some(rfc3339(now_millis())));
        let limit = w.schedule().timeout + TIMEOUT_GRACE;
        let looked = if quick {
            // A quick look that hangs or declines is followed by a full scan at once.
            tokio::time::timeout(limit, w.scan_changed())
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let quick = looked.is_some();
        let result = match looked {
            Some(observation) => Ok(observation),
            None => match tokio::time::timeout(limit, w.scan()).await {
                Ok(r) => r,
                Err(_) => Err(diskd_watchers::WatchError::TimedOut {
                    program: name.to_string(),
                    timeout: limit,
                }),
            },
        };
        let took = started.elapsed();
        let report = self.report(name, result, quick, took);
        let observation = report.1;
        let (written, stored) = oneshot::channel();
        let seen = Seen {
            observation,
            watcher: name,
            started: began,
            quick,
            written,
        };
        if self.seen.send(seen).await.is_ok() {
            // The writer answers once the store has it (or drops the sender when
            // stopping): either way the scan is over.
            let _ = stored.await;
        }
        report.0
    }

    /// Record how a scan went (health, logs, the debug feed); the report for `refresh`
    /// and what goes to the writer.
    fn report(
        &self,
        name: &'static str,
        result: Result<Observation, diskd_watchers::WatchError>,
        quick: bool,
        took: Duration,
    ) -> (ScanReport, Option<Observation>) {
        let events = &self.telemetry.events;
        match result {
            Ok(observation) => {
                let found = match &observation {
                    Observation::Disks(d) => d.len(),
                    Observation::Mounts(m) => m.len(),
                    Observation::Hardware(h) => h.len(),
                    Observation::Smart(r) => r.len(),
                };
                let problems = observation.problems();
                let smart = matches!(observation, Observation::Smart(_));
                let (recovered, before) = self.set_health(|h| {
                    let before = h.problems.clone();
                    (h.succeeded(found, took, problems.clone(), smart), before)
                });
                if recovered {
                    tracing::info!(watcher = name, "scans work again");
                }
                // Logged when they change, not on every scan.
                if problems != before {
                    // The SMART watcher logs each disk's change of state itself.
                    if !smart {
                        for p in problems.iter().filter(|p| !before.contains(p)) {
                            tracing::warn!(watcher = name, "{p}; not offered as blank");
                        }
                    }
                    if problems.is_empty() {
                        if !smart {
                            tracing::info!(watcher = name, "every device probed again");
                        }
                    } else {
                        events.emit("error", format!("{name}: {}", problems.join("; ")));
                    }
                }
                let only = if quick { " (changed devices only)" } else { "" };
                events.emit("scan", format!("{name}: {found} found in {took:.0?}{only}"));
                let report = ScanReport {
                    watcher: name,
                    outcome: ScanOutcome::Ok {
                        found,
                        took,
                        problems,
                    },
                };
                (report, Some(observation))
            }
            Err(e) => {
                let kind = e.kind();
                let changed = self.set_health(|h| h.failed(kind, e.to_string(), took));
                // Logged once per change of state, not on every failing scan.
                if changed {
                    tracing::warn!(
                        watcher = name,
                        reason = kind,
                        "scan failed: {e}; keeping the previous inventory"
                    );
                }
                events.emit("error", format!("{name}: {e}"));
                let report = ScanReport {
                    watcher: name,
                    outcome: ScanOutcome::Failed {
                        kind,
                        message: e.to_string(),
                    },
                };
                (report, None)
            }
        }
    }

    fn set_health<R>(&self, f: impl FnOnce(&mut WatcherHealth) -> R) -> R {
        let mut table = lock(&self.health);
        f(table.entry(self.watcher.name()).or_default())
    }
}

/// Lock a mutex that guards plain data; a poisoned lock only means a panic elsewhere
/// mid-update, and the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskd_watchers::{Schedule, WatchError};

    /// A watcher driven by the test: `changed` resolves once per event sent; every look is
    /// recorded, `quick` or `full`.
    struct Scripted {
        events: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
        looks: Mutex<Vec<&'static str>>,
    }

    #[async_trait::async_trait]
    impl Watcher for Scripted {
        fn name(&self) -> &'static str {
            "disks"
        }
        fn schedule(&self) -> Schedule {
            Schedule {
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(5),
            }
        }
        async fn scan(&self) -> Result<Observation, WatchError> {
            lock(&self.looks).push("full");
            Ok(Observation::Disks(Vec::new()))
        }
        async fn scan_changed(&self) -> Option<Observation> {
            lock(&self.looks).push("quick");
            Some(Observation::Disks(Vec::new()))
        }
        async fn changed(&self) {
            if self.events.lock().await.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
    }

    /// A scanner of a scripted watcher, its writer acknowledging every observation; the
    /// sender of kernel events and the watcher (for its looks).
    fn start() -> (mpsc::UnboundedSender<()>, Arc<Scripted>, CancellationToken) {
        let (events, rx) = mpsc::unbounded_channel();
        let watcher = Arc::new(Scripted {
            events: tokio::sync::Mutex::new(rx),
            looks: Mutex::new(Vec::new()),
        });
        let (seen, mut seen_rx) = mpsc::channel::<Seen>(OBSERVATION_QUEUE);
        let scanner = Scanner {
            watcher: watcher.clone(),
            health: Arc::new(Mutex::new(BTreeMap::new())),
            telemetry: Telemetry::default(),
            seen,
        };
        let (refresh, refresh_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // Kept open: no refresh in these tests.
            let _refresh = refresh;
            scanner.run(refresh_rx, stop).await
        });
        tokio::spawn(async move {
            while let Some(s) = seen_rx.recv().await {
                let _ = s.written.send(());
            }
        });
        (events, watcher, shutdown)
    }

    fn looks(w: &Scripted) -> Vec<&'static str> {
        std::mem::take(&mut *lock(&w.looks))
    }

    /// Time (paused, so only the order of things matters) for every due scan to run.
    async fn idle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_event_is_looked_at_at_once_and_scanned_again_once_settled() {
        let (events, w, stop) = start();
        idle().await;
        assert_eq!(looks(&w), ["full"], "the start-up scan");
        events.send(()).unwrap();
        idle().await;
        assert_eq!(looks(&w), ["quick", "full"]);
        // A burst: one quick look at its first event, one full scan for the rest.
        for _ in 0..3 {
            events.send(()).unwrap();
        }
        idle().await;
        assert_eq!(looks(&w), ["quick", "full"]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn events_in_quick_succession_settle_first_as_before() {
        let (events, w, stop) = start();
        idle().await;
        events.send(()).unwrap();
        // After the settled scan of the first event, but well within LEADING_QUIET of it.
        tokio::time::sleep(EVENT_SETTLE * 5).await;
        assert!(EVENT_SETTLE * 5 < LEADING_QUIET);
        events.send(()).unwrap();
        idle().await;
        assert_eq!(looks(&w), ["full", "quick", "full", "full"]);
        // Quiet again: the next event is isolated.
        tokio::time::sleep(LEADING_QUIET).await;
        events.send(()).unwrap();
        idle().await;
        assert_eq!(looks(&w), ["quick", "full"]);
        stop.cancel();
    }
}
