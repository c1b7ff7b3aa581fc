//! What the peer layer is given (`Deps`) and what it gives back (`PeerHandle`).
//!
//! The layer owns its state in one task; the rest of the daemon reaches it only through the
//! handle: a bounded request channel and a status it publishes. It never imports the
//! control server or the mount service: a peer's mount request goes out as an
//! [`IncomingMount`] on a channel the daemon wires to the mount service.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::wire::{MountReply, MountRequest};
use super::PeerError;
use crate::config::Config;
use crate::model::NodeInfo;
use crate::store::Store;
use crate::telemetry::{Events, Stats, Telemetry};

/// What the peer layer needs from the daemon.
pub struct Deps {
    /// The validated configuration (multicast, ping, security).
    pub config: Arc<Config>,
    /// Who we are.
    pub node: NodeInfo,
    /// Peer data goes here; our inventory is read from here.
    pub store: Store,
    /// Counters and events.
    pub telemetry: Telemetry,
    /// Notified when our own inventory changed: announce it.
    pub local_changed: Arc<Notify>,
    /// Where peers' mount requests go (the mount service answers each).
    pub mount_jobs: mpsc::Sender<IncomingMount>,
    /// Stops the layer (it says goodbye first).
    pub shutdown: CancellationToken,
}

/// A peer asks us to mount (or unmount) one of our disks.
#[derive(Debug)]
pub struct IncomingMount {
    /// The requester's node name (for logs).
    pub requester: String,
    /// The requester's node id (the reply is addressed to it).
    pub requester_id: String,
    /// What it asks.
    pub request: MountRequest,
    /// The answer to send back.
    pub reply: oneshot::Sender<MountReply>,
}

/// What the control commands can ask of the peer layer.
#[derive(Debug)]
pub enum PeerRequest {
    /// Multicast our inventory now; answers with the number of disks announced.
    Announce(oneshot::Sender<Result<usize, PeerError>>),
    /// Ask every peer to announce.
    Ping(oneshot::Sender<Result<(), PeerError>>),
    /// Ask node `target` to mount (or unmount) its disk `uuid`; the owner's answer, or an
    /// error when none came within `MOUNT_TIMEOUT`.
    Mount {
        /// Node id of the owner.
        target: String,
        /// The disk.
        uuid: String,
        /// Mount read-only.
        read_only: bool,
        /// Unmount instead.
        unmount: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<MountReply, PeerError>>,
    },
}

/// The peer layer as the rest of the daemon sees it. Cheap to clone.
#[derive(Clone)]
pub struct PeerHandle {
    pub(super) requests: mpsc::Sender<PeerRequest>,
    pub(super) status: Arc<PeerStatus>,
}

impl PeerHandle {
    /// Send a request and wait for its answer, at most `deadline`; fails at once when the
    /// layer has stopped.
    pub async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PeerError>>) -> PeerRequest,
        deadline: Duration,
    ) -> Result<T, PeerError> {
        let (tx, rx) = oneshot::channel();
        // One deadline for queueing and answering: a busy layer cannot hold the caller.
        let asked = async {
            self.requests
                .send(make(tx))
                .await
                .map_err(|_| PeerError::Stopped)?;
            rx.await.unwrap_or(Err(PeerError::Stopped))
        };
        tokio::time::timeout(deadline, asked)
            .await
            .unwrap_or(Err(PeerError::NoAnswer(deadline)))
    }

    /// The layer's published status.
    pub fn status(&self) -> &PeerStatus {
        &self.status
    }
}

/// What the peer layer publishes for `status`.
#[derive(Debug, Default)]
pub struct PeerStatus {
    state: Mutex<String>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    key_fingerprints: Vec<String>,
    legacy_left_out: AtomicU64,
    gossip: Mutex<Option<GossipReport>>,
    /// How each peer heard over gossip is reached (`gossip` or `both`); peers not in the
    /// map are heard by multicast only (or are legacy).
    via: Mutex<HashMap<String, &'static str>>,
}

/// The gossip listener as `status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GossipReport {
    /// The address it is bound to.
    pub listen: String,
    /// The address we tell others to reach us at.
    pub advertise: String,
    /// Members known (live or not), us excluded.
    pub members: usize,
    /// Members the failure detector considers live.
    pub members_live: usize,
    /// Bytes received on the gossip socket (every packet, accepted or not).
    pub bytes_in: u64,
    /// Bytes sent on the gossip socket.
    pub bytes_out: u64,
    /// Peers' inventory changes applied from deltas (each saved a pull of a whole
    /// inventory).
    pub deltas_applied: u64,
    /// Whole inventories this daemon pulled (it was behind on a member) and was pulled.
    pub pulls_sent: u64,
    /// See `pulls_sent`.
    pub pulls_answered: u64,
    /// Whole copies of our inventory sent unicast (to members that came up, and answering
    /// pulls): about one per member in a fleet that started together.
    pub inventories_sent: u64,
    /// Configured seeds and how they are doing.
    pub seeds: Vec<super::seeds::SeedReport>,
}

