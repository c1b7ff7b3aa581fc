//! What a control command can reach: the handles of the services, never their insides.
//!
//! Built by `daemon` from the handles each service exported when it started; a cheap
//! `Clone` over an `Arc`. Commands read the store and published status directly and ask
//! the services (scan now, announce, mount) through their handles.

use std::net::SocketAddr;
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

    fn h(&self) -> &Handles {
        &self.inner.handles
    }

    /// Who may run what on the socket.
    pub fn access(&self) -> &Access {
        &self.h().access
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.h().config
    }

    /// Who we are.
    pub fn node(&self) -> &NodeInfo {
        &self.h().node
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.h().store
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.h().telemetry.stats
    }

    /// The event feed.
    pub fn events(&self) -> &Events {
        &self.h().telemetry.events
    }

    /// Changes of the fleet picture (`events`, `wait`).
    pub fn fleet(&self) -> &crate::telemetry::Fleet {
        &self.h().telemetry.fleet
    }

    /// Publish an event to `debug` sessions.
    pub fn event(&self, kind: &str, message: impl AsRef<str>) {
        self.events().emit(kind, message)
    }

    /// The inventory service.
    pub fn inventory(&self) -> &InventoryHandle {
        &self.h().inventory
    }

    /// The peer layer.
    pub fn peers(&self) -> &PeerHandle {
        &self.h().peers
    }

    /// The mount service.
    pub fn mounts(&self) -> &MountService {
        &self.h().mounts
    }

    /// The hooks.
    pub fn hooks(&self) -> &HooksHandle {
        &self.h().hooks
    }

    /// Time since the control server started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The daemon-wide shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.h().shutdown
    }

    /// Where the HTTP listener is bound, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.h().http_addr
    }

    /// How long a peer stays live without being heard.
    pub fn peer_expiry(&self) -> Duration {
        self.config().multicast.peer_expiry
    }
}
