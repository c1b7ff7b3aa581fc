//! Whole peer layers in one process: real `Deps`, temp-dir stores, the real seal and codec,
//! on a [`MemoryHub`] under tokio's paused time (no root, no sleeps, no sockets).
//!
//! Paused time auto-advances whenever the runtime is idle, including while a sled flush
//! runs on sled's own thread, so the layer may see time jump to its next timer during a
//! flush; the timing assertions below leave room for that.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tempfile::TempDir;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clock::Clock;
use super::keys::Keyring;
use super::reassembly::PENDING_TIMEOUT;
use super::transport::memory::MemoryHub;
use super::wire::{self, Body, MountReply};
use super::{
    spawn_with, Deps, GossipSetup, IncomingMount, PeerError, PeerHandle, PeerRequest, MOUNT_TIMEOUT,
};
use crate::config::Config;
use crate::flags::DaemonArgs;
use crate::model::{DiskRecord, NodeInfo};
use crate::store::{Owner, Store};
use crate::telemetry::{Stats, Telemetry};

const BASE_MS: u64 = 1_800_000_000_000;

struct Opts {
    announce: &'static str,
    expiry: &'static str,
    ping: &'static str,
    max_datagram: Option<usize>,
    keys: Option<[u8; 32]>,
    disks: usize,
    /// Run gossip on this hub (needs keys), knocking at these seeds.
    gossip: Option<MemoryHub>,
    seeds: Vec<String>,
    no_multicast: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            announce: "60s",
            expiry: "60s",
            ping: "5s",
            max_datagram: None,
            keys: None,
            disks: 2,
            gossip: None,
            seeds: Vec::new(),
            no_multicast: false,
        }
    }
}

struct Node {
    name: String,
    id: String,
    addr: SocketAddr,
    store: Store,
    telemetry: Telemetry,
    handle: PeerHandle,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    mount_jobs: mpsc::Receiver<IncomingMount>,
    events: broadcast::Receiver<String>,
    local_changed: Arc<Notify>,
    _dir: TempDir,
}

/// A node's gossip address: its multicast address with the gossip port (on a hub of its
/// own, as gossip has a socket of its own).
fn gaddr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 32004))
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 32003))
}

fn disk(node: u8, i: usize) -> DiskRecord {
    DiskRecord {
        uuid: Some(format!("{node:08x}-0000-4000-8000-{i:012x}")),
        label: Some(format!(
            "disk-{node}-{i}-with-a-long-label-to-fill-datagrams"
        )),
        device: format!("/dev/disk/by-test/node{node}/device{i}"),
        fstype: Some("ext4".into()),
        mountpoints: vec![format!("/srv/test/node{node}/mount{i}")],
        ..Default::default()
    }
}

impl Node {
    fn start(hub: &MemoryHub, clock: Clock, n: u8, o: &Opts) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("node{n}");
        let store_dir = dir.path().join("store");
        let mut argv: Vec<String> = [
            "--node-name",
            &name,
            "--store",
            &store_dir.to_string_lossy(),
            "--announce-interval",
            o.announce,
            "--peer-expiry",
            o.expiry,
            "--ping-interval",
            o.ping,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(m) = o.max_datagram {
            argv.extend(["--max-datagram".into(), m.to_string()]);
        }
        if o.gossip.is_some() {
            // Only the gossip switch reads the path; the keyring below is built directly.
            argv.extend(["--key-file".into(), "/nonexistent/key".into()]);
            argv.extend(["--gossip-advertise".into(), gaddr(n).to_string()]);
        }
        for s in &o.seeds {
            argv.extend(["--seed".into(), s.clone()]);
        }
        if o.no_multicast {
            argv.push("--no-multicast".into());
        }
        let args = DaemonArgs::parse_from(&argv).unwrap();
        let config = Config::load(None, None, &args).unwrap();
        let store = Store::open(&config.store).unwrap();
        let disks: Vec<DiskRecord> = (0..o.disks).map(|i| disk(n, i)).collect();
        store
            .publish(Owner::Local, &name, None, &disks, clock.wall_ms())
            .into_result()
            .unwrap();
        let node = NodeInfo::new(&name, store.node_id());
        let telemetry = Telemetry::default();
        let events = telemetry.events.subscribe();
        let (mount_tx, mount_jobs) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let keys = match o.keys {
            Some(k) => Keyring::from_keys(&[k]),
            None => Keyring::default(),
        };
        let hub2 = hub.clone();
        let local_changed = Arc::new(Notify::new());
        let gossip = o.gossip.as_ref().map(|g| GossipSetup {
            transport: g.join_unicast(gaddr(n)),
            advertise: gaddr(n),
        });
        let handle = spawn_with(
            Deps {
                config: Arc::new(config),
                node: node.clone(),
                store: store.clone(),
                telemetry: telemetry.clone(),
                local_changed: local_changed.clone(),
                mount_jobs: mount_tx,
                shutdown: shutdown.clone(),
            },
            &tracker,
            keys,
            clock,
            StdRng::seed_from_u64(n as u64),
            move |_| Ok(hub2.join(addr(n))),
            gossip,
        );
        tracker.close();
        Node {
            name,
            id: node.id,
            addr: addr(n),
            store,
            telemetry,
            handle,
            shutdown,
            tracker,
            mount_jobs,
            events,
            local_changed,
            _dir: dir,
        }
    }

