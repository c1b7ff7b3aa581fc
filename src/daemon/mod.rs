//! Starting, running and stopping the daemon.
//!
//! Start-up checks everything that can be wrong (config, socket, store) before serving, so a
//! misconfigured daemon stops with one clear line instead of running half-working. One
//! shutdown token is fanned out to every task; SIGINT/SIGTERM cancel it, tasks drain with a
//! deadline, the store is flushed and the socket removed. Under systemd (`Type=notify`) the
//! daemon reports READY=1 once it serves and STOPPING=1 when shutdown begins.

mod systemd;

use std::sync::Arc;
use std::time::Duration;

use diskd_watchers::{DiskWatcher, HardwareWatcher, MountWatcher, SmartWatcher, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::{self, Context, Handles};
use crate::hooks;
use crate::http;
use crate::inventory;
use crate::model::NodeInfo;
use crate::mount::{MountDeps, MountService};
use crate::peer;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// How long tasks get to finish after the shutdown signal. Every task selects on the
/// signal (a running scan included), so this is a safety net, well under systemd's.
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// Peers' mount requests waiting for the mount service.
const MOUNT_JOBS: usize = 16;

/// Why the daemon stopped with an error; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Something was wrong before serving started (exit 2).
    #[error("{0}")]
    Startup(String),
    /// The daemon failed while running (exit 3).
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Startup(_) => 2,
            DaemonError::Runtime(_) => 3,
        }
    }
}

