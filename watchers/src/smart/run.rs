//! The SMART watcher's schedule: each disk is read on its own clock, one smartctl at a
//! time, and a scan reports every disk with its latest reading.
//!
//! SMART figures change over days, reading them costs a command to each disk (and, for a
//! disk that is asleep, would cost a spin-up), and a dying disk can hang its smartctl for
//! the whole timeout. So the watcher does not read every disk on every scan: a disk is
//! read when it first appears and then again once its last reading is `interval` old, and
//! in between a scan reports the cached reading. Runs are strictly sequential so that a
//! machine with dozens of disks never has dozens of smartctl processes queued on the same
//! controller.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::time::Instant;

use super::parse::parse_smartctl;
use super::verdict::verdict;
use super::whole::{whole_disks, WholeDisk};
use super::{DiskHealth, HealthState, SmartReading, SmartWatcherConfig};
use crate::disks::run::{first_line, run_capped, REAP_GRACE};
use crate::events::LazyBlockEvents;
use crate::filter::DeviceFilter;
use crate::{Observation, Schedule, WatchError, Watcher};

/// More stdout than this is not one disk's report but a runaway program: `smartctl -x
/// --json` of a disk with full logs is about 100 KiB.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// The options added after the configured command; the device path follows them, last.
/// `-a`: health, attributes or health log, and the logs' summaries. `-n standby`: a disk
/// that sleeps is not woken (smartctl exits with bit 1 set instead).
pub const SMARTCTL_OPTIONS: [&str; 4] = ["--json", "-a", "-n", "standby"];

/// The reason of a disk that has not been read yet (the pass ran out of time before it).
const NOT_READ_YET: &str = "not read yet";
/// Before the reason a run failed, added to a `warning` or `failing` reading it keeps.
const LAST_RUN: &str = "last read failed: ";
/// The reason of a sleeping disk without an earlier reading to keep.
const IN_STANDBY: &str = "in standby, not woken";

/// `known` before the first listing.
const UNLISTED: usize = usize::MAX;

/// The shortest pause the watcher asks of the daemon between scans, so disks left for
/// the next pass are read soon without a busy loop.
const MIN_RESCAN: Duration = Duration::from_secs(1);
/// Added to the wait until the next disk is due, so that the scan it wakes for finds that
/// disk due rather than a few microseconds early.
const DUE_PAD: Duration = Duration::from_millis(100);

/// Reads the SMART health of every whole disk with smartctl (see the module docs).
#[derive(Debug)]
pub struct SmartWatcher {
    cfg: SmartWatcherConfig,
    /// `cfg.command`, or plain `smartctl` when it is empty.
    command: Vec<String>,
    /// Shared with the blocking sysfs listing, which must own what it uses.
    filter: Arc<DeviceFilter>,
    /// This watcher's own block device events, opened on first use.
    events: LazyBlockEvents,
    /// Every current whole disk by device path. Held for a whole pass: scans never
    /// overlap, so neither do smartctl runs.
    disks: tokio::sync::Mutex<BTreeMap<String, Disk>>,
    /// Whole disks at the last listing: what the timeout of [`Watcher::schedule`] allows for
    /// ([`UNLISTED`] before the first).
    known: AtomicUsize,
    /// When the next disk is due, for the interval of [`Watcher::schedule`]; `None` before
    /// the first pass.
    next_due: std::sync::Mutex<Option<Instant>>,
}

/// What the watcher keeps of one disk between scans.
#[derive(Debug)]
struct Disk {
    devno: (u32, u32),
    /// What scans report for it.
    health: DiskHealth,
    /// `health` came from smartctl's data (not a failure to run it, nor "not read yet"):
    /// what a disk found asleep keeps.
    read: bool,
    /// When smartctl last ran for it to its end, whatever came of it; `None`: never.
    attempted: Option<Instant>,
    /// The state and first reason last logged, so each change is logged once.
    logged: Option<(HealthState, Option<String>)>,
}

/// How one smartctl run ended.
#[derive(Debug)]
enum Outcome {
    /// It read the disk (the verdict may still be `unknown`: no SMART, say).
    Read(DiskHealth),
    /// The disk sleeps and was not woken.
    Standby,
    /// No reading: why.
    Failed(Vec<String>),
    /// The run was cut short by the end of the pass, not by its own timeout.
    OutOfTime,
}

