//! The state every task of a running daemon shares: config, store, counters, watcher
//! health, the event feed of `debug` sessions, and the shutdown signal.
//!
//! A cheap-`Clone` handle over an `Arc`. Locks are std mutexes held only for short,
//! non-awaiting updates (as mini-redis's `db.rs` explains, that is cheaper and safe).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::peer::PeerRequest;
use crate::store::{Millis, Store};

/// How many events a slow `debug` session may fall behind before it is told it lost some.
const EVENT_BACKLOG: usize = 1024;

/// A request to run one watcher now; the answer is a one-line summary of the scan.
pub type RefreshRequest = oneshot::Sender<String>;

/// Who this node is.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Permanent node id.
    pub id: String,
    /// The address peers reach us at (the first non-loopback address), if any.
    pub addr: Option<String>,
}

/// Monotonic counters shown by `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Control sessions open now.
    pub sessions_open: AtomicU64,
    /// Control sessions accepted since start.
    pub sessions_total: AtomicU64,
    /// Control sessions turned away at the connection limit.
    pub sessions_refused: AtomicU64,
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
}

impl Stats {
    /// Add one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
    /// `ok`, or the reason of the latest failure.
    pub state: String,
    /// The latest error message, if the latest scan failed.
    pub last_error: Option<String>,
    /// When the latest successful scan finished (RFC 3339).
    pub last_ok: Option<String>,
    /// How long the latest scan took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Items the latest successful scan found.
    pub found: usize,
    /// When the scan running now started (RFC 3339), if one is running.
    pub running_since: Option<String>,
}

/// The shared daemon state.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    node: NodeInfo,
    stats: Stats,
    events: broadcast::Sender<String>,
    health: Mutex<BTreeMap<&'static str, WatcherHealth>>,
    refresh: Mutex<Vec<(&'static str, mpsc::Sender<RefreshRequest>)>>,
    local_changed: Notify,
    peer_requests: Mutex<Option<mpsc::Sender<PeerRequest>>>,
    peer_state: Mutex<String>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    key_fingerprints: Mutex<Vec<String>>,
    legacy_left_out: AtomicU64,
    started: Instant,
    shutdown: CancellationToken,
}