/// Run the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let startup = |e: &dyn std::fmt::Display| DaemonError::Startup(e.to_string());
    let started = std::time::Instant::now();

    let access = config.access().map_err(|e| startup(&e))?;
    control::socket::check_free(&config.socket).map_err(|e| startup(&e))?;
    let store = Store::open(&config.store).map_err(|e| startup(&e))?;
    // The watchers' settings come resolved from the configuration, as they take them.
    let disk_watcher = DiskWatcher::new(config.watchers.disks.clone());
    // Another watcher is one more entry here: it observes, the inventory's writer merges.
    let hardware_watcher = config.watchers.hardware.clone().map(HardwareWatcher::new);
    let smart_watcher = config.watchers.smart.clone().map(SmartWatcher::new);
    let keys =
        crate::peer::keys::Keyring::load(&config.security.key_files).map_err(|e| startup(&e))?;
    // The gossip port is bound before the control socket: a port in use is a configuration
    // problem, reported at start like the others.
    let gossip_socket = if config.gossip.enabled {
        Some(peer::transport::UdpUnicast::bind(config.gossip.listen).map_err(|e| startup(&e))?)
    } else {
        None
    };
    // So is the HTTP listener (with its token file): a port in use or a token file others
    // can read stops the daemon here, exit 2.
    let http_listener = match &config.http {
        Some(h) => Some(http::Listener::bind(h).map_err(|e| startup(&e))?),
        None => None,
    };
    let listener = control::socket::bind(&config.socket, access.socket_group.as_ref())
        .map_err(|e| startup(&e))?;

    let node = NodeInfo::new(&config.node_name, store.node_id());
    tracing::info!(
        node = %node.name,
        id = %node.id,
        socket = %config.socket.display(),
        store = %config.store.display(),
        "diskd {} started",
        env!("DISKD_LONG_VERSION")
    );
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !config.multicast.enabled && !config.gossip.enabled {
        tracing::warn!(
            "multicast.enabled is false and gossip is off: this daemon will hear no peers"
        );
    }
    if let Some(l) = &http_listener {
        tracing::info!(
            http = %l.local_addr(),
            token = l.needs_token(),
            "HTTP (read-only) listening on http://{}/{}",
            l.local_addr(),
            if l.needs_token() {
                "; every request needs the bearer token"
            } else {
                " (loopback, no token)"
            }
        );
    }
    match keys.signing_fingerprint() {
        Some(fp) => tracing::info!(
            keys = keys.fingerprints().len(),
            signing_key = fp,
            "peer traffic is sealed (XChaCha20-Poly1305); unsealed datagrams are dropped"
        ),
        None => tracing::warn!(
            "no security.key_files: peer traffic is unauthenticated and readable by anyone on the network"
        ),
    }

    // Signals are caught from here on, before READY=1: a SIGTERM sent as soon as the service
    // manager sees the daemon ready is a clean shutdown, never the default (abrupt) death.
    let runtime = |e: std::io::Error| DaemonError::Runtime(format!("cannot catch signals: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(runtime)?;

    // Wiring, in the direction data flows: watchers -> inventory -> store -> peer layer
    // and control server. Each service gets what it needs and hands back a small handle.
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // While the store's writes fail (a full disk), this retries them with backoff and
    // reopens sled when it stays failed; queries answer from memory meanwhile.
    tracker.spawn(store.clone().keep(shutdown.clone()));
    let config = Arc::new(config);
    let telemetry = Telemetry::default();
    // Hooks consume fleet events beside the control server; they subscribe to the bus
    // before anything can publish on it, so the first inventory's changes reach them.
    let hooks = hooks::spawn(
        hooks::Deps {
            config: config.clone(),
            node: node.clone(),
            telemetry: telemetry.clone(),
            shutdown: shutdown.clone(),
        },
        &tracker,
    );
    let mut watchers: Vec<Arc<dyn Watcher>> = vec![
        Arc::new(MountWatcher::new(config.watchers.mounts_interval)),
        Arc::new(disk_watcher),
    ];
    watchers.extend(hardware_watcher.map(|w| Arc::new(w) as Arc<dyn Watcher>));
    watchers.extend(smart_watcher.map(|w| Arc::new(w) as Arc<dyn Watcher>));
    let inventory = inventory::spawn(
        inventory::Deps {
            node: node.clone(),
            store: store.clone(),
            telemetry: telemetry.clone(),
            shutdown: shutdown.clone(),
        },
        &tracker,
        watchers,
    );
    let (mount_jobs, incoming_mounts) = mpsc::channel(MOUNT_JOBS);
    let gossip = match gossip_socket {
        Some(socket) => {
            use peer::transport::Unicast;
            let advertise = peer::transport::advertise_address(&config, socket.local_addr()).await;
            Some(peer::GossipSetup {
                transport: socket,
                advertise,
            })
        }
        None => None,
    };
    let peers = peer::spawn(
        peer::Deps {
            config: config.clone(),
            node: node.clone(),
            store: store.clone(),
            telemetry: telemetry.clone(),
            local_changed: inventory.changed(),
            mount_jobs,
            shutdown: shutdown.clone(),
        },
        &tracker,
        keys,
        gossip,
    );
    let mounts = MountService::new(MountDeps {
        config: config.clone(),
        node: node.clone(),
        store: store.clone(),
        events: telemetry.events.clone(),
        inventory: inventory.clone(),
        peers: peers.clone(),
    });
    tracker.spawn(
        mounts
            .clone()
            .serve(incoming_mounts, tracker.clone(), shutdown.clone()),
    );
    let ctx = Context::new(Handles {
        config: config.clone(),
        access,
        node,
        store: store.clone(),
        telemetry,
        inventory,
        peers,
        mounts,
        hooks,
        shutdown: shutdown.clone(),
        http_addr: http_listener.as_ref().map(http::Listener::local_addr),
    });
    // The HTTP server answers from the same handles, beside the control server.
    if let Some(l) = http_listener {
        tracker.spawn(http::serve(l, ctx.clone(), tracker.clone()));
    }
    tracker.spawn(control::server::serve(ctx, listener, tracker.clone()));
    // The socket is listening and its server running: a client connecting from now on is
    // answered.
    systemd::ready(&config.socket);
    tracing::info!("ready in {:.1?}", started.elapsed());

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
        _ = shutdown.cancelled() => {}
    }
    systemd::stopping();
    tracing::info!("shutting down");
    shutdown.cancel();
    // No new sessions from here on: the socket goes first.
    control::socket::remove(&config.socket);
    tracker.close();
    let drained = tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
        .await
        .is_ok();
    if !drained {
        tracing::warn!("some tasks did not stop within {DRAIN_DEADLINE:?}");
    }
    if !store.health().is_ok() {
        // One last try to get what is only in memory onto the disk.
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.repair()).await;
    }
    store
        .flush()
        .await
        .map_err(|e| DaemonError::Runtime(format!("final store flush failed: {e}")))?;
    // Last, so no write comes after it: the next start reads this image instead of the
    // whole store. Not when a task is still running: it could write after the image.
    if drained {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.save_warm_start()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "warm-start image not written ({e}): the next start reads the whole store"
            ),
            Err(e) => tracing::warn!("warm-start image not written ({e})"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}
