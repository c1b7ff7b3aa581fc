//! Counters and the event feed: how every service tells the operator what it does.
//!
//! Next to `model` at the bottom (it imports only `model`): services bump counters and
//! publish events here without knowing who reads them (`status`, `debug` sessions, the
//! log; `events`, `wait` and hooks for fleet changes). All cheap to share (`Arc` inside).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::FleetEvent;

/// How many events a slow `debug` session may fall behind before it is told it lost some.
const EVENT_BACKLOG: usize = 1024;

/// Monotonic counters shown by `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Control sessions open now.
    pub sessions_open: AtomicU64,
    /// Control sessions accepted since start.
    pub sessions_total: AtomicU64,
    /// Control sessions turned away (the sum of the two reasons below).
    pub sessions_refused: AtomicU64,
    /// ... because their uid held its share (`control.max_sessions_per_user`).
    pub sessions_refused_user_share: AtomicU64,
    /// ... because the session table was full for them.
    pub sessions_refused_table_full: AtomicU64,
    /// Commands run.
    pub commands: AtomicU64,
    /// Commands that got an error reply (unknown, malformed, overlong, not UTF-8, failed).
    pub command_errors: AtomicU64,
    /// Datagrams sent by the peer layer.
    pub packets_sent: AtomicU64,
    /// Datagrams received by the peer layer.
    pub packets_received: AtomicU64,
    /// Datagrams dropped as invalid.
    pub packets_rejected: AtomicU64,
    /// Pings answered with an announce.
    pub pings_answered: AtomicU64,
    /// Pings not answered because of the rate limit.
    pub pings_suppressed: AtomicU64,
    /// Store writes that failed.
    pub store_errors: AtomicU64,
    /// Inventory announces sent (each may be several datagrams).
    pub announces: AtomicU64,
    /// Bytes of datagrams sent.
    pub bytes_sent: AtomicU64,
    /// Sends that failed with a transient error (ENOBUFS, unreachable) and were dropped.
    pub send_errors: AtomicU64,
    /// Local inventories written to the store.
    pub inventory_writes: AtomicU64,
}

impl Stats {
    /// Add one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Take one from a gauge (`sessions_open`).
    pub fn drop_one(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Count a control session turned away, by the reason `control::sessions` gives.
    pub fn refused(&self, reason: &str) {
        Stats::bump(&self.sessions_refused);
        match reason {
            "user_share" => Stats::bump(&self.sessions_refused_user_share),
            _ => Stats::bump(&self.sessions_refused_table_full),
        }
    }

    /// Refused control sessions by reason, as `status` shows them (reasons never seen
    /// are left out).
    pub fn refused_by_reason(&self) -> std::collections::BTreeMap<&'static str, u64> {
        [
            ("user_share", Stats::get(&self.sessions_refused_user_share)),
            ("table_full", Stats::get(&self.sessions_refused_table_full)),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// The daemon's notable events (scans, changes, peers, errors), fanned out to `debug`
/// sessions and logged at debug level.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<String>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
        }
    }
}

impl Events {
    /// Publish an event.
    pub fn emit(&self, kind: &str, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::debug!(event = kind, "{message}");
        let line = format!(
            "{} {kind}: {message}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        );
        // No receivers is normal: nobody is debugging.
        let _ = self.tx.send(line);
    }

    /// Whether anybody would see a detailed event (a `debug` session, or debug logging):
    /// callers skip formatting per-disk events when not, which matters in a wave of
    /// thousands of new disks.
    pub fn debugging(&self) -> bool {
        self.has_subscribers() || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// Whether a `debug` session is listening.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Receive events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

/// Changes of the fleet picture are kept for this many events for each slow reader;
/// past it a reader is told how many it missed.
const FLEET_BACKLOG: usize = 4096;

/// The fleet event bus: where the store's writers (the inventory writer, the peer layer)
/// publish changes of the fleet picture, and where `events`, `wait` and hooks listen.
#[derive(Debug, Clone)]
pub struct Fleet {
    tx: broadcast::Sender<Arc<FleetEvent>>,
    /// Bumped when the store's picture changed in a way told as no event (a peer back
    /// within its goodbye grace): `wait` re-checks on it; `events` and hooks see nothing.
    quiet: tokio::sync::watch::Sender<u64>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            tx: broadcast::channel(FLEET_BACKLOG).0,
            quiet: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Fleet {
    /// The picture changed without an event to tell (see `quiet`).
    pub fn nudge(&self) {
        self.quiet.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Woken by [`Fleet::nudge`].
    pub fn nudges(&self) -> tokio::sync::watch::Receiver<u64> {
        self.quiet.subscribe()
    }

    /// Publish changes (nobody listening is normal).
    pub fn emit(&self, events: impl IntoIterator<Item = FleetEvent>) {
        for e in events {
            // The disk's UUID or device, so a log can be followed per disk (and
            // `diskd-bench latency` can time each step of one disk's way).
            let disk = e
                .disk
                .as_ref()
                .map(|d| d.uuid.as_deref().unwrap_or(&d.device));
            tracing::debug!(event = e.kind.name(), host = %e.host, disk, "fleet change");
            let _ = self.tx.send(Arc::new(e));
        }
    }

    /// Listen from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FleetEvent>> {
        self.tx.subscribe()
    }

    /// How many readers listen now (`events` and `wait` sessions, HTTP event streams, the
    /// hook runner): `status` shows it, so a script (or a test) can tell that a stream it
    /// started is listening before it makes the change it wants to see.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Counters and events together: what a service is handed to report through.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The counters.
    pub stats: Arc<Stats>,
    /// The event feed.
    pub events: Events,
    /// Changes of the fleet picture.
    pub fleet: Fleet,
}