/// Lock a mutex around plain data; a poisoned lock only means a panic elsewhere.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, in ms since the epoch.
fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SmartWatcher {
    /// The watcher's name (`status`, `refresh`).
    pub const NAME: &'static str = "smart";

    /// A watcher with these settings.
    pub fn new(cfg: SmartWatcherConfig) -> SmartWatcher {
        let command = if cfg.command.is_empty() {
            vec!["smartctl".to_string()]
        } else {
            cfg.command.clone()
        };
        let filter = Arc::new(cfg.filter.clone());
        SmartWatcher {
            cfg,
            command,
            filter,
            events: LazyBlockEvents::default(),
            disks: tokio::sync::Mutex::new(BTreeMap::new()),
            known: AtomicUsize::new(UNLISTED),
            next_due: std::sync::Mutex::new(None),
        }
    }

    /// The argv run for `device`: the configured command, `--json -a -n standby`, and the
    /// device path last (never through a shell).
    pub fn argv(&self, device: &str) -> Vec<String> {
        let mut argv = self.command.clone();
        argv.extend(SMARTCTL_OPTIONS.map(str::to_string));
        argv.push(device.to_string());
        argv
    }

    /// What one pass may take: a full smartctl timeout per disk known, and one more for a
    /// disk that appears. Before the first listing, every entry of `class/block` counts
    /// (partitions and virtual devices too: a generous bound, got with one directory
    /// listing, which never waits for a device). A pass that runs out of time anyway
    /// (many disks plugged at once) leaves the rest for the next, which the daemon runs
    /// soon (see [`Watcher::schedule`]) and which allows for all of them.
    fn pass_budget(&self) -> Duration {
        let known = match self.known.load(Ordering::Relaxed) {
            UNLISTED => {
                std::fs::read_dir(self.cfg.sysfs.join("class/block")).map_or(0, Iterator::count)
            }
            known => known,
        };
        let disks = known.saturating_add(1);
        self.cfg
            .timeout
            .saturating_mul(u32::try_from(disks).unwrap_or(u32::MAX))
    }

    /// The whole disks sysfs lists now, read on the blocking pool (sysfs attributes may
    /// wait for a device).
    async fn list(&self) -> Result<Vec<WholeDisk>, WatchError> {
        let root = self.cfg.sysfs.clone();
        let filter = Arc::clone(&self.filter);
        tokio::task::spawn_blocking(move || whole_disks(&root, &filter))
            .await
            .map_err(|e| WatchError::Io {
                what: format!("reading {}", self.cfg.sysfs.join("class/block").display()),
                source: std::io::Error::other(e),
            })?
    }

    /// Whether `disk` is to be read now.
    fn due(&self, disk: &Disk, now: Instant) -> bool {
        disk.attempted
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.interval)
    }

    /// One smartctl run for `device`, for at most `limit`.
    async fn read(&self, device: &str, limit: Duration) -> Outcome {
        let argv = self.argv(device);
        let (status, out, err) = match run_capped(&argv, limit, MAX_OUTPUT).await {
            Ok(done) => done,
            Err(WatchError::TimedOut { .. }) if limit < self.cfg.timeout => {
                return Outcome::OutOfTime
            }
            Err(WatchError::TimedOut { timeout, .. }) => {
                return Outcome::Failed(vec![format!("smartctl timed out after {timeout:?}")])
            }
            Err(e) => return Outcome::Failed(vec![e.to_string()]),
        };
        let stderr = first_line(&err);
        let Some(code) = status.code() else {
            return Outcome::Failed(vec![format!("smartctl ended by {status}")]);
        };
        // smartctl's status is a byte; anything else (a wrapper's 255+) is all bits set.
        let code = u8::try_from(code).unwrap_or(u8::MAX);
        match parse_smartctl(&out, code) {
            Ok(data) if data.standby => Outcome::Standby,
            Ok(mut data) => {
                if !stderr.is_empty() {
                    data.messages.push(stderr);
                }
                Outcome::Read(verdict(&data))
            }
            Err(why) => {
                let mut reasons = vec![format!("unusable smartctl output: {why}")];
                if !stderr.is_empty() {
                    reasons.push(format!("smartctl: {stderr}"));
                }
                Outcome::Failed(reasons)
            }
        }
    }

    /// One pass: list the disks, read those that are due, report all.
    async fn pass(&self) -> Result<Vec<SmartReading>, WatchError> {
        let mut disks = self.disks.lock().await;
        let started = Instant::now();
        let budget = self.pass_budget();
        let listed = self.list().await?;
        self.known.store(listed.len(), Ordering::Relaxed);
        // A disk that left, or whose path now names another device, is forgotten: when
        // it (or its successor) shows up, it is read at once.
        disks.retain(|device, d| {
            listed
                .iter()
                .any(|w| &w.device == device && w.devno == d.devno)
        });

        for whole in &listed {
            let disk = disks.entry(whole.device.clone()).or_insert_with(|| Disk {
                devno: whole.devno,
                health: DiskHealth {
                    reasons: vec![NOT_READ_YET.to_string()],
                    ..DiskHealth::default()
                },
                read: false,
                attempted: None,
                logged: None,
            });
            if !self.due(disk, Instant::now()) {
                continue;
            }
            let limit = self
                .cfg
                .timeout
                .min(budget.saturating_sub(started.elapsed()));
            let outcome = if limit.is_zero() {
                Outcome::OutOfTime
            } else {
                self.read(&whole.device, limit).await
            };
            let checked = Some(epoch_ms());
            match outcome {
                Outcome::OutOfTime => continue,
                Outcome::Read(health) => {
                    disk.health = DiskHealth { checked, ..health };
                    disk.read = true;
                }
                // The last reading, with its time, stands: the disk was not looked at.
                Outcome::Standby if disk.read => {}
                Outcome::Standby => {
                    disk.health = unknown(vec![IN_STANDBY.to_string()], checked);
                }
                // A disk last read `warning` or `failing` keeps that verdict, with its time,
                // when a later run fails: a dying disk is the one most likely to hang
                // smartctl, and it must not fall silent as `unknown`. Why the run failed is
                // added to its reasons.
                Outcome::Failed(reasons)
                    if disk.read
                        && matches!(
                            disk.health.state,
                            HealthState::Warning | HealthState::Failing
                        ) =>
                {
                    disk.health.reasons.retain(|r| !r.starts_with(LAST_RUN));
                    if let Some(why) = reasons.first() {
                        disk.health.reasons.push(format!("{LAST_RUN}{why}"));
                    }
                }
                Outcome::Failed(reasons) => {
                    disk.health = unknown(reasons, checked);
                    disk.read = false;
                }
            }
            disk.attempted = Some(Instant::now());
            log_change(&whole.device, disk);
        }

        let next = disks
            .values()
            .map(|d| {
                d.attempted
                    .map_or_else(Instant::now, |t| t + self.cfg.interval)
            })
            .min();
        *lock(&self.next_due) = next;
        Ok(listed
            .into_iter()
            .filter_map(|w| {
                let health = disks.get(&w.device)?.health.clone();
                Some(SmartReading {
                    device: w.device,
                    devno: w.devno,
                    health,
                })
            })
            .collect())
    }
}