    fn stat(&self, f: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.telemetry.stats).load(Ordering::Relaxed)
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.handle
            .status()
            .rejected()
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    fn knows_disks_of(&self, other: &Node) -> usize {
        self.store
            .sightings()
            .unwrap()
            .iter()
            .filter(|s| s.node_id == other.id && s.present)
            .count()
    }

    /// Replace the node's own disks with `disks` and tell its layer, as the watchers do.
    fn set_disks(&self, disks: &[DiskRecord], clock: Clock) {
        self.store
            .publish(Owner::Local, &self.name, None, disks, clock.wall_ms())
            .into_result()
            .unwrap();
        self.local_changed.notify_one();
    }

    /// Events emitted so far, drained.
    fn events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Ask the node's layer `make`'s request, waiting at most `deadline`: its answer, which
    /// must be no error.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PeerError>>) -> PeerRequest,
        deadline: Duration,
    ) -> T {
        self.handle.request(make, deadline).await.unwrap()
    }

    async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.wait().await;
    }
}

/// Wait (in paused time) until `cond` holds; panics after `max`. Returns the time taken.
async fn until(max: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < max, "condition not met within {max:?}");
        sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn setup() -> (MemoryHub, Clock) {
    (MemoryHub::default(), Clock::following_tokio(BASE_MS))
}

/// Nodes 1 and 2 on a new hub, started with `opts`, once node 1 knows node 2's two disks.
async fn a_knows_b(opts: &Opts) -> (MemoryHub, Clock, Node, Node) {
    let (hub, clock) = setup();
    let a = Node::start(&hub, clock, 1, opts);
    let b = Node::start(&hub, clock, 2, opts);
    until(Duration::from_secs(2), || a.knows_disks_of(&b) == 2).await;
    (hub, clock, a, b)
}

