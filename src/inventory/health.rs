//! How each watcher is doing, for `status`: typed state, counters, the latest error.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::model::{now_millis, rfc3339};

/// A watcher's state: what its latest scan came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatcherState {
    /// No scan has finished yet.
    #[default]
    Starting,
    /// The latest scan worked.
    Ok,
    /// The latest scan worked, but could not probe some device (`cannot_probe`): its
    /// contents are unknown, and `problems` says which and why.
    CannotProbe,
    /// The latest SMART pass worked, but some disk has no reading (`cannot_read`):
    /// `problems` says which and why (smartctl missing, hung, no SMART, garbage).
    CannotRead,
    /// The latest scan failed for this reason (`timed_out`, `not_found`, ...).
    Failed(&'static str),
}

impl fmt::Display for WatcherState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatcherState::Starting => "starting",
            WatcherState::Ok => "ok",
            WatcherState::CannotProbe => "cannot_probe",
            WatcherState::CannotRead => "cannot_read",
            WatcherState::Failed(kind) => kind,
        })
    }
}

/// Shown as the text of `status --json` (`ok`, `starting`, or the reason).
impl Serialize for WatcherState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Health of one watcher, shown by `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatcherHealth {
    /// Scan period, as text.
    pub interval: String,
    /// Successful scans.
    pub scans_ok: u64,
    /// Failed scans.
    pub scans_failed: u64,
    /// Failed scans by reason (`timed_out`, `not_found`, ...).
    pub failures: BTreeMap<String, u64>,
    /// What the latest scan came to.
    pub state: WatcherState,
    /// The latest error message, if the latest scan failed; or, when it worked but could
    /// not probe a device, its `problems` in one line.
    pub last_error: Option<String>,
    /// What the latest good scan could not do: one line per device blkid could not probe
    /// (`cannot probe /dev/vda: Operation not permitted`). Empty when all went well.
    pub problems: Vec<String>,
    /// When the latest successful scan finished (RFC 3339).
    pub last_ok: Option<String>,
    /// The same instant as a number, for `/metrics`
    /// (`diskd_watcher_last_success_timestamp_seconds`); not in the JSON.
    #[serde(skip)]
    pub last_ok_at: Option<crate::model::Millis>,
    /// How long the latest scan took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Items the latest successful scan found.
    pub found: usize,
    /// When the scan running now started (RFC 3339), if one is running.
    pub running_since: Option<String>,
}

impl WatcherHealth {
    /// A watcher that has not scanned yet.
    pub fn starting(interval: Duration) -> WatcherHealth {
        WatcherHealth {
            interval: humantime::format_duration(interval).to_string(),
            ..Default::default()
        }
    }

    /// Record a good scan, with what it could still not do (`problems`, see
    /// [`WatcherHealth::problems`]); true when it follows a failure (the watcher
    /// recovered).
    pub fn succeeded(
        &mut self,
        found: usize,
        took: Duration,
        problems: Vec<String>,
        smart: bool,
    ) -> bool {
        let state = match (problems.is_empty(), smart) {
            (true, _) => WatcherState::Ok,
            (false, false) => WatcherState::CannotProbe,
            (false, true) => WatcherState::CannotRead,
        };
        let was = std::mem::replace(&mut self.state, state);
        self.scans_ok += 1;
        self.last_error = (!problems.is_empty()).then(|| problems.join("; "));
        self.problems = problems;
        let now = now_millis();
        self.last_ok = Some(rfc3339(now));
        self.last_ok_at = Some(now);
        self.last_duration_ms = Some(took.as_millis() as u64);
        self.found = found;
        self.running_since = None;
        matches!(was, WatcherState::Failed(_))
    }

    /// Record a failed scan; true when the state changed (so it is logged once).
    pub fn failed(&mut self, kind: &'static str, message: String, took: Duration) -> bool {
        self.scans_failed += 1;
        *self.failures.entry(kind.to_string()).or_default() += 1;
        self.last_error = Some(message);
        self.last_duration_ms = Some(took.as_millis() as u64);
        self.running_since = None;
        let was = std::mem::replace(&mut self.state, WatcherState::Failed(kind));
        was != WatcherState::Failed(kind)
    }
}
