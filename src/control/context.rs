//! What a control command can reach: the handles of the services, never their insides.
//!
//! Built by `daemon` from the handles each service exported when it started; a cheap
//! `Clone` over an `Arc` that derefs to the [`Handles`]. Commands read the store and
//! published status directly and ask the services (scan now, announce, mount) through
//! their handles.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{Access, Config};
use crate::hooks::HooksHandle;
use crate::inventory::InventoryHandle;
use crate::model::NodeInfo;
use crate::mount::MountService;
use crate::peer::PeerHandle;
use crate::store::Store;
use crate::telemetry::{Events, Stats, Telemetry};

/// The handles a control session works with.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// The parts, as the daemon hands them over.
pub struct Handles {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Who may run what on the socket (groups resolved at start).
    pub access: Access,
    /// Who we are.
    pub node: NodeInfo,
    /// The store (read by queries).
    pub store: Store,
    /// Counters and events.
    pub telemetry: Telemetry,
    /// This node's inventory service.
    pub inventory: InventoryHandle,
    /// The peer layer.
    pub peers: PeerHandle,
    /// The mount service.
    pub mounts: MountService,
    /// The hooks' counters.
    pub hooks: HooksHandle,
    /// The daemon-wide shutdown signal (sessions end on it).
    pub shutdown: CancellationToken,
    /// Where the HTTP listener is bound, when it runs (`status` shows it: with port 0 in
    /// the config, this is the only place the chosen port is told besides the log).
    pub http_addr: Option<SocketAddr>,
}

struct Inner {
    handles: Handles,
    started: Instant,
}

impl Context {
    /// A context over the services' handles.
    pub fn new(handles: Handles) -> Context {
        Context {
            inner: Arc::new(Inner {
                handles,
                started: Instant::now(),
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.telemetry.stats
    }

    /// The event feed.
    pub fn events(&self) -> &Events {
        &self.telemetry.events
    }

    /// Changes of the fleet picture (`events`, `wait`).
    pub fn fleet(&self) -> &crate::telemetry::Fleet {
        &self.telemetry.fleet
    }

    /// Publish an event to `debug` sessions.
    pub fn event(&self, kind: &str, message: impl AsRef<str>) {
        self.events().emit(kind, message)
    }

    /// Time since the control server started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// How long a peer stays live without being heard.
    pub fn peer_expiry(&self) -> Duration {
        self.config.multicast.peer_expiry
    }
}

/// A context is a shared handle on the services' handles: a command reads
/// `ctx.store`, `ctx.peers`, ... as the daemon handed them over.
impl Deref for Context {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.inner.handles
    }
}