impl Context {
    /// Make the context for a daemon about to start.
    pub fn new(config: Config, store: Store, node: NodeInfo, shutdown: CancellationToken) -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Context {
            inner: Arc::new(Inner {
                config,
                store,
                node,
                stats: Stats::default(),
                events,
                health: Mutex::new(BTreeMap::new()),
                refresh: Mutex::new(Vec::new()),
                local_changed: Notify::new(),
                peer_requests: Mutex::new(None),
                peer_state: Mutex::new("not started".into()),
                rejected: Mutex::new(BTreeMap::new()),
                key_fingerprints: Mutex::new(Vec::new()),
                legacy_left_out: AtomicU64::new(0),
                started: Instant::now(),
                shutdown,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Who we are.
    pub fn node(&self) -> &NodeInfo {
        &self.inner.node
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The daemon-wide shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// How long a peer stays live without being heard.
    pub fn peer_expiry(&self) -> Duration {
        self.inner.config.multicast.peer_expiry
    }

    /// Publish a notable event to `debug` sessions (and the log at debug level).
    pub fn event(&self, kind: &str, message: impl AsRef<str>) {
        let message = message.as_ref();
        tracing::debug!(event = kind, "{message}");
        let line = format!(
            "{} {kind}: {message}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        );
        // No receivers is normal: nobody is debugging.
        let _ = self.inner.events.send(line);
    }

    /// Whether anybody would see a detailed event (a `debug` session, or debug logging):
    /// callers skip formatting per-disk events when not, which matters in a wave of
    /// thousands of new disks.
    pub fn debugging(&self) -> bool {
        self.inner.events.receiver_count() > 0 || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// Whether a `debug` session is listening.
    pub fn has_subscribers(&self) -> bool {
        self.inner.events.receiver_count() > 0
    }

    /// Receive events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.events.subscribe()
    }

    /// Lock the watcher health table (never held across an await).
    pub fn health(&self) -> MutexGuard<'_, BTreeMap<&'static str, WatcherHealth>> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        lock(&self.inner.health)
    }

    /// Register a watcher's refresh channel.
    pub fn add_refresh_channel(&self, watcher: &'static str, tx: mpsc::Sender<RefreshRequest>) {
        lock(&self.inner.refresh).push((watcher, tx));
    }

    /// Signalled by the watchers when our inventory changed, so the peer layer announces.
    pub fn local_changed(&self) -> &Notify {
        &self.inner.local_changed
    }

    /// Register the peer layer's request channel.
    pub fn set_peer_requests(&self, tx: mpsc::Sender<PeerRequest>) {
        *lock(&self.inner.peer_requests) = Some(tx);
    }

    /// The peer layer's request channel, if it runs.
    pub fn peer_requests(&self) -> Option<mpsc::Sender<PeerRequest>> {
        lock(&self.inner.peer_requests).clone()
    }

    /// Record the peer layer's state for `status`.
    pub fn set_peer_state(&self, state: String) {
        *lock(&self.inner.peer_state) = state;
    }

    /// The peer layer's state.
    pub fn peer_state(&self) -> String {
        lock(&self.inner.peer_state).clone()
    }

    /// Count a dropped datagram by reason.
    pub fn count_reject(&self, reason: &'static str) {
        Stats::bump(&self.inner.stats.packets_rejected);
        *lock(&self.inner.rejected).entry(reason).or_default() += 1;
    }

    /// Dropped datagrams by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.inner.rejected).clone()
    }

    /// Record the keyring's fingerprints (signing key first) for `status`.
    pub fn set_key_fingerprints(&self, fps: Vec<String>) {
        *lock(&self.inner.key_fingerprints) = fps;
    }

    /// The keyring's fingerprints, signing key first; empty without keys.
    pub fn key_fingerprints(&self) -> Vec<String> {
        lock(&self.inner.key_fingerprints).clone()
    }

    /// How many of our disks did not fit in the last legacy datagram.
    pub fn legacy_left_out(&self) -> usize {
        self.inner.legacy_left_out.load(Ordering::Relaxed) as usize
    }

    /// Record how many disks the last legacy datagram left out.
    pub fn set_legacy_left_out(&self, n: usize) {
        self.inner
            .legacy_left_out
            .store(n as u64, Ordering::Relaxed);
    }

    /// Count bytes sent.
    pub fn add_bytes_sent(&self, n: usize) {
        self.inner
            .stats
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Run every watcher now; one summary line per watcher, in order.
    pub async fn refresh_all(&self, deadline: Duration) -> Vec<String> {
        self.refresh(None, deadline).await
    }

    /// Run one watcher now (`mounts` after a mount, say); its summary line.
    pub async fn refresh_one(&self, watcher: &str, deadline: Duration) -> Vec<String> {
        self.refresh(Some(watcher), deadline).await
    }

    async fn refresh(&self, only: Option<&str>, deadline: Duration) -> Vec<String> {
        let channels: Vec<_> = lock(&self.inner.refresh)
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == *name))
            .map(|(_, tx)| tx.clone())
            .collect();
        let mut waits = Vec::new();
        for tx in channels {
            let (reply, answer) = oneshot::channel();
            if tx.send(reply).await.is_ok() {
                waits.push(answer);
            }
        }
        let mut out = Vec::new();
        for answer in waits {
            match tokio::time::timeout(deadline, answer).await {
                Ok(Ok(line)) => out.push(line),
                Ok(Err(_)) => out.push("a watcher stopped before answering".into()),
                Err(_) => out.push("a watcher did not finish in time".into()),
            }
        }
        out
    }
}

/// Lock a mutex that guards plain data; a poisoned lock only means a panic elsewhere
/// mid-update, and the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Store time now, as the watchers and commands see it.
pub fn now() -> Millis {
    crate::store::now_millis()
}