impl PeerStatus {
    pub(super) fn new(key_fingerprints: Vec<String>) -> PeerStatus {
        PeerStatus {
            state: Mutex::new("not started".into()),
            key_fingerprints,
            ..Default::default()
        }
    }

    /// `up: ...`, `degraded: ...` or `error: ...; retrying`.
    pub fn state(&self) -> String {
        lock(&self.state).clone()
    }

    pub(super) fn set_state(&self, s: String) {
        *lock(&self.state) = s;
    }

    /// Dropped datagrams by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.rejected).clone()
    }

    /// The keyring's fingerprints, signing key first; empty without keys.
    pub fn key_fingerprints(&self) -> &[String] {
        &self.key_fingerprints
    }

    /// The gossip listener, when gossip runs.
    pub fn gossip(&self) -> Option<GossipReport> {
        lock(&self.gossip).clone()
    }

    pub(super) fn set_gossip(&self, r: GossipReport) {
        *lock(&self.gossip) = Some(r);
    }

    /// How a peer is heard: `gossip` or `both` when gossip is involved; `None`: multicast
    /// only (or legacy, which the caller knows from the record).
    pub fn via(&self, node_id: &str) -> Option<&'static str> {
        lock(&self.via).get(node_id).copied()
    }

    pub(super) fn set_via_one(&self, node_id: &str, via: &'static str) {
        lock(&self.via).insert(node_id.to_string(), via);
    }

    pub(super) fn set_via(&self, via: HashMap<String, &'static str>) {
        *lock(&self.via) = via;
    }

    /// How many of our disks did not fit in the last legacy datagram.
    pub fn legacy_left_out(&self) -> usize {
        self.legacy_left_out.load(Ordering::Relaxed) as usize
    }
}

/// What the layer's code reaches through: its own deps and the status it publishes,
/// behind short accessors so the receive and send paths read the same as before.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) deps: Arc<Deps>,
    pub(super) status: Arc<PeerStatus>,
}

impl Ctx {
    pub(super) fn config(&self) -> &Config {
        &self.deps.config
    }
    pub(super) fn node(&self) -> &NodeInfo {
        &self.deps.node
    }
    pub(super) fn store(&self) -> &Store {
        &self.deps.store
    }
    /// Run a store write (sled I/O; it waits while the store is compacted or reopened)
    /// without holding up the runtime's other tasks: on the daemon's multi-thread runtime
    /// this worker hands its tasks to another first. In-process tests run on a single
    /// thread, where the write simply runs.
    pub(super) fn store_write<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let multi =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(|| f(&self.deps.store))
        } else {
            f(&self.deps.store)
        }
    }
    pub(super) fn fleet(&self) -> &crate::telemetry::Fleet {
        &self.deps.telemetry.fleet
    }
    pub(super) fn stats(&self) -> &Stats {
        &self.deps.telemetry.stats
    }
    fn events(&self) -> &Events {
        &self.deps.telemetry.events
    }
    pub(super) fn event(&self, kind: &str, message: impl AsRef<str>) {
        self.events().emit(kind, message)
    }
    pub(super) fn debugging(&self) -> bool {
        self.events().debugging()
    }
    pub(super) fn has_subscribers(&self) -> bool {
        self.events().has_subscribers()
    }
    pub(super) fn shutdown(&self) -> &CancellationToken {
        &self.deps.shutdown
    }
    pub(super) fn local_changed(&self) -> &Notify {
        &self.deps.local_changed
    }
    pub(super) fn peer_expiry(&self) -> Duration {
        self.deps.config.multicast.peer_expiry
    }
    pub(super) fn set_peer_state(&self, s: String) {
        self.status.set_state(s)
    }
    pub(super) fn peer_state(&self) -> String {
        self.status.state()
    }
    pub(super) fn count_reject(&self, reason: &'static str) {
        Stats::bump(&self.stats().packets_rejected);
        *lock(&self.status.rejected).entry(reason).or_default() += 1;
    }
    pub(super) fn legacy_left_out(&self) -> usize {
        self.status.legacy_left_out()
    }
    pub(super) fn set_legacy_left_out(&self, n: usize) {
        self.status
            .legacy_left_out
            .store(n as u64, Ordering::Relaxed);
    }
    pub(super) fn add_bytes_sent(&self, n: usize) {
        Stats::add(&self.stats().bytes_sent, n as u64);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