/// An `unknown` reading.
fn unknown(reasons: Vec<String>, checked: Option<u64>) -> DiskHealth {
    DiskHealth {
        state: HealthState::Unknown,
        reasons,
        checked,
        ..DiskHealth::default()
    }
}

/// One log line when a disk's state or first reason changed since the last one.
fn log_change(device: &str, disk: &mut Disk) {
    let now = (disk.health.state, disk.health.reasons.first().cloned());
    if disk.logged.as_ref() == Some(&now) {
        return;
    }
    let reasons = disk.health.reasons.join("; ");
    match now.0 {
        HealthState::Ok => tracing::info!(device, "SMART health ok"),
        state => tracing::warn!(device, %state, "SMART health {state}: {reasons}"),
    }
    disk.logged = Some(now);
}

#[async_trait]
impl Watcher for SmartWatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The interval: until the next disk is due (at most the configured interval, at
    /// least a second): each disk keeps its own schedule, so one plugged in between two
    /// scans is read again `interval` after its first reading, not up to twice that.
    ///
    /// The timeout: a smartctl timeout for every disk known plus one (the pass keeps to
    /// that itself, see `pass_budget`), plus the time a killed smartctl is given to be
    /// reaped: a pass over many disks is long by design, and only a hang beyond every
    /// run's own limit counts as hung.
    fn schedule(&self) -> Schedule {
        let most = self.cfg.interval;
        let interval = match *lock(&self.next_due) {
            Some(due) => (due.saturating_duration_since(Instant::now()) + DUE_PAD)
                .clamp(MIN_RESCAN.min(most), most),
            None => most,
        };
        Schedule {
            interval,
            timeout: self.pass_budget().saturating_add(REAP_GRACE),
        }
    }

    /// Any block event: a new disk is read at once by the scan that follows (the others
    /// are not due and cost nothing), so no quick look is needed.
    async fn changed(&self) {
        let _named = self.events.next().await;
    }

    async fn scan(&self) -> Result<Observation, WatchError> {
        Ok(Observation::Smart(self.pass().await?))
    }
}