#[tokio::test(start_paused = true)]
async fn a_learns_b_inventory_and_b_learns_a() {
    let (hub, clock) = setup();
    let a = Node::start(&hub, clock, 1, &Opts::default());
    let b = Node::start(
        &hub,
        clock,
        2,
        &Opts {
            disks: 3,
            ..Opts::default()
        },
    );
    until(Duration::from_secs(2), || {
        a.knows_disks_of(&b) == 3 && b.knows_disks_of(&a) == 2
    })
    .await;
    let p = a.store.peer(&b.id).expect("b is in a's peer table");
    assert_eq!(p.node, b.name);
    assert_eq!(p.addr.as_deref(), Some("198.18.0.2"));
    assert_eq!(p.disks, 3);
    assert!(a
        .store
        .host_is_live(&b.id, clock.wall_ms(), Duration::from_secs(60)));
    // Each saw its own datagrams loop back and ignored them: no peer entry for itself.
    assert!(a.store.peer(&a.id).is_none());
    assert_eq!(a.store.peers().len(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_expires_after_peer_expiry() {
    let (hub, clock, mut a, b) = a_knows_b(&Opts::default()).await;
    // B vanishes without a goodbye (cut off first, so the goodbye is lost).
    hub.isolate(b.addr, true);
    b.stop().await;
    let silent = clock.wall_ms();
    let last_heard = a.store.peer(&b.id).unwrap().last_seen;
    assert!(silent - last_heard < 1000);
    let expiry = Duration::from_secs(60);
    a.events();
    sleep(expiry - Duration::from_secs(2)).await;
    assert!(
        !a.events().iter().any(|e| e.contains("node2 expired")),
        "expired early"
    );
    let took = until(Duration::from_secs(5), || {
        a.events
            .try_recv()
            .is_ok_and(|e| e.contains("node2 expired"))
    })
    .await;
    assert!(took <= Duration::from_secs(4), "expired late: {took:?}");
    let p = a.store.peer(&b.id).unwrap();
    assert_eq!(
        p.last_seen, last_heard,
        "the real last-seen time was stored"
    );
    assert!(!p.is_live(clock.wall_ms(), expiry));
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn goodbye_makes_a_peer_not_live_at_once() {
    let (_hub, clock, a, b) = a_knows_b(&Opts::default()).await;
    let start = Instant::now();
    b.stop().await;
    until(Duration::from_secs(1), || {
        a.store.peer(&b.id).is_some_and(|p| p.gone)
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(!a
        .store
        .host_is_live(&b.id, clock.wall_ms(), Duration::from_secs(60)));
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pings_are_answered_at_most_once_per_min_interval() {
    let (_hub, _clock, a, b) = a_knows_b(&Opts::default()).await;
    // Let the start-up exchange (announces, pings, welcome announces) settle.
    sleep(Duration::from_secs(12)).await;
    let announces = b.stat(|s| &s.announces);
    let answered = b.stat(|s| &s.pings_answered);
    let suppressed = b.stat(|s| &s.pings_suppressed);
    let first = Instant::now();
    for _ in 0..10 {
        a.ask(PeerRequest::Ping, Duration::from_secs(1)).await;
        sleep(Duration::from_millis(100)).await;
    }
    // The first ping is answered within the jitter; the rest are coalesced into that
    // answer, or deferred to the end of the interval.
    sleep_until(first + Duration::from_millis(4900)).await;
    assert_eq!(b.stat(|s| &s.announces), announces + 1);
    sleep_until(first + Duration::from_secs(7)).await;
    assert_eq!(
        b.stat(|s| &s.announces),
        announces + 2,
        "deferred, not dropped"
    );
    let answered = b.stat(|s| &s.pings_answered) - answered;
    let suppressed = b.stat(|s| &s.pings_suppressed) - suppressed;
    assert_eq!(answered, 2);
    assert_eq!(suppressed, 8);
    // Nothing more without further pings.
    sleep(Duration::from_secs(20)).await;
    assert_eq!(b.stat(|s| &s.announces), announces + 2);
    a.stop().await;
    b.stop().await;
}

/// Drop chunk 1 of every inventory generation from node 2 to node 1.
fn drop_chunk_one(hub: &MemoryHub, to: SocketAddr) {
    hub.set_drop_rule(Some(Box::new(move |from, dest, bytes| {
        dest == to
            && from == addr(2)
            && matches!(wire::decode(bytes), Ok(e) if matches!(&e.body, Body::Inventory(c) if c.index == 1))
    })));
}

#[tokio::test(start_paused = true)]
async fn a_generation_missing_a_chunk_is_dropped_after_the_timeout_then_asked_again() {
    let (hub, clock) = setup();
    let opts = Opts {
        max_datagram: Some(576),
        disks: 12,
        ..Opts::default()
    };
    drop_chunk_one(&hub, addr(1));
    let start = Instant::now();
    let a = Node::start(&hub, clock, 1, &opts);
    let b = Node::start(&hub, clock, 2, &opts);
    until(Duration::from_secs(2), || {
        hub.dropped_by_rule() > 0 && b.knows_disks_of(&a) == 12
    })
    .await;
    // B's last generation went out within the first ping jitter; none completes on A.
    sleep_until(start + PENDING_TIMEOUT - Duration::from_millis(100)).await;
    assert_eq!(a.rejected("incomplete_generation"), 0);
    assert_eq!(a.knows_disks_of(&b), 0);
    sleep_until(start + PENDING_TIMEOUT + Duration::from_secs(2)).await;
    assert!(a.rejected("incomplete_generation") >= 1);
    assert_eq!(a.knows_disks_of(&b), 0);
    // With the loss gone, the next ping after a drop brings the whole inventory.
    hub.set_drop_rule(None);
    until(PENDING_TIMEOUT + Duration::from_secs(3), || {
        a.knows_disks_of(&b) == 12
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replayed_and_forged_sealed_datagrams_are_rejected() {
    let opts = Opts {
        keys: Some([7u8; 32]),
        ..Opts::default()
    };
    let (hub, _clock, a, b) = a_knows_b(&opts).await;
    sleep(Duration::from_secs(3)).await;
    let captured = hub
        .sent()
        .into_iter()
        .filter(|s| s.from == b.addr)
        .map(|s| s.bytes)
        .collect::<Vec<_>>();
    assert!(captured.len() >= 3);
    assert!(
        wire::decode(&captured[0]).is_err(),
        "sealed: not readable without the key"
    );
    let received = a.stat(|s| &s.packets_received);
    assert_eq!(a.rejected("replay"), 0);
    for bytes in &captured {
        hub.inject(b.addr, bytes);
    }
    until(Duration::from_secs(1), || {
        a.rejected("replay") == captured.len() as u64
    })
    .await;
    assert_eq!(a.stat(|s| &s.packets_received), received, "none accepted");
    // Tampered, and sealed with another key.
    let mut tampered = captured[0].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    hub.inject(b.addr, &tampered);
    let other = Keyring::from_keys(&[[8u8; 32]]).seal(captured[0][..10].to_vec());
    hub.inject(b.addr, &other);
    hub.inject(b.addr, b"DSKD garbage");
    until(Duration::from_secs(1), || {
        a.rejected("bad_seal") == 1
            && a.rejected("unknown_key") == 1
            && a.rejected("plaintext") == 1
    })
    .await;
    // B is still a live, trusted peer.
    assert!(!a.store.peer(&b.id).unwrap().gone);
    a.stop().await;
    b.stop().await;
}

/// The mount requests node `from` sent, with their times relative to the first.
fn mount_requests_sent(hub: &MemoryHub, from: SocketAddr) -> Vec<(Duration, u64)> {
    let sent: Vec<(Instant, u64)> = hub
        .sent()
        .into_iter()
        .filter(|s| s.from == from)
        .filter_map(|s| match wire::decode(&s.bytes).ok()?.body {
            Body::MountRequest(r) => Some((s.at, r.request_id)),
            _ => None,
        })
        .collect();
    let Some(&(t0, _)) = sent.first() else {
        return Vec::new();
    };
    sent.into_iter().map(|(t, id)| (t - t0, id)).collect()
}

fn mount(target: &str) -> impl FnOnce(super::mount_rpc::ReplyTo) -> PeerRequest {
    let target = target.to_string();
    move |reply| PeerRequest::Mount {
        target,
        uuid: "00000002-0000-4000-8000-000000000000".into(),
        read_only: true,
        unmount: false,
        reply,
    }
}

/// The owner's answer to `job`: mounted, at /srv/diskd/test.
fn mounted(job: &IncomingMount) -> MountReply {
    MountReply {
        request_id: job.request.request_id,
        target: job.requester_id.clone(),
        ok: true,
        device: Some("/dev/sdz1".into()),
        mountpoint: Some("/srv/diskd/test".into()),
        message: "mounted".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_mount_request_nobody_answers_is_retried_then_fails_at_the_timeout() {
    let (hub, _clock, a, b) = a_knows_b(&Opts::default()).await;
    sleep(Duration::from_secs(5)).await;
    let start = Instant::now();
    let r = a
        .handle
        .request(mount(&"0".repeat(32)), Duration::from_secs(30))
        .await;
    assert!(
        matches!(r, Err(PeerError::NoReply(d)) if d == MOUNT_TIMEOUT),
        "{r:?}"
    );
    let took = start.elapsed();
    assert!(took >= MOUNT_TIMEOUT && took < MOUNT_TIMEOUT + Duration::from_millis(50));
    let sent = mount_requests_sent(&hub, a.addr);
    let times: Vec<u64> = sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(times, vec![0, 300, 900, 2100, 4500, 9300]);
    assert!(
        sent.iter().all(|(_, id)| *id == sent[0].1),
        "retries reuse the id"
    );
    // Nobody took it for theirs: the only mount requests on the wire are a's.
    assert!(mount_requests_sent(&hub, b.addr).is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_mount_request_gets_the_owner_answer_even_when_the_first_answer_is_lost() {
    let (hub, _clock, a, mut b) = a_knows_b(&Opts::default()).await;
    let mut jobs = std::mem::replace(&mut b.mount_jobs, mpsc::channel(1).1);
    // Lose the owner's first answer: the requester's retry must get it again, from the
    // owner's memory (the mount is not carried out twice).
    let mut lost = false;
    hub.set_drop_rule(Some(Box::new(move |from, to, bytes| {
        let reply = from == addr(2)
            && to == addr(1)
            && matches!(wire::decode(bytes), Ok(e) if matches!(e.body, Body::MountReply(_)));
        if reply && !lost {
            lost = true;
            return true;
        }
        false
    })));
    let a_id = a.id.clone();
    let service = tokio::spawn(async move {
        let job = jobs.recv().await.unwrap();
        assert_eq!(job.requester, "node1");
        assert_eq!(job.requester_id, a_id);
        assert!(job.request.read_only);
        let reply = mounted(&job);
        job.reply.send(reply).unwrap();
        // No second job for the retries.
        let more = tokio::time::timeout(Duration::from_secs(5), jobs.recv()).await;
        assert!(more.is_err(), "the mount was carried out twice");
    });
    let reply = a.ask(mount(&b.id), Duration::from_secs(30)).await;
    assert!(reply.ok);
    assert_eq!(reply.message, "mounted");
    assert_eq!(reply.mountpoint.as_deref(), Some("/srv/diskd/test"));
    assert_eq!(hub.dropped_by_rule(), 1);
    let sent = mount_requests_sent(&hub, a.addr);
    assert!(sent.len() >= 2, "answered after a retry: {sent:?}");
    service.await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_inbox_drops_and_counts_datagrams_and_the_layer_keeps_serving() {
    // Inboxes of 4 datagrams: a 12-disk inventory in 576-byte chunks does not fit at once.
    let hub = MemoryHub::new(4);
    let clock = Clock::following_tokio(BASE_MS);
    let opts = Opts {
        max_datagram: Some(576),
        disks: 12,
        ..Opts::default()
    };
    let a = Node::start(&hub, clock, 1, &opts);
    let b = Node::start(&hub, clock, 2, &opts);
    sleep(Duration::from_secs(1)).await;
    assert!(hub.dropped_full() > 0, "the burst overflowed an inbox");
    // Counted as lost, not crashed: the layers are still up and answer requests.
    a.ask(PeerRequest::Ping, Duration::from_secs(1)).await;
    a.stop().await;
    b.stop().await;
}

const KEY: [u8; 32] = [7; 32];

/// The multicast hub, the gossip hub and the clock of a test whose nodes gossip.
fn gossip_setup() -> (MemoryHub, MemoryHub, Clock) {
    let (hub, clock) = setup();
    (hub, MemoryHub::default(), clock)
}

fn gossip_opts(hub: &MemoryHub, seeds: &[u8]) -> Opts {
    Opts {
        keys: Some(KEY),
        gossip: Some(hub.clone()),
        seeds: seeds.iter().map(|n| gaddr(*n).to_string()).collect(),
        no_multicast: true,
        expiry: "180s",
        ..Opts::default()
    }
}

#[tokio::test(start_paused = true)]
async fn gossip_alone_joins_through_a_seed_spreads_changes_and_detects_failures() {
    let (hub, ghub, clock) = gossip_setup();
    // Node 1 is the seed; the others only know it.
    let a = Node::start(&hub, clock, 1, &gossip_opts(&ghub, &[]));
    let b = Node::start(&hub, clock, 2, &gossip_opts(&ghub, &[1]));
    let c = Node::start(&hub, clock, 3, &gossip_opts(&ghub, &[1]));
    let d = Node::start(&hub, clock, 4, &gossip_opts(&ghub, &[1]));
    let all = [&a, &b, &c, &d];
    until(Duration::from_secs(10), || {
        all.iter()
            .all(|x| all.iter().all(|y| x.id == y.id || x.knows_disks_of(y) == 2))
    })
    .await;
    assert!(
        hub.sent().is_empty(),
        "multicast is off: nothing on the group"
    );
    // Every peer is one peer, reached by gossip.
    assert_eq!(c.store.peers().len(), 3);
    until(Duration::from_secs(2), || {
        c.handle.status().via(&b.id) == Some("gossip")
    })
    .await;
    // Status is published on the layer's one-second tick.
    until(Duration::from_secs(2), || {
        c.handle.status().gossip().is_some_and(|g| {
            g.members_live == 3 && g.seeds[0].state == super::seeds::SeedState::Joined
        })
    })
    .await;

    // A change on b reaches d (pushed; no multicast).
    let mut disks: Vec<DiskRecord> = (0..3).map(|i| disk(2, i)).collect();
    disks[2].label = Some("new".into());
    b.set_disks(&disks, clock);
    let took = until(Duration::from_secs(3), || d.knows_disks_of(&b) == 3).await;
    assert!(took < Duration::from_secs(1), "change took {took:?}");

    // A clean stop is seen at once; a silent death within the failure detector's time.
    b.stop().await;
    until(Duration::from_secs(3), || {
        !a.store
            .peer(&b.id)
            .unwrap()
            .is_live(clock.wall_ms(), Duration::from_secs(180))
    })
    .await;
    ghub.isolate(gaddr(3), true);
    let took = until(Duration::from_secs(30), || {
        !a.store
            .peer(&c.id)
            .unwrap()
            .is_live(clock.wall_ms(), Duration::from_secs(180))
    })
    .await;
    assert!(
        took > Duration::from_secs(1),
        "declared down too fast: {took:?}"
    );
    // Both keep their disks as last known.
    assert_eq!(a.knows_disks_of(&b), 3);
    assert_eq!(a.knows_disks_of(&c), 2);
    for x in [&a, &c, &d] {
        x.stop().await;
    }
}

/// Three gossip members (a the seed of b and c) that know each other's disks, and the
/// gossip hub (to drop chosen datagrams) and clock.
async fn three_members() -> (Node, Node, Node, MemoryHub, Clock) {
    let (hub, ghub, clock) = gossip_setup();
    let a = Node::start(&hub, clock, 1, &gossip_opts(&ghub, &[]));
    let b = Node::start(&hub, clock, 2, &gossip_opts(&ghub, &[1]));
    let c = Node::start(&hub, clock, 3, &gossip_opts(&ghub, &[1]));
    until(Duration::from_secs(10), || {
        a.knows_disks_of(&c) == 2 && c.knows_disks_of(&a) == 2 && c.knows_disks_of(&b) == 2
    })
    .await;
    (a, b, c, ghub, clock)
}

#[tokio::test(start_paused = true)]
async fn a_change_too_large_for_a_delta_is_pulled_also_by_a_member_that_missed_it() {
    let (a, b, c, ghub, clock) = three_members().await;
    // Large datagrams from a to c (inventories) are lost; everything else gets through.
    let a_id = a.id.clone();
    ghub.set_drop_rule(Some(Box::new(move |from, to, bytes| {
        from == gaddr(1) && to == gaddr(3) && bytes.len() > 300 && !a_id.is_empty()
    })));
    // Twenty disks at once: no delta fits in a gossip packet, so the notice goes alone and
    // every member pulls the whole inventory.
    let disks: Vec<DiskRecord> = (0..20).map(|i| disk(1, i)).collect();
    a.set_disks(&disks, clock);
    until(Duration::from_secs(10), || b.knows_disks_of(&a) == 20).await;
    ghub.set_drop_rule(None);
    // c's pulls were lost until now; it pulls again.
    let took = until(Duration::from_secs(15), || c.knows_disks_of(&a) == 20).await;
    assert!(
        took > Duration::ZERO,
        "c cannot have had it before the rule went"
    );
    // Status is published once a second.
    let pulled = |n: &Node| n.handle.status().gossip().map_or(0, |g| g.pulls_sent);
    until(Duration::from_secs(3), || {
        pulled(&b) >= 1 && pulled(&c) >= 1
    })
    .await;
    for x in [&a, &b, &c] {
        x.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_small_change_reaches_a_member_its_origin_cannot_as_a_relayed_delta() {
    let (a, b, c, ghub, clock) = three_members().await;
    // Nothing from a reaches c any more; b relays.
    ghub.set_drop_rule(Some(Box::new(|from, to, _| {
        from == gaddr(1) && to == gaddr(3)
    })));
    let disks: Vec<DiskRecord> = (0..3).map(|i| disk(1, i)).collect();
    a.set_disks(&disks, clock);
    until(Duration::from_secs(5), || c.knows_disks_of(&a) == 3).await;
    // Status is published once a second.
    until(Duration::from_secs(3), || {
        c.handle
            .status()
            .gossip()
            .is_some_and(|g| g.deltas_applied >= 1)
    })
    .await;
    let g = c.handle.status().gossip().unwrap();
    assert_eq!(g.pulls_sent, 0, "nothing was pulled: {g:?}");
    ghub.set_drop_rule(None);
    for x in [&a, &b, &c] {
        x.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_lan_peer_heard_by_multicast_becomes_a_member_and_is_listed_once() {
    let (hub, ghub, clock) = gossip_setup();
    let both = |seeds: &[u8]| Opts {
        no_multicast: false,
        ..gossip_opts(&ghub, seeds)
    };
    let a = Node::start(&hub, clock, 1, &both(&[]));
    let b = Node::start(&hub, clock, 2, &both(&[]));
    // c is across a router: gossip only, seeded with b.
    let c = Node::start(&hub, clock, 3, &gossip_opts(&ghub, &[2]));
    hub.isolate(addr(3), true);
    until(Duration::from_secs(15), || {
        c.knows_disks_of(&a) == 2 && a.knows_disks_of(&c) == 2
    })
    .await;
    until(Duration::from_secs(5), || {
        a.handle.status().via(&b.id) == Some("both")
    })
    .await;
    assert_eq!(a.handle.status().via(&c.id), Some("gossip"));
    assert_eq!(a.store.peers().len(), 2, "b is one peer, heard both ways");
    for x in [&a, &b, &c] {
        x.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_mount_request_reaches_a_gossip_member_unicast_and_is_retried() {
    let (hub, ghub, clock) = gossip_setup();
    let a = Node::start(&hub, clock, 1, &gossip_opts(&ghub, &[]));
    let mut b = Node::start(&hub, clock, 2, &gossip_opts(&ghub, &[1]));
    until(Duration::from_secs(10), || a.knows_disks_of(&b) == 2).await;
    let mut jobs = std::mem::replace(&mut b.mount_jobs, mpsc::channel(1).1);
    // Lose a's first packet to b once the request is made (the request: the layer sends
    // its outbox in order, and nothing else is queued when the request comes): the retry,
    // unicast too, gets through.
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let arm = armed.clone();
    let requests_before = ghub.sent().len();
    ghub.set_drop_rule(Some(Box::new(move |from, to, _| {
        from == gaddr(1) && to == gaddr(2) && arm.swap(false, Ordering::SeqCst)
    })));
    let a_id = a.id.clone();
    let service = tokio::spawn(async move {
        let job = jobs.recv().await.unwrap();
        assert_eq!(job.requester_id, a_id);
        let reply = mounted(&job);
        job.reply.send(reply).unwrap();
    });
    armed.store(true, Ordering::SeqCst);
    let reply = a.ask(mount(&b.id), Duration::from_secs(30)).await;
    assert!(reply.ok, "{reply:?}");
    assert_eq!(ghub.dropped_by_rule(), 1);
    assert!(ghub.sent().len() > requests_before);
    assert!(hub.sent().is_empty(), "nothing went by multicast");
    service.await.unwrap();
    a.stop().await;
    b.stop().await;
}

/// Fleet events a node has published so far, drained, as (kind, host) pairs.
fn fleet_events(
    rx: &mut broadcast::Receiver<Arc<crate::model::FleetEvent>>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push((e.kind.name().to_string(), e.host.clone()));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn fleet_events_come_once_per_change_not_per_announce() {
    let (hub, clock) = setup();
    let a = Node::start(&hub, clock, 1, &Opts::default());
    let mut rx = a.telemetry.fleet.subscribe();
    let b = Node::start(&hub, clock, 2, &Opts::default());
    until(Duration::from_secs(2), || a.knows_disks_of(&b) == 2).await;
    sleep(Duration::from_millis(100)).await;
    let first = fleet_events(&mut rx);
    let n =
        |v: &[(String, String)], k: &str| v.iter().filter(|(e, h)| e == k && h == "node2").count();
    assert_eq!(n(&first, "peer-live"), 1, "{first:?}");
    assert_eq!(n(&first, "appeared"), 2, "{first:?}");
    // Re-announces of the same inventory change nothing.
    for _ in 0..3 {
        b.ask(PeerRequest::Announce, Duration::from_secs(5)).await;
    }
    sleep(Duration::from_secs(1)).await;
    assert_eq!(fleet_events(&mut rx), vec![], "re-announce fired events");
    // A label change and a new mount: one `changed`, one `mounted`.
    let mut disks: Vec<DiskRecord> = (0..2).map(|i| disk(2, i)).collect();
    disks[0].label = Some("renamed".into());
    disks[1].mountpoints.push("/mnt/extra".into());
    b.set_disks(&disks, clock);
    until(Duration::from_secs(2), || {
        a.store.find("renamed").is_ok_and(|f| !f.is_empty())
    })
    .await;
    sleep(Duration::from_millis(100)).await;
    let change = fleet_events(&mut rx);
    assert_eq!(n(&change, "changed"), 1, "{change:?}");
    assert_eq!(n(&change, "mounted"), 1, "{change:?}");
    assert_eq!(change.len(), 2, "{change:?}");
    // A clean stop: lost once, after the goodbye grace (a restart would be back before
    // it), and its disks vanish (kept as last known).
    b.stop().await;
    sleep(Duration::from_millis(100)).await;
    assert_eq!(fleet_events(&mut rx), vec![], "told before the grace");
    sleep(super::GOODBYE_GRACE + Duration::from_secs(1)).await;
    let gone = fleet_events(&mut rx);
    assert_eq!(n(&gone, "peer-lost"), 1, "{gone:?}");
    assert_eq!(n(&gone, "vanished"), 2, "{gone:?}");
    assert_eq!(a.knows_disks_of(&b), 2);
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_change_is_announced_at_once_and_a_burst_folded_into_one_more() {
    let (hub, clock) = setup();
    let a = Node::start(&hub, clock, 1, &Opts::default());
    sleep(Duration::from_secs(1)).await;
    let announces = |hub: &MemoryHub| {
        hub.sent()
            .iter()
            .filter(|s| {
                s.from == addr(1)
                    && matches!(wire::decode(&s.bytes), Ok(e) if matches!(e.body, Body::Inventory(_)))
            })
            .map(|s| s.at)
            .collect::<Vec<_>>()
    };
    let before = announces(&hub).len();
    let t0 = Instant::now();
    for i in 0..5 {
        let disks: Vec<DiskRecord> = (0..2 + i).map(|j| disk(1, j)).collect();
        a.set_disks(&disks, clock);
        sleep(Duration::from_millis(2)).await;
    }
    sleep(Duration::from_millis(100)).await;
    let after = announces(&hub);
    let new: Vec<Duration> = after[before..].iter().map(|t| *t - t0).collect();
    // Each announce here is one datagram (a few disks): the first at once, the rest of the
    // burst in one more at the end of the window.
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new[0] < Duration::from_millis(1), "{new:?}");
    assert!(
        new[1] >= Duration::from_millis(19) && new[1] <= Duration::from_millis(25),
        "{new:?}"
    );
    a.stop().await;
}
